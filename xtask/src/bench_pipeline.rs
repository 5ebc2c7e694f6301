//! Pipeline benchmark: the release binary scans a 200,000-file and a 2,000-file tree of tiny
//! valid WAV files (written here, spread over nested directories) with 2 workers into a fresh
//! SQLite database, and reports files/s and the supervisor's and workers' peak RSS for both.
//! The supervisor's memory must not grow with the library: its peak RSS on both trees should be
//! within 10%. Trees are kept under `bench-out/` and reused, and read once before each scan.
//! `TRACKMILL_BENCH_FILES` replaces the large tree's size.

use crate::util::root;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const LARGE: usize = 200_000;
const SMALL: usize = 2_000;
const WORKERS: &str = "2";
/// Files per leaf directory and leaf directories per top-level directory.
const PER_DIR: usize = 100;
const DIRS_PER_TOP: usize = 100;
/// The tiny file: mono 16-bit PCM, 20 ms at 22,050 Hz.
const FILE_MS: u32 = 20;

pub fn run() -> Result<()> {
    let large = match std::env::var("TRACKMILL_BENCH_FILES") {
        Ok(v) => v.parse().context("TRACKMILL_BENCH_FILES")?,
        Err(_) => LARGE,
    };
    let exe = crate::util::release_binary()?;
    let out = root().join("bench-out");
    std::fs::create_dir_all(&out)?;

    let mut results = Vec::new();
    for files in [large, SMALL] {
        let tree = out.join(format!("tree-{files}"));
        ensure_tree(&tree, files)?;
        warm(&tree)?;
        results.push(scan(&exe, &out, &tree, files)?);
    }
    println!();
    println!(
        "pipeline, {WORKERS} workers, tiny WAV files, SQLite:\n{:>9} {:>9} {:>9} {:>14} {:>14}",
        "files", "elapsed", "files/s", "supervisor RSS", "worker RSS"
    );
    for r in &results {
        println!(
            "{:>9} {:>8.1}s {:>9.0} {:>11.1} MiB {:>10.1} MiB",
            r.files,
            r.elapsed_s,
            r.files as f64 / r.elapsed_s,
            mib(r.supervisor_rss),
            mib(r.worker_rss)
        );
    }
    let ratio = results[0].supervisor_rss as f64 / results[1].supervisor_rss.max(1) as f64;
    println!(
        "supervisor peak RSS, {} files / {} files: {ratio:.3} ({} the 10% bound)",
        results[0].files,
        results[1].files,
        if (ratio - 1.0).abs() <= 0.10 {
            "within"
        } else {
            "OUTSIDE"
        }
    );
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

struct Measured {
    files: u64,
    elapsed_s: f64,
    supervisor_rss: u64,
    worker_rss: u64,
}

/// A tiny tone whose pitch depends on `i`.
fn wav(i: usize) -> Vec<u8> {
    trackmill_e2e::wav_bytes(220.0 + (i % 64) as f32 * 10.0, FILE_MS)
}

/// Writes the tree unless a complete one is already there.
fn ensure_tree(tree: &Path, files: usize) -> Result<()> {
    let done = tree.join(".complete");
    if done.exists() {
        return Ok(());
    }
    if tree.exists() {
        std::fs::remove_dir_all(tree)?;
    }
    let started = Instant::now();
    for i in 0..files {
        let leaf = tree.join(format!(
            "d{:03}/d{:03}",
            i / (PER_DIR * DIRS_PER_TOP),
            (i / PER_DIR) % DIRS_PER_TOP
        ));
        if i % PER_DIR == 0 {
            std::fs::create_dir_all(&leaf)?;
        }
        std::fs::write(leaf.join(format!("t{i:06}.wav")), wav(i))?;
    }
    std::fs::write(&done, b"")?;
    eprintln!(
        "xtask: wrote {files} files under {} in {:.1}s",
        tree.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads every file of the tree once, so that the scan finds them in the page cache whatever ran
/// before (a build evicts them, and a scan that reads them from disk took twice as long): the
/// figure is the pipeline's, not the disk's.
fn warm(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            warm(&entry.path())?;
        } else {
            std::fs::read(entry.path())?;
        }
    }
    Ok(())
}

fn scan(exe: &Path, out: &Path, tree: &Path, files: usize) -> Result<Measured> {
    let db = out.join(format!("pipeline-{files}.db"));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let summary = out.join(format!("pipeline-{files}.json"));
    let _ = std::fs::remove_file(&summary);
    // DSP-only: this measures the pipeline itself (walk, skip-checks, dispatch, workers' per-file
    // overhead, DB writes); the model stage's cost is `cargo xtask bench analysis`'s.
    let config = out.join("pipeline.toml");
    std::fs::write(&config, "[analysis]\nmodels = []\n")?;
    eprintln!("xtask: scanning {files} files…");
    let st = Command::new(exe)
        .arg("scan")
        .arg(tree)
        .arg("--db")
        .arg(format!("sqlite://{}", db.display()))
        .arg("--config")
        .arg(&config)
        .args(["--workers", WORKERS, "--no-progress", "--summary"])
        .arg(&summary)
        .status()
        .with_context(|| format!("could not start {}", exe.display()))?;
    if !st.success() {
        bail!("scan of {} failed: {st}", tree.display());
    }
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
    let num = |k: &str| {
        s[k].as_u64()
            .with_context(|| format!("{k} missing in the summary"))
    };
    let seen = num("files_seen")?;
    if seen != files as u64 {
        bail!("the scan saw {seen} of {files} files: {s:#}");
    }
    let analyzed = num("analyzed")?;
    if analyzed != seen {
        bail!("only {analyzed} of {seen} files were analysed: {s:#}");
    }
    Ok(Measured {
        files: seen,
        elapsed_s: s["elapsed_s"].as_f64().context("elapsed_s")?,
        supervisor_rss: num("supervisor_peak_rss_bytes")?,
        worker_rss: num("worker_peak_rss_bytes")?,
    })
}
