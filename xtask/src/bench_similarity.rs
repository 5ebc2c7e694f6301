//! Similarity benchmark: `trackmill similar` (the release binary) on synthetic libraries of
//! 100,000 and 1,000,000 analysed tracks in SQLite and PostgreSQL: query latency (median and
//! p99) and the query process's peak RSS, which must not grow with the library (1M within 10 %
//! of 100k). Libraries are written once through the real DB writer and kept under `bench-out/`
//! (SQLite files, PostgreSQL schemas `bench_similarity_<n>`), with an empty file per track so
//! that the query's "file still exists" check is real. `TRACKMILL_BENCH_SIMILARITY_SIZES`
//! (default `100000,1000000`), `TRACKMILL_BENCH_QUERIES` (default 20; 0 only writes the
//! libraries), `TRACKMILL_BENCH_PG`
//! (default the local test database; `none` skips PostgreSQL) adjust it; `TRACKMILL_BENCH_EXE`
//! measures another trackmill binary instead of building the release one.

use crate::util::root;
use anyhow::{bail, Context, Result};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use trackmill_dbwriter::DbUrl;
use trackmill_types::*;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
/// Files per directory of the tree of empty files.
const PER_DIR: u64 = 1000;

pub fn run() -> Result<()> {
    let sizes: Vec<u64> = std::env::var("TRACKMILL_BENCH_SIMILARITY_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().context("TRACKMILL_BENCH_SIMILARITY_SIZES"))
        .collect::<Result<_>>()?;
    let queries: usize = match std::env::var("TRACKMILL_BENCH_QUERIES") {
        Ok(v) => v.parse().context("TRACKMILL_BENCH_QUERIES")?,
        Err(_) => 20,
    };
    let exe = match std::env::var_os("TRACKMILL_BENCH_EXE") {
        Some(exe) => PathBuf::from(exe),
        None => crate::util::release_binary()?,
    };
    let out = root().join("bench-out");
    std::fs::create_dir_all(&out)?;
    let pg_base = std::env::var("TRACKMILL_BENCH_PG").unwrap_or_else(|_| DEFAULT_PG.into());

    let libraries = |n: u64| {
        let mut sinks = vec![(
            "SQLite",
            format!(
                "sqlite://{}",
                out.join(format!("similarity-{n}.db")).display()
            ),
        )];
        if pg_base != "none" {
            let sep = if pg_base.contains('?') { '&' } else { '?' };
            sinks.push((
                "PostgreSQL",
                format!("{pg_base}{sep}schema=bench_similarity_{n}"),
            ));
        }
        sinks
    };
    let mut wrote = false;
    for &n in &sizes {
        let tree = out.join(format!("similarity-files-{n}"));
        ensure_files(&tree, n)?;
        for (_, text) in libraries(n) {
            wrote |= ensure_library(&DbUrl::parse(&text)?, &tree, n)?;
        }
    }
    // A child's peak RSS (wait4's ru_maxrss) counts its parent's RSS when it was forked: after
    // writing a library this process is large, so the queries are measured from a fresh one.
    if wrote && queries > 0 {
        eprintln!("libraries written; measuring from a fresh process");
        let st = std::process::Command::new(std::env::current_exe()?)
            .args(["bench", "similarity"])
            .status()?;
        if !st.success() {
            bail!("the measuring run failed: {st}");
        }
        return Ok(());
    }
    let mut results = Vec::new();
    for &n in &sizes {
        let tree = out.join(format!("similarity-files-{n}"));
        for (sink, text) in libraries(n) {
            if queries == 0 {
                continue;
            }
            let m = measure(&exe, &text, &tree, n, queries)?;
            println!(
                "similar, {sink}, {n} tracks: median {:.3} s, p99 {:.3} s, CPU {:.3} s, peak RSS {:.1} MiB",
                m.median_s,
                m.p99_s,
                m.cpu_median_s,
                mib(m.peak_rss)
            );
            results.push((sink, n, m));
        }
    }
    println!();
    println!(
        "similarity queries (`trackmill similar FILE -n 20 --json`), {queries} queries each:\n\
         {:<11} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "sink", "tracks", "median", "p99", "CPU", "peak RSS"
    );
    for (sink, n, m) in &results {
        println!(
            "{sink:<11} {n:>9} {:>8.3}s {:>8.3}s {:>8.3}s {:>8.1} MiB",
            m.median_s,
            m.p99_s,
            m.cpu_median_s,
            mib(m.peak_rss)
        );
    }
    for sink in ["SQLite", "PostgreSQL"] {
        let of = |n: u64| {
            results
                .iter()
                .find(|(s, k, _)| *s == sink && *k == n)
                .map(|(_, _, m)| m.peak_rss)
        };
        let (Some(&lo), Some(&hi)) = (sizes.iter().min(), sizes.iter().max()) else {
            continue;
        };
        if let (Some(a), Some(b)) = (of(lo), of(hi)) {
            if lo != hi {
                let ratio = b as f64 / a.max(1) as f64;
                println!(
                    "{sink}: peak RSS at {hi} / at {lo} tracks: {ratio:.3} ({} the 10% bound)",
                    if (ratio - 1.0).abs() <= 0.10 {
                        "within"
                    } else {
                        "OUTSIDE"
                    }
                );
            }
        }
    }
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn file_of(tree: &Path, i: u64) -> PathBuf {
    tree.join(format!("{:04}", i / PER_DIR))
        .join(format!("{i:07}.flac"))
}

/// One empty file per track, so that results pass the query's existence check.
fn ensure_files(tree: &Path, n: u64) -> Result<()> {
    let done = tree.join(".complete");
    if done.exists() {
        return Ok(());
    }
    eprintln!("writing {n} empty files under {}", tree.display());
    for i in 0..n {
        if i % PER_DIR == 0 {
            std::fs::create_dir_all(file_of(tree, i).parent().unwrap_or(tree))?;
        }
        std::fs::File::create(file_of(tree, i))?;
    }
    std::fs::write(done, n.to_string())?;
    Ok(())
}

/// SplitMix64: a cheap, well-mixed pseudo-random stream per track.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// A synthetic analysed track with everything the vector reads: features, the DSP fingerprint
/// and Basic Pitch's embeddings, varied per track; 5,000 artists, 12 tracks an album.
fn analysis(i: u64) -> TrackAnalysis {
    let mut r = Mix(i);
    let stat = |r: &mut Mix, lo: f32, hi: f32| Stat {
        mean: r.f(lo, hi),
        std: r.f(lo, hi) * 0.3,
    };
    let mut chroma = [0.0f32; 12];
    for c in &mut chroma {
        *c = r.f(0.0, 1.0).powi(3);
    }
    let s: f32 = chroma.iter().sum::<f32>().max(1e-6);
    chroma.iter_mut().for_each(|c| *c /= s);
    let features = Features {
        integrated_lufs: r.f(-30.0, -6.0),
        loudness_range_lu: r.f(1.0, 20.0),
        true_peak_dbtp: r.f(-6.0, 0.0),
        replaygain_track_gain_db: r.f(-12.0, 6.0),
        replaygain_track_peak: r.f(0.5, 1.0),
        bpm: r.f(60.0, 180.0),
        onset_rate: r.f(0.2, 8.0),
        spectral_centroid_hz: stat(&mut r, 400.0, 4000.0),
        spectral_rolloff_hz: stat(&mut r, 800.0, 9000.0),
        spectral_flatness: stat(&mut r, 0.01, 0.5),
        spectral_flux: stat(&mut r, 0.05, 0.8),
        zero_crossing_rate: stat(&mut r, 0.01, 0.2),
        chroma,
        key: (r.next() % 12) as u8,
        mode: CleanText::new(if r.next() & 1 == 0 { "major" } else { "minor" }),
        key_strength: r.f(0.3, 0.9),
        silence_ratio: r.f(0.0, 0.1),
    };
    let emb = |r: &mut Mix, name: &str, n: usize| Embedding {
        model: CleanText::new(name),
        values: (0..n).map(|_| r.f(0.0, 1.0)).collect(),
    };
    let artist = CleanText::new(&format!("Artist {}", i / 200));
    TrackAnalysis {
        analyzer_version: ANALYZER_VERSION,
        audio: AudioProps {
            container: CleanText::new("flac"),
            codec: CleanText::new("flac"),
            sample_rate: 44_100,
            channels: 2,
            bits_per_sample: Some(16),
            duration_s: Some(f64::from(r.f(120.0, 420.0))),
            decoded_s: 240.0,
            bitrate_kbps: Some(900),
        },
        tags: Tags {
            title: Some(CleanText::new(&format!("Track {i}"))),
            artists: vec![artist.clone()],
            album: Some(CleanText::new(&format!("Album {}", i / 12))),
            album_artist: Some(artist),
            ..Tags::default()
        },
        features: Some(features),
        embeddings: vec![
            emb(&mut r, "trackmill-dsp-v1", 38),
            emb(&mut r, "basic-pitch/notes88", 88),
            emb(&mut r, "basic-pitch/pitch-class12", 12),
        ],
        models: vec![CleanText::new("basic-pitch")],
        ..TrackAnalysis::default()
    }
}

/// Writes the library through the real DB writer unless the database already holds it.
/// Writes the library of `n` tracks unless it is there; returns whether it wrote it.
fn ensure_library(url: &DbUrl, tree: &Path, n: u64) -> Result<bool> {
    if let Ok(c) = trackmill_dbwriter::counts(url) {
        if c["analyzed"].as_u64() == Some(n) {
            return Ok(false);
        }
    }
    if let DbUrl::Sqlite(p) = url {
        let _ = std::fs::remove_file(p);
    } else {
        trackmill_dbwriter::drop_schema(url)?;
    }
    eprintln!("writing {n} tracks into {}", url.redacted());
    let root = tree.display().to_string();
    let secs = crate::bench_db::store_records(url, &root, n, |run_id, i| Record {
        run_id,
        key: FileKey {
            path: PathBytes::from_path(&file_of(tree, i)),
            size: 0,
            mtime_ns: 0,
        },
        outcome: RecordOutcome::Analyzed(Box::new(analysis(i))),
        stats: FileStats::default(),
        attempts: vec![],
    })?;
    eprintln!("  {n} tracks in {secs:.0} s");
    Ok(true)
}

struct Measured {
    median_s: f64,
    p99_s: f64,
    /// Median CPU time (user + system) of a query: on a shared machine, what the wall time
    /// would be on one idle core.
    cpu_median_s: f64,
    peak_rss: u64,
}

/// Runs `queries` queries from seeds spread over the library; returns latency and peak RSS.
fn measure(exe: &Path, url: &str, tree: &Path, n: u64, queries: usize) -> Result<Measured> {
    let mut times = Vec::with_capacity(queries);
    let mut cpu = Vec::with_capacity(queries);
    let mut peak = 0u64;
    for q in 0..queries as u64 {
        let seed = file_of(tree, (q * 7919 + 13) % n);
        let start = Instant::now();
        let child = std::process::Command::new(exe)
            .args(["similar", "-n", "20", "--json", "--db"])
            .arg(url)
            .arg(&seed)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("start trackmill similar")?;
        let (status, usage, stdout) = wait_rss(child)?;
        times.push(start.elapsed().as_secs_f64());
        cpu.push(usage.cpu_s);
        let rss = usage.peak_rss;
        if !status.success() {
            bail!("trackmill similar {}: {status}", seed.display());
        }
        let v: serde_json::Value = serde_json::from_slice(&stdout)?;
        let got = v["tracks"].as_array().map_or(0, Vec::len);
        if got != 20 {
            bail!(
                "trackmill similar {}: {got} tracks, 20 expected",
                seed.display()
            );
        }
        peak = peak.max(rss);
    }
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let pick = |v: &[f64], p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    Ok(Measured {
        median_s: pick(&times, 0.5),
        p99_s: pick(&times, 0.99),
        cpu_median_s: pick(&cpu, 0.5),
        peak_rss: peak,
    })
}

/// What wait4 says a child used.
struct Usage {
    peak_rss: u64,
    cpu_s: f64,
}

/// Waits for the child, reading its output, and returns its peak RSS (`ru_maxrss`) and CPU time
/// from wait4.
fn wait_rss(mut child: std::process::Child) -> Result<(std::process::ExitStatus, Usage, Vec<u8>)> {
    use std::io::Read;
    let mut stdout = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut stdout)?;
    }
    let pid = i32::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: plain out-parameters; the pid is our own unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        peak_rss: u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024,
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
    };
    Ok((std::process::ExitStatus::from_raw(status), usage, stdout))
}
