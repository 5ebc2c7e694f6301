//! `cargo xtask bench analysis`: analysis throughput against ffmpeg's bare decode, and peak
//! memory. Generates a corpus of 4-minute tracks in mixed formats (cached in the system temp
//! directory), then per file times `ffmpeg -threads 1` decoding to mono 22.05 kHz f32 into
//! /dev/null and the release `analyze` example (one process per file, one core; each the best
//! of a few runs), and prints audio seconds per wall second for both, their ratio (target
//! ≥ 0.8), and the peak RSS of each analysis, of a 2-hour MP3 and of a 10-minute 192 kHz /
//! 24-bit FLAC. The model stage (the release `model_probe` example, default manifests) is measured
//! too: session start, inference time per audio second, the RSS of a process with the runtime and
//! models loaded, and per file the time the model stage adds against the DSP-only analysis.

use crate::util;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// (file name, ffmpeg output arguments)
const FORMATS: &[(&str, &[&str])] = &[
    ("t1.mp3", &["-c:a", "libmp3lame", "-b:a", "192k"]),
    ("t2.flac", &["-c:a", "flac"]),
    ("t3.ogg", &["-c:a", "libvorbis", "-q:a", "5"]),
    ("t4.opus", &["-c:a", "libopus", "-b:a", "128k"]),
    ("t5.m4a", &["-c:a", "aac", "-b:a", "192k"]),
    ("t6.m4a", &["-c:a", "alac"]),
    ("t7.wav", &["-c:a", "pcm_s16le"]),
    ("t8.aiff", &["-c:a", "pcm_s16be"]),
    ("t9.mp3", &["-c:a", "libmp3lame", "-q:a", "2"]),
    (
        "t10.flac",
        &["-c:a", "flac", "-sample_fmt", "s32", "-ar", "96000"],
    ),
];

const TRACK_S: u32 = 240;
/// Each timing is the best of this many runs, to damp noise from other work on the machine.
const REPEATS: usize = 2;
/// The peak-RSS budget over the idle process, from the issue.
const RSS_BUDGET_KB: u64 = 64 * 1024;

pub fn run() -> Result<()> {
    for tool in ["ffmpeg"] {
        if !util::have(tool) {
            bail!("the analysis benchmark needs {tool} (cargo xtask setup installs it)");
        }
    }
    let dir = std::env::temp_dir().join("trackmill-bench-analysis");
    std::fs::create_dir_all(&dir)?;
    let corpus = make_corpus(&dir)?;
    let long_mp3 = make_long_mp3(&dir, &corpus[0])?;
    let hires = make_hires_flac(&dir)?;

    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "trackmill-analysis",
        "--example",
        "analyze",
        "--example",
        "model_probe",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"));
    let analyze = target.join("release/examples/analyze");
    let probe = target.join("release/examples/model_probe");

    println!(
        "\n{:<10} {:>8} {:>12} {:>12} {:>7} {:>12}",
        "file", "audio s", "ffmpeg x rt", "analyse x rt", "ratio", "peak RSS MiB"
    );
    let (mut audio_total, mut ff_total, mut an_total) = (0.0f64, 0.0f64, 0.0f64);
    let mut worst_rss = 0u64;
    for f in &corpus {
        let mut ff = f64::INFINITY;
        let mut r = run_analyze(&analyze, f)?;
        for _ in 0..REPEATS {
            ff = ff.min(time_ffmpeg(f)?);
            let again = run_analyze(&analyze, f)?;
            if again.wall_s < r.wall_s {
                r = again;
            }
        }
        audio_total += r.audio_s;
        ff_total += ff;
        an_total += r.wall_s;
        worst_rss = worst_rss.max(r.peak_over_idle_kb);
        println!(
            "{:<10} {:>8.1} {:>12.0} {:>12.0} {:>7.2} {:>12.1}",
            name(f),
            r.audio_s,
            r.audio_s / ff,
            r.audio_s / r.wall_s,
            ff / r.wall_s,
            r.peak_over_idle_kb as f64 / 1024.0
        );
    }
    let ff_speed = audio_total / ff_total;
    let an_speed = audio_total / an_total;
    println!(
        "\ntotal: {audio_total:.0} s of audio; ffmpeg -threads 1 decode {ff_speed:.0}x real time, \
         trackmill analysis {an_speed:.0}x real time"
    );
    println!(
        "throughput ratio (analysis / ffmpeg bare decode): {:.2} (target >= 0.80)",
        an_speed / ff_speed
    );
    println!(
        "peak RSS over idle, worst file of the corpus: {:.1} MiB",
        worst_rss as f64 / 1024.0
    );

    for (label, f) in [
        ("2-hour MP3", &long_mp3),
        ("10-minute 192 kHz / 24-bit FLAC", &hires),
    ] {
        let r = run_analyze(&analyze, f)?;
        println!(
            "{label}: {:.0} s of audio in {:.1} s ({:.0}x real time), peak RSS {:.1} MiB over an \
             idle {:.1} MiB ({})",
            r.audio_s,
            r.wall_s,
            r.audio_s / r.wall_s,
            r.peak_over_idle_kb as f64 / 1024.0,
            r.idle_kb as f64 / 1024.0,
            if r.peak_over_idle_kb <= RSS_BUDGET_KB {
                "within the 64 MiB budget"
            } else {
                "OVER the 64 MiB budget"
            }
        );
    }
    crate::bench_model::run(&probe, &corpus)
}

pub(crate) fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn ffmpeg(args: &[&str]) -> Result<()> {
    util::run(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(args),
    )
}

/// Ten 4-minute tracks, each with its own tempo, chord and timbre.
fn make_corpus(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (i, (file, args)) in FORMATS.iter().enumerate() {
        let path = dir.join(file);
        if !path.exists() {
            let i = i as f64;
            let bpm = 80.0 + 9.0 * i;
            let root = 110.0 * 2f64.powf(i * 5.0 / 12.0);
            let src = format!(
                "aevalsrc='0.15*sin(2*PI*{r}*t)+0.1*sin(2*PI*{third}*t)+0.1*sin(2*PI*{fifth}*t)\
                 +0.3*sin(2*PI*{kick}*t)*exp(-30*mod(t\\,{beat}))\
                 +0.05*(random(0)-0.5)*exp(-60*mod(t+{half}\\,{beat}))\
                 |0.15*sin(2*PI*{r}*t)+0.1*sin(2*PI*{fifth}*t)\
                 +0.3*sin(2*PI*{kick}*t)*exp(-30*mod(t\\,{beat}))\
                 +0.05*(random(1)-0.5)*exp(-60*mod(t+{half}\\,{beat}))':s=44100:d={TRACK_S}",
                r = root,
                third = root * 1.26,
                fifth = root * 1.5,
                kick = 60.0,
                beat = 60.0 / bpm,
                half = 30.0 / bpm,
            );
            let tmp = path.with_extension(format!("tmp.{}", ext(&path)));
            let mut a = vec!["-f", "lavfi", "-i", src.as_str()];
            a.extend_from_slice(args);
            let tmp_s = tmp.to_str().context("utf-8 temp path")?;
            a.push(tmp_s);
            println!("generating {}", path.display());
            ffmpeg(&a)?;
            std::fs::rename(&tmp, &path)?;
        }
        out.push(path);
    }
    Ok(out)
}

fn ext(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Two hours of MP3: the first corpus track 30 times, joined without re-encoding.
fn make_long_mp3(dir: &Path, track: &Path) -> Result<PathBuf> {
    let path = dir.join("two_hours.mp3");
    if path.exists() {
        return Ok(path);
    }
    let list = dir.join("concat.txt");
    let line = format!("file '{}'\n", track.display());
    std::fs::write(&list, line.repeat(30))?;
    let tmp = dir.join("two_hours.tmp.mp3");
    println!("generating {}", path.display());
    ffmpeg(&[
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        list.to_str().context("utf-8 path")?,
        "-c",
        "copy",
        tmp.to_str().context("utf-8 path")?,
    ])?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Ten minutes of 192 kHz / 24-bit stereo FLAC.
fn make_hires_flac(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("hires_192k.flac");
    if path.exists() {
        return Ok(path);
    }
    let tmp = dir.join("hires_192k.tmp.flac");
    println!("generating {}", path.display());
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=192000:duration=600",
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=color=pink:sample_rate=192000:duration=600:amplitude=0.1",
        "-filter_complex",
        "[0][1]amerge=inputs=2",
        "-c:a",
        "flac",
        "-sample_fmt",
        "s32",
        "-bits_per_raw_sample",
        "24",
        tmp.to_str().context("utf-8 path")?,
    ])?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Wall seconds for ffmpeg, one thread, to decode `f` to mono 22.05 kHz f32 into /dev/null.
fn time_ffmpeg(f: &Path) -> Result<f64> {
    let t = Instant::now();
    ffmpeg(&[
        "-threads",
        "1",
        "-i",
        f.to_str().context("utf-8 path")?,
        "-ac",
        "1",
        "-ar",
        "22050",
        "-f",
        "f32le",
        "/dev/null",
    ])?;
    Ok(t.elapsed().as_secs_f64())
}

struct AnalyzeRun {
    audio_s: f64,
    wall_s: f64,
    idle_kb: u64,
    peak_over_idle_kb: u64,
}

fn run_analyze(bin: &Path, f: &Path) -> Result<AnalyzeRun> {
    let t = Instant::now();
    let out = Command::new(bin)
        .arg(f)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let wall_s = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("analysis of {} failed: {text}", f.display());
    }
    Ok(AnalyzeRun {
        audio_s: json_number(&text, "decoded_s").context("decoded_s in the output")?,
        wall_s,
        idle_kb: json_number(&text, "idle_rss_kb").unwrap_or(0.0) as u64,
        peak_over_idle_kb: json_number(&text, "peak_over_idle_kb").unwrap_or(0.0) as u64,
    })
}

/// The number after the first `"key":` in `text`.
pub(crate) fn json_number(text: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let rest = text[text.find(&pat)? + pat.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
