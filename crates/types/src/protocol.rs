//! Request/response enums, one per direction and channel, and the protocol version that the first
//! frame of every child process carries.

use crate::{
    Attempt, CleanText, ExitKind, Failure, FileKey, FileStats, Job, PathBytes, TrackAnalysis,
};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below. A child that reports another version
/// is refused.
pub const PROTOCOL_VERSION: u32 = 4;

/// Which hidden subcommand a child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Worker,
    DbWriter,
    /// The HTTP API server of `serve`.
    Api,
}

/// First frame a child sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub pid: u32,
    pub role: Role,
}

impl Hello {
    pub fn new(role: Role) -> Self {
        Hello {
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
            role,
        }
    }
}

// ---------------------------------------------------------------- supervisor ↔ worker

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    Job(Job),
    /// Finish nothing more; exit 0.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Analyzed(Box<TrackAnalysis>),
    Failed(Failure),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    Hello(Hello),
    Done {
        job_id: u64,
        outcome: Outcome,
        stats: FileStats,
        /// The worker exits right after this reply (its recycle count is reached, or a model
        /// failed and the retry needs a fresh runtime): it must be sent nothing more.
        last: bool,
    },
}

// ---------------------------------------------------------------- supervisor ↔ DB writer

/// Terminal state of a file, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RecordOutcome {
    Analyzed(Box<TrackAnalysis>),
    /// A classified failure that is final for this version of the file (e.g. corrupt).
    Failed(Failure),
    /// Poison: every attempt killed its worker or timed out; `Record::attempts` holds the causes.
    Quarantined(Failure),
}

impl RecordOutcome {
    pub fn status(&self) -> &'static str {
        match self {
            RecordOutcome::Analyzed(_) => "analyzed",
            RecordOutcome::Failed(_) => "failed",
            RecordOutcome::Quarantined(_) => "quarantined",
        }
    }
}

/// One file's terminal result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub run_id: i64,
    pub key: FileKey,
    pub outcome: RecordOutcome,
    pub stats: FileStats,
    /// Every attempt that did not produce a result (empty for a first-time success).
    pub attempts: Vec<Attempt>,
}

impl Record {
    /// True when `ToDb::Store { seq, record }` carrying this record fits in one frame
    /// ([`crate::frame::MAX_FRAME`]) whatever its `seq`. A worker's reply fits a frame, but the
    /// record adds the path and the attempt history, so its re-encoding can exceed the limit;
    /// such a message would break the DB writer's channel (the writer would be restarted and sent
    /// it again, forever). The supervisor checks this before queueing a record and stores the
    /// file as a `protocol` failure instead. Costs one encoding pass, no allocation.
    pub fn fits_frame(&self) -> bool {
        // `Store` is variant 4 (one byte of tag) and a u64 takes at most 10 bytes as a varint.
        const STORE_OVERHEAD: usize = 1 + 10;
        crate::frame::encoded_len(self)
            .is_ok_and(|len| len.saturating_add(STORE_OVERHEAD) <= crate::frame::MAX_FRAME)
    }
}

/// A worker death or other notable event, kept in the `events` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerEvent {
    pub run_id: i64,
    pub at_ms: i64,
    pub worker_pid: u32,
    pub exit: ExitKind,
    pub path: Option<PathBytes>,
    pub message: CleanText,
    pub peak_rss_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    Completed,
    Interrupted,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCounts {
    pub files_seen: u64,
    pub analyzed: u64,
    pub failed: u64,
    pub quarantined: u64,
    pub skipped_unchanged: u64,
}

/// What the DB writer should consider "done" when answering a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckPolicy {
    /// Re-analyse files stored as failed or quarantined.
    pub retry_failed: bool,
    pub analyzer_version: u32,
    /// The models this run's workers run (empty: DSP-only). A file analysed without one of them
    /// (say, while the runtime was missing) is analysed again; a DSP-only run re-analyses nothing
    /// that has model results.
    pub models: Vec<CleanText>,
}

/// The DB writer's answer for one file of a `Check` or a `Lease`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Needs analysis. After `Lease` (or `Check` with `lease: true`) it is now leased to this run;
    /// after `Check` with `lease: false` no other live run holds it, but nothing was leased.
    Todo,
    /// A stored row matches path, size, mtime and analyser version (or a failure that policy keeps).
    Done,
    /// Another live run holds a lease on it.
    Busy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToDb {
    /// Opens a run; answered by `RunStarted`.
    StartRun {
        host: CleanText,
        pid: u32,
        roots: Vec<CleanText>,
    },
    /// Re-opens a run this supervisor already started, after the DB writer was restarted, so that
    /// its leases stay its own; answered by `RunStarted` with the same id.
    ResumeRun { run_id: i64 },
    /// "Already analysed?" for a batch; answered by `CheckResult` with one [`Verdict`] per file.
    /// With `lease: false` nothing is leased (a host checks a scanner batch, then leases each file
    /// with `Lease` when it is about to dispatch it); with `lease: true` the `Todo` files are
    /// leased to the current run at once.
    Check {
        query: u64,
        policy: CheckPolicy,
        files: Vec<FileKey>,
        lease: bool,
    },
    /// Leases these files (a handful, about to be dispatched) to the current run; answered by
    /// `Leased` with one [`Verdict`] per file: `Todo` (leased now: dispatch it), `Done` (stored
    /// meanwhile, by this or another run: skip it) or `Busy` (another live run holds it: leave it;
    /// `ClaimExpired` takes it over if that run dies). A lease this run already holds (taken
    /// before, or claimed) stays its own: `Todo`.
    Lease {
        query: u64,
        policy: CheckPolicy,
        files: Vec<FileKey>,
    },
    /// Takes over files whose lease expired (their run died) and that are not done; answered by
    /// `Claimed`.
    ClaimExpired {
        query: u64,
        policy: CheckPolicy,
        limit: u32,
    },
    /// After a completed pass over `roots`: commit what is pending, then mark the stored tracks
    /// under them whose files are gone as missing; answered by `Swept`.
    SweepMissing { query: u64, roots: Vec<PathBytes> },
    /// A terminal result; acknowledged after commit.
    Store { seq: u64, record: Box<Record> },
    /// A worker event; acknowledged after commit.
    Event { seq: u64, event: WorkerEvent },
    /// Commit everything pending now; answered by `Flushed`.
    Flush { token: u64 },
    /// Closes the run; answered by `RunEnded`.
    EndRun {
        run_id: i64,
        status: RunStatus,
        counts: RunCounts,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromDb {
    Hello(Hello),
    RunStarted {
        run_id: i64,
    },
    CheckResult {
        query: u64,
        verdicts: Vec<Verdict>,
    },
    /// The answer to `Lease`: one verdict per file, in order.
    Leased {
        query: u64,
        verdicts: Vec<Verdict>,
    },
    /// Files now leased to this run, and how many files other live runs still hold.
    Claimed {
        query: u64,
        files: Vec<FileKey>,
        still_leased: u64,
    },
    /// The answer to `SweepMissing`: tracks newly marked missing, and how many are marked in all.
    Swept {
        query: u64,
        marked: u64,
        missing: u64,
    },
    /// Sequence numbers of `Store` and `Event` messages now committed.
    Acked {
        seqs: Vec<u64>,
    },
    /// The database refused the record of `Store` `seq` for good (a constraint, a value out of
    /// range, a program limit): the file is stored as failed with class and stage `store` and
    /// `message` (the database's error) instead, and the rest of its batch is committed as sent.
    /// Sent before the `Acked` that carries `seq`: that file counts as failed (`store`), not as
    /// what its record said.
    StoreFailed {
        seq: u64,
        message: CleanText,
    },
    Flushed {
        token: u64,
    },
    RunEnded {
        run_id: i64,
    },
    /// The database could not be used; `retrying` says whether the writer keeps trying.
    Error {
        message: CleanText,
        retrying: bool,
    },
}

// ---------------------------------------------------------------- operator ↔ service (control socket)

/// One request on the control socket; the service answers with one [`ControlResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Must equal [`PROTOCOL_VERSION`]; otherwise the service answers with an error.
    pub protocol: u32,
    pub command: ControlCommand,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlCommand {
    Status,
    /// Sets the worker count until the next reload (0 means one per CPU).
    Workers {
        count: u32,
    },
    /// Sends `signal` to the worker in slot `worker`; its file is requeued, not held against it.
    Kill {
        worker: u32,
        signal: i32,
    },
    /// No new files are started; in-flight files finish.
    Drain,
    Resume,
    /// Re-analyse these paths (files or directories) even if stored as failed or quarantined.
    Retry {
        paths: Vec<PathBytes>,
    },
    /// Re-analyse every file stored as failed or quarantined.
    RetryAllFailed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    Status(Box<ServiceStatus>),
    /// The command was applied; the text says what happened.
    Done(String),
    /// The command was refused; the text says why.
    Refused(String),
}

/// A snapshot of the running service, as `trackmill status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub pid: u32,
    pub run_id: i64,
    /// `starting`, `scanning`, `idle`, `draining` (operator) or `stopping` (signal).
    pub state: String,
    pub uptime_s: f64,
    /// Scan passes started so far (start, interval, file-system changes, retries).
    pub passes: u64,
    pub pass_active: bool,
    /// Another pass is due (changes, timer, retry) and starts when the current one is done (and
    /// not while drained).
    pub pass_pending: bool,
    pub target_workers: u32,
    pub workers: Vec<WorkerStatus>,
    /// Checked files waiting for a worker.
    pub queue_ready: u64,
    /// Files waiting for a retry.
    pub queue_retries: u64,
    pub db_writer: DbWriterStatus,
    pub totals: Totals,
    pub memory: MemoryStatus,
    /// More unplanned worker deaths than `workers.restart_intensity` within the window.
    pub degraded: bool,
    /// Time from dispatch to a worker's answer, per file answered.
    pub analysis_seconds: Histogram,
    pub api: ApiStatus,
}

/// A histogram with fixed upper bounds; `counts` has one more entry than `bounds` (above the last).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let ix = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(ix) {
            *c += 1;
        }
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The slot number (what `trackmill kill` takes).
    pub id: u32,
    /// 0 while the slot is empty (between a death and its replacement).
    pub pid: u32,
    /// `empty`, `starting`, `idle`, `busy`, `stopping`.
    pub state: String,
    pub file: Option<CleanText>,
    pub busy_s: f64,
    pub rss_bytes: u64,
    /// Files finished by the processes of this slot.
    pub files_done: u64,
    /// Processes this slot has had after its first.
    pub restarts: u64,
    /// How the slot's previous process ended (`killed`, `crash`, …), if one did.
    pub last_exit: Option<String>,
}

// ---------------------------------------------------------------- supervisor ↔ API server

/// From the supervisor to the API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToApi {
    /// The Prometheus text the API serves at `/metrics` from now on. The next one is sent only
    /// after [`FromApi::MetricsTaken`], so at most one waits in the channel.
    Metrics { text: String },
}

/// From the API server to the supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromApi {
    Hello(Hello),
    /// The last [`ToApi::Metrics`] is what `/metrics` now serves.
    MetricsTaken,
}

/// The API server's process, in the service's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiStatus {
    /// The listening address (empty when `api.addr` is off).
    pub addr: String,
    /// 0 while no server runs.
    pub pid: u32,
    pub ready: bool,
    /// Restarts after its first start.
    pub restarts: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DbWriterStatus {
    pub pid: u32,
    pub ready: bool,
    pub unacked: u64,
    pub restarts: u64,
}

/// Counts since the service started; `failed` and `worker_exits` as (class, count) pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub files_seen: u64,
    pub analyzed: u64,
    pub skipped_unchanged: u64,
    pub failed: Vec<(String, u64)>,
    pub quarantined: u64,
    /// Stored tracks this service's passes found gone (files deleted or moved away).
    pub missing: u64,
    /// Tracks marked missing in the database after the last pass (`trackmill prune` deletes
    /// them).
    pub missing_in_db: u64,
    pub worker_exits: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStatus {
    /// `normal`, `high` or `critical`.
    pub level: String,
    pub used_share: f64,
    /// Busy workers allowed under the current pressure.
    pub busy_limit: u32,
    pub workers_rss_bytes: u64,
}

#[cfg(test)]
mod control_tests {
    use super::*;
    use crate::frame::{encode, read_frame, MAX_FRAME};

    #[test]
    fn control_messages_roundtrip() {
        let req = ControlRequest {
            protocol: PROTOCOL_VERSION,
            command: ControlCommand::Retry {
                paths: vec![PathBytes(b"/music/bad\xff.mp3".to_vec())],
            },
        };
        let back: ControlRequest = read_frame(&mut &encode(&req).unwrap()[..], 1024).unwrap();
        assert_eq!(back, req);
        let mut status = ServiceStatus {
            state: "scanning".into(),
            workers: vec![WorkerStatus {
                id: 3,
                pid: 42,
                state: "busy".into(),
                file: Some(CleanText::new("/music/a.flac")),
                busy_s: 1.5,
                last_exit: Some("killed".into()),
                ..WorkerStatus::default()
            }],
            analysis_seconds: Histogram::new(&[0.5, 1.0]),
            ..ServiceStatus::default()
        };
        status.totals.failed.push(("corrupt".into(), 2));
        status.analysis_seconds.observe(0.7);
        let resp = ControlResponse::Status(Box::new(status));
        let back: ControlResponse =
            read_frame(&mut &encode(&resp).unwrap()[..], MAX_FRAME).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn garbage_requests_are_errors() {
        for bytes in [
            &[1u8, 0, 0, 0, 0xff][..],
            &[3, 0, 0, 0, 1, 9, 9][..],
            &[][..],
        ] {
            assert!(read_frame::<_, ControlRequest>(&mut &bytes[..], 1024).is_err());
        }
    }
}
