//! The writer over a real socketpair against SQLite in a tempdir and the real PostgreSQL:
//! migrations, acknowledgement after commit, checkpoint verdicts, idempotent re-sends, hostile
//! text, non-UTF-8 paths, run bookkeeping.

mod common;

use common::*;
use trackmill_dbwriter::WriterOptions;
use trackmill_types::*;

fn opts(batch_max: usize, batch_ms: u64) -> WriterOptions {
    WriterOptions {
        batch_max,
        batch_ms,
        lease_ttl_s: 60,
    }
}

both!(migrations_are_idempotent, |b: Backend| {
    let url = b.url();
    trackmill_dbwriter::check(&url).unwrap();
    trackmill_dbwriter::check(&url).unwrap();
    let c = Client::start(&b, WriterOptions::default());
    c.close().unwrap();
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM schema_migrations"),
        trackmill_dbwriter::SCHEMA_VERSION
    );
    assert_eq!(
        b.scalar("SELECT MAX(version) FROM schema_migrations"),
        trackmill_dbwriter::SCHEMA_VERSION
    );
});

both!(
    a_version_1_database_is_upgraded_and_keeps_its_rows,
    |b: Backend| {
        // What a version 1 database looks like: its migration only, and a row it stored.
        trackmill_dbwriter::migrate_to(&b.url(), 1).unwrap();
        let k = key(b"/music/old.flac", 1000, 5_000);
        b.exec(&format!(
            "INSERT INTO tracks (path, display_path, size, mtime_ns, status, analyzer_version, \
             updated_at) VALUES ({}, '/music/old.flac', 1000, 5000, 'analyzed', {ANALYZER_VERSION}, 1)",
            b.bytes_lit(&k.path.0)
        ));

        // The writer connects (and migrates) before it opens the run.
        let mut c = Client::start(&b, opts(256, 200));
        c.start_run();
        assert_eq!(
            b.scalar("SELECT MAX(version) FROM schema_migrations"),
            trackmill_dbwriter::SCHEMA_VERSION
        );
        assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), 1);
        assert_eq!(
            b.scalar("SELECT COUNT(*) FROM tracks WHERE models IS NULL"),
            1
        );
        // Stored before models were recorded: done for a DSP-only run, redone for one with models.
        let models = CheckPolicy {
            models: vec![CleanText::new("basic-pitch")],
            ..policy(ANALYZER_VERSION, false)
        };
        use Verdict::*;
        assert_eq!(
            c.check(1, policy(ANALYZER_VERSION, false), vec![k.clone()]),
            [Done]
        );
        assert_eq!(c.check(2, models, vec![k]), [Todo]);
        c.close().unwrap();
    }
);

both!(ack_arrives_only_after_commit, |b: Backend| {
    // A batch of 3 commits by size; the timer alone would wait 10 minutes.
    let mut c = Client::start(&b, opts(3, 600_000));
    let run = c.start_run();
    for i in 0..3u64 {
        let k = key(
            format!("/music/a{i}.flac").as_bytes(),
            100 + i,
            1_000 + i as i64,
        );
        c.send(&ToDb::Store {
            seq: i + 1,
            record: Box::new(analysed(run, k, i)),
        });
    }
    match c.recv() {
        FromDb::Acked { seqs } => assert_eq!(seqs, vec![1, 2, 3]),
        other => panic!("{other:?}"),
    }
    // The ack means committed: a separate connection sees every row now.
    assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), 3);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM features"), 3);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM embeddings"), 6);

    // batch_ms is huge here, so Flush is what commits a lone event.
    c.send(&ToDb::Event {
        seq: 4,
        event: event(run, b"/music/a0.flac"),
    });
    let acked = c.flush(9);
    assert_eq!(acked, vec![4]);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM events"), 1);
    c.close().unwrap();

    let counts = trackmill_dbwriter::counts(&b.url()).unwrap();
    assert_eq!(counts["analyzed"], 3);
    assert_eq!(counts["total"], 3);
});

both!(timer_commits_a_partial_batch, |b: Backend| {
    let mut c = Client::start(&b, opts(1000, 20));
    let run = c.start_run();
    c.send(&ToDb::Store {
        seq: 7,
        record: Box::new(analysed(run, key(b"/m/x.mp3", 1, 1), 1)),
    });
    match c.recv() {
        FromDb::Acked { seqs } => assert_eq!(seqs, vec![7]),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), 1);
    c.close().unwrap();
});

both!(a_batch_of_thousands_commits_as_one, |b: Backend| {
    // batch_size goes up to 100,000: no statement of a batch may grow with it past what the
    // database parses (SQLite refuses an expression more than 1,000 deep, such as a chain of
    // 1,000 ORs), and the leases its files hold all go with the commit.
    const N: u64 = 2_500;
    let mut c = Client::start(&b, opts(N as usize, 600_000));
    let run = c.start_run();
    let keys: Vec<FileKey> = (0..N)
        .map(|i| key(format!("/music/{i:05}.flac").as_bytes(), 100 + i, 1_000))
        .collect();
    assert!(c
        .check(1, policy(ANALYZER_VERSION, false), keys.clone())
        .iter()
        .all(|v| *v == Verdict::Todo));
    assert_eq!(b.scalar("SELECT COUNT(*) FROM leases"), N as i64);
    for (i, k) in keys.into_iter().enumerate() {
        let i = i as u64;
        let record = if i.is_multiple_of(10) {
            failed(run, k)
        } else {
            analysed(run, k, i)
        };
        c.send(&ToDb::Store {
            seq: i + 1,
            record: Box::new(record),
        });
    }
    match c.recv() {
        FromDb::Acked { seqs } => assert_eq!(seqs, (1..=N).collect::<Vec<_>>()),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.scalar("SELECT COUNT(*) FROM tracks"), N as i64);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM leases"), 0);
    c.close().unwrap();
});

both!(check_verdicts, |b: Backend| {
    let mut c = Client::start(&b, opts(256, 200));
    let run = c.start_run();
    let a = key(b"/music/ok.flac", 1000, 5_000);
    let f = key(b"/music/bad.mp3", 2000, 6_000);
    let q = key(b"/music/poison.ogg", 3000, 7_000);
    c.send(&ToDb::Store {
        seq: 1,
        record: Box::new(analysed(run, a.clone(), 1)),
    });
    c.send(&ToDb::Store {
        seq: 2,
        record: Box::new(failed(run, f.clone())),
    });
    c.send(&ToDb::Store {
        seq: 3,
        record: Box::new(quarantined(run, q.clone())),
    });
    c.flush(1);
    let v = ANALYZER_VERSION;
    use Verdict::*;
    let files = vec![
        a.clone(),
        key(b"/music/ok.flac", 1001, 5_000),
        key(b"/music/ok.flac", 1000, 5_001),
        f.clone(),
        q.clone(),
        key(b"/music/new.wav", 1, 1),
    ];
    assert_eq!(
        c.check(1, policy(v, false), files.clone()),
        vec![Done, Todo, Todo, Done, Done, Todo]
    );
    assert_eq!(
        c.check(2, policy(v, true), files.clone()),
        vec![Done, Todo, Todo, Todo, Todo, Todo]
    );
    // A newer analyser makes the analysed row stale; failures stay as the policy says.
    assert_eq!(
        c.check(3, policy(v + 1, false), files),
        vec![Todo, Todo, Todo, Done, Done, Todo]
    );
    c.close().unwrap();
});

both!(
    a_file_stored_without_a_model_the_run_has_is_analyzed_again,
    |b: Backend| {
        let mut c = Client::start(&b, opts(256, 200));
        let run = c.start_run();
        let with = key(b"/music/with-model.flac", 1000, 5_000);
        let dsp = key(b"/music/dsp-only.flac", 1000, 5_000);
        let mut dsp_only = analysed(run, dsp.clone(), 2);
        if let RecordOutcome::Analyzed(a) = &mut dsp_only.outcome {
            a.models.clear();
            a.embeddings.truncate(1);
        }
        c.send(&ToDb::Store {
            seq: 1,
            record: Box::new(analysed(run, with.clone(), 1)),
        });
        c.send(&ToDb::Store {
            seq: 2,
            record: Box::new(dsp_only),
        });
        c.flush(1);
        let files = vec![with, dsp];
        let with_models = |names: &[&str]| CheckPolicy {
            models: names.iter().map(|n| CleanText::new(n)).collect(),
            ..policy(ANALYZER_VERSION, false)
        };
        use Verdict::*;
        // A DSP-only run redoes nothing: it would only lose the model results.
        assert_eq!(c.check(1, with_models(&[]), files.clone()), [Done, Done]);
        assert_eq!(
            c.check(2, with_models(&["basic-pitch"]), files.clone()),
            [Done, Todo]
        );
        assert_eq!(
            c.check(3, with_models(&["basic-pitch", "mood"]), files),
            [Todo, Todo]
        );
        c.close().unwrap();
    }
);

both!(
    resent_records_after_restart_make_no_duplicates,
    |b: Backend| {
        let msgs = |run: i64| -> Vec<ToDb> {
            let mut m = Vec::new();
            for i in 0..40u64 {
                let k = key(format!("/lib/{i:03}.flac").as_bytes(), 10 + i, 99);
                let record = match i % 4 {
                    0 => failed(run, k),
                    1 => quarantined(run, k),
                    _ => analysed(run, k, i),
                };
                m.push(ToDb::Store {
                    seq: i + 1,
                    record: Box::new(record),
                });
            }
            for i in 0..5u64 {
                m.push(ToDb::Event {
                    seq: 100 + i,
                    event: event(run, b"/lib/001.flac"),
                });
            }
            m
        };
        let mut c = Client::start(&b, opts(8, 200));
        let run = c.start_run();
        for m in msgs(run) {
            c.send(&m);
        }
        // The writer goes away without the supervisor seeing every ack.
        c.close().unwrap();
        let snapshot = |b: &Backend| {
            [
                "tracks",
                "attempts",
                "events",
                "artists",
                "track_artists",
                "features",
                "embeddings",
            ]
            .map(|t| b.scalar(&format!("SELECT COUNT(*) FROM {t}")))
        };
        let first = snapshot(&b);
        assert_eq!(first[0], 40);
        assert_eq!(first[1], 10 + 30);
        assert_eq!(first[2], 5);

        let mut c = Client::start(&b, opts(8, 200));
        c.send(&ToDb::ResumeRun { run_id: run });
        assert_eq!(c.recv(), FromDb::RunStarted { run_id: run });
        for m in msgs(run) {
            c.send(&m);
        }
        let mut acked = c.flush(5);
        acked.sort_unstable();
        assert_eq!(acked.len(), 45);
        c.close().unwrap();
        assert_eq!(snapshot(&b), first);
    }
);

both!(hostile_text_and_non_utf8_paths_roundtrip, |b: Backend| {
    let mut c = Client::start(&b, opts(256, 200));
    let run = c.start_run();
    let path: &[u8] = b"/music/\xff\xfe caf\xe9 \x01\x7f/\xc3\x28.flac";
    let k = key(path, 4242, -5);
    let mut r = analysed(run, k.clone(), 3);
    if let RecordOutcome::Analyzed(a) = &mut r.outcome {
        let hostile = "Nul\0Byte\x01\x02\x1b[31mRed\x7f\u{202e}RTL 🎵 \u{feff}";
        a.tags.title = Some(CleanText::new(hostile));
        a.tags.artists = vec![CleanText::new(hostile), CleanText::new(&"x".repeat(5000))];
        a.tags.album = Some(CleanText::from_bytes(b"\xff\x00\xfe album", 1000));
        a.notes = vec![CleanText::new("partial\0: decode error at 12.3 s")];
    }
    c.send(&ToDb::Store {
        seq: 1,
        record: Box::new(r),
    });
    c.flush(1);
    assert_eq!(
        c.check(1, policy(ANALYZER_VERSION, false), vec![k]),
        vec![Verdict::Done]
    );
    c.close().unwrap();
    let row = trackmill_dbwriter::show(&b.url(), path)
        .unwrap()
        .expect("row");
    let hex: String = path.iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(row["path_hex"], hex);
    let title = row["title"].as_str().unwrap();
    assert!(title.starts_with("NulByte[31mRed"), "{title}");
    assert!(!row.to_string().contains("\\u0000"));
    assert_eq!(row["artists"].as_array().unwrap().len(), 2);
    assert_eq!(row["features"]["mode"], "minor");
    assert_eq!(row["embeddings"][1]["dim"], 32);
    assert_eq!(row["mtime_ns"], -5);
    assert!(trackmill_dbwriter::show(&b.url(), b"/nope")
        .unwrap()
        .is_none());
});

both!(failures_list_every_attempt, |b: Backend| {
    let mut c = Client::start(&b, opts(256, 200));
    let run = c.start_run();
    c.send(&ToDb::Store {
        seq: 1,
        record: Box::new(quarantined(run, key(b"/p/q.mp3", 1, 1))),
    });
    c.send(&ToDb::Store {
        seq: 2,
        record: Box::new(failed(run, key(b"/p/f.mp3", 1, 1))),
    });
    c.send(&ToDb::Store {
        seq: 3,
        record: Box::new(analysed(run, key(b"/p/a.mp3", 1, 1), 1)),
    });
    c.flush(1);
    c.send(&ToDb::EndRun {
        run_id: run,
        status: RunStatus::Completed,
        counts: RunCounts {
            files_seen: 3,
            analyzed: 1,
            failed: 1,
            quarantined: 1,
            skipped_unchanged: 0,
        },
    });
    assert_eq!(c.recv(), FromDb::RunEnded { run_id: run });
    c.close().unwrap();
    let f = trackmill_dbwriter::failures(&b.url(), 10).unwrap();
    assert_eq!(f.len(), 2);
    let q = f.iter().find(|v| v["status"] == "quarantined").unwrap();
    assert_eq!(q["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(q["class"], "crash");
    let show = trackmill_dbwriter::show(&b.url(), b"/p/q.mp3")
        .unwrap()
        .unwrap();
    assert_eq!(show["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(
        b.scalar(&format!(
            "SELECT COUNT(*) FROM runs WHERE id = {run} AND status = 'completed' AND analyzed = 1 AND ended_at IS NOT NULL"
        )),
        1
    );
});

both!(dead_runs_of_this_host_are_interrupted, |b: Backend| {
    let mut c = Client::start(&b, opts(256, 200));
    let old = c.start_run();
    // Pretend that run belonged to a process that is gone.
    b.exec(&format!(
        "UPDATE runs SET pid = 2147483000 WHERE id = {old}"
    ));
    let alive = c.start_run();
    c.close().unwrap();
    assert_eq!(
        b.scalar(&format!(
            "SELECT COUNT(*) FROM runs WHERE id = {old} AND status = 'interrupted'"
        )),
        1
    );
    assert_eq!(
        b.scalar(&format!(
            "SELECT COUNT(*) FROM runs WHERE id = {alive} AND status = 'running'"
        )),
        1
    );
});

#[test]
fn bad_urls_fail_early_without_the_password() {
    let url = trackmill_dbwriter::DbUrl::parse(
        "postgres://postgres:hunter2@127.0.0.1:1/test?sslmode=disable",
    )
    .unwrap();
    assert!(!url.redacted().contains("hunter2"));
    // A closed port: `check` reports a clear error naming the redacted URL.
    let err = trackmill_dbwriter::check(&url).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}

#[test]
fn pg_sslmode_require_connects() {
    let b = Backend::pg();
    let Backend::Pg { schema } = &b else {
        unreachable!()
    };
    let url = trackmill_dbwriter::DbUrl::parse(&format!(
        "postgresql://postgres@127.0.0.1:5432/test?sslmode=require&schema={schema}"
    ))
    .unwrap();
    // The local server may or may not offer TLS; `prefer` must work either way.
    let prefer = trackmill_dbwriter::DbUrl::parse(&format!(
        "postgresql://postgres@127.0.0.1:5432/test?sslmode=prefer&schema={schema}"
    ))
    .unwrap();
    trackmill_dbwriter::check(&prefer).unwrap();
    let ssl_on = pg_rows("SHOW ssl")[0][0].as_deref() == Some("on");
    assert_eq!(trackmill_dbwriter::check(&url).is_ok(), ssl_on);
}
