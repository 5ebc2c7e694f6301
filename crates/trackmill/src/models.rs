//! The models of a scan, seen from the supervisor: where the manifests are (`analysis.models_dir`),
//! one check before the workers start (file checks here, then loading in a probe worker under
//! the workers' cap), the one warning when the scan runs DSP-only, and the workers' model
//! arguments.

use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use trackmill_analysis::model::{Manifest, ModelConfig};
use trackmill_supervisor::spawn::{signal_group, spawn_child, ChildSpec};
use trackmill_supervisor::{describe, Config};

/// Environment variable naming the models directory; overrides `analysis.models_dir`.
pub const MODELS_DIR_ENV: &str = "TRACKMILL_MODELS_DIR";

/// How long the probe worker may take to load the models.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// `analysis.models_dir` resolved to a directory: [`MODELS_DIR_ENV`] when set; an absolute path
/// as is; a relative one under the config file's directory, else under the executable's
/// directory or one of its parents (an installation's `share/..`-less layout or the workspace a
/// `target/` build lives in), else under the working directory or one of its parents: the first
/// that exists. When none exists, the first candidate is returned so errors name it.
pub fn resolve_models_dir(configured: &Path, config_file: Option<&Path>) -> PathBuf {
    if let Some(v) = std::env::var_os(MODELS_DIR_ENV).filter(|v| !v.is_empty()) {
        return std::path::absolute(PathBuf::from(&v)).unwrap_or_else(|_| v.into());
    }
    if configured.is_absolute() {
        return configured.to_path_buf();
    }
    let mut candidates = Vec::new();
    if let Some(dir) = config_file.and_then(|f| std::path::absolute(f).ok()) {
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join(configured));
        }
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    for start in exe_dir.into_iter().chain(std::env::current_dir().ok()) {
        candidates.extend(start.ancestors().map(|a| a.join(configured)));
    }
    candidates
        .iter()
        .find(|c| c.is_dir())
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| configured.to_path_buf())
}

/// The similarity space of a configuration: the DSP groups with their default weights, plus
/// every embedding that a model of `analysis.models` declares as a similarity input in its
/// manifest. A manifest that cannot be read is logged and its embeddings take no part: queries
/// never fail for a broken model.
pub fn similarity_space(cfg: &Config, config_file: Option<&Path>) -> trackmill_similarity::Space {
    let dir = resolve_models_dir(&cfg.analysis.models_dir, config_file);
    let mut embeddings = Vec::new();
    for name in &cfg.analysis.models {
        let manifest = match Manifest::load(&dir.join(name).join("model.toml")) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("model {name}: {e}; its embeddings take no part in similarity");
                continue;
            }
        };
        for e in &manifest.embeddings {
            let name = format!("{}/{}", manifest.name, e.name);
            if embeddings
                .iter()
                .any(|x: &trackmill_similarity::EmbeddingInput| x.name == name)
            {
                // The same model listed twice (or two manifests of one name) counts once.
                continue;
            }
            if let Some(sim) = &e.similarity {
                let total: usize = embeddings.iter().map(|x| x.dims).sum();
                let max = trackmill_types::bounded::MAX_SIMILARITY_TOTAL;
                if total + sim.dims > max {
                    tracing::warn!(
                        "model {}: similarity input {name} ({} values) would take the inputs past \
                         {max} values in all; it takes no part",
                        manifest.name,
                        sim.dims
                    );
                    continue;
                }
                embeddings.push(trackmill_similarity::EmbeddingInput {
                    name,
                    dims: sim.dims,
                    weight: sim.weight,
                });
            }
        }
    }
    trackmill_similarity::Space {
        weights: Default::default(),
        embeddings,
    }
}

/// The model settings a scan's workers use.
pub fn model_config(cfg: &Config, config_file: Option<&Path>) -> ModelConfig {
    ModelConfig {
        models_dir: resolve_models_dir(&cfg.analysis.models_dir, config_file),
        runtime_path: None,
        enabled: cfg.analysis.models.clone(),
        gpu: cfg.analysis.gpu,
        intra_threads: cfg.analysis.model_threads.max(1),
    }
}

/// What the check found.
pub enum ModelCheck {
    /// No model configured.
    Off,
    /// The models load; the probe's report (runtime path and version, provider, GPU fallback).
    Ready(Value),
    /// They cannot be used: why.
    Unusable(String),
}

/// Files that must exist before a probe is worth starting: the runtime library, every manifest
/// and every model file.
fn preflight(mc: &ModelConfig) -> Result<PathBuf, String> {
    let runtime = mc.resolve_runtime().map_err(|e| e.to_string())?;
    for name in &mc.enabled {
        let m = Manifest::load(&mc.manifest_path(name)).map_err(|e| e.to_string())?;
        let file = m.file_path();
        if !file.is_file() {
            return Err(format!(
                "model file of {name} not found at {} (run `cargo xtask setup`)",
                file.display()
            ));
        }
    }
    Ok(runtime)
}

/// The worker arguments that load `mc` (without `--recycle-after`).
fn model_args(mc: &ModelConfig, runtime: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for name in &mc.enabled {
        args.push("--model".into());
        args.push(name.into());
    }
    args.push("--models-dir".into());
    args.push(mc.models_dir.clone().into());
    args.push("--model-threads".into());
    args.push(mc.intra_threads.to_string().into());
    if let Some(rt) = runtime {
        args.push("--ort-lib".into());
        args.push(rt.into());
    }
    if mc.gpu {
        args.push("--gpu".into());
    }
    args
}

/// Checks the models once: the files here, then loading in a probe worker spawned exactly as
/// the scan's workers are (same binary, environment and cap).
pub fn check(
    mc: &ModelConfig,
    exe: &Path,
    env: &[(OsString, OsString)],
    memory_limit: u64,
) -> ModelCheck {
    if mc.enabled.is_empty() {
        return ModelCheck::Off;
    }
    let runtime = match preflight(mc) {
        Ok(p) => p,
        Err(e) => return ModelCheck::Unusable(e),
    };
    let mut args: Vec<OsString> = vec!["worker".into(), "--probe-models".into()];
    args.extend(model_args(mc, Some(&runtime.display().to_string())));
    let spec = ChildSpec::worker(exe.to_path_buf(), args, env.to_vec(), memory_limit, mc.gpu);
    match probe(&spec) {
        Ok(report) if report["ok"] == true => ModelCheck::Ready(report),
        Ok(report) => ModelCheck::Unusable(
            report["error"]
                .as_str()
                .unwrap_or("the models could not be loaded")
                .to_string(),
        ),
        Err(e) => ModelCheck::Unusable(e),
    }
}

/// Spawns the probe, reads its report from the channel, and reaps it.
fn probe(spec: &ChildSpec) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the model probe: {e}"))?;
    rt.block_on(async {
        let spawned =
            spawn_child(spec).map_err(|e| format!("cannot start the model probe: {e}"))?;
        let (mut child, pid) = (spawned.child, spawned.pid);
        let io = |e: std::io::Error| format!("model probe channel: {e}");
        spawned.channel.set_nonblocking(true).map_err(io)?;
        let mut chan = tokio::net::UnixStream::from_std(spawned.channel).map_err(io)?;
        let stderr = child.stderr.take();
        let stderr_task = tokio::spawn(async move {
            let mut text = String::new();
            if let Some(mut s) = stderr {
                let _ = s.read_to_string(&mut text).await;
            }
            text
        });
        let mut buf = Vec::new();
        let read = tokio::time::timeout(PROBE_TIMEOUT, chan.read_to_end(&mut buf)).await;
        if read.is_err() {
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let status = child.wait().await.map_err(io)?;
        let stderr = stderr_task.await.unwrap_or_default();
        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
            return Ok(v);
        }
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!(
            "the model probe worker {}{}{}",
            if read.is_err() {
                format!("did not finish within {PROBE_TIMEOUT:?} and was killed; ")
            } else {
                String::new()
            },
            describe(status),
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        ))
    })
}

/// How the workers will analyse: their command line, and the models it loads.
pub struct WorkerCommand {
    /// `worker` and, when the models load, the arguments that load them.
    pub args: Vec<OsString>,
    /// The models the workers run; empty for DSP-only analysis.
    pub models: Vec<String>,
}

/// Checks the models, says once how the scan will analyse, and returns the worker's command:
/// with the models when they load, DSP-only otherwise.
pub fn worker_args(
    cfg: &Config,
    config_file: Option<&Path>,
    exe: &Path,
    env: &[(OsString, OsString)],
) -> WorkerCommand {
    let mc = model_config(cfg, config_file);
    let mut args: Vec<OsString> = vec!["worker".into()];
    let mut models = Vec::new();
    match check(&mc, exe, env, cfg.workers.memory_limit) {
        ModelCheck::Off => tracing::info!("no models configured: DSP-only analysis"),
        ModelCheck::Unusable(why) => tracing::warn!(
            "models disabled: {why}. This run analyses DSP-only (no model embeddings; the key \
             comes from the DSP chroma alone)"
        ),
        ModelCheck::Ready(report) => {
            let runtime = report["runtime_path"].as_str();
            if let Some(reason) = report["gpu_fallback"].as_str() {
                tracing::warn!(
                    "analysis.gpu is set but the CUDA execution provider could not be \
                     registered; the models run on CPU ({})",
                    reason.lines().next().unwrap_or(reason)
                );
            }
            tracing::info!(
                "models: {} on {} (ONNX Runtime {} at {})",
                mc.enabled.join(", "),
                report["provider"].as_str().unwrap_or("cpu"),
                report["runtime_version"].as_str().unwrap_or("?"),
                runtime.unwrap_or("?")
            );
            args.extend(model_args(&mc, runtime));
            models.clone_from(&mc.enabled);
        }
    }
    WorkerCommand { args, models }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_dir_is_kept_and_config_dir_wins_when_it_has_the_models() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_models_dir(tmp.path(), None),
            tmp.path().to_path_buf()
        );
        std::fs::create_dir(tmp.path().join("my-models")).unwrap();
        let cfg = tmp.path().join("trackmill.toml");
        assert_eq!(
            resolve_models_dir(Path::new("my-models"), Some(&cfg)),
            tmp.path().join("my-models")
        );
    }

    #[test]
    fn the_similarity_space_holds_what_the_configured_manifests_declare() {
        let tmp = tempfile::tempdir().unwrap();
        let shipped = include_str!("../../../models/basic-pitch/model.toml");
        // A second model, added by a user, declaring its `stats` embedding.
        let mine = shipped.replace("name = \"basic-pitch\"", "name = \"mine\"").replace(
            "  { from = \"notes\", reduce = \"active-range\", threshold = 0.3, min_frames = 5, bin_offset = 21 },\n]",
            "  { from = \"notes\", reduce = \"active-range\", threshold = 0.3, min_frames = 5, bin_offset = 21 },\n]\nsimilarity = { dims = 3, weight = 2.0 }",
        );
        assert_ne!(
            mine,
            shipped.replace("name = \"basic-pitch\"", "name = \"mine\"")
        );
        for (name, text) in [("basic-pitch", shipped), ("mine", mine.as_str())] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
            std::fs::write(tmp.path().join(name).join("model.toml"), text).unwrap();
        }
        let mut cfg = Config::default();
        cfg.analysis.models_dir = tmp.path().to_path_buf();
        cfg.analysis.models = vec!["basic-pitch".into(), "mine".into(), "absent".into()];
        let space = similarity_space(&cfg, None);
        let got: Vec<(&str, usize, f32)> = space
            .embeddings
            .iter()
            .map(|e| (e.name.as_str(), e.dims, e.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("basic-pitch/notes88", 88, 0.5),
                ("mine/notes88", 88, 0.5),
                ("mine/stats", 3, 2.0)
            ]
        );
        // The shipped manifest gives the default space; a DSP-only configuration has no model.
        cfg.analysis.models.truncate(1);
        assert_eq!(
            similarity_space(&cfg, None),
            trackmill_similarity::Space::default()
        );
        cfg.analysis.models.clear();
        assert!(similarity_space(&cfg, None).embeddings.is_empty());
    }

    #[test]
    fn relative_default_is_found_next_to_the_build() {
        // The test executable lives under target/ in the workspace, which has models/.
        let got = resolve_models_dir(Path::new("models"), Some(Path::new("/nonexistent/x.toml")));
        assert!(got.join("basic-pitch/model.toml").is_file(), "{got:?}");
    }
}
