//! How a worker ended: the classification of its exit (planned recycle, stop, timeout, kill,
//! protocol error, oom, crash) and the one description of it that is logged and stored.

use super::slot::{InFlight, KillReason};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use trackmill_types::{ExitKind, EXIT_PROTOCOL, EXIT_RECYCLE};

/// A worker's end, as the pool reports it to the loop that decides what becomes of its file.
#[derive(Debug)]
pub struct Exit {
    pub kind: ExitKind,
    pub pid: u32,
    /// What became of the worker, with its last stderr line unless the exit was planned.
    pub message: String,
    /// The file it was on, if any.
    pub in_flight: Option<InFlight>,
}

/// Classifies how a worker ended.
pub fn classify(status: ExitStatus, kill: Option<KillReason>, oom_message: bool) -> ExitKind {
    match kill {
        Some(KillReason::Timeout | KillReason::NoHello) => return ExitKind::Timeout,
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

/// What the pool knows about a worker when it ends, to describe it.
pub struct ExitContext<'a> {
    pub pid: u32,
    pub status: ExitStatus,
    pub kind: ExitKind,
    /// Why the pool stopped it, if it did.
    pub reason: Option<KillReason>,
    pub memory_limit: u64,
    pub job_timeout: Duration,
    pub hello_timeout: Duration,
    pub last_stderr: &'a str,
}

/// What became of a worker, as it is logged and stored for the file it was on (`scan`, `serve`
/// and `inspect` alike): the cause, the exit status, and its last stderr line unless the exit
/// was planned.
pub fn exit_message(c: &ExitContext<'_>) -> String {
    let (pid, status) = (c.pid, c.status);
    let mut message = match c.kind {
        ExitKind::Oom => format!(
            "worker {pid} ran out of memory under its {} cap ({})",
            crate::units::format_size(c.memory_limit),
            describe(status)
        ),
        ExitKind::Timeout if c.reason == Some(KillReason::NoHello) => format!(
            "worker {pid} did not start within {:?} ({})",
            c.hello_timeout,
            describe(status)
        ),
        ExitKind::Timeout => format!(
            "no result within {:?}; worker {pid} stopped ({})",
            c.job_timeout,
            describe(status)
        ),
        kind => format!("worker {pid} {} ({})", kind.as_str(), describe(status)),
    };
    if !c.last_stderr.is_empty() && !matches!(c.kind, ExitKind::Recycled | ExitKind::Stopped) {
        message.push_str(": ");
        message.push_str(c.last_stderr);
    }
    message
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
            classify(st(libc::SIGKILL), Some(KillReason::NoHello), false),
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
    fn planned_exits_keep_no_stderr_line() {
        let ctx = |kind, last_stderr| ExitContext {
            pid: 7,
            status: st(libc::SIGABRT),
            kind,
            reason: None,
            memory_limit: 64 << 20,
            job_timeout: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(60),
            last_stderr,
        };
        let crash = exit_message(&ctx(ExitKind::Crash, "boom"));
        assert_eq!(crash, "worker 7 crash (killed by SIGABRT): boom");
        assert!(!exit_message(&ctx(ExitKind::Recycled, "bye")).contains("bye"));
        assert!(exit_message(&ctx(ExitKind::Oom, "")).contains("64.0MiB cap"));
    }
}
