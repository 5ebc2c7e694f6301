//! `cargo xtask bench analysis`: the CPU time of trackmill's analysis against ffmpeg's own
//! decode to mono 22.05 kHz, per format and overall, and peak memory.
//!
//! The corpus (cached under `bench-out/analysis`) is three pieces of generated music (a chord
//! progression with detuned partials and vibrato, a bass line, kick, snare and hi-hat, a little
//! noise; an eight-bar loop repeated under a pink-noise bed; 3:20, 4:00 and 4:40 long), each
//! transcoded by ffmpeg to MP3, FLAC 16-bit, FLAC
//! 24-bit at 48 kHz, AAC in M4A, Ogg Vorbis, Opus and WAV: 21 files, the same for every figure.
//! For each format, in alternating rounds, three processes run on the same files:
//! `ffmpeg -threads 1 -i F -ac 1 -ar 22050 -f f32le -` once per file, the release `analyze`
//! example on all of the format's files (DSP only), and the same with `--models` (the default
//! models loaded once, as in a worker). Each figure is the CPU time (user + system, from the
//! kernel's accounting of the waited-for child) of the fastest round. Then the peak RSS over
//! idle of a 2-hour MP3 and of a 10-minute 192 kHz / 24-bit FLAC, and the model stage's own
//! figures (`bench_model`).

use crate::util;
use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// (label, extension, ffmpeg output arguments)
const FORMATS: &[(&str, &str, &[&str])] = &[
    ("MP3", "mp3", &["-c:a", "libmp3lame", "-b:a", "192k"]),
    ("FLAC 16", "flac", &["-c:a", "flac", "-sample_fmt", "s16"]),
    (
        "FLAC 24",
        "flac",
        &[
            "-c:a",
            "flac",
            "-sample_fmt",
            "s32",
            "-bits_per_raw_sample",
            "24",
            "-ar",
            "48000",
        ],
    ),
    ("AAC", "m4a", &["-c:a", "aac", "-b:a", "192k"]),
    ("Vorbis", "ogg", &["-c:a", "libvorbis", "-q:a", "5"]),
    ("Opus", "opus", &["-c:a", "libopus", "-b:a", "128k"]),
    ("WAV", "wav", &["-c:a", "pcm_s16le"]),
];

/// The pieces: (seconds, BPM, root of the first chord in Hz).
const PIECES: &[(u32, f64, f64)] = &[(200, 96.0, 110.0), (240, 128.0, 146.83), (280, 174.0, 98.0)];

/// Rounds of the alternation; each figure is the fastest round's.
const ROUNDS: usize = 2;
/// The peak-RSS budget over the idle process for one corpus file (DSP only).
const FILE_RSS_BUDGET_KB: u64 = 8 * 1024;
/// The peak-RSS budget over the idle process for the long files.
const RSS_BUDGET_KB: u64 = 64 * 1024;

pub fn run() -> Result<()> {
    if !util::have("ffmpeg") {
        bail!("the analysis benchmark needs ffmpeg (cargo xtask setup installs it)");
    }
    let dir = util::root().join("bench-out/analysis");
    std::fs::create_dir_all(&dir)?;
    let corpus = make_corpus(&dir)?;

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

    // Per format: fastest round's (ffmpeg, DSP, with models) CPU seconds.
    let mut best = vec![[f64::INFINITY; 3]; FORMATS.len()];
    let mut audio = vec![0.0f64; FORMATS.len()];
    let mut rss = vec![0u64; FORMATS.len()];
    for round in 0..ROUNDS {
        println!("round {} of {ROUNDS}", round + 1);
        for (i, files) in corpus.iter().enumerate() {
            let ff = files.iter().map(|f| ffmpeg_cpu(f)).sum::<Result<f64>>()?;
            let dsp = analyze_cpu(&analyze, files, false)?;
            let with = analyze_cpu(&analyze, files, true)?;
            audio[i] = dsp.audio_s;
            rss[i] = rss[i].max(dsp.worst_peak_over_idle_kb);
            for (b, v) in best[i].iter_mut().zip([ff, dsp.cpu_s, with.cpu_s]) {
                *b = b.min(v);
            }
        }
    }

    println!(
        "\nCPU seconds (user + system), fastest of {ROUNDS} alternating rounds; speed = ffmpeg CPU \
         / trackmill CPU (>= 1.00: trackmill is faster than ffmpeg's decode alone)\n"
    );
    println!(
        "{:<8} {:>5} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>9} {:>9}",
        "format",
        "files",
        "audio s",
        "ffmpeg",
        "DSP",
        "speed",
        "+models",
        "speed",
        "model/DSP",
        "RSS MiB"
    );
    let row = |label: &str, n: usize, audio: f64, [ff, dsp, with]: [f64; 3], rss_kb: u64| {
        println!(
            "{label:<8} {n:>5} {audio:>8.0} {ff:>8.2} {dsp:>8.2} {:>7.2} {with:>8.2} {:>7.2} \
             {:>8.0}% {:>9.1}",
            ff / dsp,
            ff / with,
            100.0 * (with - dsp) / dsp,
            rss_kb as f64 / 1024.0
        );
    };
    let mut total = [0.0f64; 3];
    for (i, (label, _, _)) in FORMATS.iter().enumerate() {
        row(label, corpus[i].len(), audio[i], best[i], rss[i]);
        for (t, v) in total.iter_mut().zip(best[i]) {
            *t += v;
        }
    }
    let worst_rss = rss.iter().copied().max().unwrap_or(0);
    row(
        "all",
        corpus.iter().map(Vec::len).sum(),
        audio.iter().sum(),
        total,
        worst_rss,
    );
    let slowest = FORMATS
        .iter()
        .zip(&best)
        .map(|((label, _, _), [ff, dsp, _])| (ff / dsp, *label))
        .fold((f64::INFINITY, ""), |a, b| if b.0 < a.0 { b } else { a });
    println!(
        "\nDSP speed against ffmpeg: {:.2} overall, {:.2} on the slowest format ({}); goal >= 1.00",
        total[0] / total[1],
        slowest.0,
        slowest.1
    );
    println!(
        "model stage: {:.0}% of the DSP CPU time overall (goal <= 15%)",
        100.0 * (total[2] - total[1]) / total[1]
    );
    println!(
        "peak RSS over idle, worst corpus file (DSP): {:.1} MiB ({})",
        worst_rss as f64 / 1024.0,
        if worst_rss < FILE_RSS_BUDGET_KB {
            "within the 8 MiB budget"
        } else {
            "OVER the 8 MiB budget"
        }
    );

    let long_mp3 = make_long_mp3(&dir, &corpus[0][0])?;
    let hires = make_hires_flac(&dir)?;
    for (label, f) in [
        ("2-hour MP3", &long_mp3),
        ("10-minute 192 kHz / 24-bit FLAC", &hires),
    ] {
        let r = analyze_cpu(&analyze, std::slice::from_ref(f), false)?;
        println!(
            "{label}: {:.0} s of audio in {:.1} CPU s ({:.0}x real time), peak RSS {:.1} MiB over \
             idle ({})",
            r.audio_s,
            r.cpu_s,
            r.audio_s / r.cpu_s,
            r.worst_peak_over_idle_kb as f64 / 1024.0,
            if r.worst_peak_over_idle_kb <= RSS_BUDGET_KB {
                "within the 64 MiB budget"
            } else {
                "OVER the 64 MiB budget"
            }
        );
    }
    crate::bench_model::run(&probe)
}

fn ffmpeg(args: &[&str]) -> Result<()> {
    util::run(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(args),
    )
}

/// The lavfi source of piece `i`: four chords of two bars each (I, IV, V, vi) with a detuned
/// partial and slow vibrato, a bass line on the chord root, kick on every beat, snare on 2 and 4,
/// hi-hat on the off-beats, and a little noise; the two channels differ slightly. `secs` long.
fn piece_source(i: usize, secs: f64) -> String {
    let (_, bpm, root) = PIECES[i];
    let beat = 60.0 / bpm;
    // Semitones above the root of the chord playing at time t (changes every 8 beats).
    let step = format!(
        "(5*eq(mod(floor(t/{b8})\\,4)\\,1)+7*eq(mod(floor(t/{b8})\\,4)\\,2)\
         +9*eq(mod(floor(t/{b8})\\,4)\\,3))",
        b8 = 8.0 * beat
    );
    let f = format!("({root}*pow(2\\,{step}/12)*(1+0.003*sin(2*PI*5*t)))");
    let chord = |detune: f64| {
        format!(
            "0.08*sin(2*PI*{f}*t)+0.05*sin(2*PI*{f}*1.2599*t)+0.05*sin(2*PI*{f}*1.4983*t)\
             +0.03*sin(2*PI*{f}*2*{detune}*t)+0.02*sin(2*PI*{f}*3.01*t)"
        )
    };
    let bass = format!("0.15*sin(2*PI*{f}/2*t)*(0.6+0.4*exp(-6*mod(t\\,{beat})))");
    let kick = format!(
        "0.35*sin(2*PI*(45+90*exp(-30*mod(t\\,{beat})))*mod(t\\,{beat}))*exp(-9*mod(t\\,{beat}))"
    );
    let snare = |seed: u32| {
        format!(
            "0.12*(random({seed})-0.5)*exp(-22*mod(t+{beat}\\,{b2}))",
            b2 = 2.0 * beat
        )
    };
    let hat = |seed: u32| {
        format!(
            "0.05*(random({seed})-0.5)*exp(-70*mod(t+{half}\\,{beat}))",
            half = beat / 2.0
        )
    };
    let noise = |seed: u32| format!("0.004*(random({seed})-0.5)");
    format!(
        "aevalsrc='{}+{bass}+{kick}+{}+{}+{}|{}+{bass}+{kick}+{}+{}+{}':s=44100:d={secs}",
        chord(1.002),
        snare(0),
        hat(1),
        noise(2),
        chord(0.998),
        snare(3),
        hat(4),
        noise(5),
    )
}

/// Per format, the pieces transcoded to it (generated once, then reused). A piece is its
/// eight-bar loop (computing the expression for every sample is slow) repeated to length, with a
/// pink-noise bed that does not repeat.
fn make_corpus(dir: &Path) -> Result<Vec<Vec<PathBuf>>> {
    let mut masters = Vec::new();
    for (i, (secs, bpm, _)) in PIECES.iter().enumerate() {
        let path = dir.join(format!("piece{}.master.wav", i + 1));
        if !path.exists() {
            println!("generating {}", path.display());
            let lp = dir.join(format!("piece{}.loop.wav", i + 1));
            let src = piece_source(i, 32.0 * 60.0 / bpm);
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                &src,
                "-c:a",
                "pcm_f32le",
                lp.to_str().context("utf-8 path")?,
            ])?;
            let tmp = path.with_extension("tmp.wav");
            let noise = format!("anoisesrc=color=pink:sample_rate=44100:amplitude=0.02:d={secs}");
            let secs = secs.to_string();
            ffmpeg(&[
                "-stream_loop",
                "-1",
                "-i",
                lp.to_str().context("utf-8 path")?,
                "-f",
                "lavfi",
                "-i",
                &noise,
                "-filter_complex",
                "[1]aformat=channel_layouts=stereo[n];[0][n]amix=inputs=2:normalize=0",
                "-t",
                &secs,
                "-c:a",
                "pcm_s24le",
                tmp.to_str().context("utf-8 path")?,
            ])?;
            std::fs::rename(&tmp, &path)?;
            std::fs::remove_file(&lp)?;
        }
        masters.push(path);
    }
    let mut out = Vec::new();
    for (label, ext, args) in FORMATS {
        let mut files = Vec::new();
        for (i, master) in masters.iter().enumerate() {
            let tag = label.to_lowercase().replace(' ', "");
            let path = dir.join(format!("piece{}.{tag}.{ext}", i + 1));
            if !path.exists() {
                println!("generating {}", path.display());
                let tmp = dir.join(format!("piece{}.{tag}.tmp.{ext}", i + 1));
                let mut a = vec!["-i", master.to_str().context("utf-8 path")?];
                a.extend_from_slice(args);
                a.push(tmp.to_str().context("utf-8 path")?);
                ffmpeg(&a)?;
                std::fs::rename(&tmp, &path)?;
            }
            files.push(path);
        }
        out.push(files);
    }
    Ok(out)
}

/// Two hours of MP3: a corpus track joined to itself without re-encoding.
fn make_long_mp3(dir: &Path, track: &Path) -> Result<PathBuf> {
    let path = dir.join("two_hours.mp3");
    if path.exists() {
        return Ok(path);
    }
    let list = dir.join("concat.txt");
    let line = format!("file '{}'\n", track.display());
    std::fs::write(&list, line.repeat(36))?;
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

/// CPU seconds (user + system) of the children waited for so far.
fn children_cpu_s() -> Result<f64> {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    Ok(s(u.user_time()) + s(u.system_time()))
}

/// Runs `cmd` to completion and returns its stdout and CPU seconds.
fn cpu_of(cmd: &mut Command) -> Result<(String, f64)> {
    let before = children_cpu_s()?;
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let cpu = children_cpu_s()? - before;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), cpu))
}

/// CPU seconds of `ffmpeg -threads 1` decoding `f` to mono 22.05 kHz f32 on stdout (discarded).
fn ffmpeg_cpu(f: &Path) -> Result<f64> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-threads",
        "1",
        "-i",
    ])
    .arg(f)
    .args(["-ac", "1", "-ar", "22050", "-f", "f32le", "-"])
    .stdout(Stdio::null());
    // stdout is discarded; `output` still waits for the process.
    Ok(cpu_of(&mut cmd)?.1)
}

struct AnalyzeRun {
    audio_s: f64,
    cpu_s: f64,
    worst_peak_over_idle_kb: u64,
}

/// One `analyze` process over `files` (with the default models when `models`).
fn analyze_cpu(bin: &Path, files: &[PathBuf], models: bool) -> Result<AnalyzeRun> {
    let mut cmd = Command::new(bin);
    if models {
        cmd.arg("--models");
    }
    cmd.args(files);
    let (text, cpu_s) = cpu_of(&mut cmd)?;
    let mut run = AnalyzeRun {
        audio_s: 0.0,
        cpu_s,
        worst_peak_over_idle_kb: 0,
    };
    // One JSON object per file (pretty for a lone file, one line each otherwise).
    for v in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
        let v = v.context("analyze's JSON output")?;
        run.audio_s += v["analysis"]["audio"]["decoded_s"]
            .as_f64()
            .context("decoded_s in the output")?;
        let rss = v["peak_over_idle_kb"].as_u64().unwrap_or(0);
        run.worst_peak_over_idle_kb = run.worst_peak_over_idle_kb.max(rss);
        if models && v["model_embeddings"].as_u64().unwrap_or(0) == 0 {
            bail!("the models gave no embeddings: {v}");
        }
    }
    Ok(run)
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
