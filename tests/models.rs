//! End-to-end scans with the ONNX models in the workers: an embedding per analysed track in both
//! sinks, bit-identical across runs; DSP-only with one warning when the runtime is missing; CPU
//! with one warning when the GPU is asked for but CUDA cannot be registered.

use std::path::{Path, PathBuf};
use trackmill_e2e::pgserver::PgSchema;
use trackmill_e2e::*;

/// Model embeddings every analysed track must carry, with their sizes.
const MODEL_EMBEDDINGS: [(&str, usize); 3] = [
    ("basic-pitch/notes88", 88),
    ("basic-pitch/pitch-class12", 12),
    ("basic-pitch/stats", 3),
];
const DSP_FINGERPRINT: &str = "trackmill-dsp-v1";

/// Four short tracks in four formats, and one corrupt file.
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let good: Vec<PathBuf> = [
        ("a.flac", 262),
        ("b.mp3", 330),
        ("c.ogg", 392),
        ("d.wav", 440),
    ]
    .iter()
    .map(|(name, freq)| {
        let p = dir.join(name);
        tone(&p, *freq, 8);
        p
    })
    .collect();
    std::fs::write(dir.join("corrupt.mp3"), vec![0x5au8; 4096]).unwrap();
    good
}

fn embeddings(row: &serde_json::Value) -> Vec<(String, Vec<f64>)> {
    row["embeddings"]
        .as_array()
        .unwrap_or_else(|| panic!("no embeddings in {row:#}"))
        .iter()
        .map(|e| {
            let values: Vec<f64> = e["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(e["dim"].as_u64(), Some(values.len() as u64), "{e}");
            (e["model"].as_str().unwrap().to_string(), values)
        })
        .collect()
}

fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn every_analyzed_track_has_model_embeddings_identical_across_runs_and_sinks() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let good = corpus(&lib);
    let sqlite = format!("sqlite://{}", tmp.path().join("a.db").display());
    let pg = PgSchema::new("e2e");
    let pg_url = pg.url();
    let mut runs = Vec::new();
    for (url, summary) in [(&sqlite, "a.json"), (&pg_url, "b.json")] {
        let (out, s) = scan_url(
            &lib,
            url,
            &tmp.path().join(summary),
            &["--workers", "2"],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert_accounted(&s);
        assert_eq!(n(&s, "analyzed"), 4, "{s:#}\n{err}");
        assert_eq!(s["failed"]["corrupt"], 1, "{s:#}");
        assert!(!err.contains("models disabled"), "{err}");
        runs.push(url.clone());
    }
    for f in &good {
        let a = stored_url(&runs[0], f);
        let b = stored_url(&runs[1], f);
        assert_eq!(a["status"], "analyzed", "{a:#}");
        let ea = embeddings(&a);
        let eb = embeddings(&b);
        assert_eq!(ea, eb, "{}: SQLite and PostgreSQL runs differ", f.display());
        assert!(ea
            .iter()
            .any(|(m, v)| m == DSP_FINGERPRINT && v.len() == 38));
        for (model, dim) in MODEL_EMBEDDINGS {
            let (_, v) = ea
                .iter()
                .find(|(m, _)| m == model)
                .unwrap_or_else(|| panic!("{model} missing for {}: {ea:?}", f.display()));
            assert_eq!(v.len(), dim, "{model}");
            assert!(v.iter().all(|x| x.is_finite()), "{model}: {v:?}");
        }
        let pcp = &ea
            .iter()
            .find(|(m, _)| m == "basic-pitch/pitch-class12")
            .unwrap()
            .1;
        assert!((pcp.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{pcp:?}");
        // The key (refined with the pitch-class profile) is the same in both runs.
        assert_eq!(a["features"]["key"], b["features"]["key"]);
        assert_eq!(a["features"]["mode"], b["features"]["mode"]);
    }
    // A single tone: Basic Pitch's lowest and highest active note is that tone (A4 = MIDI 69).
    let d = embeddings(&stored_url(&runs[0], &lib.join("d.wav")));
    let stats = &d.iter().find(|(m, _)| m == "basic-pitch/stats").unwrap().1;
    assert_eq!(stats[1..], [69.0, 69.0], "{stats:?}");

    // `trackmill show` returns them.
    let shown = trackmill_json([
        "show".as_ref(),
        "--json".as_ref(),
        "--db".as_ref(),
        sqlite.as_ref(),
        good[0].as_os_str(),
    ]);
    let names: Vec<String> = embeddings(&shown).into_iter().map(|(m, _)| m).collect();
    for (model, _) in MODEL_EMBEDDINGS {
        assert!(names.iter().any(|m| m == model), "{names:?}");
    }
}

/// Also: once the runtime is back, the next scan analyses those files again for the model results
/// they lack (and the one after that has nothing left to do).
#[test]
fn missing_runtime_gives_a_dsp_only_scan_and_one_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let good = corpus(&lib);
    let db = tmp.path().join("t.db");
    let url = format!("sqlite://{}", db.display());
    let missing = tmp.path().join("no-such-libonnxruntime.so");
    let (out, s) = scan_url(
        &lib,
        &url,
        &tmp.path().join("s.json"),
        &["--workers", "2", "--recycle-after", "1"],
        &[("TRACKMILL_ORT_LIB", missing.to_str().unwrap())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(n(&s, "analyzed"), 4, "{s:#}\n{err}");
    assert_eq!(occurrences(&err, "models disabled"), 1, "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(err.contains("DSP-only"), "{err}");
    for f in &good {
        let row = stored(&db, f);
        let names: Vec<String> = embeddings(&row).into_iter().map(|(m, _)| m).collect();
        assert_eq!(names, [DSP_FINGERPRINT], "{}", f.display());
    }

    // The runtime is back.
    let scan = |summary: &str| {
        scan_url(
            &lib,
            &url,
            &tmp.path().join(summary),
            &["--workers", "2"],
            &[],
        )
    };
    let (out, s) = scan("s2.json");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(n(&s, "analyzed"), 4, "{s:#}\n{err}");
    // The corrupt file's stored failure stands: only the four DSP-only files are redone.
    assert_eq!(n(&s, "skipped_unchanged"), 1, "{s:#}");
    for f in &good {
        let row = stored(&db, f);
        assert_eq!(row["models"], serde_json::json!(["basic-pitch"]), "{row:#}");
        let names: Vec<String> = embeddings(&row).into_iter().map(|(m, _)| m).collect();
        assert!(
            names.iter().any(|m| m == "basic-pitch/notes88"),
            "{}: {names:?}",
            f.display()
        );
    }
    let (out, s) = scan("s3.json");
    assert!(out.status.success());
    assert_eq!(n(&s, "analyzed"), 0, "{s:#}");
    assert_eq!(n(&s, "skipped_unchanged"), 5, "{s:#}");
}

#[test]
fn gpu_request_without_cuda_runs_on_cpu_after_one_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let good = corpus(&lib);
    let cfg = tmp.path().join("trackmill.toml");
    std::fs::write(&cfg, "[analysis]\ngpu = true\n").unwrap();
    let db = tmp.path().join("t.db");
    let (out, s) = scan_url(
        &lib,
        &format!("sqlite://{}", db.display()),
        &tmp.path().join("s.json"),
        &["--workers", "2", "--config", cfg.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(n(&s, "analyzed"), 4, "{s:#}\n{err}");
    if !err.contains("models: basic-pitch on cuda") {
        assert_eq!(
            occurrences(&err, "CUDA execution provider could not be registered"),
            1,
            "{err}"
        );
    }
    for f in &good {
        let names: Vec<String> = embeddings(&stored(&db, f))
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert!(
            names.iter().any(|m| m == "basic-pitch/notes88"),
            "{names:?}"
        );
    }
}
