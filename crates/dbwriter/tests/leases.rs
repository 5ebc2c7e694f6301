//! Leases between two writers (two runs) on one database: each file is Todo for exactly one of
//! them, a lease left by a dead run is taken over through ClaimExpired, and only under the
//! claiming run's own roots.

mod common;

use common::*;
use std::collections::HashSet;
use trackmill_dbwriter::WriterOptions;
use trackmill_types::*;

fn files(n: usize) -> Vec<FileKey> {
    (0..n)
        .map(|i| {
            key(
                format!("/music/shared/{i:04}.flac").as_bytes(),
                1000 + i as u64,
                42,
            )
        })
        .collect()
}

fn todo_set(files: &[FileKey], v: &[Verdict]) -> HashSet<Vec<u8>> {
    files
        .iter()
        .zip(v)
        .filter(|(_, v)| **v == Verdict::Todo)
        .map(|(f, _)| f.path.0.clone())
        .collect()
}

both!(two_writers_each_file_todo_for_exactly_one, |b: Backend| {
    let all = files(200);
    let p = policy(ANALYZER_VERSION, false);
    let run_checks = |b: &Backend, all: Vec<FileKey>, reverse: bool| {
        let mut c = Client::start(b, WriterOptions::default());
        c.start_run();
        let mut chunks: Vec<Vec<FileKey>> = all.chunks(20).map(<[FileKey]>::to_vec).collect();
        if reverse {
            chunks.reverse();
        }
        let mut todo = HashSet::new();
        let mut busy = 0;
        for (q, chunk) in chunks.into_iter().enumerate() {
            let v = c.check(q as u64, p.clone(), chunk.clone());
            busy += v.iter().filter(|v| **v == Verdict::Busy).count();
            todo.extend(todo_set(&chunk, &v));
        }
        (c, todo, busy)
    };
    let (ta, tb) = std::thread::scope(|s| {
        let ha = s.spawn(|| run_checks(&b, all.clone(), false));
        let hb = s.spawn(|| run_checks(&b, all.clone(), true));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let (ca, todo_a, busy_a) = ta;
    let (cb, todo_b, busy_b) = tb;
    assert!(todo_a.is_disjoint(&todo_b));
    assert_eq!(todo_a.len() + todo_b.len(), 200);
    assert_eq!(busy_a + busy_b, 200);
    ca.close().unwrap();
    cb.close().unwrap();
});

both!(leases_follow_store_and_expiry, |b: Backend| {
    let all = files(10);
    let p = policy(ANALYZER_VERSION, false);
    let mut a = Client::start(&b, WriterOptions::default());
    let run_a = a.start_run();
    assert!(a
        .check(1, p.clone(), all.clone())
        .iter()
        .all(|v| *v == Verdict::Todo));
    // A stores one file: the lease is released and the file is done for everyone.
    a.send(&ToDb::Store {
        seq: 1,
        record: Box::new(analysed(run_a, all[0].clone(), 0)),
    });
    a.flush(1);

    let mut c = Client::start(&b, WriterOptions::default());
    c.start_run();
    let v = c.check(1, p.clone(), all.clone());
    assert_eq!(v[0], Verdict::Done);
    assert!(v[1..].iter().all(|v| *v == Verdict::Busy), "{v:?}");
    c.send(&ToDb::ClaimExpired {
        query: 2,
        policy: p.clone(),
        limit: 100,
    });
    match c.recv() {
        FromDb::Claimed {
            query,
            files,
            still_leased,
        } => {
            assert_eq!(query, 2);
            assert!(files.is_empty());
            assert_eq!(still_leased, 9);
        }
        other => panic!("{other:?}"),
    }

    // Run A dies without ending its run; its leases run out (time moved on by hand).
    drop(a);
    b.exec(&format!(
        "UPDATE leases SET expires_at = 0 WHERE run_id = {run_a}"
    ));
    // One of its files got stored by someone meanwhile: it is not claimed.
    c.send(&ToDb::Store {
        seq: 2,
        record: Box::new(analysed(run_a, all[1].clone(), 1)),
    });
    c.flush(2);
    c.send(&ToDb::ClaimExpired {
        query: 3,
        policy: p.clone(),
        limit: 5,
    });
    let mut got = Vec::new();
    match c.recv() {
        FromDb::Claimed {
            files,
            still_leased,
            ..
        } => {
            assert_eq!(files.len(), 5);
            assert_eq!(still_leased, 0);
            got.extend(files);
        }
        other => panic!("{other:?}"),
    }
    c.send(&ToDb::ClaimExpired {
        query: 4,
        policy: p.clone(),
        limit: 100,
    });
    match c.recv() {
        FromDb::Claimed { files, .. } => got.extend(files),
        other => panic!("{other:?}"),
    }
    let got: HashSet<Vec<u8>> = got.into_iter().map(|f| f.path.0).collect();
    let want: HashSet<Vec<u8>> = all[2..].iter().map(|f| f.path.0.clone()).collect();
    assert_eq!(got, want);
    // Claimed files are now this run's: a re-check says Todo, not Busy.
    let v = c.check(5, p.clone(), all[2..].to_vec());
    assert!(v.iter().all(|v| *v == Verdict::Todo), "{v:?}");
    c.close().unwrap();
});

fn claim(c: &mut Client, query: u64, limit: u32) -> (Vec<Vec<u8>>, u64) {
    c.send(&ToDb::ClaimExpired {
        query,
        policy: policy(ANALYZER_VERSION, false),
        limit,
    });
    match c.recv() {
        FromDb::Claimed {
            files,
            still_leased,
            ..
        } => {
            let mut paths: Vec<Vec<u8>> = files.into_iter().map(|f| f.path.0).collect();
            paths.sort();
            (paths, still_leased)
        }
        other => panic!("{other:?}"),
    }
}

both!(claims_stay_under_the_runs_roots, |b: Backend| {
    let p = policy(ANALYZER_VERSION, false);
    let keys = |paths: &[&str]| -> Vec<FileKey> {
        paths.iter().map(|s| key(s.as_bytes(), 10, 1)).collect()
    };
    // A dead run held files in /music and in /music2 (a sibling, not under /music).
    let mut dead = Client::start(&b, WriterOptions::default());
    let dead_run = dead.start_run_in(&["/music", "/music2"]);
    let held = keys(&["/music/a.flac", "/music/sub/b.flac", "/music2/c.flac"]);
    assert!(dead
        .check(1, p.clone(), held)
        .iter()
        .all(|v| *v == Verdict::Todo));
    drop(dead);
    b.exec(&format!(
        "UPDATE leases SET expires_at = 0 WHERE run_id = {dead_run}"
    ));
    // A live run elsewhere holds /podcasts/x.
    let mut other = Client::start(&b, WriterOptions::default());
    other.start_run_in(&["/podcasts"]);
    assert_eq!(
        other.check(1, p.clone(), keys(&["/podcasts/x.ogg"])),
        [Verdict::Todo]
    );

    let mut c = Client::start(&b, WriterOptions::default());
    c.start_run_in(&["/music/"]);
    let (got, still) = claim(&mut c, 1, 100);
    assert_eq!(
        got,
        [b"/music/a.flac".to_vec(), b"/music/sub/b.flac".to_vec()]
    );
    assert_eq!(still, 0, "the live run's file is outside /music");
    // A run over both roots takes the rest and sees the live run's lease only under its roots.
    let mut d = Client::start(&b, WriterOptions::default());
    d.start_run_in(&["/music2", "/podcasts"]);
    let (got, still) = claim(&mut d, 1, 100);
    assert_eq!(got, [b"/music2/c.flac".to_vec()]);
    assert_eq!(still, 1);
    // A run over 1,500 roots (a shell glob's worth; SQLite refuses an OR chain 1,000 deep)
    // sees the live run's lease under one of them.
    let mut many: Vec<String> = (0..1_499).map(|i| format!("/library/{i:04}")).collect();
    many.push("/podcasts".into());
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut e = Client::start(&b, WriterOptions::default());
    e.start_run_in(&many);
    assert_eq!(claim(&mut e, 1, 100), (Vec::new(), 1));
    e.close().unwrap();
    for x in [c, d, other] {
        x.close().unwrap();
    }
});

/// The holder stores a file and releases its lease while another run checks it: the check's
/// lease insert waits for that commit, and the file must then be Done, not Todo for both runs.
#[test]
fn pg_check_racing_the_holders_commit_sees_the_file_done() {
    let b = Backend::pg();
    let Backend::Pg { schema } = &b else {
        unreachable!()
    };
    let p = policy(ANALYZER_VERSION, false);
    let path = b"/music/race.flac";
    let (old, new) = (key(path, 100, 6), key(path, 100, 7));
    let mut a = Client::start(&b, WriterOptions::default());
    let run_a = a.start_run();
    a.send(&ToDb::Store {
        seq: 1,
        record: Box::new(analysed(run_a, old, 0)),
    });
    a.flush(1);
    // The file changed: run A leases it again.
    assert_eq!(a.check(1, p.clone(), vec![new.clone()]), [Verdict::Todo]);

    // Run A's store of the new version, held open: the row updated, the lease deleted.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(PG_BASE, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let hex: String = path.iter().map(|x| format!("{x:02x}")).collect();
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL search_path TO {schema}; \
                 UPDATE tracks SET mtime_ns = 7 WHERE path = '\\x{hex}'::bytea; \
                 DELETE FROM leases WHERE path = '\\x{hex}'::bytea"
            ))
            .await
            .unwrap();
        client
    });
    let mut c = Client::start(&b, WriterOptions::default());
    c.start_run();
    let checker = std::thread::spawn(move || {
        let v = c.check(1, p.clone(), vec![new]);
        (c, v)
    });
    // Wait until the check blocks on the open transaction, then commit it.
    let app = b.app_name().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting = pg_rows(&format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = '{app}' AND wait_event_type = 'Lock'"
        ));
        if waiting[0][0].as_deref() != Some("0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the check never waited for the holder's commit"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rt.block_on(held.batch_execute("COMMIT")).unwrap();
    let (c, v) = checker.join().unwrap();
    assert_eq!(v, [Verdict::Done], "stored by its holder meanwhile");
    assert_eq!(b.scalar("SELECT count(*) FROM leases"), 0);
    c.close().unwrap();
    a.close().unwrap();
}
