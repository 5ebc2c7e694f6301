//! What `trackmill doctor` says about models: runtime path and version, models and checksums,
//! GPU availability.

use crate::model::checksum::sha256_file;
use crate::model::manifest::Manifest;
use crate::model::{ModelConfig, ModelSet};
use serde_json::{json, Value};

/// A JSON report. Loads the runtime and models (as a worker would) to tell whether they work.
pub fn doctor_report(cfg: &ModelConfig) -> Value {
    let runtime = match cfg.resolve_runtime() {
        Ok(p) => json!({ "path": p.display().to_string(), "found": true }),
        Err(e) => json!({ "found": false, "error": e.to_string() }),
    };
    let models: Vec<Value> = cfg
        .enabled
        .iter()
        .map(|name| {
            let path = cfg.manifest_path(name);
            match Manifest::load(&path) {
                Err(e) => json!({ "name": name, "manifest": path.display().to_string(), "ok": false, "error": e.to_string() }),
                Ok(m) => {
                    let file = m.file_path();
                    let got = sha256_file(&file).ok();
                    let ok = got.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(&m.sha256));
                    json!({
                        "name": name,
                        "manifest": path.display().to_string(),
                        "file": file.display().to_string(),
                        "sha256_expected": m.sha256,
                        "sha256": got,
                        "ok": ok,
                        "input": format!("{:?}", m.input.kind),
                        "segments": format!("{:?} {} x {} s", m.segments.mode, m.segments.count, m.segments.seconds),
                        "segments_max_share": m.segments.max_share,
                        "license": m.license,
                    })
                }
            }
        })
        .collect();
    let load = match ModelSet::load(cfg) {
        Ok(set) => json!({
            "ok": true,
            "runtime_version": set.runtime().version,
            "runtime_path": set.runtime().path.display().to_string(),
            "execution_provider": set.execution_provider(),
            "gpu_requested": cfg.gpu,
            "gpu_fallback": set.gpu_fallback(),
        }),
        Err(e) => json!({ "ok": false, "error": e.to_string(), "gpu_requested": cfg.gpu }),
    };
    json!({
        "runtime": runtime,
        "models_dir": cfg.models_dir.display().to_string(),
        "models": models,
        "intra_threads": cfg.intra_threads,
        "load": load,
    })
}
