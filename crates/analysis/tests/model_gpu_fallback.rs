//! `gpu = true` on a machine where CUDA cannot be registered: the models load on CPU and the
//! reason is kept (and logged once) instead of failing.

use std::path::{Path, PathBuf};
use trackmill_analysis::model::{ModelConfig, ModelSet};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn gpu_request_falls_back_to_cpu_with_a_reason() {
    let gpu_lib = root().join(".runtime/onnxruntime-gpu/libonnxruntime.so.1.31.1");
    let cpu_lib = root().join(".runtime/onnxruntime/libonnxruntime.so.1.31.1");
    // The CUDA build when `cargo xtask setup --gpu` fetched it, else the CPU build (which has
    // no CUDA provider at all).
    let lib = if gpu_lib.is_file() { gpu_lib } else { cpu_lib };
    assert!(
        lib.is_file(),
        "the ONNX runtime is not installed: run `cargo xtask setup`"
    );
    let cfg = ModelConfig {
        models_dir: root().join("models"),
        runtime_path: Some(lib),
        gpu: true,
        ..ModelConfig::default()
    };
    let set = ModelSet::load(&cfg).expect("loads with or without CUDA");
    match set.execution_provider() {
        "cuda" => assert!(set.gpu_fallback().is_none()),
        _ => assert!(set.gpu_fallback().is_some_and(|r| !r.is_empty())),
    }
}
