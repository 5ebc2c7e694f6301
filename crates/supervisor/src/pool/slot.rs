//! One worker slot: the process in it, what it is doing, and where it is on the termination
//! ladder; and the file a worker is given, with the causes of its failed attempts.

use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use trackmill_types::{Attempt, ExitKind, FileKey, ToWorker};

/// A file on its way through the pipeline, with the causes of its failed attempts.
#[derive(Clone, Debug)]
pub struct FileJob {
    pub key: FileKey,
    pub history: Vec<Attempt>,
    /// Run with no other worker busy (after a second OOM).
    pub alone: bool,
    pub not_before: Instant,
}

impl FileJob {
    pub fn new(key: FileKey) -> Self {
        FileJob {
            key,
            history: Vec::new(),
            alone: false,
            not_before: Instant::now(),
        }
    }
}

/// A file a worker was on, and since when.
#[derive(Debug)]
pub struct InFlight {
    pub job: FileJob,
    pub started: Instant,
}

/// Why the pool is ending a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// No result before the file's deadline.
    Timeout,
    /// No hello before `workers.hello_timeout`.
    NoHello,
    /// Memory pressure or an operator: the file is requeued without penalty.
    Killed,
    /// Shutdown or pool shrink.
    Stop,
    Protocol,
}

/// Where a worker the pool is ending stands on the termination ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopping {
    /// Asked to end (SIGTERM, a signal of the operator's choosing, or a shutdown frame) at
    /// `since`; SIGKILL follows after `workers.kill_grace`.
    Term { reason: KillReason, since: Instant },
    /// SIGKILL sent.
    Killed { reason: KillReason },
}

impl Stopping {
    pub fn reason(self) -> KillReason {
        match self {
            Stopping::Term { reason, .. } | Stopping::Killed { reason } => reason,
        }
    }
}

#[derive(Debug)]
pub enum SlotState {
    /// Spawned at `since`, waiting for its hello.
    Starting {
        since: Instant,
    },
    Idle,
    Busy {
        job: FileJob,
        job_id: u64,
        started: Instant,
        deadline: Instant,
    },
}

#[derive(Debug)]
pub struct Slot {
    pub gen: u64,
    pub pid: u32,
    pub tx: UnboundedSender<ToWorker>,
    pub state: SlotState,
    pub files_done: u64,
    /// The worker exits (planned recycle) after this many files: it gets no job after its last,
    /// since a frame left unread in its socket would turn its clean exit into a reset channel.
    pub recycle_after: u64,
    pub stopping: Option<Stopping>,
}

impl Slot {
    pub fn is_busy(&self) -> bool {
        matches!(self.state, SlotState::Busy { .. })
    }

    /// Ready for a file: said hello, not busy, not being stopped, not about to recycle.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, SlotState::Idle) && self.stopping.is_none() && !self.recycling()
    }

    /// True once the worker has done its last file and is about to exit.
    pub fn recycling(&self) -> bool {
        self.files_done >= self.recycle_after
    }
}

/// What a slot keeps across its processes.
#[derive(Clone, Debug, Default)]
pub struct SlotHistory {
    pub processes: u64,
    pub files_done: u64,
    pub last_exit: Option<ExitKind>,
}
