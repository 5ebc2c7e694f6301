//! End-to-end chaos of the real binary: SIGKILL and SIGSEGV to workers mid-file, SIGKILL to the
//! DB writer mid-run, SIGTERM (once and twice) and SIGKILL to the supervisor; nothing is lost,
//! nothing is done twice, no process is left behind.

use nix::sys::signal::Signal;
use std::path::Path;
use std::time::{Duration, Instant};
use trackmill_e2e::*;

/// Long enough for a debug build on a loaded two-core machine; only reached when something hangs.
const LIMIT: Duration = Duration::from_secs(90);

fn attempts_of(db: &Path, file: &Path) -> Vec<String> {
    let row = stored(db, file);
    row["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts for {}: {row:#}", file.display()))
        .iter()
        .map(|a| a["class"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sigkill_of_a_worker_mid_file_is_retried_and_not_held_against_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    let healthy = healthy_files(&lib, "h", 6);
    let marker = tmp.path().join("block");
    let blocked = lib.join("block.flac");
    blocking_file(&blocked, &marker);
    let poison = lib.join("segv.mp3");
    std::fs::write(&poison, b"TRACKMILL-FAULT segv\n").unwrap();
    let db = tmp.path().join("t.db");
    let max_attempts = 2;
    let mut scan = spawn_scan(
        &[&lib],
        &db,
        &[
            "--workers",
            "2",
            "--max-attempts",
            &max_attempts.to_string(),
        ],
    );
    // More kills than max_attempts: a counted kill would quarantine the file.
    let kills = max_attempts + 1;
    let mut killed = Vec::new();
    for _ in 0..kills {
        let pid = take_blocked_pid(&marker, LIMIT);
        assert!(!killed.contains(&pid), "worker {pid} was killed already");
        signal(pid, Signal::SIGKILL);
        killed.push(pid);
    }
    take_blocked_pid(&marker, LIMIT);
    std::fs::remove_file(&marker).unwrap();
    let s = scan.finish(LIMIT);
    let err = scan.stderr();
    assert_eq!(s["status"], "completed", "{s:#}");
    assert_accounted(&s);
    assert_eq!(s["worker_exits"]["killed"], kills, "{s:#}\n{err}");
    assert_eq!(n(&s, "analyzed"), healthy.len() as u64, "{s:#}\n{err}");
    assert_eq!(n(&s, "quarantined"), 1, "only the poison file: {s:#}");
    assert_eq!(s["failed"]["corrupt"], 1, "{s:#}");
    for f in &healthy {
        assert_eq!(stored(&db, f)["status"], "analyzed", "{}", f.display());
    }
    let b = stored(&db, &blocked);
    assert_eq!(b["status"], "failed", "{b:#}");
    assert_eq!(b["failure_class"], "corrupt", "{b:#}");
    let classes = attempts_of(&db, &blocked);
    assert_eq!(
        classes.iter().filter(|c| *c == "killed").count() as u32,
        kills,
        "{b:#}"
    );
    let p = stored(&db, &poison);
    assert_eq!(p["status"], "quarantined", "{p:#}");
    assert_eq!(
        attempts_of(&db, &poison).len() as u32,
        max_attempts,
        "a poison file is tried max_attempts times, no more: {p:#}"
    );
}

#[test]
fn sigsegv_sent_to_a_worker_mid_file_is_a_crash_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    let healthy = healthy_files(&lib, "h", 2);
    let marker = tmp.path().join("block");
    let blocked = lib.join("block.flac");
    blocking_file(&blocked, &marker);
    let db = tmp.path().join("t.db");
    let mut scan = spawn_scan(&[&lib], &db, &["--workers", "2", "--max-attempts", "3"]);
    let first = take_blocked_pid(&marker, LIMIT);
    signal(first, Signal::SIGSEGV);
    let second = take_blocked_pid(&marker, LIMIT);
    assert_ne!(first, second, "the file is retried in a fresh worker");
    std::fs::remove_file(&marker).unwrap();
    let s = scan.finish(LIMIT);
    assert_accounted(&s);
    assert_eq!(s["worker_exits"]["crash"], 1, "{s:#}\n{}", scan.stderr());
    assert_eq!(n(&s, "analyzed"), healthy.len() as u64, "{s:#}");
    assert_eq!(n(&s, "quarantined"), 0, "{s:#}");
    let b = stored(&db, &blocked);
    assert_eq!(attempts_of(&db, &blocked), ["crash", "corrupt"], "{b:#}");
    assert!(
        b["attempts"][0]["message"]
            .as_str()
            .unwrap()
            .contains("SIGSEGV"),
        "{b:#}"
    );
}

#[test]
fn sigkill_of_the_db_writer_mid_run_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // The blocking file is alone in the first root, so it is dispatched first and one worker
    // stays on it while the other works through the second root.
    let first = tmp.path().join("first");
    std::fs::create_dir(&first).unwrap();
    let marker = tmp.path().join("block");
    blocking_file(&first.join("block.flac"), &marker);
    let lib = tmp.path().join("lib");
    let healthy = healthy_files(&lib, "h", 40);
    let db = tmp.path().join("t.db");
    let mut scan = spawn_scan(&[&first, &lib], &db, &["--workers", "2", "-v"]);
    take_blocked_pid(&marker, LIMIT);
    // Every skip-check is answered, so the queue holds files that need no further word from
    // the writer before they are dispatched.
    wait_for("the end of the walk", LIMIT, || {
        scan.stderr().contains("scan finished").then_some(())
    });
    let sup = scan.pid();
    let writer = wait_for("the DB writer", LIMIT, || db_writer_of(sup));
    // Stop the writer, let results reach it that it cannot commit, then kill it.
    signal(writer, Signal::SIGSTOP);
    let before = scan.stderr().matches("dispatch").count();
    wait_for("three more dispatches", LIMIT, || {
        (scan.stderr().matches("dispatch").count() >= before + 3).then_some(())
    });
    signal(writer, Signal::SIGKILL);
    let next = wait_for("a new DB writer", LIMIT, || {
        db_writer_of(sup).filter(|p| *p != writer)
    });
    assert_ne!(next, writer);
    std::fs::remove_file(&marker).unwrap();
    let s = scan.finish(LIMIT);
    let err = scan.stderr();
    assert_accounted(&s);
    assert_eq!(n(&s, "db_writer_restarts"), 1, "{s:#}");
    assert_eq!(n(&s, "analyzed"), healthy.len() as u64, "{s:#}");
    assert_eq!(s["failed"]["corrupt"], 1, "{s:#}");
    assert!(
        err.contains("re-sending"),
        "unacknowledged results are re-sent:\n{err}"
    );

    let conn = open_db(&db);
    let files = healthy.len() as i64 + 1;
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM tracks"), files);
    assert_eq!(
        query_i64(&conn, "SELECT COUNT(DISTINCT path) FROM tracks"),
        files
    );
    assert_eq!(
        query_i64(
            &conn,
            "SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'"
        ),
        healthy.len() as i64
    );
    assert_eq!(
        query_i64(&conn, "SELECT COUNT(*) FROM features"),
        healthy.len() as i64,
        "one feature row per analysed track"
    );
    assert_eq!(
        query_i64(&conn, "SELECT COUNT(*) FROM attempts"),
        1,
        "one attempt row for the corrupt file"
    );
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM runs"), 1);
    assert_eq!(
        query_i64(
            &conn,
            "SELECT COUNT(*) FROM runs WHERE status = 'completed' AND files_seen = analyzed + failed"
        ),
        1
    );
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM leases"), 0);
}

/// Two blocking files in a first root and healthy files in a second: with two workers, both end
/// up blocked before any file of the second root is dispatched.
struct Blocked {
    _tmp: tempfile::TempDir,
    first: std::path::PathBuf,
    lib: std::path::PathBuf,
    markers: [std::path::PathBuf; 2],
    healthy: Vec<std::path::PathBuf>,
    db: std::path::PathBuf,
}

fn two_blocked_workers() -> Blocked {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let mut healthy = healthy_files(&first, "a", 3);
    let markers = [tmp.path().join("block1"), tmp.path().join("block2")];
    blocking_file(&first.join("block1.flac"), &markers[0]);
    blocking_file(&first.join("block2.flac"), &markers[1]);
    let lib = tmp.path().join("lib");
    healthy.extend(healthy_files(&lib, "h", 12));
    let db = tmp.path().join("t.db");
    Blocked {
        first,
        lib,
        markers,
        healthy,
        db,
        _tmp: tmp,
    }
}

#[test]
fn sigterm_stops_within_the_grace_and_the_next_scan_finishes_the_rest() {
    let b = two_blocked_workers();
    let grace = Duration::from_secs(1);
    let mut scan = spawn_scan(
        &[&b.first, &b.lib],
        &b.db,
        &["--workers", "2", "--shutdown-grace", "1s"],
    );
    for m in &b.markers {
        take_blocked_pid(m, LIMIT);
    }
    let sent = Instant::now();
    scan.signal(Signal::SIGTERM);
    let st = scan
        .wait_timeout(grace + Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", scan.stderr()));
    let took = sent.elapsed();
    assert!(st.success(), "{st}:\n{}", scan.stderr());
    assert!(took >= grace, "in-flight files get the grace ({took:?})");
    let s1 = scan.summary();
    assert_eq!(s1["status"], "interrupted", "{s1:#}");
    assert_eq!(n(&s1, "unfinished"), 2, "{s1:#}");
    let analyzed1 = n(&s1, "analyzed");
    assert!(analyzed1 <= 3, "nothing of the second root ran: {s1:#}");
    let run1 = n(&s1, "run_id") as i64;
    {
        let conn = open_db(&b.db);
        assert_eq!(
            query_i64(
                &conn,
                &format!("SELECT COUNT(*) FROM runs WHERE id = {run1} AND status = 'interrupted'")
            ),
            1
        );
        assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM leases"), 0);
    }

    for m in &b.markers {
        std::fs::remove_file(m).unwrap();
    }
    let mut again = spawn_scan(&[&b.first, &b.lib], &b.db, &["--workers", "2"]);
    let s2 = again.finish(LIMIT);
    assert_accounted(&s2);
    assert_eq!(s2["status"], "completed", "{s2:#}");
    assert_eq!(
        analyzed1 + n(&s2, "analyzed"),
        b.healthy.len() as u64,
        "{s1:#}\n{s2:#}"
    );
    assert_eq!(n(&s2, "skipped_unchanged"), analyzed1, "{s2:#}");
    assert_eq!(s2["failed"]["corrupt"], 2, "{s2:#}");
    let conn = open_db(&b.db);
    assert_eq!(
        query_i64(
            &conn,
            &format!("SELECT COUNT(*) FROM tracks WHERE status = 'analyzed' AND run_id = {run1}")
        ) as u64,
        analyzed1,
        "nothing analysed in the first run was analysed again"
    );
}

#[test]
fn a_second_sigterm_kills_at_once() {
    let b = two_blocked_workers();
    let mut scan = spawn_scan(
        &[&b.first, &b.lib],
        &b.db,
        &["--workers", "2", "--shutdown-grace", "10m"],
    );
    for m in &b.markers {
        take_blocked_pid(m, LIMIT);
    }
    scan.signal(Signal::SIGTERM);
    wait_for("the shutdown message", LIMIT, || {
        scan.stderr().contains("stopping").then_some(())
    });
    let sent = Instant::now();
    scan.signal(Signal::SIGTERM);
    let st = scan
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("second SIGTERM ignored:\n{}", scan.stderr()));
    assert!(st.success(), "{st}:\n{}", scan.stderr());
    assert!(sent.elapsed() < Duration::from_secs(10));
    let s = scan.summary();
    assert_eq!(s["status"], "interrupted", "{s:#}");
    assert_eq!(n(&s, "unfinished"), 2, "{s:#}");
}

#[test]
fn sigkill_of_the_supervisor_takes_its_children_and_the_next_scan_resumes() {
    let b = two_blocked_workers();
    let mut scan = spawn_scan(&[&b.first, &b.lib], &b.db, &["--workers", "2"]);
    for m in &b.markers {
        take_blocked_pid(m, LIMIT);
    }
    let kids = children(scan.pid());
    assert_eq!(
        kids.len(),
        3,
        "two workers and the DB writer: {kids:?}\n{}",
        scan.stderr()
    );
    scan.signal(Signal::SIGKILL);
    scan.wait_timeout(LIMIT)
        .expect("SIGKILL ends the supervisor");
    for (pid, cmd) in &kids {
        wait_for(
            &format!("{pid} ({cmd}) to die with its supervisor"),
            Duration::from_secs(5),
            || is_dead(*pid).then_some(()),
        );
    }

    for m in &b.markers {
        std::fs::remove_file(m).unwrap();
    }
    let mut again = spawn_scan(&[&b.first, &b.lib], &b.db, &["--workers", "2"]);
    let s = again.finish(LIMIT);
    assert_accounted(&s);
    assert_eq!(s["status"], "completed", "{s:#}");
    assert_eq!(s["failed"]["corrupt"], 2, "{s:#}");
    let conn = open_db(&b.db);
    assert_eq!(
        query_i64(
            &conn,
            "SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'"
        ) as usize,
        b.healthy.len()
    );
    assert_eq!(
        query_i64(&conn, "SELECT COUNT(*) FROM runs WHERE status = 'running'"),
        0,
        "the killed run is marked interrupted"
    );
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM leases"), 0);
}

#[test]
fn results_the_writer_never_commits_leave_the_run_interrupted_and_are_redone_next_time() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    let healthy = healthy_files(&lib, "h", 30);
    let db = tmp.path().join("t.db");
    let mut first = spawn_scan(&[&lib], &db, &["--workers", "2", "-v"]);
    wait_for("the end of the walk", LIMIT, || {
        first.stderr().contains("scan finished").then_some(())
    });
    let sup = first.pid();
    let writer = wait_for("the DB writer", LIMIT, || db_writer_of(sup));
    // The writer stops answering: results reach it and are never committed.
    signal(writer, Signal::SIGSTOP);
    let before = first.stderr().matches("dispatch").count();
    wait_for("three more dispatches", LIMIT, || {
        (first.stderr().matches("dispatch").count() >= before + 3).then_some(())
    });
    first.signal(Signal::SIGTERM);
    wait_for("the shutdown", LIMIT, || {
        first.stderr().contains("in-flight files get").then_some(())
    });
    // The second signal bounds the final flush to a few seconds; it cannot finish.
    first.signal(Signal::SIGTERM);
    let st = first.wait_timeout(LIMIT).expect("the scan ends");
    let err = first.stderr();
    assert_eq!(st.code(), Some(11), "documented exit code:\n{err}");
    assert!(err.contains("results were not stored"), "{err}");
    let s = first.summary();
    assert_eq!(s["status"], "interrupted", "{s:#}");
    let unstored = n(&s, "unstored");
    assert!(unstored >= 3, "the results sent after the stop: {s:#}");
    let conn = open_db(&db);
    let committed = query_i64(
        &conn,
        "SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'",
    );
    assert_eq!(
        n(&s, "analyzed") as i64,
        committed,
        "analysed counts committed rows only: {s:#}"
    );
    drop(conn);

    // The next scan analyses exactly the files that have no committed row.
    let (out, again) = scan(&lib, &db, &["--workers", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(again["status"], "completed", "{again:#}");
    assert_accounted(&again);
    assert_eq!(
        n(&again, "analyzed") as i64,
        healthy.len() as i64 - committed,
        "{again:#}"
    );
    let conn = open_db(&db);
    assert_eq!(
        query_i64(
            &conn,
            "SELECT COUNT(DISTINCT path) FROM tracks WHERE status = 'analyzed'"
        ),
        healthy.len() as i64
    );
}
