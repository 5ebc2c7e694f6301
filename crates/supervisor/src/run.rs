//! The supervisor's event loop, for one scan or for the long-running service: every signal, child
//! message, child exit, timer tick, scanner batch and control request becomes an event handled
//! here. The loop owns the job state (phases, queues, retries, the summary) and decides; the
//! worker processes belong to the [`Pool`], the DB writer's channel to the [`DbClient`]. A scan
//! finishes when its one pass is done; the service goes idle instead and starts the next pass on
//! a timer, a file-system change or a request.

mod db;
mod ops;
mod passes;
mod reload;
mod results;
mod status;

use crate::config::Config;
use crate::dbclient::DbClient;
use crate::event::Event;
use crate::pool::{FileJob, KillReason, OsProcesses, Pool, PoolSettings, Reply};
use crate::pressure::{Action, Pressure};
use crate::progress::{Progress, Snapshot};
use crate::scanner::{self, ScanMsg};
use crate::spawn::ChildSpec;
use crate::summary::Summary;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use trackmill_types::procmem;
use trackmill_types::{
    CheckPolicy, CleanText, PathBytes, RunCounts, RunStatus, ToDb, ANALYZER_VERSION,
};

/// How to start the children: the same binary with its hidden subcommands.
#[derive(Clone, Debug)]
pub struct SpawnSpec {
    pub exe: PathBuf,
    /// Arguments of the worker subcommand; the supervisor appends `--recycle-after N`.
    pub worker_args: Vec<OsString>,
    pub worker_env: Vec<(OsString, OsString)>,
    pub db_args: Vec<OsString>,
    /// Environment of the DB writer; its database URL is the `spawn::SECRET_ENV` entry, which
    /// travels through a pipe on fd 4, never on a command line or in the environment.
    pub db_env: Vec<(OsString, OsString)>,
    /// Arguments of the API server subcommand (`serve` with `api.addr`); it gets the database
    /// URL like the DB writer, through the pipe of `db_env`.
    pub api_args: Vec<OsString>,
    /// GPU workers are capped with RLIMIT_DATA instead of RLIMIT_AS.
    pub gpu: bool,
    /// The models `worker_args` load (empty: DSP-only). Stored files analysed without one of
    /// them are analysed again.
    pub models: Vec<String>,
    /// Lease each file only when it is about to be dispatched (a database several hosts share:
    /// PostgreSQL), instead of a whole checked batch at once (the embedded SQLite file, where a
    /// lease round trip per few files would cost more than the files themselves).
    pub lease_on_dispatch: bool,
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
    /// The bound API socket, if `api.addr` is set (see [`crate::api::bind`]).
    pub api: Option<std::net::TcpListener>,
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
    #[error("cannot start the API server: {0}")]
    Api(std::io::Error),
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
    policy: CheckPolicy,
    events_tx: mpsc::UnboundedSender<Event>,
    pool: Pool<OsProcesses>,
    /// Checked files that need analysis, not yet leased.
    ready: std::collections::VecDeque<FileJob>,
    /// Files leased to this run and waiting for a worker. Leasing on dispatch, at most the queue
    /// depth, so a host holds only what it is about to dispatch and other hosts share the rest;
    /// otherwise the checked batches (at most queue depth + two batches, like `ready`).
    leased: std::collections::VecDeque<FileJob>,
    retries: Vec<FileJob>,
    db: DbClient,
    /// `serve` with `api.addr`: the HTTP API server.
    api: Option<crate::api::ApiClient>,
    run_id: i64,
    phase: Phase,
    interrupted: bool,
    scan_done: bool,
    claims_done: bool,
    claim_not_before: Instant,
    scan_stop: Arc<AtomicBool>,
    /// Files the walks skipped as aliases (links to a file the pass already yielded).
    aliases: Arc<std::sync::atomic::AtomicU64>,
    summary: Summary,
    pressure: Pressure,
    last_pressure_poll: Instant,
    progress: Progress,
    started: Instant,
    finish_deadline: Option<Instant>,
    /// The final flush was asked for (once every worker is gone).
    flush_sent: bool,
    /// The run was closed in the database (once every result is committed).
    end_sent: bool,
    flush_token: u64,
    /// Why the run cannot go on (the DB writer cannot make progress or speaks another protocol).
    fatal: Option<String>,
    worker_rss: u64,
    roots: Vec<PathBuf>,
    /// A scan pass is walking, checking or analysing; the service is idle otherwise.
    pass_active: bool,
    /// The roots of the full pass under way: once it completes, the stored tracks under them
    /// whose files are gone are marked missing (a pass over changed paths sweeps nothing).
    sweep_due: Option<Vec<PathBuf>>,
    pending: passes::PassQueue,
    /// Only in `serve`.
    service: Option<passes::ServiceState>,
    /// See [`SpawnSpec::lease_on_dispatch`].
    lease_on_dispatch: bool,
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

impl Supervisor {
    fn new(cfg: Config, opts: &ScanOptions, events_tx: mpsc::UnboundedSender<Event>) -> Self {
        let now = Instant::now();
        let db_spec = ChildSpec {
            exe: opts.spawn.exe.clone(),
            args: opts.spawn.db_args.clone(),
            env: opts.spawn.db_env.clone(),
            address_space_limit: 0,
            data_limit: 0,
        };
        let procs = OsProcesses {
            exe: opts.spawn.exe.clone(),
            args: opts.spawn.worker_args.clone(),
            env: opts.spawn.worker_env.clone(),
            gpu: opts.spawn.gpu,
            events: events_tx.clone(),
        };
        let workers = cfg.worker_count();
        Supervisor {
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
            events_tx,
            pool: Pool::new(procs, workers, PoolSettings::new(&cfg), now),
            ready: Default::default(),
            leased: Default::default(),
            retries: Vec::new(),
            db: DbClient::new(db_spec),
            api: None,
            run_id: 0,
            phase: Phase::Starting,
            interrupted: false,
            scan_done: false,
            claims_done: false,
            claim_not_before: now,
            scan_stop: Arc::new(AtomicBool::new(false)),
            aliases: Arc::default(),
            summary: Summary::new(),
            pressure: Pressure::new(cfg.memory.high, cfg.memory.critical, workers),
            last_pressure_poll: now,
            progress: Progress::new(opts.progress),
            started: now,
            finish_deadline: None,
            flush_sent: false,
            end_sent: false,
            flush_token: 0,
            fatal: None,
            worker_rss: 0,
            roots: opts.roots.clone(),
            pass_active: false,
            sweep_due: None,
            pending: passes::PassQueue::first(opts.retry_failed),
            service: None,
            lease_on_dispatch: opts.spawn.lease_on_dispatch,
            analysis_time: trackmill_types::Histogram::new(&crate::metrics::ANALYSIS_BOUNDS),
            cfg,
        }
    }

    /// The summary of a run that has ended: `failed` when the DB writer could not go on (with
    /// its error), `interrupted` when it was stopped short or results were left unstored.
    fn into_summary(mut self) -> Summary {
        self.progress.finish();
        let mut s = std::mem::take(&mut self.summary);
        s.run_id = self.run_id;
        s.status = match (&self.fatal, self.interrupted || s.unstored > 0) {
            (Some(_), _) => "failed",
            (None, true) => "interrupted",
            (None, false) => "completed",
        }
        .into();
        s.error = self.fatal.take();
        s.aliases = self.aliases.load(Ordering::Relaxed);
        s.elapsed_s = self.started.elapsed().as_secs_f64();
        s.db_writer_restarts = self.db.restarts().saturating_sub(1);
        s.supervisor_peak_rss_bytes = procmem::peak_bytes();
        s
    }
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
    let mut sup = Supervisor::new(cfg, &opts, events_tx.clone());
    let mut sighup = None;
    let mut control_ino = None;
    if let Some(serve) = serve {
        crate::control::spawn_server(serve.control, events_tx.clone());
        if let Some(l) = serve.metrics {
            crate::metrics::spawn_server(l, events_tx.clone());
        }
        if let Some(l) = serve.api {
            let spec = ChildSpec {
                exe: opts.spawn.exe.clone(),
                args: opts.spawn.api_args.clone(),
                env: opts.spawn.db_env.clone(),
                address_space_limit: sup.cfg.api.memory_limit,
                data_limit: 0,
            };
            let mut api = crate::api::ApiClient::new(spec, l);
            api.spawn(&events_tx).map_err(RunError::Api)?;
            sup.api = Some(api);
        }
        control_ino = std::fs::metadata(&serve.control_path).ok().map(|m| {
            (
                serve.control_path.clone(),
                std::os::unix::fs::MetadataExt::ino(&m),
            )
        });
        sighup = Some(signal(SignalKind::hangup()).map_err(RunError::Signals)?);
        sup.service = Some(passes::ServiceState::new(
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
            scan_thread = Some(scanner::start(
                settings,
                tx,
                sup.scan_stop.clone(),
                sup.aliases.clone(),
            ));
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
    if let Some(api) = sup.api.as_mut() {
        api.stop();
    }
    sup.scan_stop.store(true, Ordering::Relaxed);
    drop(scan_rx);
    if let Some(h) = scan_thread {
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    if let Some((path, ino)) = control_ino {
        crate::control::remove_socket(&path, ino);
    }
    Ok(sup.into_summary())
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
    /// Files waiting for a worker: checked, leased, or waiting for their retry.
    fn queued(&self) -> usize {
        self.ready.len() + self.leased.len() + self.retries.len()
    }

    fn wants_scan_batch(&self) -> bool {
        self.phase == Phase::Running
            && !self.scan_done
            && !self.db.checking()
            && self.db.ready()
            // The next batch is checked while a batch's worth is still queued, so workers never
            // wait for a skip-check round trip; memory stays O(queue depth + batch). Failed files
            // waiting for their retry count against the queue: a library whose files all fail fast
            // must not pile up retries while the walk goes on.
            && self.queued() < self.cfg.queue_depth() + scanner::BATCH
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
                self.pool.kill_all_now();
                self.phase = Phase::Finishing;
                self.finish_deadline = Some(Instant::now() + Duration::from_secs(5));
            }
        }
    }

    fn on_scan(&mut self, msg: Option<ScanMsg>) {
        match msg {
            Some(ScanMsg::Batch(files)) => {
                self.summary.files_seen += files.len() as u64;
                let lease_now = !self.lease_on_dispatch;
                self.db.send_check(self.policy.clone(), files, lease_now);
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
            Event::Worker { slot, gen, msg } => {
                match self.pool.on_event(slot, gen, msg, Instant::now()) {
                    Reply::Nothing => {}
                    Reply::Finished(f) => self.on_result(f),
                    Reply::Exited(exit) => self.on_worker_exit(exit),
                }
            }
            Event::Db { gen, msg } if gen == self.db.gen() => self.on_db(msg),
            Event::Db { .. } => {}
            Event::Api { gen, msg } => {
                if let Some(api) = self.api.as_mut().filter(|a| a.gen() == gen) {
                    api.on_msg(msg, Instant::now());
                }
            }
            Event::Control { command, reply } => {
                let answer = self.on_control(command);
                let _ = reply.send(answer);
            }
            Event::FsChanged => self.on_fs_changed(),
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.db.restart_if_due(now, &self.events_tx);
        self.api_tick(now);
        self.service_tick(now);
        self.pool.tick(now);
        if now.duration_since(self.last_pressure_poll) >= self.cfg.memory.poll_interval {
            self.last_pressure_poll = now;
            self.worker_rss = self.pool.total_rss();
            if let Action::KillLargest = self.pressure.poll(self.pool.target(), now) {
                self.pool.kill_largest(now);
            }
            self.progress.update(&Snapshot {
                done: self.summary.settled(),
                found: self.summary.files_seen,
                scan_finished: self.scan_done,
                workers_alive: self.pool.alive(),
                busy: self.pool.busy(),
                memory_share: self.pressure.used_share(),
                workers_rss: self.worker_rss,
            });
        }
        if let Phase::Draining { deadline } = self.phase {
            if now >= deadline {
                tracing::warn!(
                    "shutdown grace over: stopping {} busy workers",
                    self.pool.busy()
                );
                self.pool.stop_all(KillReason::Stop, now);
                self.phase = Phase::Finishing;
            }
        }
        if self.phase == Phase::Finishing && self.finish_deadline.is_some_and(|d| now >= d) {
            self.summary.unstored = self.db.unacked() as u64;
            tracing::error!(
                "DB writer did not finish in time; {} results not stored (the next scan analyses \
                 those files again)",
                self.summary.unstored
            );
            self.db.kill();
            self.phase = Phase::Done;
        }
    }

    /// Restarts the API server when due and pushes it fresh metrics.
    fn api_tick(&mut self, now: Instant) {
        let Some(api) = self.api.as_mut() else {
            return;
        };
        api.restart_if_due(now, &self.events_tx);
        if api.push_due(now) {
            let text = crate::metrics::render(&self.status());
            if let Some(api) = self.api.as_mut() {
                api.push(text, now);
            }
        }
    }

    // ------------------------------------------------------------------ progress of the run

    /// After every event: spawn, dispatch, and move between phases.
    fn step(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Running => {
                // A failed start was logged and counted by the pool; the next step tries again.
                let _ = self.pool.spawn_missing(self.pressure.limit(), now);
                self.pool.shrink(self.pool.target(), now);
                self.maybe_lease();
                self.dispatch(now);
                self.maybe_claim();
                if self.work_done() {
                    if let Some(roots) = self.sweep_due.take() {
                        self.db
                            .send_sweep(roots.iter().map(|r| PathBytes::from_path(r)).collect());
                    } else if self.db.sweeping() {
                        // Wait for the sweep's answer before closing the pass.
                    } else if self.service.is_some() {
                        self.pass_finished();
                    } else {
                        self.pool.shrink(0, now);
                        self.phase = Phase::Finishing;
                    }
                }
            }
            Phase::Draining { .. } => {
                self.pool.shrink(0, now);
                if self.pool.busy() == 0 {
                    self.phase = Phase::Finishing;
                }
            }
            _ => {}
        }
        if self.phase == Phase::Finishing {
            self.pool.shrink(0, now);
            self.finish(now);
        }
    }

    /// Once every worker is gone: flush, and once every result is committed close the run with
    /// the committed counts and let the DB writer exit.
    fn finish(&mut self, now: Instant) {
        if self.pool.alive() > 0 {
            return;
        }
        if !self.flush_sent {
            self.flush_sent = true;
            self.flush_token += 1;
            self.db.send_control(ToDb::Flush {
                token: self.flush_token,
            });
            self.finish_deadline.get_or_insert(now + DB_FLUSH_LIMIT);
        }
        if !self.end_sent && self.db.unacked() == 0 {
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
        }
        if self.end_sent && self.db.settled() && self.db.ready() {
            self.db.close();
        }
        if self.end_sent && !self.db.alive() && !self.db.restart_pending() {
            self.phase = Phase::Done;
        }
    }

    /// Nothing is queued, checked, waiting for a retry, or in flight.
    fn queues_empty(&self) -> bool {
        self.scan_done
            && !self.db.checking()
            && !self.db.leasing()
            && self.queued() == 0
            && self.pool.busy() == 0
    }

    fn work_done(&self) -> bool {
        self.pass_active && self.claims_done && self.queues_empty()
    }

    fn maybe_claim(&mut self) {
        if !self.queues_empty() || self.claims_done || self.db.claiming() || !self.db.ready() {
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

    /// Leases the next checked files when fewer than the queue depth wait leased: a host leases
    /// a file when it is about to dispatch it, not when its scanner batch is checked.
    fn maybe_lease(&mut self) {
        let room = self.cfg.queue_depth().saturating_sub(self.leased.len());
        if room == 0 || self.ready.is_empty() || self.db.leasing() || !self.db.ready() {
            return;
        }
        let n = room.min(self.ready.len());
        let files = self.ready.drain(..n).map(|j| j.key).collect();
        self.db.send_lease(self.policy.clone(), files);
    }

    /// Hands due retries, then leased files, to idle workers while the busy limit allows.
    fn dispatch(&mut self, now: Instant) {
        if self.db.unacked() >= self.cfg.database.max_unacked || self.paused() {
            return;
        }
        let limit = self.pressure.limit().min(self.pool.target());
        loop {
            let busy = self.pool.busy();
            if busy >= limit || self.pool.alone_busy() {
                return;
            }
            let Some(ix) = self.pool.idle_slot() else {
                return;
            };
            let due = self
                .retries
                .iter()
                .enumerate()
                .filter(|(_, j)| j.not_before <= now)
                .min_by_key(|(_, j)| j.not_before)
                .map(|(i, _)| i);
            let job = match due {
                Some(i) if self.retries[i].alone && busy > 0 => return,
                Some(i) => self.retries.swap_remove(i),
                None => match self.leased.pop_front() {
                    Some(j) => j,
                    None => return,
                },
            };
            let path = job.key.path.clone();
            let (id, pid) = self.pool.send_job(ix, job, now);
            tracing::debug!(worker = pid, job = id, "dispatch {path:?}");
        }
    }
}
