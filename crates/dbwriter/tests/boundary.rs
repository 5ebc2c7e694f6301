//! The database boundary against SQLite and the real PostgreSQL: a record the database refuses
//! costs its own file (stored as a `store` failure), never the batch or the writer; a busy
//! database is waited for, not refused; paths and tag values of any allowed length store (random,
//! incompressible); a version 2 database migrates keeping rows and ids; a service's later passes
//! add their attempts.

mod common;

use common::*;
use rand::Rng;
use trackmill_dbwriter::WriterOptions;
use trackmill_types::*;

fn opts(batch_max: usize) -> WriterOptions {
    WriterOptions {
        batch_max,
        batch_ms: 600_000,
        lease_ttl_s: 60,
    }
}

/// A rule the test adds to the schema: rows of `table` whose `col` contains `POISON` are refused
/// (PostgreSQL: a CHECK constraint, SQLSTATE 23514; SQLite: a trigger raising ABORT, which is
/// SQLITE_CONSTRAINT). Its name is in the database's message.
fn refuse(b: &Backend, table: &str, col: &str) {
    let name = format!("refuse_{table}_{col}");
    match b {
        Backend::Sqlite(_) => b.exec(&format!(
            "CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN NEW.{col} LIKE '%POISON%' \
             BEGIN SELECT RAISE(ABORT, 'refused by {name}'); END; \
             CREATE TRIGGER {name}_u BEFORE UPDATE ON {table} WHEN NEW.{col} LIKE '%POISON%' \
             BEGIN SELECT RAISE(ABORT, 'refused by {name}'); END;"
        )),
        Backend::Pg { .. } => b.exec(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({col} NOT LIKE '%POISON%')"
        )),
    }
}

fn files(n: usize) -> Vec<FileKey> {
    (0..n)
        .map(|i| key(format!("/music/{i:03}.flac").as_bytes(), 100 + i as u64, 1))
        .collect()
}

fn titled(run: i64, k: FileKey, i: u64, title: &str) -> Record {
    let mut r = analysed(run, k, i);
    if let RecordOutcome::Analyzed(a) = &mut r.outcome {
        a.tags.title = Some(CleanText::new(title));
    }
    r
}

both!(a_refused_record_costs_only_its_file, |b: Backend| {
    trackmill_dbwriter::check(&b.url()).unwrap();
    refuse(&b, "tracks", "title");
    refuse(&b, "events", "message");
    let mut c = Client::start(&b, opts(1000));
    let run = c.start_run();
    let p = policy(ANALYZER_VERSION, false);
    let all = files(12);
    assert!(c
        .check(1, p.clone(), all.clone())
        .iter()
        .all(|v| *v == Verdict::Todo));
    for (i, k) in all.iter().enumerate() {
        let title = if i == 5 { "a POISON title" } else { "fine" };
        c.send(&ToDb::Store {
            seq: i as u64 + 1,
            record: Box::new(titled(run, k.clone(), i as u64, title)),
        });
    }
    let mut bad = event(run, b"/music/005.flac");
    bad.message = CleanText::new("POISON event");
    c.send(&ToDb::Event {
        seq: 100,
        event: bad,
    });
    c.send(&ToDb::Event {
        seq: 101,
        event: event(run, b"/music/001.flac"),
    });
    let (mut acked, refused) = c.flush_refused(1);
    acked.sort_unstable();
    assert_eq!(acked, (1..=12).chain([100, 101]).collect::<Vec<u64>>());
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 6);
    assert!(
        refused[0].1.contains("refuse_tracks_title"),
        "{}",
        refused[0].1
    );

    // Everything else of the batch is committed as sent; the refused file is a store failure.
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'"),
        11
    );
    assert_eq!(
        b.scalar(
            "SELECT COUNT(*) FROM tracks WHERE status = 'failed' AND failure_class = 'store' \
             AND failure_stage = 'store' AND title IS NULL AND display_path = '/music/005.flac'"
        ),
        1
    );
    assert_eq!(b.scalar("SELECT COUNT(*) FROM features"), 11);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM track_artists"), 22);
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM events"),
        1,
        "the refused event is dropped"
    );
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM leases"),
        0,
        "every lease released"
    );

    // The same writer goes on: the next batch commits as usual.
    let more = key(b"/music/later.flac", 5, 5);
    c.send(&ToDb::Store {
        seq: 13,
        record: Box::new(analysed(run, more.clone(), 13)),
    });
    assert_eq!(c.flush(2), [13]);
    // A rerun has nothing to do; the refused file waits for --retry-failed.
    let mut again = all.clone();
    again.push(more);
    assert!(c
        .peek(2, p.clone(), again.clone())
        .iter()
        .all(|v| *v == Verdict::Done));
    assert_eq!(
        c.peek(3, policy(ANALYZER_VERSION, true), again)[5],
        Verdict::Todo
    );
    c.close().unwrap();

    let f = trackmill_dbwriter::failures(&b.url(), 10).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["class"], "store");
    assert_eq!(f[0]["stage"], "store");
    assert!(f[0]["message"]
        .as_str()
        .unwrap()
        .contains("refuse_tracks_title"));
});

/// The failure from the issue: an index on a value (here one the test adds) and a value larger
/// than a btree entry may be (54000, a program limit).
#[test]
fn pg_a_value_too_large_for_an_index_costs_only_its_file() {
    let b = Backend::pg();
    trackmill_dbwriter::check(&b.url()).unwrap();
    b.exec("CREATE INDEX test_title ON tracks (title)");
    let mut c = Client::start(&b, opts(1000));
    let run = c.start_run();
    let all = files(3);
    for (i, k) in all.iter().enumerate() {
        let title = if i == 1 {
            random_cjk(1000)
        } else {
            "fine".into()
        };
        c.send(&ToDb::Store {
            seq: i as u64 + 1,
            record: Box::new(titled(run, k.clone(), i as u64, &title)),
        });
    }
    let (acked, refused) = c.flush_refused(1);
    assert_eq!(acked.len(), 3);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 2);
    assert!(refused[0].1.starts_with("54000"), "{}", refused[0].1);
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'"),
        2
    );
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM tracks WHERE failure_class = 'store'"),
        1
    );
    c.close().unwrap();
}

both!(a_refused_failure_row_is_stored_bare, |b: Backend| {
    trackmill_dbwriter::check(&b.url()).unwrap();
    refuse(&b, "attempts", "message");
    let mut c = Client::start(&b, opts(1000));
    let run = c.start_run();
    let mut r = quarantined(run, key(b"/music/q.mp3", 1, 1));
    r.attempts[1].failure.message = CleanText::new("worker said POISON");
    c.send(&ToDb::Store {
        seq: 1,
        record: Box::new(r),
    });
    c.send(&ToDb::Store {
        seq: 2,
        record: Box::new(failed(run, key(b"/music/f.mp3", 1, 1))),
    });
    let (acked, refused) = c.flush_refused(1);
    assert_eq!(acked.len(), 2);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 1);
    // Stored without the attempts that carried the poison; the other file as sent.
    assert_eq!(
        b.scalar(
            "SELECT COUNT(*) FROM tracks WHERE display_path = '/music/q.mp3' \
             AND status = 'failed' AND failure_class = 'store'"
        ),
        1
    );
    assert_eq!(b.scalar("SELECT COUNT(*) FROM attempts"), 1);
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM tracks WHERE failure_class = 'corrupt'"),
        1
    );
    c.close().unwrap();
});

both!(
    a_file_no_row_can_be_stored_for_ends_the_writer,
    |b: Backend| {
        trackmill_dbwriter::check(&b.url()).unwrap();
        refuse(&b, "tracks", "display_path");
        let mut c = Client::start(&b, opts(1000));
        let run = c.start_run();
        c.send(&ToDb::Store {
            seq: 1,
            record: Box::new(analysed(run, key(b"/music/POISON.flac", 1, 1), 1)),
        });
        c.send(&ToDb::Flush { token: 1 });
        let mut retried = Vec::new();
        match c.recv_skip_errors(&mut retried) {
            FromDb::Error {
                message,
                retrying: false,
            } => assert!(
                message.as_str().contains("not even a failure row"),
                "{message}"
            ),
            other => panic!("expected the final error, got {other:?}"),
        }
        let err = c.close().unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), 0);
    }
);

/// Another connection holds SQLite's write lock: SQLITE_BUSY is waited out (one warning), and no
/// record is taken for a refused one.
#[test]
fn sqlite_a_busy_database_is_waited_for_not_refused() {
    let b = Backend::sqlite();
    trackmill_dbwriter::check(&b.url()).unwrap();
    let Backend::Sqlite(dir) = &b else {
        unreachable!()
    };
    let blocker = rusqlite::Connection::open(dir.path().join("sub/trackmill.db")).unwrap();
    let mut c = Client::start(&b, opts(3));
    let run = c.start_run();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for (i, k) in files(3).into_iter().enumerate() {
        c.send(&ToDb::Store {
            seq: i as u64 + 1,
            record: Box::new(analysed(run, k, i as u64)),
        });
    }
    match c.recv() {
        FromDb::Error {
            retrying: true,
            message,
        } => assert!(message.as_str().contains("locked"), "{message}"),
        other => panic!("expected a retrying error, got {other:?}"),
    }
    blocker.execute_batch("COMMIT").unwrap();
    let (mut acked, refused) = c.flush_refused(1);
    acked.sort_unstable();
    assert_eq!(acked, [1, 2, 3]);
    assert!(refused.is_empty());
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'"),
        3
    );
    c.close().unwrap();
}

/// `n` random CJK ideographs (3 bytes of UTF-8 each).
fn random_cjk(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_u32(rng.random_range(0x4E00..=0x9FFF)).unwrap())
        .collect()
}

/// A path of exactly `len` random bytes as Linux allows them: no NUL, components of at most 200
/// bytes (NAME_MAX is 255) between slashes.
fn random_path(len: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    let mut p = b"/music".to_vec();
    while p.len() < len {
        p.push(b'/');
        for _ in 0..(len - p.len()).min(200) {
            p.push(loop {
                let c: u8 = rng.random_range(1..=255);
                if c != b'/' {
                    break c;
                }
            });
        }
    }
    assert_eq!(p.len(), len);
    p
}

both!(long_paths_and_tag_values_store, |b: Backend| {
    let artist = random_cjk(1000);
    assert_eq!(artist.len(), 3000);
    let paths = [random_path(4095), random_path(3000)];
    let keys: Vec<FileKey> = paths.iter().map(|p| key(p, 4242, 7)).collect();
    let mut c = Client::start(&b, opts(1000));
    let run = c.start_run();
    let p = policy(ANALYZER_VERSION, false);
    // Leased first: the lease rows carry the long paths too.
    assert_eq!(c.lease(1, p.clone(), keys.clone()), [Verdict::Todo; 2]);
    for (i, k) in keys.iter().enumerate() {
        let mut r = analysed(run, k.clone(), i as u64);
        if let RecordOutcome::Analyzed(a) = &mut r.outcome {
            a.tags.artists = vec![CleanText::new(&artist), CleanText::new(&random_cjk(1000))];
            a.tags.title = Some(CleanText::new(&random_cjk(1300)));
            a.tags.album = Some(CleanText::new(&artist));
        }
        c.send(&ToDb::Store {
            seq: i as u64 + 1,
            record: Box::new(r),
        });
    }
    assert_eq!(c.flush(1).len(), 2);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM leases"), 0);
    // One artist row for the shared name, one for each other.
    assert_eq!(b.scalar("SELECT COUNT(*) FROM artists"), 3);
    assert_eq!(c.peek(2, p.clone(), keys.clone()), [Verdict::Done; 2]);
    assert_eq!(c.lease(3, p, keys), [Verdict::Done; 2]);
    c.close().unwrap();
    let row = trackmill_dbwriter::show(&b.url(), &paths[0])
        .unwrap()
        .expect("the row of the 4,095-byte path");
    assert_eq!(row["artists"][0], artist.as_str());
    assert_eq!(row["album"], artist.as_str());
    assert_eq!(row["path_hex"].as_str().unwrap().len(), 2 * 4095);
});

both!(
    a_version_2_database_is_upgraded_and_keeps_its_rows_and_ids,
    |b: Backend| {
        // What a version 2 database looks like: its migrations, and rows it stored (with ids
        // that are not 1, 2, …), a lease and an attempt.
        trackmill_dbwriter::migrate_to(&b.url(), 2).unwrap();
        let old = key(b"/music/old.flac", 1000, 5_000);
        let bad = key(b"/music/bad.mp3", 20, 6);
        let held = key(b"/music/held.flac", 30, 7);
        let lit = |k: &FileKey| b.bytes_lit(&k.path.0);
        let pid = std::process::id();
        b.exec(&format!(
            "INSERT INTO runs (id, host, pid, roots, started_at, status) \
             VALUES (4, 'otherhost', {pid}, '[\"/music\"]', 1, 'running');
             INSERT INTO tracks (id, path, display_path, size, mtime_ns, status, \
             analyzer_version, run_id, updated_at, models) VALUES \
             (7, {}, '/music/old.flac', 1000, 5000, 'analyzed', {ANALYZER_VERSION}, 4, 1, \
              '[\"basic-pitch\"]'), \
             (9, {}, '/music/bad.mp3', 20, 6, 'failed', {ANALYZER_VERSION}, 4, 2, NULL);
             INSERT INTO artists (id, name) VALUES (3, 'Old Artist'), (5, '老歌手');
             INSERT INTO track_artists (track_id, artist_id, position) VALUES (7, 3, 0), (7, 5, 1);
             INSERT INTO features (track_id, bpm, data) VALUES (7, 99.5, '{{\"bpm\": 99.5}}');
             INSERT INTO attempts (path, track_id, run_id, attempt, class, stage, message, \
             worker_pid, peak_rss_bytes, elapsed_ms, at) VALUES \
             ({}, 9, 4, 1, 'corrupt', 'decode', 'no audio', 11, 0, 5, 100);
             INSERT INTO leases (path, size, mtime_ns, run_id, expires_at) VALUES \
             ({}, 30, 7, 4, 9000000000000);",
            lit(&old),
            lit(&bad),
            lit(&bad),
            lit(&held)
        ));

        let mut c = Client::start(&b, opts(1000));
        let run = c.start_run();
        assert_eq!(
            b.scalar("SELECT MAX(version) FROM schema_migrations"),
            trackmill_dbwriter::SCHEMA_VERSION
        );
        let p = policy(ANALYZER_VERSION, false);
        // Found by digest: done, failed (kept by policy), and held by the other live run.
        assert_eq!(
            c.peek(1, p.clone(), vec![old.clone(), bad.clone(), held.clone()]),
            [Verdict::Done, Verdict::Done, Verdict::Busy]
        );
        assert_eq!(c.lease(2, p, vec![held]), [Verdict::Busy]);
        let show = trackmill_dbwriter::show(&b.url(), &old.path.0)
            .unwrap()
            .unwrap();
        assert_eq!(show["id"], 7);
        assert_eq!(show["artists"], serde_json::json!(["Old Artist", "老歌手"]));
        assert_eq!(show["features"]["bpm"], 99.5);
        let show = trackmill_dbwriter::show(&b.url(), &bad.path.0)
            .unwrap()
            .unwrap();
        assert_eq!(show["attempts"].as_array().unwrap().len(), 1);

        // New results upsert onto the old rows: same ids, the old artist row reused.
        let mut r = analysed(run, old.clone(), 1);
        if let RecordOutcome::Analyzed(a) = &mut r.outcome {
            a.tags.artists = vec![CleanText::new("老歌手"), CleanText::new("New Artist")];
        }
        c.send(&ToDb::Store {
            seq: 1,
            record: Box::new(r),
        });
        c.send(&ToDb::Store {
            seq: 2,
            record: Box::new(failed(run, bad.clone())),
        });
        assert_eq!(c.flush(1).len(), 2);
        c.close().unwrap();
        assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), 2);
        assert_eq!(
            b.scalar("SELECT id FROM tracks WHERE display_path = '/music/old.flac'"),
            7
        );
        assert_eq!(
            b.scalar("SELECT id FROM tracks WHERE display_path = '/music/bad.mp3'"),
            9
        );
        assert_eq!(b.scalar("SELECT COUNT(*) FROM artists"), 3);
        assert_eq!(
            b.scalar("SELECT artist_id FROM track_artists WHERE track_id = 7 AND position = 0"),
            5
        );
        // The old attempt and the new run's one.
        assert_eq!(
            b.scalar("SELECT COUNT(*) FROM attempts WHERE track_id = 9"),
            2
        );
    }
);

both!(
    check_leases_nothing_and_lease_takes_a_handful,
    |b: Backend| {
        let all = files(10);
        let p = policy(ANALYZER_VERSION, false);
        let mut a = Client::start(&b, WriterOptions::default());
        let run_a = a.start_run();
        let mut x = Client::start(&b, WriterOptions::default());
        x.start_run();
        use Verdict::*;
        // Both hosts check the whole scanner batch: nothing is taken.
        assert_eq!(a.peek(1, p.clone(), all.clone()), [Todo; 10]);
        assert_eq!(x.peek(1, p.clone(), all.clone()), [Todo; 10]);
        assert_eq!(b.scalar("SELECT COUNT(*) FROM leases"), 0);

        // Each leases a handful as it dispatches; a file is Todo for one of them only.
        assert_eq!(a.lease(2, p.clone(), all[0..3].to_vec()), [Todo; 3]);
        assert_eq!(
            x.lease(2, p.clone(), all[0..5].to_vec()),
            [Busy, Busy, Busy, Todo, Todo]
        );
        assert_eq!(
            a.lease(3, p.clone(), all[3..6].to_vec()),
            [Busy, Busy, Todo]
        );
        assert_eq!(b.scalar("SELECT COUNT(*) FROM leases"), 6);
        // A check sees the other host's leases as busy, its own as todo.
        assert_eq!(
            x.peek(3, p.clone(), all[0..7].to_vec()),
            [Busy, Busy, Busy, Todo, Todo, Busy, Todo]
        );
        // A lease already held stays its own.
        assert_eq!(a.lease(4, p.clone(), all[0..1].to_vec()), [Todo]);

        // A stores file 0 (its lease goes), then its lease on file 1 runs out.
        a.send(&ToDb::Store {
            seq: 1,
            record: Box::new(analysed(run_a, all[0].clone(), 0)),
        });
        a.flush(1);
        b.exec(&format!(
            "UPDATE leases SET expires_at = 0 WHERE run_id = {run_a} AND size = 101"
        ));
        assert_eq!(
            x.lease(4, p.clone(), all[0..3].to_vec()),
            [Done, Todo, Busy],
            "stored meanwhile; taken over; still held"
        );
        assert_eq!(b.scalar("SELECT COUNT(*) FROM leases"), 5);
        a.close().unwrap();
        x.close().unwrap();
    }
);

both!(hosts_leasing_at_dispatch_share_every_file, |b: Backend| {
    let all = files(60);
    let p = policy(ANALYZER_VERSION, false);
    // Each host checks everything, then leases four at a time and stores what it got.
    let host = |b: &Backend| {
        let mut c = Client::start(b, WriterOptions::default());
        let run = c.start_run();
        // (What it says depends on how far the other host got.)
        c.peek(1, p.clone(), all.clone());
        let mut mine = Vec::new();
        let mut seq = 0;
        for (q, chunk) in all.chunks(4).enumerate() {
            let v = c.lease(q as u64 + 2, p.clone(), chunk.to_vec());
            for (k, v) in chunk.iter().zip(v) {
                if v == Verdict::Todo {
                    seq += 1;
                    c.send(&ToDb::Store {
                        seq,
                        record: Box::new(analysed(run, k.clone(), seq)),
                    });
                    mine.push(k.path.0.clone());
                }
            }
            c.flush(q as u64);
        }
        c.close().unwrap();
        mine
    };
    let (x, y) = std::thread::scope(|s| {
        let hx = s.spawn(|| host(&b));
        let hy = s.spawn(|| host(&b));
        (hx.join().unwrap(), hy.join().unwrap())
    });
    let mut both: Vec<Vec<u8>> = x.iter().chain(&y).cloned().collect();
    both.sort();
    let before = both.len();
    both.dedup();
    assert_eq!(before, both.len(), "a file was leased to both hosts");
    assert_eq!(both.len(), 60);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), 60);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM leases"), 0);
});

both!(later_passes_of_a_run_add_their_attempts, |b: Backend| {
    let mut c = Client::start(&b, opts(1000));
    let run = c.start_run();
    let k = key(b"/music/flaky.mp3", 10, 10);
    let pass = |first_at: i64, class: FailureClass| -> Record {
        let mut r = quarantined(run, k.clone());
        for (i, a) in r.attempts.iter_mut().enumerate() {
            a.failure = Failure::new(
                class,
                Stage::Worker,
                format!("{} in a pass", class.as_str()),
            );
            a.at_ms = first_at + i as i64;
        }
        if let RecordOutcome::Quarantined(f) = &mut r.outcome {
            f.class = class;
        }
        r
    };
    c.send(&ToDb::Store {
        seq: 1,
        record: Box::new(pass(1_000, FailureClass::Crash)),
    });
    c.flush(1);
    // The next pass numbers its attempts from 1 again; sent twice (a lost ack), it adds once.
    for seq in [2, 3] {
        c.send(&ToDb::Store {
            seq,
            record: Box::new(pass(2_000, FailureClass::Timeout)),
        });
        c.flush(seq);
    }
    c.close().unwrap();
    let f = trackmill_dbwriter::failures(&b.url(), 10).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["class"], "timeout", "the latest pass's cause");
    let attempts = f[0]["attempts"].as_array().unwrap();
    let classes: Vec<&str> = attempts
        .iter()
        .map(|a| a["class"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        ["crash", "crash", "crash", "timeout", "timeout", "timeout"]
    );
});
