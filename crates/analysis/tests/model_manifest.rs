//! A second model of the other input kind (log-mel), added as a manifest only, next to Basic
//! Pitch; and the doctor report.

use std::path::{Path, PathBuf};
use trackmill_analysis::model::{doctor_report, ModelConfig, ModelSet};
use trackmill_analysis::MonoSink;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A models directory holding Basic Pitch and the tiny log-mel fixture.
fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = |src: PathBuf, name: &str| {
        std::os::unix::fs::symlink(&src, dir.path().join(name)).expect("symlink");
    };
    link(root().join("models/basic-pitch"), "basic-pitch");
    link(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/tiny-mel"),
        "tiny-mel",
    );
    dir
}

fn config(dir: &Path, enabled: &[&str]) -> ModelConfig {
    let lib = root().join(".runtime/onnxruntime/libonnxruntime.so.1.31.1");
    assert!(
        lib.is_file(),
        "the ONNX runtime is not installed: run `cargo xtask setup`"
    );
    ModelConfig {
        models_dir: dir.to_path_buf(),
        runtime_path: Some(lib),
        enabled: enabled.iter().map(|s| s.to_string()).collect(),
        gpu: false,
        intra_threads: 1,
    }
}

fn tone(freq: f64, seconds: f64) -> Vec<f32> {
    (0..(seconds * 22_050.0) as usize)
        .map(|i| (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / 22_050.0).sin()) as f32)
        .collect()
}

#[test]
fn a_log_mel_model_is_only_a_manifest() {
    let dir = models_dir();
    let mut set = ModelSet::load(&config(dir.path(), &["basic-pitch", "tiny-mel"])).expect("load");
    assert_eq!(set.model_names(), ["basic-pitch", "tiny-mel"]);
    let mut c = set.collector();
    c.begin(None);
    for chunk in tone(220.0, 12.0).chunks(2048) {
        c.accept(chunk);
    }
    let out = set.infer(c).expect("infer");
    let mel = out
        .embeddings
        .iter()
        .find(|e| e.model.as_str() == "tiny-mel/mel32")
        .expect("mel embedding");
    assert_eq!(mel.values.len(), 32);
    // 220 Hz lies in the lowest mel bands: the loudest band is low, and so is the top label.
    let best = (0..32)
        .max_by(|&a, &b| mel.values[a].total_cmp(&mel.values[b]))
        .unwrap_or(99);
    assert!(best <= 4, "loudest band {best}");
    assert_eq!(out.labels.len(), 2);
    assert_eq!(out.labels[0].model.as_str(), "tiny-mel");
    assert_eq!(out.labels[0].label.as_str(), "low");
    assert!(out.labels[0].score >= out.labels[1].score);
    assert!(out
        .embeddings
        .iter()
        .any(|e| e.model.as_str() == "basic-pitch/notes88"));
}

#[test]
fn a_high_tone_moves_the_log_mel_labels() {
    let dir = models_dir();
    let mut set = ModelSet::load(&config(dir.path(), &["tiny-mel"])).expect("load");
    let mut c = set.collector();
    c.begin(Some(3.0));
    c.accept(&tone(6000.0, 3.0));
    let out = set.infer(c).expect("infer");
    assert_eq!(out.labels[0].label.as_str(), "high");
}

#[test]
fn doctor_reports_runtime_models_and_checksums() {
    let dir = models_dir();
    let r = doctor_report(&config(dir.path(), &["basic-pitch", "tiny-mel"]));
    assert_eq!(r["load"]["ok"], true, "{r:#}");
    assert_eq!(r["load"]["runtime_version"], "1.31.1");
    assert_eq!(r["models"][0]["ok"], true);
    assert_eq!(r["models"][1]["ok"], true);
    assert_eq!(r["load"]["execution_provider"], "cpu");
}
