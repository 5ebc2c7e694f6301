//! Helpers for the integration tests: audio generated with ffmpeg into temporary directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use trackmill_analysis::{analyze_file, AnalysisError, Analyzed, Options};
use trackmill_types::Features;

/// Runs ffmpeg with `args` (after `-y -loglevel error`), panicking with its output on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Renders the lavfi source `src` into `dir/name` with extra output arguments.
pub fn render(dir: &Path, name: &str, src: &str, out_args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["-f", "lavfi", "-i", src];
    args.extend_from_slice(out_args);
    let p = path.to_str().expect("utf-8 temp path");
    args.push(p);
    ffmpeg(&args);
    path
}

/// Encodes `input` into `dir/name` with the given output arguments.
pub fn encode(input: &Path, dir: &Path, name: &str, out_args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["-i", input.to_str().expect("utf-8 temp path")];
    args.extend_from_slice(out_args);
    args.push(path.to_str().expect("utf-8 temp path"));
    ffmpeg(&args);
    path
}

/// A click track: 1 kHz bursts decaying in 5 ms, one per beat.
pub fn click_track(bpm: f64, seconds: u32) -> String {
    format!(
        "aevalsrc='0.8*sin(2*PI*1000*t)*exp(-200*mod(t\\,{period}))':s=44100:d={seconds}",
        period = 60.0 / bpm
    )
}

/// A click track in 4/4: 1 kHz bursts decaying in 5 ms on every beat, and on every fourth beat
/// (the downbeat) a louder 1.5 kHz burst on top.
pub fn accented_click_track(bpm: f64, seconds: u32) -> String {
    format!(
        "aevalsrc='0.4*sin(2*PI*1000*t)*exp(-200*mod(t\\,{beat}))\
+0.5*sin(2*PI*1500*t)*exp(-200*mod(t\\,{bar}))':s=44100:d={seconds}",
        beat = 60.0 / bpm,
        bar = 240.0 / bpm
    )
}

/// A short piece of "music": a chord, a bass line an octave down, clicks on the beat at
/// 120 BPM and a little noise, stereo, 44.1 kHz.
pub fn music(seconds: u32) -> String {
    format!(
        "aevalsrc='0.15*sin(2*PI*261.63*t)+0.12*sin(2*PI*329.63*t)+0.12*sin(2*PI*392*t)\
+0.2*sin(2*PI*130.81*t)*(1+0.5*sin(2*PI*0.5*t))\
+0.5*sin(2*PI*1500*t)*exp(-120*mod(t\\,0.5))+0.01*(random(0)-0.5)\
|0.15*sin(2*PI*261.63*t)+0.12*sin(2*PI*329.63*t)+0.1*sin(2*PI*392*t)\
+0.2*sin(2*PI*130.81*t)+0.5*sin(2*PI*1500*t)*exp(-120*mod(t\\,0.5))':s=44100:d={seconds}"
    )
}

pub fn analyze(path: &Path) -> Analyzed {
    analyze_file(path, &Options::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn try_analyze(path: &Path) -> Result<Analyzed, AnalysisError> {
    analyze_file(path, &Options::default())
}

pub fn features(a: &Analyzed) -> &Features {
    a.analysis.features.as_ref().expect("features present")
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
