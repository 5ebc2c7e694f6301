//! The model part of `cargo xtask bench analysis`: with the release `model_probe` example and the
//! default manifests, the session start time, inference time per audio second and the RSS of a
//! process with the runtime and models loaded, the best of a few runs. (What the model stage adds
//! to each file's CPU time is in the analysis table.)

use crate::bench_analysis::json_number;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Each timing is the best of this many runs (other work on the machine only adds time).
const REPEATS: usize = 3;

fn probe(bin: &Path, arg: &str) -> Result<String> {
    let out = Command::new(bin)
        .arg(arg)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "model_probe {arg} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

pub fn run(bin: &Path) -> Result<()> {
    println!("\nmodel stage (default manifests, 1 intra-op thread, release build)");
    // Four minutes of a sine sweep through the models in a fresh process; the fastest run's
    // times (memory figures are the same in every run).
    let mut t = probe(bin, "240")?;
    for _ in 1..REPEATS {
        let again = probe(bin, "240")?;
        let ms = |x: &str| json_number(x, "infer_ms").unwrap_or(f64::INFINITY);
        if ms(&again) < ms(&t) {
            t = again;
        }
    }
    let num = |k: &str| json_number(&t, k).unwrap_or(f64::NAN);
    println!(
        "session start {:.0} ms; inference {:.1} ms per audio second seen ({:.1} s seen); \
         RSS with the runtime and models loaded {:.1} MiB, peak {:.1} MiB after inference \
         (VmPeak {:.1} MiB)",
        num("session_start_ms"),
        num("infer_ms_per_audio_s"),
        num("model_audio_s"),
        num("rss_after_load_kb") / 1024.0,
        num("hwm_kb") / 1024.0,
        num("vm_peak_kb") / 1024.0,
    );
    Ok(())
}
