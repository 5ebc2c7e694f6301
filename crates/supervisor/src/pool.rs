//! Worker slots: the state of each worker process, exit classification, and the restart-intensity
//! limit (too many unplanned deaths in a window → spawning backs off and the pool is "degraded").

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use trackmill_types::{Attempt, ExitKind, FileKey, ToWorker};

/// Exit code of a worker's planned recycle (must match the worker crate).
pub const EXIT_RECYCLE: i32 = 75;
/// Exit code of a worker that received a frame it could not understand.
pub const EXIT_PROTOCOL: i32 = 76;

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

/// Why the supervisor is ending a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    Timeout,
    /// Memory pressure or an operator: the file is requeued without penalty.
    Killed,
    /// Shutdown or pool shrink.
    Stop,
    Protocol,
}

pub enum SlotState {
    /// Spawned, waiting for its hello.
    Starting,
    Idle,
    Busy {
        job: FileJob,
        job_id: u64,
        started: Instant,
        deadline: Instant,
    },
}

pub struct Slot {
    pub gen: u64,
    pub pid: u32,
    pub tx: UnboundedSender<ToWorker>,
    pub state: SlotState,
    pub files_done: u64,
    /// The worker exits (planned recycle) after this many files: it gets no job after its last,
    /// since a frame left unread in its socket would turn its clean exit into a reset channel.
    pub recycle_after: u64,
    pub kill: Option<(KillReason, Instant)>,
    pub sigkill_sent: bool,
}

impl Slot {
    pub fn is_busy(&self) -> bool {
        matches!(self.state, SlotState::Busy { .. })
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.state, SlotState::Idle) && self.kill.is_none() && !self.recycling()
    }

    /// True once the worker has done its last file and is about to exit.
    pub fn recycling(&self) -> bool {
        self.files_done >= self.recycle_after
    }
}

/// Classifies how a worker ended.
pub fn classify(status: ExitStatus, kill: Option<KillReason>, oom_message: bool) -> ExitKind {
    match kill {
        Some(KillReason::Timeout) => return ExitKind::Timeout,
        Some(KillReason::Killed) => return ExitKind::Killed,
        Some(KillReason::Protocol) => return ExitKind::Protocol,
        Some(KillReason::Stop) if !oom_message => return ExitKind::Stopped,
        _ => {}
    }
    if oom_message {
        return ExitKind::Oom;
    }
    match (status.code(), status.signal()) {
        (Some(EXIT_RECYCLE), _) => ExitKind::Recycled,
        (Some(EXIT_PROTOCOL), _) => ExitKind::Protocol,
        (_, Some(libc::SIGKILL)) | (_, Some(libc::SIGTERM)) | (_, Some(libc::SIGINT)) => {
            ExitKind::Killed
        }
        _ => ExitKind::Crash,
    }
}

/// Human description of an exit status.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str().to_string())
                .unwrap_or(format!("signal {s}"));
            format!(
                "killed by {name}{}",
                if status.core_dumped() {
                    " (core dumped)"
                } else {
                    ""
                }
            )
        }
        _ => "unknown status".into(),
    }
}

/// What became of worker `pid` that ended as `kind` with `status`, as it is logged and stored for
/// the file it was on (`scan`, `serve` and `inspect` alike).
pub fn exit_message(
    kind: ExitKind,
    pid: u32,
    status: ExitStatus,
    memory_limit: u64,
    job_timeout: Duration,
) -> String {
    match kind {
        ExitKind::Oom => format!(
            "worker {pid} ran out of memory under its {} cap ({})",
            crate::units::format_size(memory_limit),
            describe(status)
        ),
        ExitKind::Timeout => format!(
            "no result within {job_timeout:?}; worker {pid} stopped ({})",
            describe(status)
        ),
        _ => format!("worker {pid} {} ({})", kind.as_str(), describe(status)),
    }
}

/// OTP-style restart intensity: more than `max` unplanned deaths within `window` → degraded, and
/// spawning waits with a doubling delay until the window is calm again.
pub struct Intensity {
    max: u32,
    window: Duration,
    deaths: VecDeque<Instant>,
    pub degraded: bool,
    pub spawn_not_before: Instant,
    backoff: Duration,
}

impl Intensity {
    pub fn new(max: u32, window: Duration) -> Self {
        Intensity {
            max,
            window,
            deaths: VecDeque::new(),
            degraded: false,
            spawn_not_before: Instant::now(),
            backoff: Duration::from_millis(500),
        }
    }

    pub fn record_death(&mut self, now: Instant) {
        self.deaths.push_back(now);
        while self
            .deaths
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.deaths.pop_front();
        }
        if self.deaths.len() as u32 > self.max {
            self.spawn_not_before = now + self.backoff;
            if !self.degraded {
                tracing::warn!(
                    "degraded: {} unplanned worker deaths within {:?}; spawning backs off ({:?})",
                    self.deaths.len(),
                    self.window,
                    self.backoff
                );
            }
            self.degraded = true;
            self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        }
    }

    pub fn tick(&mut self, now: Instant) {
        while self
            .deaths
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.deaths.pop_front();
        }
        if self.degraded && self.deaths.len() as u32 <= self.max / 2 {
            tracing::info!("worker pool recovered from degraded state");
            self.degraded = false;
            self.backoff = Duration::from_millis(500);
        }
    }

    pub fn may_spawn(&self, now: Instant) -> bool {
        now >= self.spawn_not_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(raw: i32) -> ExitStatus {
        ExitStatus::from_raw(raw)
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(st(EXIT_RECYCLE << 8), None, false),
            ExitKind::Recycled
        );
        assert_eq!(classify(st(libc::SIGSEGV), None, false), ExitKind::Crash);
        assert_eq!(classify(st(libc::SIGABRT), None, true), ExitKind::Oom);
        assert_eq!(classify(st(libc::SIGABRT), None, false), ExitKind::Crash);
        assert_eq!(classify(st(libc::SIGKILL), None, false), ExitKind::Killed);
        assert_eq!(
            classify(st(libc::SIGKILL), Some(KillReason::Timeout), false),
            ExitKind::Timeout
        );
        assert_eq!(
            classify(st(0), Some(KillReason::Stop), false),
            ExitKind::Stopped
        );
        assert_eq!(classify(st(0), None, false), ExitKind::Crash);
        assert_eq!(
            classify(st(EXIT_PROTOCOL << 8), None, false),
            ExitKind::Protocol
        );
    }

    #[test]
    fn intensity_degrades_and_recovers() {
        let mut i = Intensity::new(2, Duration::from_secs(10));
        let t = Instant::now();
        for _ in 0..3 {
            i.record_death(t);
        }
        assert!(i.degraded);
        assert!(!i.may_spawn(t));
        i.tick(t + Duration::from_secs(11));
        assert!(!i.degraded);
    }
}
