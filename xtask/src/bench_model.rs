//! The model part of `cargo xtask bench analysis`: with the release `model_probe` example and the
//! default manifests, the session start time, inference time per audio second, the RSS of a
//! process with the runtime and models loaded, and per corpus file the time the model stage adds
//! to the DSP-only analysis (segment selection keeps it at or below the DSP cost), each the best
//! of a few runs.

use crate::bench_analysis::{json_number, name};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The model stage should cost no more than the DSP analysis of the same file.
const MAX_MODEL_OVER_DSP: f64 = 1.0;
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

pub fn run(bin: &Path, corpus: &[PathBuf]) -> Result<()> {
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
    println!(
        "\n{:<10} {:>10} {:>12} {:>10} {:>12} {:>11}",
        "file", "DSP ms", "DSP+coll ms", "model ms", "extra ms", "model/DSP"
    );
    let (mut dsp_total, mut extra_total) = (0.0f64, 0.0f64);
    let mut worst = 0.0f64;
    for f in corpus {
        let (mut dsp, mut with, mut model) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
        for _ in 0..REPEATS {
            let t = probe(bin, f.to_str().context("utf-8 path")?)?;
            let v = |k: &str| json_number(&t, k).unwrap_or(f64::INFINITY);
            dsp = dsp.min(v("dsp_only_ms"));
            with = with.min(v("dsp_with_collector_ms"));
            model = model.min(v("model_ms"));
        }
        // What a file costs more with the models: collecting segments during decode, plus
        // inference on them.
        let extra = (with - dsp).max(0.0) + model;
        dsp_total += dsp;
        extra_total += extra;
        worst = worst.max(extra / dsp);
        println!(
            "{:<10} {:>10.0} {:>12.0} {:>10.0} {:>12.0} {:>11.2}",
            name(f),
            dsp,
            with,
            model,
            extra,
            extra / dsp
        );
    }
    let ratio = extra_total / dsp_total;
    println!(
        "model stage over DSP-only analysis: {ratio:.2} overall, {worst:.2} worst file ({})",
        if worst <= MAX_MODEL_OVER_DSP {
            "within the budget of 1.0"
        } else {
            "OVER the budget of 1.0"
        }
    );
    Ok(())
}
