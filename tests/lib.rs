//! Support for the end-to-end tests: locating the built binary, generating real audio, running
//! scans, and reading summaries; `child` watches running processes, `pgserver` the PostgreSQL server.

pub mod child;
pub mod pgserver;

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

/// Scans `lib` into the SQLite file `db`; the summary goes next to it.
/// Writes `ms` milliseconds of a sine at `freq` Hz as 16-bit mono PCM WAV at 22,050 Hz: tiny
/// real audio, quick to make by the thousand.
pub fn wav(path: &Path, freq: f32, ms: u32) {
    const RATE: u32 = 22_050;
    let samples = RATE * ms / 1000;
    let data_len = samples * 2;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&RATE.to_le_bytes());
    b.extend_from_slice(&(RATE * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f32 / RATE as f32;
        let v = (t * freq * std::f32::consts::TAU).sin() * 0.5 * f32::from(i16::MAX);
        b.extend_from_slice(&(v as i16).to_le_bytes());
    }
    std::fs::write(path, b).expect("write wav");
}

/// `n` tiny WAV files (0.2 s, each at its own pitch) named `0000.wav`… in `dir`.
pub fn tiny_library(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        wav(
            &dir.join(format!("{i:04}.wav")),
            110.0 + i as f32 * 0.75,
            200,
        );
    }
}

/// Copies `src` to `dst` (same format) with NUL, SOH and BEL bytes in its title and ESC in its
/// artist. The title `bad␁title␇` gets its `a` overwritten by NUL: in ID3v2.4 a NUL separates
/// values, in a FLAC/Vorbis comment it is part of the text.
pub fn hostile_tags(src: &Path, dst: &Path) {
    let st = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(src)
        .args([
            "-metadata",
            "title=bad\u{1}title\u{7}",
            "-metadata",
            "artist=x\u{1b}[31my",
            "-c",
            "copy",
        ])
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
    let mut bytes = std::fs::read(dst).unwrap();
    if let Some(pos) = bytes.windows(3).position(|w| w == b"bad") {
        bytes[pos + 1] = 0; // a NUL inside the title frame
    }
    std::fs::write(dst, bytes).unwrap();
}

pub fn scan(lib: &Path, db: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let url = format!("sqlite://{}", db.display());
    scan_url(lib, &url, &db.with_extension("summary.json"), extra)
}

/// Scans `lib` into the database at `url`, writing the summary to `summary`; waits for the end.
pub fn scan_url(
    lib: &Path,
    url: &str,
    summary: &Path,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let out = scan_command(lib, url, summary, extra)
        .output()
        .expect("run trackmill");
    let v = read_summary(summary).unwrap_or_else(|| {
        panic!(
            "no summary; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, v)
}

/// The `trackmill scan` command line used by every end-to-end scan (fault injection enabled).
pub fn scan_command(lib: &Path, url: &str, summary: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("scan")
        .arg(lib)
        .arg("--db")
        .arg(url)
        .arg("--summary")
        .arg(summary)
        .args(extra)
        .env("TRACKMILL_FAULT_INJECTION", "1");
    cmd
}

/// The JSON summary a scan wrote, if it wrote one.
pub fn read_summary(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).expect("summary is JSON"))
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
    let url = trackmill_dbwriter::DbUrl::parse(&format!("sqlite://{}", db.display())).unwrap();
    use std::os::unix::ffi::OsStrExt;
    trackmill_dbwriter::show(&url, file.as_os_str().as_bytes())
        .unwrap()
        .unwrap_or(serde_json::Value::Null)
}
