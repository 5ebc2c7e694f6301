//! Two-host benchmark: the release binary scans one library of generated one-minute tracks into one
//! PostgreSQL database (127.0.0.1:5432, database `test`, a fresh schema per run), once as a single
//! host and once as two hosts at the same time (one worker each), alternated, and prints the wall
//! time of each and their ratio. Hosts lease a file only when they are about to dispatch it, so
//! two hosts should take little more than half the time of one.

use crate::util::{release_binary, root};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

const TRACKS: usize = 48;
const TRACK_S: u32 = 60;
const ROUNDS: usize = 2;
const PG: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

pub fn run() -> Result<()> {
    let exe = release_binary()?;
    let out = root().join("bench-out/hosts");
    let lib = out.join("lib");
    ensure_library(&lib)?;
    let config = out.join("hosts.toml");
    std::fs::write(&config, "[analysis]\nmodels = []\n")?;
    let mut one = Vec::new();
    let mut two = Vec::new();
    for round in 0..ROUNDS {
        one.push(timed(&exe, &config, &lib, &out, 1, round)?);
        two.push(timed(&exe, &config, &lib, &out, 2, round)?);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!();
    println!("hosts, {TRACKS} tracks of {TRACK_S} s, one worker per host, PostgreSQL:");
    println!("  one host:  {one:.2?} s (best {:.2} s)", best(&one));
    println!("  two hosts: {two:.2?} s (best {:.2} s)", best(&two));
    println!(
        "  two hosts / one host: {:.2} (best against best; aim: at most 0.6)",
        best(&two) / best(&one)
    );
    Ok(())
}

/// Writes the tracks unless they are all there: distinct tones with a little noise.
fn ensure_library(lib: &Path) -> Result<()> {
    std::fs::create_dir_all(lib)?;
    for i in 0..TRACKS {
        let p = lib.join(format!("t{i:03}.flac"));
        if p.exists() {
            continue;
        }
        let src = format!(
            "sine=frequency={}:duration={TRACK_S},volume=0.5[s];anoisesrc=d={TRACK_S}:a=0.05[n];[s][n]amix=inputs=2",
            110 + 17 * i
        );
        let st = Command::new("ffmpeg")
            .args([
                "-loglevel",
                "error",
                "-y",
                "-filter_complex",
                &src,
                "-ac",
                "2",
            ])
            .arg(&p)
            .status()
            .context("ffmpeg")?;
        if !st.success() {
            bail!("ffmpeg could not write {}", p.display());
        }
    }
    Ok(())
}

/// Wall time of `hosts` concurrent scans of `lib` into a fresh schema.
fn timed(
    exe: &Path,
    config: &Path,
    lib: &Path,
    out: &Path,
    hosts: usize,
    round: usize,
) -> Result<f64> {
    let schema = format!("bench_hosts_{}_{hosts}_{round}", std::process::id());
    let url = format!("{PG}&schema={schema}");
    eprintln!("xtask: {hosts} host(s), round {}…", round + 1);
    let started = Instant::now();
    let children: Vec<Child> = (0..hosts)
        .map(|h| {
            Command::new(exe)
                .arg("scan")
                .arg(lib)
                .arg("--db")
                .arg(&url)
                .arg("--config")
                .arg(config)
                .args(["--workers", "1", "--no-progress", "--summary"])
                .arg(out.join(format!("host{h}.json")))
                .spawn()
                .context("start trackmill")
        })
        .collect::<Result<_>>()?;
    let mut analyzed = 0;
    for (h, mut c) in children.into_iter().enumerate() {
        let st = c.wait()?;
        if !st.success() {
            bail!("host {h} failed: {st}");
        }
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("host{h}.json")))?)?;
        analyzed += s["analyzed"].as_u64().unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = Command::new("psql")
        .env("PGOPTIONS", "--client-min-messages=warning")
        .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "test", "-c"])
        .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .status();
    if analyzed != TRACKS as u64 {
        bail!("{hosts} host(s) analysed {analyzed} of {TRACKS} tracks");
    }
    Ok(elapsed)
}
