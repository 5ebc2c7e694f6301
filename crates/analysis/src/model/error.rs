//! Errors of model loading and inference, and their mapping onto the failure classes.

use std::path::PathBuf;
use trackmill_types::{Failure, FailureClass, Stage};

/// What can go wrong loading or running models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The runtime library or a model file is not installed: the caller runs DSP-only analysis
    /// and says so once. `cargo xtask setup` installs both.
    #[error("{what} not found at {path} (run `cargo xtask setup`)")]
    Missing { what: String, path: PathBuf },
    /// A manifest cannot be read or does not describe a usable model.
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// A model file does not have the checksum its manifest names.
    #[error("model file {path} has sha256 {got}, the manifest expects {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        got: String,
    },
    /// The runtime library could not be loaded (wrong version, not a shared library, ...).
    #[error("ONNX Runtime at {path} could not be loaded: {reason}")]
    Runtime { path: PathBuf, reason: String },
    /// The runtime refused or failed a session or a run.
    #[error("model {model}: {reason}")]
    Ort { model: String, reason: String },
    /// An output does not have the shape the manifest describes.
    #[error("model {model}: output {output}: {reason}")]
    Shape {
        model: String,
        output: String,
        reason: String,
    },
}

impl ModelError {
    pub(crate) fn ort(model: &str, e: impl std::fmt::Display) -> Self {
        ModelError::Ort {
            model: model.to_string(),
            reason: e.to_string(),
        }
    }

    /// True for an allocation failure inside the runtime (its arena or the system allocator
    /// refused memory): the worker should be recycled and the file retried by policy.
    pub fn is_oom(&self) -> bool {
        match self {
            ModelError::Ort { reason, .. } | ModelError::Runtime { reason, .. } => {
                is_alloc_failure(reason)
            }
            _ => false,
        }
    }

    /// The failure recorded for a file whose model stage failed.
    pub fn to_failure(&self) -> Failure {
        let class = if self.is_oom() {
            FailureClass::Oom
        } else {
            match self {
                // A model that cannot run at all is not the file's fault, but retrying the
                // same worker would fail again; crash sends it to a fresh worker.
                ModelError::Missing { .. }
                | ModelError::Manifest { .. }
                | ModelError::Checksum { .. }
                | ModelError::Runtime { .. } => FailureClass::Crash,
                ModelError::Ort { .. } | ModelError::Shape { .. } => FailureClass::Crash,
            }
        };
        Failure::new(class, Stage::Model, self.to_string())
    }
}

/// Messages ONNX Runtime gives when memory runs out (BFC arena, plain allocator, C++ new).
fn is_alloc_failure(msg: &str) -> bool {
    const MARKERS: [&str; 5] = [
        "Failed to allocate",
        "BFCArena",
        "bad_alloc",
        "Cannot allocate memory",
        "out of memory",
    ];
    MARKERS.iter().any(|m| msg.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_failure_is_oom() {
        let e = ModelError::ort(
            "basic-pitch",
            "Non-zero status code returned while running Conv node. Status Message: \
             BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer of size 4194304",
        );
        let f = e.to_failure();
        assert_eq!(f.class, FailureClass::Oom);
        assert_eq!(f.stage, Stage::Model);
    }

    #[test]
    fn other_runtime_errors_are_not_oom() {
        let e = ModelError::ort("m", "Invalid rank for input");
        assert_eq!(e.to_failure().class, FailureClass::Crash);
        assert!(!e.is_oom());
    }
}
