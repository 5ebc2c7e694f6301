//! Basic Pitch through the real ONNX Runtime: determinism, parity with the Python runtime, a
//! sine sweep the pitch profile follows, and a clean error when the runtime is missing.

use std::path::{Path, PathBuf};
use trackmill_analysis::model::{ModelConfig, ModelError, ModelSet};
use trackmill_analysis::MonoSink;

const WINDOW: usize = 43_844;
const NOTES: &str = "StatefulPartitionedCall:1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> ModelConfig {
    let cfg = ModelConfig {
        models_dir: root().join("models"),
        runtime_path: Some(root().join(".runtime/onnxruntime/libonnxruntime.so.1.31.1")),
        ..ModelConfig::default()
    };
    let lib = cfg.runtime_path.as_ref().expect("set above");
    assert!(
        lib.is_file() && root().join("models/basic-pitch/nmp.onnx").is_file(),
        "the ONNX runtime or Basic Pitch is not installed: run `cargo xtask setup`"
    );
    cfg
}

fn load() -> ModelSet {
    ModelSet::load(&config()).unwrap_or_else(|e| panic!("{e} (run `cargo xtask setup`)"))
}

/// A chord-ish test signal, the same one `tests/data/basic_pitch_reference.py` uses.
fn two_tones(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f64 / 22_050.0;
            (0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 0.25 * (2.0 * std::f64::consts::PI * 1318.51 * t).sin()) as f32
        })
        .collect()
}

fn embed(set: &mut ModelSet, audio: &[f32]) -> trackmill_analysis::model::ModelOutput {
    let mut c = set.collector();
    c.begin(Some(audio.len() as f64 / 22_050.0));
    for chunk in audio.chunks(1000) {
        c.accept(chunk);
    }
    set.infer(c).expect("inference")
}

#[test]
fn parity_with_python_onnxruntime_on_one_window() {
    let mut set = load();
    let (shape, got) = set
        .run_window("basic-pitch", &two_tones(WINDOW), NOTES)
        .expect("run");
    assert_eq!(shape, vec![1, 172, 88]);
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/basic_pitch_notes_ref.f32"),
    )
    .expect("reference");
    let want: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(want.len(), got.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "max abs difference {worst}");
}

#[test]
fn embeddings_are_deterministic_and_complete() {
    let mut set = load();
    let audio = two_tones(22_050 * 45);
    let a = embed(&mut set, &audio);
    let b = embed(&mut set, &audio);
    assert_eq!(a, b, "same audio must give bit-identical embeddings");
    let names: Vec<&str> = a.embeddings.iter().map(|e| e.model.as_str()).collect();
    assert_eq!(
        names,
        [
            "basic-pitch/notes88",
            "basic-pitch/pitch-class12",
            "basic-pitch/stats"
        ]
    );
    let pcp = a.pitch_class_profile.expect("pitch-class profile");
    // A4 (pitch class 9) dominates; E6 (pitch class 4) is next.
    let best = (0..12)
        .max_by(|&x, &y| pcp[x].total_cmp(&pcp[y]))
        .unwrap_or(0);
    assert_eq!(best, 9, "profile {pcp:?}");
    let stats = &a.embeddings[2].values;
    assert_eq!(stats.len(), 3);
    assert!(
        stats[1] <= 69.0 && stats[2] >= 69.0,
        "range {stats:?} must include A4"
    );
}

#[test]
fn pitch_profile_follows_a_sine_sweep() {
    let mut set = load();
    // 110 Hz → 880 Hz (MIDI 45 → 81), exponential, over 8 windows.
    let n = WINDOW * 8;
    let mut phase = 0f64;
    let sweep: Vec<f32> = (0..n)
        .map(|i| {
            let f = 110.0 * 8f64.powf(i as f64 / n as f64);
            phase += 2.0 * std::f64::consts::PI * f / 22_050.0;
            (0.5 * phase.sin()) as f32
        })
        .collect();
    let mut peaks = Vec::new();
    for w in sweep.chunks_exact(WINDOW) {
        let (_, notes) = set.run_window("basic-pitch", w, NOTES).expect("run");
        let mut mean = [0f32; 88];
        for frame in notes.chunks_exact(88) {
            for (m, v) in mean.iter_mut().zip(frame) {
                *m += v;
            }
        }
        let best = (0..88)
            .max_by(|&a, &b| mean[a].total_cmp(&mean[b]))
            .unwrap_or(0);
        peaks.push(best as i32 + 21);
    }
    for (k, midi) in peaks.iter().enumerate() {
        let centre = 45.0 + 36.0 * (k as f64 + 0.5) / 8.0;
        assert!(
            (*midi as f64 - centre).abs() <= 3.0,
            "window {k}: MIDI {midi}, sweep at {centre:.1}: {peaks:?}"
        );
    }
    assert!(
        peaks.windows(2).all(|p| p[1] >= p[0]),
        "not rising: {peaks:?}"
    );
}

#[test]
fn a_missing_runtime_is_a_clean_missing_error() {
    let cfg = ModelConfig {
        models_dir: root().join("models"),
        runtime_path: Some(root().join(".runtime/nowhere/libonnxruntime.so.1.31.1")),
        ..ModelConfig::default()
    };
    match ModelSet::load(&cfg) {
        Err(ModelError::Missing { path, .. }) => {
            assert!(path.ends_with("libonnxruntime.so.1.31.1"))
        }
        Err(e) => panic!("expected Missing, got {e}"),
        Ok(_) => panic!("expected Missing, the runtime loaded"),
    }
}

#[test]
fn a_missing_model_is_a_clean_missing_error() {
    let cfg = ModelConfig {
        enabled: vec!["no-such-model".into()],
        ..config()
    };
    assert!(matches!(
        ModelSet::load(&cfg),
        Err(ModelError::Missing { .. })
    ));
}
