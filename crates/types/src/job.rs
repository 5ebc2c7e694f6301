//! Jobs, failures and per-file statistics: what a worker is asked to do and what it reports.

use crate::{CleanText, PathBytes};
use serde::{Deserialize, Serialize};

/// One file to analyse. `id` is unique within a supervisor's lifetime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub path: PathBytes,
    /// 1-based attempt number for this file in this run.
    pub attempt: u32,
}

/// Identity of a file on disk as the checkpoint sees it: a file is "done" when a stored row has the
/// same path, size, mtime and analyser version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub path: PathBytes,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// Failure classes (the README's failure table): each decides what the supervisor does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FailureClass {
    /// Permanent: unsupported codec, garbage, truncated past recovery, unreadable. No retry.
    Corrupt,
    /// Allocation failure under the memory cap or a watchdog kill. Retried, then alone, then quarantined.
    Oom,
    /// No reply before the per-file deadline. Retried once, then quarantined.
    Timeout,
    /// SIGSEGV, SIGBUS, abort, panic, unexpected exit. Retried up to max attempts.
    Crash,
    /// An operator, memory pressure or another process killed the worker. Not held against the file.
    Killed,
    /// The worker broke the protocol (garbage frame, wrong version). Treated like a crash.
    Protocol,
    /// EAGAIN, NFS hiccup and other passing I/O trouble. Retried with backoff.
    Transient,
    /// The database refused the file's record for good (a constraint, a value out of range, a
    /// program limit): the DB writer stores the file as failed with the database's message instead.
    /// Not retried; the file is analysed again only with `--retry-failed`.
    Store,
}

impl FailureClass {
    pub const ALL: [FailureClass; 8] = [
        FailureClass::Corrupt,
        FailureClass::Oom,
        FailureClass::Timeout,
        FailureClass::Crash,
        FailureClass::Killed,
        FailureClass::Protocol,
        FailureClass::Transient,
        FailureClass::Store,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Corrupt => "corrupt",
            FailureClass::Oom => "oom",
            FailureClass::Timeout => "timeout",
            FailureClass::Crash => "crash",
            FailureClass::Killed => "killed",
            FailureClass::Protocol => "protocol",
            FailureClass::Transient => "transient",
            FailureClass::Store => "store",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Where in the pipeline something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    Open,
    Probe,
    Tags,
    Decode,
    Features,
    Model,
    /// The worker died or hung; the stage it was in is not known.
    Worker,
    /// Writing the result to the database (the DB writer).
    Store,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Probe => "probe",
            Stage::Tags => "tags",
            Stage::Decode => "decode",
            Stage::Features => "features",
            Stage::Model => "model",
            Stage::Worker => "worker",
            Stage::Store => "store",
        }
    }
}

/// A classified failure with a clear, sanitized message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub class: FailureClass,
    pub stage: Stage,
    pub message: CleanText,
}

impl Failure {
    pub fn new(class: FailureClass, stage: Stage, message: impl AsRef<str>) -> Self {
        Failure {
            class,
            stage,
            message: CleanText::new(message.as_ref()),
        }
    }
}

/// Time spent per stage for one file, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    pub probe_us: u64,
    pub tags_us: u64,
    pub decode_us: u64,
    pub features_us: u64,
    pub model_us: u64,
}

/// Per-file statistics reported by the worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileStats {
    pub size: u64,
    /// Audio duration that was decoded, in seconds.
    pub audio_s: f64,
    pub wall_us: u64,
    pub stages: StageTimes,
    /// Peak RSS of the worker while it handled this file (VmHWM after a reset), bytes.
    pub peak_rss_bytes: u64,
}

/// How a worker process ended, as the supervisor classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExitKind {
    /// Planned exit after `recycle_after` files (its own exit code).
    Recycled,
    Oom,
    Timeout,
    Crash,
    Killed,
    Protocol,
    /// Asked to stop by the supervisor (shutdown or pool shrink).
    Stopped,
}

impl ExitKind {
    pub const ALL: [ExitKind; 7] = [
        ExitKind::Recycled,
        ExitKind::Oom,
        ExitKind::Timeout,
        ExitKind::Crash,
        ExitKind::Killed,
        ExitKind::Protocol,
        ExitKind::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExitKind::Recycled => "recycled",
            ExitKind::Oom => "oom",
            ExitKind::Timeout => "timeout",
            ExitKind::Crash => "crash",
            ExitKind::Killed => "killed",
            ExitKind::Protocol => "protocol",
            ExitKind::Stopped => "stopped",
        }
    }

    /// The failure class a file in flight gets when its worker ends this way.
    pub fn failure_class(self) -> FailureClass {
        match self {
            ExitKind::Oom => FailureClass::Oom,
            ExitKind::Timeout => FailureClass::Timeout,
            ExitKind::Crash | ExitKind::Recycled => FailureClass::Crash,
            ExitKind::Killed | ExitKind::Stopped => FailureClass::Killed,
            ExitKind::Protocol => FailureClass::Protocol,
        }
    }
}

/// One attempt at a file that did not produce a result, kept so a quarantined file carries every cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub failure: Failure,
    pub worker_pid: u32,
    pub peak_rss_bytes: u64,
    pub elapsed_ms: u64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
}
