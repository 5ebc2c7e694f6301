//! `trackmill doctor`: a healthy set-up reports the runtime, the model checksum, the database and
//! the limits; a missing runtime and a damaged model file are problems (exit 9).

use std::process::{Command, Output};
use trackmill_e2e::*;

fn doctor(db: &str, env: &[(&str, &std::ffi::OsStr)]) -> (Output, serde_json::Value) {
    let out = Command::new(binary())
        .args(["doctor", "--json", "--db", db])
        .envs(env.iter().copied())
        .output()
        .expect("run trackmill doctor");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, v)
}

fn manifest_sha256() -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/basic-pitch/model.toml"),
    )
    .unwrap();
    let line = text.lines().find(|l| l.starts_with("sha256")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn healthy_setup_reports_runtime_models_database_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("t.db").display());
    // An existing database: create it with a scan of an empty library.
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let (scan_out, _) = scan(&lib, &tmp.path().join("t.db"), &[]);
    assert!(scan_out.status.success());

    let (out, v) = doctor(&db, &[]);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let m = &v["models"];
    assert_eq!(m["runtime"]["found"], true, "{v:#}");
    assert!(m["runtime"]["path"]
        .as_str()
        .unwrap()
        .ends_with("libonnxruntime.so.1.31.1"));
    assert_eq!(m["load"]["runtime_version"], "1.31.1", "{v:#}");
    let bp = &m["models"][0];
    assert_eq!(bp["name"], "basic-pitch");
    assert_eq!(bp["ok"], true, "{v:#}");
    assert_eq!(bp["sha256"], manifest_sha256());
    assert_eq!(v["gpu"]["requested"], false);
    assert_eq!(v["database"]["reachable"], true, "{v:#}");
    assert_eq!(v["database"]["tracks"]["total"], 0, "{v:#}");
    assert_eq!(v["limits"]["memory_limit_bytes"], 1u64 << 30);
    assert_eq!(v["limits"]["cap"], "RLIMIT_AS");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v:#}");
}

#[test]
fn missing_runtime_and_damaged_model_are_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("t.db").display());
    let missing = tmp.path().join("libonnxruntime.so.404");
    let (out, v) = doctor(&db, &[("TRACKMILL_ORT_LIB", missing.as_os_str())]);
    assert_eq!(out.status.code(), Some(9), "{v:#}");
    assert_eq!(v["models"]["runtime"]["found"], false, "{v:#}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("ONNX Runtime"), "{problems}");
    assert!(problems.contains("libonnxruntime.so.404"), "{problems}");

    // A copy of the models directory whose model file was altered.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/basic-pitch");
    let dir = tmp.path().join("models/basic-pitch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.toml"), dir.join("model.toml")).unwrap();
    let mut onnx = std::fs::read(src.join("nmp.onnx")).unwrap();
    let last = onnx.len() - 1;
    onnx[last] ^= 0xff;
    std::fs::write(dir.join("nmp.onnx"), onnx).unwrap();
    let models = tmp.path().join("models");
    let (out, v) = doctor(&db, &[("TRACKMILL_MODELS_DIR", models.as_os_str())]);
    assert_eq!(out.status.code(), Some(9), "{v:#}");
    assert_eq!(v["models"]["models"][0]["ok"], false, "{v:#}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("checksum mismatch"), "{problems}");
}
