//! DB-writer benchmark: rows per second that the real writer sustains into PostgreSQL (its own
//! schema, dropped afterwards) and SQLite (a temporary file), fed over a socketpair with real
//! frames by a supervisor-like thread. `TRACKMILL_BENCH_RECORDS` (default 20,000) and
//! `TRACKMILL_BENCH_PG` (default the local test database) adjust it.

use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::net::UnixStream;
use std::time::Instant;
use trackmill_dbwriter::{DbUrl, WriterOptions};
use trackmill_e2e::records::sample_analysis;
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
    let secs = store_records(url, "/bench", n, record)?;
    let total = trackmill_dbwriter::counts(url)?["total"]
        .as_u64()
        .unwrap_or(0);
    if total != n {
        bail!("{total} rows stored, {n} expected");
    }
    Ok(n as f64 / secs)
}

/// Stores `n` records (`record(run_id, i)`) through an in-process DB writer, in one run whose
/// root is `root`, then flushes; checks every record was acknowledged and returns the seconds
/// from the first send to `Flushed`.
pub fn store_records(
    url: &DbUrl,
    root: &str,
    n: u64,
    record: impl Fn(i64, u64) -> Record,
) -> Result<f64> {
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
            roots: vec![CleanText::new(root)],
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
    Ok(secs)
}

/// A record of realistic size (`sample_analysis`: tags with two artists, the full feature set, two
/// embeddings); every tenth file a quarantined failure with three attempts.
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
    Record {
        run_id,
        key,
        outcome: RecordOutcome::Analyzed(Box::new(sample_analysis(i))),
        stats,
        attempts: vec![],
    }
}
