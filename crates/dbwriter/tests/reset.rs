//! PostgreSQL connections killed under the writer (`pg_terminate_backend`): it reports the
//! outage once, reconnects, re-applies what was not committed, and every row lands exactly once.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use trackmill_dbwriter::WriterOptions;
use trackmill_types::*;

fn terminate(app: &str) -> usize {
    pg_rows(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = '{app}' AND datname = 'test'"
    ))
    .len()
}

#[test]
fn pending_batch_survives_a_connection_reset() {
    let b = Backend::pg();
    let app = b.app_name().unwrap();
    let mut c = Client::start(
        &b,
        WriterOptions {
            batch_max: 10_000,
            batch_ms: 600_000,
            lease_ttl_s: 60,
        },
    );
    let run = c.start_run();
    for i in 0..100u64 {
        let k = key(format!("/r/{i}.flac").as_bytes(), i, 1);
        c.send(&ToDb::Store {
            seq: i,
            record: Box::new(if i % 10 == 0 {
                quarantined(run, k)
            } else {
                analysed(run, k, i)
            }),
        });
    }
    assert_eq!(terminate(&app), 1);
    // The backend is gone (not just signalled) before the batch is committed.
    let gone = (0..10_000).any(|_| {
        pg_rows(&format!(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .is_empty()
    });
    assert!(gone, "the terminated backend is still listed");
    c.send(&ToDb::Flush { token: 1 });
    let mut errors = Vec::new();
    let mut acked = Vec::new();
    loop {
        match c.recv_skip_errors(&mut errors) {
            FromDb::Acked { seqs } => acked.extend(seqs),
            FromDb::Flushed { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(acked.len(), 100);
    c.close().unwrap();
    assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), 100);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM attempts"), 30);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM embeddings"), 180);
}

#[test]
fn repeated_resets_during_a_stream_lose_and_duplicate_nothing() {
    let b = Backend::pg();
    let app = b.app_name().unwrap();
    let mut c = Client::start(
        &b,
        WriterOptions {
            batch_max: 25,
            batch_ms: 50,
            lease_ttl_s: 60,
        },
    );
    let run = c.start_run();
    let done = AtomicBool::new(false);
    let n = 600u64;
    let (acked, kills) = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            let mut kills = 0;
            // Bounded chaos: at most 200 rounds, and never once the stream is done.
            for _ in 0..200 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                kills += terminate(&app);
                std::thread::yield_now();
            }
            kills
        });
        let mut reader = c.chan.try_clone().unwrap();
        let collector = s.spawn(move || {
            let mut acked = Vec::new();
            loop {
                let m: FromDb = trackmill_types::frame::read_frame(
                    &mut reader,
                    trackmill_types::frame::MAX_FRAME,
                )
                .unwrap();
                match m {
                    FromDb::Acked { seqs } => acked.extend(seqs),
                    FromDb::Flushed { .. } => return acked,
                    FromDb::Error { retrying: true, .. } => {}
                    other => panic!("{other:?}"),
                }
            }
        });
        for i in 0..n {
            let k = key(format!("/chaos/{i:05}.mp3").as_bytes(), i, 7);
            let record = if i % 7 == 0 {
                failed(run, k)
            } else {
                analysed(run, k, i)
            };
            c.send(&ToDb::Store {
                seq: i,
                record: Box::new(record),
            });
        }
        c.send(&ToDb::Flush { token: 99 });
        let acked = collector.join().unwrap();
        done.store(true, Ordering::Relaxed);
        (acked, killer.join().unwrap())
    });
    let mut sorted = acked.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len() as u64, n, "every record acknowledged");
    assert!(kills >= 1, "the chaos thread killed no connection");
    c.close().unwrap();
    assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), n as i64);
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM attempts"),
        n.div_ceil(7) as i64
    );
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM features"),
        (n - n.div_ceil(7)) as i64
    );
}
