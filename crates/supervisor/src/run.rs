//! The supervisor's event loop, for one scan or for the long-running service: every signal, child
//! message, child exit, timer tick, scanner batch and control request becomes an event handled
//! here; this loop owns all job state. A scan finishes when its one pass is done; the service
//! goes idle instead and starts the next pass on a timer, a file-system change or a request.

mod ops;
mod passes;
mod reload;
mod status;

use crate::config::Config;
use crate::dbclient::DbClient;
use crate::event::{attach, ChildMsg, Event, Who};
use crate::pool::{
    classify, describe, exit_message, FileJob, Intensity, KillReason, Slot, SlotState,
};
use crate::pressure::{Action, Pressure};
use crate::progress::{Progress, Snapshot};
use crate::retry::{decide, Decision};
use crate::scanner::{self, ScanMsg};
use crate::spawn::{signal_group, spawn_child, ChildSpec};
use crate::summary::Summary;
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use trackmill_types::procmem;
use trackmill_types::{
    Attempt, CheckPolicy, CleanText, ExitKind, Failure, FileStats, FromDb, FromWorker, Job,
    Outcome, Record, RecordOutcome, Role, RunCounts, RunStatus, Stage, ToDb, ToWorker, Verdict,
    WorkerEvent, ANALYZER_VERSION, PROTOCOL_VERSION,
};

/// How to start the children: the same binary with its hidden subcommands.
#[derive(Clone, Debug)]
pub struct SpawnSpec {
    pub exe: PathBuf,
    /// Arguments of the worker subcommand; the supervisor appends `--recycle-after N`.
    pub worker_args: Vec<OsString>,
    pub worker_env: Vec<(OsString, OsString)>,
    pub db_args: Vec<OsString>,
    /// Environment of the DB writer: its database URL travels here, not on a command line that
    /// every local user can read.
    pub db_env: Vec<(OsString, OsString)>,
    /// GPU workers are capped with RLIMIT_DATA instead of RLIMIT_AS.
    pub gpu: bool,
    /// The models `worker_args` load (empty: DSP-only). Stored files analysed without one of
    /// them are analysed again.
    pub models: Vec<String>,
}

/// `serve`: what the long-running mode adds to a scan.
pub struct ServeOptions {
    /// Re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// The bound control socket (see [`crate::control::Claim::bind`]).
    pub control: std::os::unix::net::UnixListener,
    pub control_path: PathBuf,
    /// The bound Prometheus endpoint, if `service.metrics_addr` is set.
    pub metrics: Option<std::net::TcpListener>,
    pub spawn: SpawnSpec,
}

pub struct ScanOptions {
    pub roots: Vec<PathBuf>,
    pub retry_failed: bool,
    pub progress: bool,
    pub spawn: SpawnSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the DB writer: {0}")]
    DbWriter(String),
    #[error("cannot start a worker: {0}")]
    Spawn(std::io::Error),
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the DB writer to open the run.
    Starting,
    Running,
    /// Shutdown requested: no new work; in-flight files may finish until the deadline.
    Draining {
        deadline: Instant,
    },
    /// Workers are gone or going; closing the run in the database.
    Finishing,
    Done,
}

const TICK: Duration = Duration::from_millis(50);
const DB_FLUSH_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait between two claims while other runs hold files this run saw busy.
const CLAIM_POLL_MAX: Duration = Duration::from_secs(1);

struct Supervisor {
    cfg: Config,
    spawn: SpawnSpec,
    policy: CheckPolicy,
    events_tx: mpsc::UnboundedSender<Event>,
    slots: Vec<Option<Slot>>,
    next_gen: u64,
    next_job_id: u64,
    ready: VecDeque<FileJob>,
    retries: Vec<FileJob>,
    db: DbClient,
    run_id: i64,
    phase: Phase,
    interrupted: bool,
    scan_done: bool,
    claims_done: bool,
    claim_not_before: Instant,
    scan_stop: Arc<AtomicBool>,
    summary: Summary,
    intensity: Intensity,
    pressure: Pressure,
    last_pressure_poll: Instant,
    progress: Progress,
    started: Instant,
    finish_deadline: Option<Instant>,
    end_sent: bool,
    flush_token: u64,
    fatal: Option<String>,
    worker_rss: u64,
    /// Worker processes wanted (`workers.count`, changed by a reload or `trackmill workers`).
    target: usize,
    roots: Vec<PathBuf>,
    /// A scan pass is walking, checking or analysing; the service is idle otherwise.
    pass_active: bool,
    pending: passes::Pending,
    /// Per slot: processes it had, files done by its past processes, how the last one ended.
    hist: Vec<status::SlotHistory>,
    /// Only in `serve`.
    service: Option<passes::Service>,
    analysis_time: trackmill_types::Histogram,
}

/// Runs one scan to completion (or interruption) and returns its summary.
pub fn scan(cfg: Config, opts: ScanOptions) -> Result<Summary, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Spawn)?;
    rt.block_on(run(cfg, opts, None))
}

/// Runs the service until SIGTERM/SIGINT and returns the summary of its whole life.
pub fn serve(cfg: Config, opts: ServeOptions) -> Result<Summary, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Spawn)?;
    let scan = ScanOptions {
        roots: cfg.library.roots.clone(),
        retry_failed: false,
        progress: false,
        spawn: opts.spawn.clone(),
    };
    rt.block_on(run(cfg, scan, Some(opts)))
}

async fn run(
    cfg: Config,
    opts: ScanOptions,
    serve: Option<ServeOptions>,
) -> Result<Summary, RunError> {
    // Unbounded in type, bounded by what feeds it: each child sends one reply per request the
    // loop made (jobs in flight, unacked results up to database.max_unacked, one check or claim),
    // control and metrics clients are capped at clients::MAX_CLIENTS, and the file-system watcher
    // queues at most one wake-up (its paths wait in a bounded set, see watch.rs).
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let db_spec = ChildSpec {
        exe: opts.spawn.exe.clone(),
        args: opts.spawn.db_args.clone(),
        env: opts.spawn.db_env.clone(),
        address_space_limit: 0,
        data_limit: 0,
    };
    let workers = cfg.worker_count();
    let mut sup = Supervisor {
        policy: CheckPolicy {
            retry_failed: opts.retry_failed,
            analyzer_version: ANALYZER_VERSION,
            models: opts
                .spawn
                .models
                .iter()
                .map(|m| CleanText::new(m))
                .collect(),
        },
        spawn: opts.spawn.clone(),
        events_tx: events_tx.clone(),
        slots: (0..workers).map(|_| None).collect(),
        next_gen: 1,
        next_job_id: 1,
        ready: VecDeque::new(),
        retries: Vec::new(),
        db: DbClient::new(db_spec),
        run_id: 0,
        phase: Phase::Starting,
        interrupted: false,
        scan_done: false,
        claims_done: false,
        claim_not_before: Instant::now(),
        scan_stop: Arc::new(AtomicBool::new(false)),
        summary: Summary::new(),
        intensity: Intensity::new(cfg.workers.restart_intensity, cfg.workers.restart_window),
        pressure: Pressure::new(cfg.memory.high, cfg.memory.critical, workers),
        last_pressure_poll: Instant::now(),
        progress: Progress::new(opts.progress),
        started: Instant::now(),
        finish_deadline: None,
        end_sent: false,
        flush_token: 0,
        fatal: None,
        worker_rss: 0,
        target: workers,
        roots: opts.roots.clone(),
        pass_active: false,
        pending: passes::Pending::first(opts.retry_failed),
        hist: Vec::new(),
        service: None,
        analysis_time: trackmill_types::Histogram::new(&crate::metrics::ANALYSIS_BOUNDS),
        cfg,
    };
    let mut sighup = None;
    let mut control_ino = None;
    if let Some(serve) = serve {
        crate::control::spawn_server(serve.control, events_tx.clone());
        if let Some(l) = serve.metrics {
            crate::metrics::spawn_server(l, events_tx.clone());
        }
        control_ino = std::fs::metadata(&serve.control_path).ok().map(|m| {
            (
                serve.control_path.clone(),
                std::os::unix::fs::MetadataExt::ino(&m),
            )
        });
        sighup = Some(signal(SignalKind::hangup()).map_err(RunError::Signals)?);
        sup.service = Some(passes::Service::new(
            &sup.cfg,
            serve.config_path,
            &events_tx,
        ));
    }
    sup.db
        .spawn(&events_tx)
        .map_err(|e| RunError::DbWriter(e.to_string()))?;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    sup.db.send_control(ToDb::StartRun {
        host: CleanText::new(&host),
        pid: std::process::id(),
        roots: opts
            .roots
            .iter()
            .map(|r| trackmill_types::PathBytes::from_path(r).display())
            .collect(),
    });

    let mut scan_rx: Option<mpsc::Receiver<ScanMsg>> = None;
    let mut scan_thread: Option<std::thread::JoinHandle<()>> = None;

    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    while sup.phase != Phase::Done {
        if let Some(settings) = sup.next_pass() {
            // The previous pass's walk has ended (it sent Done); join it before the next.
            if let Some(h) = scan_thread.take() {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            let (tx, rx) = mpsc::channel::<ScanMsg>(1);
            scan_thread = Some(scanner::start(settings, tx, sup.scan_stop.clone()));
            scan_rx = Some(rx);
        }
        let want_scan = sup.wants_scan_batch() && scan_rx.is_some();
        tokio::select! {
            biased;
            _ = sigint.recv() => sup.on_signal("SIGINT"),
            _ = sigterm.recv() => sup.on_signal("SIGTERM"),
            Some(()) = recv_signal(&mut sighup) => sup.on_reload(),
            Some(ev) = events_rx.recv() => sup.on_event(ev),
            msg = recv_scan(&mut scan_rx), if want_scan => {
                if !matches!(msg, Some(ScanMsg::Batch(_) | ScanMsg::Error(_))) {
                    scan_rx = None;
                }
                sup.on_scan(msg);
            }
            _ = tick.tick() => sup.on_tick(),
        }
        sup.step();
    }
    sup.scan_stop.store(true, Ordering::Relaxed);
    drop(scan_rx);
    if let Some(h) = scan_thread {
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    if let Some((path, ino)) = control_ino {
        crate::control::remove_socket(&path, ino);
    }
    sup.progress.finish();
    if let Some(msg) = sup.fatal.take() {
        return Err(RunError::DbWriter(msg));
    }
    let mut s = std::mem::take(&mut sup.summary);
    s.run_id = sup.run_id;
    s.status = if sup.interrupted {
        "interrupted"
    } else {
        "completed"
    }
    .into();
    s.elapsed_s = sup.started.elapsed().as_secs_f64();
    s.db_writer_restarts = sup.db.restarts.saturating_sub(1);
    s.supervisor_peak_rss_bytes = procmem::peak_bytes();
    Ok(s)
}

/// The next scanner message, or never when no walk is running.
async fn recv_scan(rx: &mut Option<mpsc::Receiver<ScanMsg>>) -> Option<ScanMsg> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next delivery of a signal that is only handled in some modes.
async fn recv_signal(sig: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match sig {
        Some(sig) => sig.recv().await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Supervisor {
    fn target_workers(&self) -> usize {
        self.target
    }

    /// True when `slot` still holds the worker process of generation `gen`.
    fn is_current(&self, slot: usize, gen: u64) -> bool {
        self.slots
            .get(slot)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| s.gen == gen)
    }

    fn busy(&self) -> usize {
        self.slots.iter().flatten().filter(|s| s.is_busy()).count()
    }

    fn alive(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    fn wants_scan_batch(&self) -> bool {
        self.phase == Phase::Running
            && !self.scan_done
            && self.db.check.is_none()
            && self.db.ready
            // The next batch is checked while a batch's worth is still queued, so workers never
            // wait for a skip-check round trip; memory stays O(queue depth + batch). Failed files
            // waiting for their retry count against the queue: a library whose files all fail fast
            // must not pile up retries while the walk goes on.
            && self.ready.len() + self.retries.len() < self.cfg.queue_depth() + scanner::BATCH
    }

    // ------------------------------------------------------------------ events

    fn on_signal(&mut self, name: &str) {
        match self.phase {
            Phase::Starting | Phase::Running => {
                let grace = self.cfg.service.shutdown_grace;
                tracing::warn!(
                    "{name}: stopping; in-flight files get {grace:?} to finish (again to kill now)"
                );
                crate::systemd::stopping();
                // A scan always stops short; the service only when work was known and undone: a
                // pass running, one due, or file-system changes waiting for it. An idle service
                // that is stopped has finished everything it was given, so its run is completed.
                self.interrupted = self.service.as_ref().is_none_or(|svc| {
                    self.pass_active || !self.pending.is_empty() || svc.changes_waiting()
                });
                self.scan_stop.store(true, Ordering::Relaxed);
                self.phase = Phase::Draining {
                    deadline: Instant::now() + grace,
                };
            }
            _ => {
                tracing::warn!("{name} again: killing workers now");
                self.interrupted = true;
                for s in self.slots.iter_mut().flatten() {
                    s.kill.get_or_insert((KillReason::Stop, Instant::now()));
                    s.sigkill_sent = true;
                    signal_group(s.pid, Signal::SIGKILL);
                }
                self.phase = Phase::Finishing;
                self.finish_deadline = Some(Instant::now() + Duration::from_secs(5));
            }
        }
    }

    fn on_scan(&mut self, msg: Option<ScanMsg>) {
        match msg {
            Some(ScanMsg::Batch(files)) => {
                self.summary.files_seen += files.len() as u64;
                self.db.send_check(self.policy.clone(), files);
            }
            Some(ScanMsg::Error(e)) => {
                self.summary.scan_errors += 1;
                tracing::warn!("scan: {e}");
            }
            Some(ScanMsg::Done) | None => {
                self.scan_done = true;
                tracing::debug!("scan finished: {} files", self.summary.files_seen);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Child {
                who: Who::DbWriter { gen },
                msg,
            } if gen == self.db.gen => self.on_db(msg),
            Event::Exited {
                who: Who::DbWriter { gen },
                status,
                last_stderr,
                ..
            } if gen == self.db.gen => self.on_db_exit(status, last_stderr),
            Event::Child {
                who: Who::Worker { slot, gen },
                msg,
            } => {
                if self.is_current(slot, gen) {
                    self.on_worker_msg(slot, msg);
                }
            }
            Event::Exited {
                who: Who::Worker { slot, gen },
                status,
                oom_message,
                last_stderr,
            } => {
                if self.is_current(slot, gen) {
                    self.on_worker_exit(slot, status, oom_message, last_stderr);
                }
            }
            Event::Child { .. } | Event::Exited { .. } => {}
            Event::Control { command, reply } => {
                let answer = self.on_control(command);
                let _ = reply.send(answer);
            }
            Event::FsChanged => self.on_fs_changed(),
        }
    }

    fn on_db(&mut self, msg: ChildMsg) {
        let msg = match msg {
            ChildMsg::Db(m) => m,
            ChildMsg::Worker(_) => return,
            ChildMsg::BadChannel(e) => {
                tracing::error!("DB writer sent a bad frame ({e}); restarting it");
                signal_group(self.db.pid, Signal::SIGKILL);
                return;
            }
        };
        match msg {
            FromDb::Hello(h) => {
                if h.protocol != PROTOCOL_VERSION || h.role != Role::DbWriter {
                    self.fatal = Some(format!(
                        "DB writer speaks protocol {} (expected {PROTOCOL_VERSION})",
                        h.protocol
                    ));
                    self.phase = Phase::Done;
                    return;
                }
                if self.db.restarts > 0 {
                    tracing::info!(
                        "DB writer {} is up; re-sending {} unacknowledged results",
                        h.pid,
                        self.db.unacked.len()
                    );
                }
                self.db.on_hello((self.run_id != 0).then_some(self.run_id));
            }
            FromDb::RunStarted { run_id } => {
                self.db.answered(|m| matches!(m, ToDb::StartRun { .. }));
                self.run_id = run_id;
                if self.phase == Phase::Starting {
                    tracing::info!("run {run_id} started");
                    self.phase = Phase::Running;
                    self.on_started();
                }
            }
            FromDb::CheckResult { query, verdicts } => {
                let Some((q, files)) = self.db.check.take_if(|(q, _)| *q == query) else {
                    return;
                };
                self.db
                    .answered(|m| matches!(m, ToDb::Check { query: x, .. } if *x == q));
                for (key, v) in files.into_iter().zip(
                    verdicts
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(Verdict::Todo)),
                ) {
                    match v {
                        Verdict::Todo => self.ready.push_back(FileJob::new(key)),
                        Verdict::Done => self.summary.skipped_unchanged += 1,
                        Verdict::Busy => {
                            self.summary.files_seen -= 1;
                            self.summary.busy_elsewhere += 1;
                        }
                    }
                }
            }
            FromDb::Claimed {
                query,
                files,
                still_leased,
            } => {
                if self.db.claim != Some(query) {
                    return;
                }
                self.db.claim = None;
                self.db
                    .answered(|m| matches!(m, ToDb::ClaimExpired { query: x, .. } if *x == query));
                if files.is_empty() {
                    if still_leased == 0 {
                        self.claims_done = true;
                    } else {
                        // Other live runs hold files this run saw busy: ask again within a second
                        // (sooner with a short lease), so this run ends soon after they do.
                        self.claim_not_before = Instant::now()
                            + (self.cfg.database.lease_ttl / 4)
                                .clamp(Duration::from_millis(200), CLAIM_POLL_MAX);
                    }
                }
                for key in files {
                    self.summary.files_seen += 1;
                    self.ready.push_back(FileJob::new(key));
                }
            }
            FromDb::Acked { seqs } => self.db.ack(&seqs),
            FromDb::StoreFailed { seq, message } => {
                tracing::warn!("result {seq} stored as failed (store): {message}");
            }
            // Not asked for: this supervisor leases with `Check`.
            FromDb::Leased { .. } => {}
            FromDb::Flushed { token } => self
                .db
                .answered(|m| matches!(m, ToDb::Flush { token: t } if *t == token)),
            FromDb::RunEnded { run_id } => {
                self.db
                    .answered(|m| matches!(m, ToDb::EndRun { run_id: r, .. } if *r == run_id));
            }
            FromDb::Error { message, retrying } => {
                if retrying {
                    tracing::warn!(
                        "database: {message} (retrying; {} results wait)",
                        self.db.unacked.len()
                    );
                } else {
                    tracing::error!("database: {message}");
                }
            }
        }
    }

    fn on_db_exit(&mut self, status: std::process::ExitStatus, last: String) {
        let clean = status.success()
            && self.phase == Phase::Finishing
            && self.end_sent
            && self.db.control.is_empty();
        self.db.on_exit();
        if clean {
            self.phase = Phase::Done;
            return;
        }
        tracing::warn!(
            "DB writer {} ended ({}){}",
            self.db.pid,
            describe(status),
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        );
        if self.db.failed_starts >= 5 {
            self.fatal = Some(format!(
                "the DB writer died {} times before it was ready: {last}",
                self.db.failed_starts
            ));
            self.kill_all_now();
            self.phase = Phase::Done;
        }
    }

    fn on_worker_msg(&mut self, slot_ix: usize, msg: ChildMsg) {
        let Some(slot) = self.slots[slot_ix].as_mut() else {
            return;
        };
        match msg {
            ChildMsg::Worker(FromWorker::Hello(h)) => {
                if h.protocol != PROTOCOL_VERSION || h.role != Role::Worker {
                    tracing::error!(
                        "worker {} speaks protocol {} (expected {PROTOCOL_VERSION})",
                        h.pid,
                        h.protocol
                    );
                    self.kill(slot_ix, KillReason::Protocol);
                } else if matches!(slot.state, SlotState::Starting) {
                    slot.state = SlotState::Idle;
                }
            }
            ChildMsg::Worker(FromWorker::Done {
                job_id,
                outcome,
                stats,
            }) => {
                let matches =
                    matches!(&slot.state, SlotState::Busy { job_id: j, .. } if *j == job_id);
                if !matches {
                    tracing::error!("worker {} answered job {job_id} it was not given", slot.pid);
                    self.kill(slot_ix, KillReason::Protocol);
                    return;
                }
                let SlotState::Busy { job, started, .. } =
                    std::mem::replace(&mut slot.state, SlotState::Idle)
                else {
                    return;
                };
                slot.files_done += 1;
                let pid = slot.pid;
                self.on_result(job, outcome, stats, pid, started);
            }
            ChildMsg::Db(_) => {}
            ChildMsg::BadChannel(e) => {
                tracing::error!("worker {} broke the protocol: {e}", slot.pid);
                self.kill(slot_ix, KillReason::Protocol);
            }
        }
    }

    fn on_result(
        &mut self,
        mut job: FileJob,
        outcome: Outcome,
        stats: FileStats,
        pid: u32,
        started: Instant,
    ) {
        self.summary.audio_s += stats.audio_s;
        self.analysis_time.observe(started.elapsed().as_secs_f64());
        self.summary.worker_peak_rss_bytes =
            self.summary.worker_peak_rss_bytes.max(stats.peak_rss_bytes);
        match outcome {
            Outcome::Analysed(a) => {
                if a.partial {
                    self.summary.partial += 1;
                }
                self.summary.analyzed += 1;
                self.store(job, RecordOutcome::Analysed(a), stats);
            }
            Outcome::Failed(f) => {
                job.history.push(Attempt {
                    attempt: job.history.len() as u32 + 1,
                    failure: f,
                    worker_pid: pid,
                    peak_rss_bytes: stats.peak_rss_bytes,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    at_ms: now_ms(),
                });
                self.after_failure(job, stats);
            }
        }
    }

    /// Applies the retry policy to a file whose newest attempt failed.
    fn after_failure(&mut self, mut job: FileJob, stats: FileStats) {
        let last = job
            .history
            .last()
            .expect("a failure was just recorded")
            .failure
            .clone();
        match decide(
            &job.history,
            self.cfg.workers.max_attempts,
            self.cfg.workers.retry_backoff,
        ) {
            Decision::Retry { delay, alone } => {
                tracing::info!(
                    "retrying {:?} in {delay:?}{} after {} ({})",
                    job.key.path,
                    if alone { " alone" } else { "" },
                    last.class.as_str(),
                    last.message
                );
                job.alone |= alone;
                job.not_before = Instant::now() + delay;
                self.retries.push(job);
            }
            Decision::Fail => {
                self.summary.add_failed(last.class);
                self.store(job, RecordOutcome::Failed(last), stats);
            }
            Decision::Quarantine => {
                tracing::warn!(
                    "quarantined {:?} after {} attempts: {}",
                    job.key.path,
                    job.history.len(),
                    last.message
                );
                self.summary.quarantined += 1;
                self.store(job, RecordOutcome::Quarantined(last), stats);
            }
        }
    }

    fn store(&mut self, job: FileJob, outcome: RecordOutcome, stats: FileStats) {
        let record = Record {
            run_id: self.run_id,
            key: job.key,
            outcome,
            stats,
            attempts: job.history,
        };
        self.db.send_acked(|seq| ToDb::Store {
            seq,
            record: Box::new(record),
        });
    }

    fn on_worker_exit(
        &mut self,
        slot_ix: usize,
        status: std::process::ExitStatus,
        oom_message: bool,
        last: String,
    ) {
        let Some(slot) = self.slots[slot_ix].take() else {
            return;
        };
        let kind = classify(status, slot.kill.map(|k| k.0), oom_message);
        self.summary.add_exit(kind);
        self.note_exit(slot_ix, kind, slot.files_done);
        let now = Instant::now();
        if matches!(
            kind,
            ExitKind::Oom | ExitKind::Timeout | ExitKind::Crash | ExitKind::Protocol
        ) {
            self.intensity.record_death(now);
        }
        let in_flight = match slot.state {
            SlotState::Busy { job, started, .. } => Some((job, started)),
            _ => None,
        };
        let mut message = exit_message(
            kind,
            slot.pid,
            status,
            self.cfg.workers.memory_limit,
            self.cfg.workers.job_timeout,
        );
        if !last.is_empty() && kind != ExitKind::Recycled && kind != ExitKind::Stopped {
            message.push_str(": ");
            message.push_str(&last);
        }
        match kind {
            ExitKind::Recycled | ExitKind::Stopped => tracing::debug!("{message}"),
            _ => tracing::warn!(
                "{message}{}",
                in_flight.as_ref().map_or(String::new(), |(j, _)| format!(
                    " while on {:?}",
                    j.key.path
                ))
            ),
        }
        if !matches!(kind, ExitKind::Recycled | ExitKind::Stopped) || in_flight.is_some() {
            let event = WorkerEvent {
                run_id: self.run_id,
                at_ms: now_ms(),
                worker_pid: slot.pid,
                exit: kind,
                path: in_flight.as_ref().map(|(j, _)| j.key.path.clone()),
                message: CleanText::new(&message),
                peak_rss_bytes: 0,
            };
            self.db.send_acked(|seq| ToDb::Event { seq, event });
        }
        if let Some((mut job, started)) = in_flight {
            job.history.push(Attempt {
                attempt: job.history.len() as u32 + 1,
                failure: Failure::new(kind.failure_class(), Stage::Worker, &message),
                worker_pid: slot.pid,
                peak_rss_bytes: 0,
                elapsed_ms: started.elapsed().as_millis() as u64,
                at_ms: now_ms(),
            });
            if self.interrupted && matches!(kind, ExitKind::Stopped | ExitKind::Killed) {
                self.summary.unfinished += 1;
            } else {
                self.after_failure(job, FileStats::default());
            }
        }
    }

    fn on_db_restart_due(&mut self) {
        if let Some(at) = self.db.restart_at {
            if !self.db.alive && Instant::now() >= at {
                self.db.restart_at = None;
                if let Err(e) = self.db.spawn(&self.events_tx) {
                    tracing::error!("cannot restart the DB writer: {e}");
                    self.db.on_exit();
                }
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.intensity.tick(now);
        self.on_db_restart_due();
        self.service_tick(now);
        // Deadlines and the termination ladder.
        for ix in 0..self.slots.len() {
            let Some(s) = self.slots[ix].as_mut() else {
                continue;
            };
            if let Some((_, since)) = s.kill {
                if !s.sigkill_sent && now.duration_since(since) >= self.cfg.workers.kill_grace {
                    s.sigkill_sent = true;
                    signal_group(s.pid, Signal::SIGKILL);
                }
            } else if let SlotState::Busy { deadline, .. } = s.state {
                if now >= deadline {
                    self.kill(ix, KillReason::Timeout);
                }
            }
        }
        if now.duration_since(self.last_pressure_poll) >= self.cfg.memory.poll_interval {
            self.last_pressure_poll = now;
            self.worker_rss = self
                .slots
                .iter()
                .flatten()
                .map(|s| procmem::rss_bytes(s.pid))
                .sum();
            if let Action::KillLargest = self.pressure.poll(self.target_workers(), now) {
                self.kill_largest();
            }
            self.progress.update(&Snapshot {
                done: self.summary.settled(),
                found: self.summary.files_seen,
                scan_finished: self.scan_done,
                workers_alive: self.alive(),
                busy: self.busy(),
                memory_share: self.pressure.used_share,
                workers_rss: self.worker_rss,
            });
        }
        if let Phase::Draining { deadline } = self.phase {
            if now >= deadline {
                tracing::warn!("shutdown grace over: stopping {} busy workers", self.busy());
                for ix in 0..self.slots.len() {
                    if self.slots[ix].is_some() {
                        self.kill(ix, KillReason::Stop);
                    }
                }
                self.phase = Phase::Finishing;
            }
        }
        if self.phase == Phase::Finishing && self.finish_deadline.is_some_and(|d| now >= d) {
            tracing::error!(
                "DB writer did not finish in time; {} results not confirmed",
                self.db.unacked.len()
            );
            signal_group(self.db.pid, Signal::SIGKILL);
            self.phase = Phase::Done;
        }
    }

    /// Kills the busy worker with the largest RSS when memory is critical (only if others are
    /// busy too, so the run always makes progress).
    fn kill_largest(&mut self) {
        if self.busy() < 2 {
            return;
        }
        let largest = (0..self.slots.len())
            .filter_map(|ix| {
                self.slots[ix]
                    .as_ref()
                    .filter(|s| s.is_busy() && s.kill.is_none())
                    .map(|s| (ix, procmem::rss_bytes(s.pid)))
            })
            .max_by_key(|(_, rss)| *rss);
        if let Some((ix, rss)) = largest {
            tracing::warn!(
                "memory critical: killing the largest worker ({}); its file is requeued",
                crate::units::format_size(rss)
            );
            self.kill(ix, KillReason::Killed);
        }
    }

    /// Starts the termination ladder for a worker: TERM now, KILL after the grace.
    fn kill(&mut self, ix: usize, reason: KillReason) {
        if let Some(s) = self.slots[ix].as_mut() {
            if s.kill.is_none() {
                s.kill = Some((reason, Instant::now()));
                signal_group(s.pid, Signal::SIGTERM);
            }
        }
    }

    fn kill_all_now(&mut self) {
        for s in self.slots.iter_mut().flatten() {
            s.kill.get_or_insert((KillReason::Stop, Instant::now()));
            signal_group(s.pid, Signal::SIGKILL);
        }
    }

    // ------------------------------------------------------------------ progress of the run

    /// After every event: spawn, dispatch, and move between phases.
    fn step(&mut self) {
        match self.phase {
            Phase::Running => {
                self.spawn_workers();
                self.stop_idle_workers();
                self.dispatch();
                self.maybe_claim();
                if self.work_done() {
                    if self.service.is_some() {
                        self.pass_finished();
                    } else {
                        self.stop_idle_workers();
                        self.phase = Phase::Finishing;
                    }
                }
            }
            Phase::Draining { .. } => {
                self.stop_idle_workers();
                if self.busy() == 0 {
                    self.phase = Phase::Finishing;
                }
            }
            _ => {}
        }
        if self.phase == Phase::Finishing {
            self.stop_idle_workers();
            if self.alive() == 0 && !self.end_sent {
                self.end_sent = true;
                let status = if self.interrupted {
                    RunStatus::Interrupted
                } else {
                    RunStatus::Completed
                };
                let counts = RunCounts {
                    files_seen: self.summary.files_seen,
                    analyzed: self.summary.analyzed,
                    failed: self.summary.failed_total(),
                    quarantined: self.summary.quarantined,
                    skipped_unchanged: self.summary.skipped_unchanged,
                };
                self.db.send_control(ToDb::EndRun {
                    run_id: self.run_id,
                    status,
                    counts,
                });
                self.flush_token += 1;
                self.db.send_control(ToDb::Flush {
                    token: self.flush_token,
                });
                self.finish_deadline = Some(Instant::now() + DB_FLUSH_LIMIT);
            }
            if self.end_sent
                && self.db.control.is_empty()
                && self.db.unacked.is_empty()
                && self.db.ready
            {
                self.db.close();
            }
            if self.end_sent && !self.db.alive && self.db.restart_at.is_none() {
                self.phase = Phase::Done;
            }
        }
    }

    fn work_done(&self) -> bool {
        self.pass_active
            && self.scan_done
            && self.claims_done
            && self.db.check.is_none()
            && self.ready.is_empty()
            && self.retries.is_empty()
            && self.busy() == 0
    }

    fn maybe_claim(&mut self) {
        let idle = self.scan_done
            && self.db.check.is_none()
            && self.ready.is_empty()
            && self.retries.is_empty()
            && self.busy() == 0;
        if !idle || self.claims_done || self.db.claim.is_some() || !self.db.ready {
            return;
        }
        if self.summary.busy_elsewhere == 0 {
            self.claims_done = true;
            return;
        }
        if Instant::now() >= self.claim_not_before {
            self.db
                .send_claim(self.policy.clone(), self.cfg.queue_depth() as u32);
        }
    }

    fn spawn_workers(&mut self) {
        let now = Instant::now();
        let wanted = self.pressure.limit.min(self.target_workers());
        while self.alive() < wanted && self.intensity.may_spawn(now) {
            let Some(ix) = (0..self.target).find(|&i| self.slots[i].is_none()) else {
                break;
            };
            if let Err(e) = self.spawn_worker(ix) {
                tracing::error!("cannot spawn a worker: {e}");
                self.intensity.record_death(now);
                break;
            }
        }
    }

    fn spawn_worker(&mut self, ix: usize) -> std::io::Result<()> {
        let recycle = self.cfg.workers.recycle_after as f64 * rand::random_range(0.9..=1.1);
        let recycle_after = recycle.round().max(1.0) as u32;
        let mut args = self.spawn.worker_args.clone();
        args.push("--recycle-after".into());
        args.push(recycle_after.to_string().into());
        let spec = ChildSpec::worker(
            self.spawn.exe.clone(),
            args,
            self.spawn.worker_env.clone(),
            self.cfg.workers.memory_limit,
            self.spawn.gpu,
        );
        let spawned = spawn_child(&spec)?;
        let pid = spawned.pid;
        let gen = self.next_gen;
        self.next_gen += 1;
        let tx = attach::<_, ToWorker>(
            spawned,
            Who::Worker { slot: ix, gen },
            self.events_tx.clone(),
            ChildMsg::Worker,
        )?;
        tracing::debug!("worker {pid} started in slot {ix}");
        self.note_spawn(ix);
        self.slots[ix] = Some(Slot {
            gen,
            pid,
            tx,
            state: SlotState::Starting,
            files_done: 0,
            recycle_after: recycle_after.into(),
            kill: None,
            sigkill_sent: false,
        });
        Ok(())
    }

    /// Idle workers beyond what is allowed (or all, when no work is left) are asked to exit.
    fn stop_idle_workers(&mut self) {
        let allowed = match self.phase {
            Phase::Running => self.target_workers(),
            _ => 0,
        };
        let mut alive = self.alive();
        // Highest slots first, so a shrunk pool keeps its low slot numbers.
        for s in self.slots.iter_mut().rev().flatten() {
            if alive <= allowed {
                break;
            }
            if s.recycling() && s.kill.is_none() {
                alive -= 1; // it exits on its own; a frame now would reset its channel
                continue;
            }
            if matches!(s.state, SlotState::Idle | SlotState::Starting) && s.kill.is_none() {
                s.kill = Some((KillReason::Stop, Instant::now()));
                let _ = s.tx.send(ToWorker::Shutdown);
                alive -= 1;
            }
        }
    }

    fn dispatch(&mut self) {
        if self.db.unacked.len() >= self.cfg.database.max_unacked || self.paused() {
            return;
        }
        let now = Instant::now();
        let limit = self.pressure.limit.min(self.target_workers());
        loop {
            let busy = self.busy();
            if busy >= limit
                || self
                    .slots
                    .iter()
                    .flatten()
                    .any(|s| matches!(&s.state, SlotState::Busy { job, .. } if job.alone))
            {
                return;
            }
            let due = self
                .retries
                .iter()
                .enumerate()
                .filter(|(_, j)| j.not_before <= now)
                .min_by_key(|(_, j)| j.not_before)
                .map(|(i, _)| i);
            let Some(ix) = self
                .slots
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.is_idle()))
            else {
                return;
            };
            let job = match due {
                Some(i) if self.retries[i].alone && busy > 0 => return,
                Some(i) => self.retries.swap_remove(i),
                None => match self.ready.pop_front() {
                    Some(j) => j,
                    None => return,
                },
            };
            self.send_job(ix, job, now);
        }
    }

    fn send_job(&mut self, ix: usize, job: FileJob, now: Instant) {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let deadline = now + self.cfg.workers.job_timeout;
        let slot = self.slots[ix]
            .as_mut()
            .expect("dispatch picked a live slot");
        let msg = ToWorker::Job(Job {
            id,
            path: job.key.path.clone(),
            attempt: job.history.len() as u32 + 1,
        });
        tracing::debug!(worker = slot.pid, job = id, "dispatch {:?}", job.key.path);
        let _ = slot.tx.send(msg);
        slot.state = SlotState::Busy {
            job,
            job_id: id,
            started: now,
            deadline,
        };
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // No orphan on any path: children also have a parent-death signal.
        for s in self.slots.iter().flatten() {
            signal_group(s.pid, Signal::SIGKILL);
        }
    }
}
