//! Which models to load and where the runtime and manifests are found.

use crate::model::ModelError;
use std::path::{Path, PathBuf};

/// The model enabled when nothing else is configured.
pub const DEFAULT_MODEL: &str = "basic-pitch";
/// Environment variable naming the ONNX Runtime shared library explicitly.
pub const ORT_LIB_ENV: &str = "TRACKMILL_ORT_LIB";
/// File name of the pinned runtime library (from the `onnxruntime==1.31.1` wheel).
pub const ORT_LIB_FILE: &str = "libonnxruntime.so.1.31.1";

/// Where `cargo xtask setup` puts the CPU runtime, relative to the project root.
const CPU_RUNTIME_DIR: &str = ".runtime/onnxruntime";
/// Where `cargo xtask setup --gpu` puts the CUDA build of the runtime.
const GPU_RUNTIME_DIR: &str = ".runtime/onnxruntime-gpu";

/// Model settings of a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Directory holding `<name>/model.toml` for every model.
    pub models_dir: PathBuf,
    /// The runtime library; `None` finds it: [`ORT_LIB_ENV`], then `.runtime/...` next to the
    /// executable or the working directory or any of their parents.
    pub runtime_path: Option<PathBuf>,
    /// Manifest names to load.
    pub enabled: Vec<String>,
    /// Register the CUDA execution provider (falls back to CPU with one warning).
    pub gpu: bool,
    /// Intra-op threads per session. 1 keeps results bit-identical and memory small.
    pub intra_threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            models_dir: find_upwards(Path::new("models")).unwrap_or_else(|| "models".into()),
            runtime_path: None,
            enabled: vec![DEFAULT_MODEL.to_string()],
            gpu: false,
            intra_threads: 1,
        }
    }
}

impl ModelConfig {
    /// The runtime library this configuration uses, or `Missing` naming where it was looked for.
    pub fn resolve_runtime(&self) -> Result<PathBuf, ModelError> {
        if let Some(p) = &self.runtime_path {
            return existing(p.clone());
        }
        if let Some(p) = std::env::var_os(ORT_LIB_ENV).filter(|v| !v.is_empty()) {
            return existing(PathBuf::from(p));
        }
        let mut dirs = Vec::new();
        if self.gpu {
            dirs.push(GPU_RUNTIME_DIR);
        }
        dirs.push(CPU_RUNTIME_DIR);
        for dir in dirs {
            if let Some(p) = find_upwards(&Path::new(dir).join(ORT_LIB_FILE)) {
                return Ok(p);
            }
        }
        Err(ModelError::Missing {
            what: "ONNX Runtime library".into(),
            path: Path::new(CPU_RUNTIME_DIR).join(ORT_LIB_FILE),
        })
    }

    /// The manifest path of model `name`.
    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.models_dir.join(name).join("model.toml")
    }
}

fn existing(p: PathBuf) -> Result<PathBuf, ModelError> {
    if p.is_file() {
        Ok(p)
    } else {
        Err(ModelError::Missing {
            what: "ONNX Runtime library".into(),
            path: p,
        })
    }
}

/// `rel` under the working directory, the executable's directory, or any parent of either.
fn find_upwards(rel: &Path) -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        starts.push(dir);
    }
    starts
        .iter()
        .flat_map(|s| s.ancestors())
        .map(|a| a.join(rel))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_runtime_is_missing() {
        let cfg = ModelConfig {
            runtime_path: Some("/nonexistent/libonnxruntime.so".into()),
            ..ModelConfig::default()
        };
        assert!(matches!(
            cfg.resolve_runtime(),
            Err(ModelError::Missing { .. })
        ));
    }
}
