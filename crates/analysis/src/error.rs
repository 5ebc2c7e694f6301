//! Typed analysis errors and their mapping to the supervisor's failure classes.

use std::io;
use trackmill_types::{Failure, FailureClass, Stage};

/// Why a file could not be analysed. Every variant names the stage it happened in.
#[derive(thiserror::Error, Debug)]
pub enum AnalysisError {
    /// The bytes are not valid audio of any supported kind (garbage, empty, broken headers,
    /// a decoder panic).
    #[error("corrupt ({}): {message}", stage.as_str())]
    Corrupt { stage: Stage, message: String },
    /// Valid media that trackmill cannot decode (an unknown codec, no audio track).
    #[error("unsupported ({}): {message}", stage.as_str())]
    Unsupported { stage: Stage, message: String },
    /// The file ends before any audio could be decoded.
    #[error("truncated ({}): {message}", stage.as_str())]
    Truncated { stage: Stage, message: String },
    /// Reading the file failed.
    #[error("i/o error ({}): {message}", stage.as_str())]
    Io {
        stage: Stage,
        message: String,
        kind: io::ErrorKind,
        raw_os_error: Option<i32>,
    },
}

impl AnalysisError {
    pub(crate) fn corrupt(stage: Stage, message: impl Into<String>) -> Self {
        AnalysisError::Corrupt {
            stage,
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(stage: Stage, message: impl Into<String>) -> Self {
        AnalysisError::Unsupported {
            stage,
            message: message.into(),
        }
    }

    pub(crate) fn truncated(stage: Stage, message: impl Into<String>) -> Self {
        AnalysisError::Truncated {
            stage,
            message: message.into(),
        }
    }

    pub(crate) fn io(stage: Stage, err: &io::Error) -> Self {
        AnalysisError::Io {
            stage,
            message: err.to_string(),
            kind: err.kind(),
            raw_os_error: err.raw_os_error(),
        }
    }

    /// The stage the error happened in.
    pub fn stage(&self) -> Stage {
        match self {
            AnalysisError::Corrupt { stage, .. }
            | AnalysisError::Unsupported { stage, .. }
            | AnalysisError::Truncated { stage, .. }
            | AnalysisError::Io { stage, .. } => *stage,
        }
    }

    /// The failure class the supervisor acts on: bad bytes are permanent (`Corrupt`), passing
    /// I/O trouble is `Transient`, a missing or unreadable file is `Corrupt` ("unreadable").
    pub fn class(&self) -> FailureClass {
        match self {
            AnalysisError::Corrupt { .. }
            | AnalysisError::Unsupported { .. }
            | AnalysisError::Truncated { .. } => FailureClass::Corrupt,
            AnalysisError::Io {
                kind, raw_os_error, ..
            } => io_class(*kind, *raw_os_error),
        }
    }

    /// The classified failure to report for this file.
    pub fn to_failure(&self) -> Failure {
        let message = match self {
            AnalysisError::Io {
                kind: io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied,
                message,
                ..
            } => format!("unreadable: {message}"),
            other => other.to_string(),
        };
        Failure::new(self.class(), self.stage(), message)
    }
}

/// Transient: errors that a later attempt may not see (interrupted calls, timeouts, EIO and
/// stale handles on network file systems). Out of memory is the oom class. Everything else
/// (missing, forbidden, a directory) is permanent.
fn io_class(kind: io::ErrorKind, raw: Option<i32>) -> FailureClass {
    if let Some(code) = raw {
        match code {
            libc_codes::ENOMEM => return FailureClass::Oom,
            libc_codes::EIO
            | libc_codes::EAGAIN
            | libc_codes::EINTR
            | libc_codes::ETIMEDOUT
            | libc_codes::ESTALE
            | libc_codes::ENOLINK
            | libc_codes::ECONNRESET
            | libc_codes::ECONNABORTED
            | libc_codes::EHOSTDOWN
            | libc_codes::EHOSTUNREACH
            | libc_codes::ENETDOWN
            | libc_codes::ENETUNREACH
            | libc_codes::EREMOTEIO
            | libc_codes::ENFILE
            | libc_codes::EMFILE => return FailureClass::Transient,
            _ => {}
        }
    }
    match kind {
        io::ErrorKind::WouldBlock
        | io::ErrorKind::Interrupted
        | io::ErrorKind::TimedOut
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => FailureClass::Transient,
        io::ErrorKind::OutOfMemory => FailureClass::Oom,
        _ => FailureClass::Corrupt,
    }
}

/// Linux errno values (the worker runs on Linux; these are stable ABI numbers).
mod libc_codes {
    pub const EINTR: i32 = 4;
    pub const EIO: i32 = 5;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOLINK: i32 = 67;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ENETDOWN: i32 = 100;
    pub const ENETUNREACH: i32 = 101;
    pub const ETIMEDOUT: i32 = 110;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
    pub const ESTALE: i32 = 116;
    pub const EREMOTEIO: i32 = 121;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let nf = AnalysisError::io(Stage::Open, &io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(nf.class(), FailureClass::Corrupt);
        assert!(nf.to_failure().message.as_str().starts_with("unreadable"));
        let eio = AnalysisError::io(Stage::Decode, &io::Error::from_raw_os_error(5));
        assert_eq!(eio.class(), FailureClass::Transient);
        assert_eq!(eio.to_failure().stage, Stage::Decode);
        let again = AnalysisError::io(Stage::Open, &io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(again.class(), FailureClass::Transient);
        let c = AnalysisError::corrupt(Stage::Probe, "garbage");
        assert_eq!(c.to_failure().class, FailureClass::Corrupt);
        assert_eq!(c.to_failure().stage, Stage::Probe);
        let t = AnalysisError::truncated(Stage::Decode, "nothing decoded");
        assert_eq!(t.class(), FailureClass::Corrupt);
    }
}
