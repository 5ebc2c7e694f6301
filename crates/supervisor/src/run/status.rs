//! The service's status snapshot (`trackmill status`): every worker slot with its process, file
//! and history, the queue, the DB writer, totals and memory pressure.

use super::{Phase, Supervisor};
use crate::pool::SlotState;
use trackmill_types::procmem;
use trackmill_types::{
    DbWriterStatus, ExitKind, MemoryStatus, ServiceStatus, Totals, WorkerStatus,
};

/// What a slot keeps across its processes.
#[derive(Clone, Debug, Default)]
pub struct SlotHistory {
    pub processes: u64,
    pub files_done: u64,
    pub last_exit: Option<ExitKind>,
}

impl Supervisor {
    fn hist_mut(&mut self, ix: usize) -> &mut SlotHistory {
        if self.hist.len() <= ix {
            self.hist.resize(ix + 1, SlotHistory::default());
        }
        &mut self.hist[ix]
    }

    pub(super) fn note_spawn(&mut self, ix: usize) {
        self.hist_mut(ix).processes += 1;
    }

    pub(super) fn note_exit(&mut self, ix: usize, kind: ExitKind, files_done: u64) {
        let h = self.hist_mut(ix);
        h.files_done += files_done;
        h.last_exit = Some(kind);
    }

    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Starting => "starting",
            Phase::Running if self.paused() && self.busy() > 0 => "draining",
            Phase::Running if self.paused() => "drained",
            Phase::Running if self.pass_active => "scanning",
            Phase::Running => "idle",
            Phase::Draining { .. } | Phase::Finishing | Phase::Done => "stopping",
        }
    }

    pub(super) fn status(&self) -> ServiceStatus {
        let slots = self.slots.len().max(self.target);
        // Slots above the target are shown while a process still finishes its file there.
        let workers = (0..slots)
            .filter(|&ix| ix < self.target || self.slots.get(ix).is_some_and(|s| s.is_some()))
            .map(|ix| {
                let hist = self.hist.get(ix).cloned().unwrap_or_default();
                let mut w = WorkerStatus {
                    id: ix as u32,
                    state: "empty".into(),
                    files_done: hist.files_done,
                    restarts: hist.processes.saturating_sub(1),
                    last_exit: hist.last_exit.map(|k| k.as_str().to_string()),
                    ..WorkerStatus::default()
                };
                if let Some(s) = self.slots.get(ix).and_then(|s| s.as_ref()) {
                    w.pid = s.pid;
                    w.rss_bytes = procmem::rss_bytes(s.pid);
                    w.files_done += s.files_done;
                    w.state = match &s.state {
                        _ if s.kill.is_some() => "stopping",
                        SlotState::Starting => "starting",
                        SlotState::Idle => "idle",
                        SlotState::Busy { .. } => "busy",
                    }
                    .into();
                    if let SlotState::Busy { job, started, .. } = &s.state {
                        w.file = Some(job.key.path.display());
                        w.busy_s = started.elapsed().as_secs_f64();
                    }
                }
                w
            })
            .collect();
        let s = &self.summary;
        ServiceStatus {
            pid: std::process::id(),
            run_id: self.run_id,
            state: self.state_name().into(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            passes: self.service.as_ref().map_or(1, |svc| svc.passes),
            pass_active: self.pass_active,
            pass_pending: !self.pending.is_empty()
                || self.service.as_ref().is_some_and(|s| s.changes_waiting()),
            target_workers: self.target as u32,
            workers,
            queue_ready: self.ready.len() as u64,
            queue_retries: self.retries.len() as u64,
            db_writer: DbWriterStatus {
                pid: self.db.pid,
                ready: self.db.ready,
                unacked: self.db.unacked.len() as u64,
                restarts: self.db.restarts,
            },
            totals: Totals {
                files_seen: s.files_seen,
                analyzed: s.analyzed,
                skipped_unchanged: s.skipped_unchanged,
                failed: s.failed.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                quarantined: s.quarantined,
                worker_exits: s
                    .worker_exits
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            },
            memory: MemoryStatus {
                level: self.pressure.level.as_str().into(),
                used_share: self.pressure.used_share,
                busy_limit: self.pressure.limit as u32,
                workers_rss_bytes: self.worker_rss,
            },
            degraded: self.intensity.degraded,
            analysis_seconds: self.analysis_time.clone(),
        }
    }
}
