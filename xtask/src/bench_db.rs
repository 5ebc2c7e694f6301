//! DB-writer benchmark: rows per second that the real writer sustains into PostgreSQL (its own
//! schema, dropped afterwards) and SQLite (a temporary file), fed over a socketpair with real
//! frames by a supervisor-like thread. `TRACKMILL_BENCH_RECORDS` (default 20,000) and
//! `TRACKMILL_BENCH_PG` (default the local test database) adjust it.

use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::net::UnixStream;
use std::time::Instant;
use trackmill_dbwriter::{DbUrl, WriterOptions};
use trackmill_types::frame::{read_frame, write_frame, MAX_FRAME};
use trackmill_types::*;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

pub fn run() -> Result<()> {
    let n: u64 = match std::env::var("TRACKMILL_BENCH_RECORDS") {
        Ok(v) => v.parse().context("TRACKMILL_BENCH_RECORDS")?,
        Err(_) => 20_000,
    };
    let dir = tempfile::tempdir()?;
    let sqlite = DbUrl::parse(&dir.path().join("bench.db").display().to_string())?;
    let rate = measure(&sqlite, n)?;
    println!("db writer, SQLite (WAL, tempdir): {n} records, {rate:.0} rows/s");

    let base = std::env::var("TRACKMILL_BENCH_PG").unwrap_or_else(|_| DEFAULT_PG.into());
    let sep = if base.contains('?') { '&' } else { '?' };
    let schema = format!("bench_{}", std::process::id());
    let pg = DbUrl::parse(&format!("{base}{sep}schema={schema}"))?;
    let result = measure(&pg, n);
    trackmill_dbwriter::drop_schema(&pg)?;
    let rate = result?;
    println!(
        "db writer, PostgreSQL ({}): {n} records, {rate:.0} rows/s",
        pg.redacted()
    );
    Ok(())
}

/// Sends `n` records and a flush; returns records per second from the first send to `Flushed`.
fn measure(url: &DbUrl, n: u64) -> Result<f64> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let writer_url = url.clone();
    let writer = std::thread::spawn(move || {
        trackmill_dbwriter::run(&writer_url, theirs, WriterOptions::default())
    });
    let mut reader = ours.try_clone()?;
    let hello: FromDb = read_frame(&mut reader, MAX_FRAME)?;
    if !matches!(hello, FromDb::Hello(_)) {
        bail!("expected Hello, got {hello:?}");
    }
    write_frame(
        &mut ours,
        &ToDb::StartRun {
            host: CleanText::new("bench"),
            pid: std::process::id(),
            roots: vec![CleanText::new("/bench")],
        },
    )?;
    let run_id = match read_frame(&mut reader, MAX_FRAME)? {
        FromDb::RunStarted { run_id } => run_id,
        other => bail!("expected RunStarted, got {other:?}"),
    };
    let collector = std::thread::spawn(move || -> Result<u64> {
        let mut acked = 0u64;
        loop {
            match read_frame::<_, FromDb>(&mut reader, MAX_FRAME)? {
                FromDb::Acked { seqs } => acked += seqs.len() as u64,
                FromDb::Flushed { .. } => return Ok(acked),
                FromDb::Error { message, .. } => bail!("writer: {message}"),
                other => bail!("unexpected {other:?}"),
            }
        }
    });
    let start = Instant::now();
    for i in 0..n {
        write_frame(
            &mut ours,
            &ToDb::Store {
                seq: i,
                record: Box::new(record(run_id, i)),
            },
        )?;
    }
    write_frame(&mut ours, &ToDb::Flush { token: 1 })?;
    let acked = collector
        .join()
        .map_err(|_| anyhow!("ack collector panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    drop(ours);
    writer.join().map_err(|_| anyhow!("writer panicked"))??;
    if acked != n {
        bail!("{acked} of {n} records acknowledged");
    }
    let total = trackmill_dbwriter::counts(url)?["total"]
        .as_u64()
        .unwrap_or(0);
    if total != n {
        bail!("{total} rows stored, {n} expected");
    }
    Ok(n as f64 / secs)
}

/// A record of realistic size: tags with two artists, the full feature set, two embeddings; every
/// tenth file a quarantined failure with three attempts.
fn record(run_id: i64, i: u64) -> Record {
    let key = FileKey {
        path: PathBytes(
            format!(
                "/bench/Artist {}/Album {}/{i:06} Track.flac",
                i % 500,
                i % 2000
            )
            .into_bytes(),
        ),
        size: 20_000_000 + i,
        mtime_ns: 1_700_000_000_000_000_000,
    };
    let stats = FileStats {
        size: key.size,
        audio_s: 240.0,
        wall_us: 2_000_000,
        stages: StageTimes::default(),
        peak_rss_bytes: 150 << 20,
    };
    if i % 10 == 9 {
        let attempts = (1..=3)
            .map(|a| Attempt {
                attempt: a,
                failure: Failure::new(
                    FailureClass::Crash,
                    Stage::Worker,
                    "worker killed by SIGSEGV",
                ),
                worker_pid: 1000 + a,
                peak_rss_bytes: 200 << 20,
                elapsed_ms: 900,
                at_ms: 1_700_000_000_000,
            })
            .collect();
        return Record {
            run_id,
            key,
            outcome: RecordOutcome::Quarantined(Failure::new(
                FailureClass::Crash,
                Stage::Worker,
                "killed its worker 3 times",
            )),
            stats,
            attempts,
        };
    }
    let tags = Tags {
        title: Some(CleanText::new(&format!("Track number {i}"))),
        artists: vec![
            CleanText::new(&format!("Artist {}", i % 500)),
            CleanText::new(&format!("Featured {}", i % 97)),
        ],
        album: Some(CleanText::new(&format!("Album {}", i % 2000))),
        album_artist: Some(CleanText::new(&format!("Artist {}", i % 500))),
        genres: vec![CleanText::new("Electronic"), CleanText::new("Ambient")],
        year: Some(2001),
        track_number: Some((i % 12) as u32 + 1),
        track_total: Some(12),
        musicbrainz_recording_id: Some(CleanText::new("9a1c7f4e-3b2d-4c5e-8f6a-7b8c9d0e1f2a")),
        picture_count: 1,
        picture_bytes: 120_000,
        ..Tags::default()
    };
    let stat = Stat {
        mean: 1.5,
        std: 0.25,
    };
    let features = Features {
        integrated_lufs: -11.2,
        loudness_range_lu: 7.5,
        true_peak_dbtp: -0.8,
        replaygain_track_gain_db: -6.8,
        replaygain_track_peak: 0.91,
        bpm: 124.0,
        onset_rate: 2.9,
        spectral_centroid_hz: stat,
        spectral_rolloff_hz: stat,
        spectral_flatness: stat,
        spectral_flux: stat,
        zero_crossing_rate: stat,
        chroma: [1.0 / 12.0; 12],
        key: (i % 12) as u8,
        mode: CleanText::new("major"),
        key_strength: 0.66,
        silence_ratio: 0.01,
    };
    let analysis = TrackAnalysis {
        analyzer_version: ANALYZER_VERSION,
        partial: false,
        audio: AudioProps {
            container: CleanText::new("flac"),
            codec: CleanText::new("flac"),
            sample_rate: 44_100,
            channels: 2,
            bits_per_sample: Some(16),
            duration_s: Some(240.0),
            decoded_s: 240.0,
            bitrate_kbps: Some(880),
        },
        tags,
        features: Some(features),
        embeddings: vec![
            Embedding {
                model: CleanText::new("trackmill-dsp-v1"),
                values: (0..64).map(|j| (i as f32 + j as f32).sin()).collect(),
            },
            Embedding {
                model: CleanText::new("basic-pitch-v1"),
                values: (0..88).map(|j| (j as f32 * 0.1).cos()).collect(),
            },
        ],
        notes: vec![],
    };
    Record {
        run_id,
        key,
        outcome: RecordOutcome::Analysed(Box::new(analysis)),
        stats,
        attempts: vec![],
    }
}
