//! Support for the end-to-end tests: locating the built binary, generating real audio with ffmpeg,
//! running scans, and reading summaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `trackmill` binary built in this workspace (`cargo xtask test` builds it first).
pub fn binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    let exe = target.join("debug/trackmill");
    assert!(
        exe.exists(),
        "{} is missing: run `cargo build -p trackmill` (cargo xtask test does)",
        exe.display()
    );
    exe
}

/// Generates `seconds` of a sine at `freq` Hz into `path` with ffmpeg (format from the extension).
pub fn tone(path: &Path, freq: u32, seconds: u32) {
    let st = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:duration={seconds}"))
        .arg(path)
        .status()
        .expect("ffmpeg is installed (cargo xtask setup)");
    assert!(st.success(), "ffmpeg failed for {}", path.display());
}

pub fn scan(lib: &Path, db: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let summary = db.with_extension("summary.json");
    let url = format!("sqlite://{}", db.display());
    scan_url(lib, &url, &summary, extra, &[])
}

/// Scans `lib` into the database at `url` with extra arguments and environment variables; the
/// summary is written to `summary`.
pub fn scan_url(
    lib: &Path,
    url: &str,
    summary: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, serde_json::Value) {
    let out = Command::new(binary())
        .arg("scan")
        .arg(lib)
        .arg("--db")
        .arg(url)
        .arg("--summary")
        .arg(summary)
        .args(extra)
        .env("TRACKMILL_FAULT_INJECTION", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run trackmill");
    let text = std::fs::read_to_string(summary).unwrap_or_else(|_| {
        panic!(
            "no summary; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, serde_json::from_str(&text).unwrap())
}

pub fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

pub fn failed_total(v: &serde_json::Value) -> u64 {
    v["failed"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum()
}

/// The accounting invariant: every file seen ends in exactly one state.
pub fn assert_accounted(v: &serde_json::Value) {
    assert_eq!(
        n(v, "files_seen"),
        n(v, "analyzed") + failed_total(v) + n(v, "quarantined") + n(v, "skipped_unchanged"),
        "accounting broken: {v:#}"
    );
}

pub fn stored(db: &Path, file: &Path) -> serde_json::Value {
    stored_url(&format!("sqlite://{}", db.display()), file)
}

/// What the database at `url` holds for `file` (`Null` when nothing).
pub fn stored_url(url: &str, file: &Path) -> serde_json::Value {
    let url = trackmill_dbwriter::DbUrl::parse(url).unwrap();
    use std::os::unix::ffi::OsStrExt;
    trackmill_dbwriter::show(&url, file.as_os_str().as_bytes())
        .unwrap()
        .unwrap_or(serde_json::Value::Null)
}
