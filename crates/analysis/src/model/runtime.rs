//! Loading the ONNX Runtime shared library once per process and describing it.

use crate::model::ModelError;
use ort::environment::Environment;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The loaded runtime: where it came from and what it says it is.
#[derive(Clone, Debug)]
pub struct RuntimeInfo {
    pub path: PathBuf,
    /// e.g. "1.31.1", from the library's build information.
    pub version: String,
    /// The library's build information string.
    pub build_info: String,
}

struct Loaded {
    info: RuntimeInfo,
    env: Environment,
}

static RUNTIME: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// Loads the library at `path` (first call in the process) and returns the environment that
/// sessions are built in. A later call with another path gets the first library: a process has
/// one runtime.
pub(crate) fn load(path: &Path) -> Result<(Environment, RuntimeInfo), ModelError> {
    let loaded = RUNTIME.get_or_init(|| {
        let builder = ort::init_from(path).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("trackmill")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        let build_info = ort::info().to_string();
        let version = version_of(&build_info, path);
        Ok(Loaded {
            info: RuntimeInfo {
                path: path.to_path_buf(),
                version,
                build_info,
            },
            env,
        })
    });
    match loaded {
        Ok(l) => Ok((l.env.clone(), l.info.clone())),
        Err(reason) => Err(ModelError::Runtime {
            path: path.to_path_buf(),
            reason: reason.clone(),
        }),
    }
}

/// The runtime version: `git-branch=rel-X.Y.Z` in the build string, else the file name's suffix.
fn version_of(build_info: &str, path: &Path) -> String {
    if let Some(v) = build_info
        .split([',', ' '])
        .find_map(|p| p.trim().strip_prefix("git-branch=rel-"))
    {
        return v.to_string();
    }
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split(".so.").nth(1))
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_build_info_or_file_name() {
        assert_eq!(
            version_of(
                "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc",
                Path::new("x")
            ),
            "1.31.1"
        );
        assert_eq!(
            version_of("", Path::new("/a/libonnxruntime.so.1.31.1")),
            "1.31.1"
        );
    }
}
