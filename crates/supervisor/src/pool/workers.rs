//! `Pool`: the one owner of the worker processes. It holds the slots, generations, job ids, the
//! target size, each slot's history and the restart intensity, and it does everything that
//! touches a worker: spawning, sending a job, the termination ladder, shrinking, killing the
//! largest under memory pressure, per-slot status, and classifying an exit. The loop around it
//! only decides which file goes where and what becomes of a file whose worker ended.

use super::exit::{classify, exit_message, Exit, ExitContext};
use super::intensity::Intensity;
use super::procs::{Processes, SpawnRequest};
use super::slot::{FileJob, InFlight, KillReason, Slot, SlotHistory, SlotState, Stopping};
use crate::config::Config;
use crate::event::{ChildExit, ChildMsg};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use trackmill_types::{
    ExitKind, FileStats, FromWorker, Job, Outcome, PathBytes, Role, ToWorker, WorkerStatus,
};

/// The settings of `workers.*` that the pool applies; a reload replaces them at once (a running
/// worker keeps the cap and recycle count it was started with).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSettings {
    pub job_timeout: Duration,
    pub kill_grace: Duration,
    pub hello_timeout: Duration,
    /// Files per worker process before its planned recycle (±10 % jitter per process).
    pub recycle_after: u32,
    pub memory_limit: u64,
    pub restart_intensity: u32,
    pub restart_window: Duration,
}

impl PoolSettings {
    pub fn new(cfg: &Config) -> Self {
        let w = &cfg.workers;
        PoolSettings {
            job_timeout: w.job_timeout,
            kill_grace: w.kill_grace,
            hello_timeout: w.hello_timeout,
            recycle_after: w.recycle_after,
            memory_limit: w.memory_limit,
            restart_intensity: w.restart_intensity,
            restart_window: w.restart_window,
        }
    }
}

/// A file a worker finished (analysed or failed), handed back to the loop.
#[derive(Debug)]
pub struct Finished {
    pub pid: u32,
    pub job: FileJob,
    pub started: Instant,
    pub outcome: Outcome,
    pub stats: FileStats,
}

/// What a worker's event means for the loop.
#[derive(Debug)]
pub enum Reply {
    /// Nothing for the loop: a hello, a stale generation, or a broken channel (the worker is
    /// being stopped; its exit follows).
    Nothing,
    Finished(Finished),
    Exited(Exit),
}

pub struct Pool<P: Processes> {
    procs: P,
    slots: Vec<Option<Slot>>,
    hist: Vec<SlotHistory>,
    /// Worker processes wanted (`workers.count`, changed by a reload or `trackmill workers`).
    target: usize,
    next_gen: u64,
    next_job_id: u64,
    intensity: Intensity,
    settings: PoolSettings,
}

impl<P: Processes> Pool<P> {
    pub fn new(procs: P, target: usize, settings: PoolSettings, now: Instant) -> Self {
        let target = target.max(1);
        Pool {
            procs,
            slots: (0..target).map(|_| None).collect(),
            hist: vec![SlotHistory::default(); target],
            target,
            next_gen: 1,
            next_job_id: 1,
            intensity: Intensity::new(settings.restart_intensity, settings.restart_window, now),
            settings,
        }
    }

    pub fn configure(&mut self, settings: PoolSettings) {
        self.intensity
            .configure(settings.restart_intensity, settings.restart_window);
        self.settings = settings;
    }

    /// The process actions, e.g. to change the workers' arguments after a reload (new
    /// processes get them).
    pub fn procs_mut(&mut self) -> &mut P {
        &mut self.procs
    }

    pub fn target(&self) -> usize {
        self.target
    }

    /// Grows or shrinks the pool. Growing spawns at the next [`Pool::spawn_missing`]; shrinking
    /// happens in [`Pool::shrink`]: idle workers first (highest slots first), busy ones once
    /// their file is done.
    pub fn set_target(&mut self, n: usize) {
        let n = n.max(1);
        self.target = n;
        if self.slots.len() < n {
            self.slots.resize_with(n, || None);
        }
        if self.hist.len() < n {
            self.hist.resize(n, SlotHistory::default());
        }
        while self.slots.len() > n && self.slots.last().is_some_and(|s| s.is_none()) {
            self.slots.pop();
        }
    }

    /// Processes alive (including those being stopped or about to recycle).
    pub fn alive(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn busy(&self) -> usize {
        self.slots.iter().flatten().filter(|s| s.is_busy()).count()
    }

    /// True while a file that must run alone is in flight.
    pub fn alone_busy(&self) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|s| matches!(&s.state, SlotState::Busy { job, .. } if job.alone))
    }

    /// The first slot whose worker is ready for a file.
    pub fn idle_slot(&self) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(Slot::is_idle))
    }

    pub fn degraded(&self) -> bool {
        self.intensity.degraded()
    }

    fn current(&mut self, slot: usize, gen: u64) -> Option<&mut Slot> {
        self.slots
            .get_mut(slot)
            .and_then(|s| s.as_mut())
            .filter(|s| s.gen == gen)
    }

    /// Starts workers in empty slots until `limit` (and the target) are alive, unless the
    /// restart intensity says to wait. A failed start is logged, counts as an unplanned death,
    /// and is returned.
    pub fn spawn_missing(&mut self, limit: usize, now: Instant) -> std::io::Result<()> {
        let wanted = limit.min(self.target);
        while self.alive() < wanted && self.intensity.may_spawn(now) {
            let Some(ix) = (0..self.target).find(|&i| self.slots[i].is_none()) else {
                break;
            };
            if let Err(e) = self.spawn(ix, now) {
                tracing::error!("cannot spawn a worker: {e}");
                self.intensity.record_death(now);
                return Err(e);
            }
        }
        Ok(())
    }

    fn spawn(&mut self, ix: usize, now: Instant) -> std::io::Result<()> {
        let jittered = self.settings.recycle_after as f64 * rand::random_range(0.9..=1.1);
        let recycle_after = jittered.round().max(1.0) as u32;
        let gen = self.next_gen;
        self.next_gen += 1;
        let started = self.procs.spawn(&SpawnRequest {
            slot: ix,
            gen,
            recycle_after,
            memory_limit: self.settings.memory_limit,
        })?;
        tracing::debug!("worker {} started in slot {ix}", started.pid);
        self.hist[ix].processes += 1;
        self.slots[ix] = Some(Slot {
            gen,
            pid: started.pid,
            tx: started.tx,
            state: SlotState::Starting { since: now },
            files_done: 0,
            recycle_after: recycle_after.into(),
            stopping: None,
        });
        Ok(())
    }

    /// Gives the idle worker in `ix` a file; returns the job's id and the worker's pid.
    pub fn send_job(&mut self, ix: usize, job: FileJob, now: Instant) -> (u64, u32) {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let deadline = now + self.settings.job_timeout;
        let slot = self.slots[ix]
            .as_mut()
            .expect("the loop picked a live slot");
        debug_assert!(slot.is_idle(), "a job for a worker that is not idle");
        let _ = slot.tx.send(ToWorker::Job(Job {
            id,
            path: job.key.path.clone(),
            attempt: job.history.len() as u32 + 1,
        }));
        slot.state = SlotState::Busy {
            job,
            job_id: id,
            started: now,
            deadline,
        };
        (id, slot.pid)
    }

    /// Asks workers to exit until at most `allowed` remain that are neither being stopped nor
    /// about to recycle: idle and starting ones, highest slots first, so a shrunk pool keeps
    /// its low slot numbers. Busy workers are left to finish their file (the loop calls this
    /// after every event, so they go once they are idle).
    pub fn shrink(&mut self, allowed: usize, now: Instant) {
        let mut staying = self
            .slots
            .iter()
            .flatten()
            .filter(|s| s.stopping.is_none() && !s.recycling())
            .count();
        for s in self.slots.iter_mut().rev().flatten() {
            if staying <= allowed {
                break;
            }
            let idle = matches!(s.state, SlotState::Idle | SlotState::Starting { .. });
            if idle && s.stopping.is_none() && !s.recycling() {
                s.stopping = Some(Stopping::Term {
                    reason: KillReason::Stop,
                    since: now,
                });
                let _ = s.tx.send(ToWorker::Shutdown);
                staying -= 1;
            }
        }
    }

    /// Starts the termination ladder for one worker: SIGTERM now, SIGKILL after the grace.
    pub fn stop(&mut self, ix: usize, reason: KillReason, now: Instant) {
        if let Some(s) = self.slots.get_mut(ix).and_then(|s| s.as_mut()) {
            if s.stopping.is_none() {
                s.stopping = Some(Stopping::Term { reason, since: now });
                self.procs.signal(s.pid, Signal::SIGTERM);
            }
        }
    }

    /// The ladder for every worker (shutdown grace over).
    pub fn stop_all(&mut self, reason: KillReason, now: Instant) {
        for ix in 0..self.slots.len() {
            self.stop(ix, reason, now);
        }
    }

    /// SIGKILL to every worker now (a second shutdown signal, or the DB writer is lost for good).
    pub fn kill_all_now(&mut self) {
        for s in self.slots.iter_mut().flatten() {
            let reason = s.stopping.map_or(KillReason::Stop, Stopping::reason);
            s.stopping = Some(Stopping::Killed { reason });
            self.procs.signal(s.pid, Signal::SIGKILL);
        }
    }

    /// An operator's signal to the worker in slot `ix`: its file is requeued as `killed`.
    /// Whatever the signal, the ladder ends the worker (SIGKILL after the grace). Returns the
    /// worker's pid and the file it was on.
    pub fn signal_on_request(
        &mut self,
        ix: usize,
        sig: Signal,
        now: Instant,
    ) -> Option<(u32, Option<PathBytes>)> {
        let s = self.slots.get_mut(ix).and_then(|s| s.as_mut())?;
        let file = match &s.state {
            SlotState::Busy { job, .. } => Some(job.key.path.clone()),
            _ => None,
        };
        let pid = s.pid;
        s.stopping = Some(match (sig, s.stopping) {
            (Signal::SIGKILL, _) => Stopping::Killed {
                reason: KillReason::Killed,
            },
            (_, Some(Stopping::Killed { .. })) => Stopping::Killed {
                reason: KillReason::Killed,
            },
            (_, Some(Stopping::Term { since, .. })) => Stopping::Term {
                reason: KillReason::Killed,
                since,
            },
            (_, None) => Stopping::Term {
                reason: KillReason::Killed,
                since: now,
            },
        });
        self.procs.signal(pid, sig);
        Some((pid, file))
    }

    /// Memory is critical: the busy worker with the largest RSS is stopped (its file requeued
    /// without penalty), only while another is busy too, so the run always makes progress.
    pub fn kill_largest(&mut self, now: Instant) {
        if self.busy() < 2 {
            return;
        }
        let largest = (0..self.slots.len())
            .filter_map(|ix| {
                self.slots[ix]
                    .as_ref()
                    .filter(|s| s.is_busy() && s.stopping.is_none())
                    .map(|s| (ix, self.procs.rss_bytes(s.pid)))
            })
            .max_by_key(|(_, rss)| *rss);
        if let Some((ix, rss)) = largest {
            tracing::warn!(
                "memory critical: killing the largest worker ({}); its file is requeued",
                crate::units::format_size(rss)
            );
            self.stop(ix, KillReason::Killed, now);
        }
    }

    /// RSS of every live worker, summed.
    pub fn total_rss(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .map(|s| self.procs.rss_bytes(s.pid))
            .sum()
    }

    /// Deadlines: the ladder's SIGKILL after the grace, files past their deadline, workers that
    /// never said hello; and the restart intensity's window.
    pub fn tick(&mut self, now: Instant) {
        self.intensity.tick(now);
        let s = &self.settings;
        let mut expired = Vec::new();
        for (ix, slot) in self.slots.iter_mut().enumerate() {
            let Some(w) = slot.as_mut() else { continue };
            match (w.stopping, &w.state) {
                (Some(Stopping::Term { reason, since }), _)
                    if now.duration_since(since) >= s.kill_grace =>
                {
                    w.stopping = Some(Stopping::Killed { reason });
                    self.procs.signal(w.pid, Signal::SIGKILL);
                }
                (Some(_), _) => {}
                (None, SlotState::Busy { deadline, .. }) if now >= *deadline => {
                    expired.push((ix, KillReason::Timeout));
                }
                (None, SlotState::Starting { since })
                    if now.duration_since(*since) >= s.hello_timeout =>
                {
                    tracing::warn!(
                        "worker {} said no hello within {:?}; stopping it",
                        w.pid,
                        s.hello_timeout
                    );
                    expired.push((ix, KillReason::NoHello));
                }
                _ => {}
            }
        }
        for (ix, reason) in expired {
            self.stop(ix, reason, now);
        }
    }

    /// A worker's frame, broken channel or exit. Events of a process that is no longer the
    /// slot's (an older generation) are ignored.
    pub fn on_event(
        &mut self,
        slot: usize,
        gen: u64,
        msg: ChildMsg<FromWorker>,
        now: Instant,
    ) -> Reply {
        match msg {
            ChildMsg::Frame(frame) => self.on_frame(slot, gen, frame, now),
            ChildMsg::BadChannel(e) => {
                if let Some(w) = self.current(slot, gen) {
                    tracing::error!("worker {} broke the protocol: {e}", w.pid);
                    self.stop(slot, KillReason::Protocol, now);
                }
                Reply::Nothing
            }
            ChildMsg::Exited(exit) => match self.on_exit(slot, gen, exit, now) {
                Some(e) => Reply::Exited(e),
                None => Reply::Nothing,
            },
        }
    }

    fn on_frame(&mut self, ix: usize, gen: u64, frame: FromWorker, now: Instant) -> Reply {
        let Some(w) = self.current(ix, gen) else {
            return Reply::Nothing;
        };
        match frame {
            FromWorker::Hello(h) => {
                if let Err(e) = h.check(Role::Worker) {
                    tracing::error!("worker {}: {e}", w.pid);
                    self.stop(ix, KillReason::Protocol, now);
                } else if matches!(w.state, SlotState::Starting { .. }) {
                    w.state = SlotState::Idle;
                }
                Reply::Nothing
            }
            FromWorker::Done {
                job_id,
                outcome,
                stats,
                last,
            } => {
                if !matches!(&w.state, SlotState::Busy { job_id: j, .. } if *j == job_id) {
                    tracing::error!("worker {} answered job {job_id} it was not given", w.pid);
                    self.stop(ix, KillReason::Protocol, now);
                    return Reply::Nothing;
                }
                let SlotState::Busy { job, started, .. } =
                    std::mem::replace(&mut w.state, SlotState::Idle)
                else {
                    unreachable!("matched Busy above");
                };
                w.files_done += 1;
                if last {
                    // It exits now (a model failure, or its own count): nothing more for it.
                    w.recycle_after = w.files_done;
                }
                Reply::Finished(Finished {
                    pid: w.pid,
                    job,
                    started,
                    outcome,
                    stats,
                })
            }
        }
    }

    fn on_exit(&mut self, ix: usize, gen: u64, exit: ChildExit, now: Instant) -> Option<Exit> {
        self.current(ix, gen)?;
        let w = self.slots[ix].take()?;
        let reason = w.stopping.map(Stopping::reason);
        let kind = classify(exit.status, reason, exit.oom_message);
        let hist = &mut self.hist[ix];
        hist.files_done += w.files_done;
        hist.last_exit = Some(kind);
        if matches!(
            kind,
            ExitKind::Oom | ExitKind::Timeout | ExitKind::Crash | ExitKind::Protocol
        ) {
            self.intensity.record_death(now);
        }
        let message = exit_message(&ExitContext {
            pid: w.pid,
            status: exit.status,
            kind,
            reason,
            memory_limit: self.settings.memory_limit,
            job_timeout: self.settings.job_timeout,
            hello_timeout: self.settings.hello_timeout,
            last_stderr: &exit.last_stderr,
        });
        let in_flight = match w.state {
            SlotState::Busy { job, started, .. } => Some(InFlight { job, started }),
            _ => None,
        };
        // A slot above a shrunk target is gone once its process is.
        while self.slots.len() > self.target && self.slots.last().is_some_and(|s| s.is_none()) {
            self.slots.pop();
        }
        Some(Exit {
            kind,
            pid: w.pid,
            message,
            in_flight,
        })
    }

    /// One row per live worker, in slot order (a slot whose process has ended shows no row; its
    /// last exit stays in the slot's history and shows on its next process).
    pub fn statuses(&self, now: Instant) -> Vec<WorkerStatus> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(ix, s)| s.as_ref().map(|s| (ix, s)))
            .map(|(ix, s)| {
                let hist = &self.hist[ix];
                let (state, file, busy_s) = match &s.state {
                    _ if s.stopping.is_some() => ("stopping", None, 0.0),
                    SlotState::Starting { .. } => ("starting", None, 0.0),
                    SlotState::Idle => ("idle", None, 0.0),
                    SlotState::Busy { job, started, .. } => (
                        "busy",
                        Some(job.key.path.display()),
                        now.duration_since(*started).as_secs_f64(),
                    ),
                };
                WorkerStatus {
                    id: ix as u32,
                    pid: s.pid,
                    state: state.into(),
                    file,
                    busy_s,
                    rss_bytes: self.procs.rss_bytes(s.pid),
                    files_done: hist.files_done + s.files_done,
                    restarts: hist.processes.saturating_sub(1),
                    last_exit: hist.last_exit.map(|k| k.as_str().to_string()),
                }
            })
            .collect()
    }
}

impl<P: Processes> Drop for Pool<P> {
    fn drop(&mut self) {
        // No orphan on any path: children also have a parent-death signal.
        for s in self.slots.iter().flatten() {
            self.procs.signal(s.pid, Signal::SIGKILL);
        }
    }
}
