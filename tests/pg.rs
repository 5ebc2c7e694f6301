//! End-to-end runs of the real binary against the real PostgreSQL server: clean text from hostile
//! tags, an outage in the middle of a scan, and several hosts sharing one library through leases.
//! Each test uses its own schema; the tests here run one at a time (one of them stops the server).

use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use trackmill_e2e::pgserver::{Outage, PgSchema};
use trackmill_e2e::*;
use trackmill_types::procmem::rss_bytes;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A config file with `toml` and DSP-only analysis: these tests are about the database and run
/// thousands of files; the models are covered by tests/models.rs.
fn config(dir: &Path, toml: &str) -> PathBuf {
    let p = dir.join("trackmill.toml");
    std::fs::write(&p, format!("[analysis]\nmodels = []\n\n{toml}")).unwrap();
    p
}

/// True while the scan runs (reaps it once it has ended).
fn running(scan: &mut ScanChild) -> bool {
    scan.wait_timeout(Duration::ZERO).is_none()
}

#[test]
fn tags_with_nul_and_control_bytes_reach_postgres_as_clean_text() {
    let _serial = serial();
    let schema = PgSchema::new("tags");
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    tone(&lib.join("b.mp3"), 220, 2);
    tone(&lib.join("a.flac"), 330, 2);
    hostile_tags(&lib.join("b.mp3"), &lib.join("tagged.mp3"));
    hostile_tags(&lib.join("a.flac"), &lib.join("tagged.flac"));
    let summary = tmp.path().join("s.json");
    let (out, s) = scan_url(&lib, &schema.url(), &summary, &["--workers", "2"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), 4, "{s:#}\n{err}");

    // Read straight from PostgreSQL, not through trackmill's own read side.
    let tagged = |name: &str| {
        let rows = schema.rows(&format!(
            "SELECT t.status, t.title, a.name FROM tracks t \
             JOIN track_artists ta ON ta.track_id = t.id JOIN artists a ON a.id = ta.artist_id \
             WHERE t.display_path LIKE '%/{name}'"
        ));
        assert_eq!(rows.len(), 1, "{name}: {rows:?}");
        [0, 1, 2].map(|i| rows[0][i].clone().unwrap_or_default())
    };
    // In a Vorbis comment the NUL, SOH and BEL are inside the title: all three are dropped.
    assert_eq!(tagged("tagged.flac"), ["analyzed", "bdtitle", "x[31my"]);
    // In ID3v2.4 the NUL ends the first value; the ESC in the artist is dropped.
    assert_eq!(tagged("tagged.mp3"), ["analyzed", "b", "x[31my"]);
    let dirty = schema.scalar(
        "SELECT count(*) FROM tracks WHERE title ~ '[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]' \
         OR album ~ '[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]'",
    );
    assert_eq!(dirty, 0);
    let dirty_names = schema.scalar(
        "SELECT count(*) FROM artists WHERE name ~ '[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]'",
    );
    assert_eq!(dirty_names, 0);

    // The database is the checkpoint: a second scan analyses nothing.
    let (_, again) = scan_url(&lib, &schema.url(), &summary, &["--workers", "2"], &[]);
    assert_eq!(n(&again, "skipped_unchanged"), 4, "{again:#}");
    assert_eq!(n(&again, "analyzed"), 0, "{again:#}");
    assert_eq!(schema.scalar("SELECT count(*) FROM tracks"), 4);
}

#[test]
fn outage_mid_scan_loses_nothing_and_pauses_dispatch() {
    const FILES: usize = 500;
    const MAX_UNACKED: usize = 16;
    const WORKERS: usize = 2;
    let _serial = serial();
    let schema = PgSchema::new("outage");
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    tiny_library(&lib, FILES);
    let cfg = config(
        tmp.path(),
        &format!("[workers]\ncount = {WORKERS}\n\n[database]\nmax_unacked = {MAX_UNACKED}\n"),
    );
    let summary = tmp.path().join("s.json");
    // The server trusts local connections and ignores the password; it must show nowhere.
    let secret = "s3cret-pw";
    let url = schema
        .url()
        .replace("postgres@", &format!("postgres:{secret}@"));
    let mut cmd = scan_command_url(
        &[&lib],
        &url,
        &summary,
        &["--config", cfg.to_str().unwrap()],
    );
    // Dispatches are logged at debug level: they show when the supervisor pauses.
    cmd.env("TRACKMILL_LOG", "info,trackmill_supervisor::run=debug");
    let mut scan = spawn_with(cmd, &summary);
    let dispatched = |scan: &ScanChild| scan.stderr().matches("dispatch \"").count();

    wait_for("the first committed rows", Duration::from_secs(120), || {
        assert!(running(&mut scan), "scan ended early:\n{}", scan.stderr());
        (schema.count("SELECT count(*) FROM tracks") > 0).then_some(())
    });
    let writer = db_writer_of(scan.pid()).expect("the DB writer process");
    let argv = std::fs::read(format!("/proc/{writer}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&argv).contains(secret),
        "password on the DB writer's command line"
    );
    let rows_before = schema.scalar("SELECT count(*) FROM tracks");

    let stopping = Instant::now();
    let mut outage = Outage::stop();
    let stopped = Instant::now();
    let stopped_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    wait_for(
        "the DB writer's retrying warning",
        Duration::from_secs(30),
        || scan.stderr().contains("; retrying").then_some(()),
    );
    let warned = stopped.elapsed();
    let at_warning = dispatched(&scan);
    // Keep the server down about 10 s in all (stopping and starting take 2-3 s) and until no
    // dispatch happened for 3 s (the pause); a supervisor that never pauses ends the outage at
    // 30 s and fails below.
    let mut last = (at_warning, Instant::now());
    let (mut sup_rss, mut writer_rss) = (0u64, 0u64);
    loop {
        assert!(
            running(&mut scan),
            "scan ended while the database was down:\n{}",
            scan.stderr()
        );
        sup_rss = sup_rss.max(rss_bytes(scan.pid()));
        writer_rss = writer_rss.max(rss_bytes(writer));
        let d = dispatched(&scan);
        if d != last.0 {
            last = (d, Instant::now());
        }
        let quiet = last.1.elapsed() >= Duration::from_secs(3);
        let down = stopped.elapsed();
        if (down >= Duration::from_secs(8) && quiet) || down >= Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let quiet_for = last.1.elapsed();
    let at_end = dispatched(&scan);
    outage.start();
    let down_for = stopped.elapsed();
    let stop_took = stopped - stopping;
    assert!(!is_dead(writer), "the DB writer rode out the outage");

    let s = scan.finish(Duration::from_secs(300));
    // A batch's updated_at is taken when its transaction starts: rows older than the stop were
    // committed before the outage; the retried batches got later times.
    let committed = schema.scalar(&format!(
        "SELECT count(*) FROM tracks WHERE updated_at < {stopped_ms}"
    )) as usize;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "outage: {committed} rows committed before the stop ({rows_before} seen before it); \
         stopping took {stop_took:.1?}, then down {down_for:.1?} until accepting again; retrying seen {warned:.1?} after the stop; dispatches: \
         {at_warning} at the warning, {at_end} at the end, none for the last {quiet_for:.1?}; \
         peak RSS during the outage: supervisor {:.1} MiB, DB writer {:.1} MiB",
        mib(sup_rss),
        mib(writer_rss)
    );
    // Dispatching went on until the unacknowledged results reached the bound (plus the files
    // in flight then), and stayed paused.
    assert!(
        (committed + MAX_UNACKED..=committed + MAX_UNACKED + WORKERS).contains(&at_end),
        "{at_end} dispatched, {committed} committed before the outage"
    );
    assert!(
        quiet_for >= Duration::from_secs(3),
        "dispatching went on during the outage"
    );
    assert!(
        at_end < FILES,
        "the whole library was dispatched during the outage"
    );
    assert!(
        sup_rss > 0 && sup_rss < 64 << 20,
        "supervisor RSS {sup_rss}"
    );
    assert!(
        writer_rss > 0 && writer_rss < 64 << 20,
        "DB writer RSS {writer_rss}"
    );

    let err = scan.stderr();
    assert!(err.contains("***@"), "the URL is logged redacted:\n{err}");
    assert!(!err.contains(secret), "password in the log:\n{err}");

    // Every file in exactly one terminal row; nothing left leased.
    assert_accounted(&s);
    assert_eq!(n(&s, "files_seen"), FILES as u64, "{s:#}");
    assert_eq!(n(&s, "analyzed"), FILES as u64, "{s:#}");
    let f = FILES as i64;
    assert_eq!(schema.scalar("SELECT count(*) FROM tracks"), f);
    assert_eq!(schema.scalar("SELECT count(DISTINCT path) FROM tracks"), f);
    assert_eq!(
        schema.scalar("SELECT count(*) FROM tracks WHERE status = 'analyzed'"),
        f
    );
    assert_eq!(schema.scalar("SELECT count(*) FROM leases"), 0);
}

/// Tracks rows written by the run of the supervisor with this pid.
fn rows_of(schema: &PgSchema, pid: u32) -> i64 {
    schema.count(&format!(
        "SELECT count(*) FROM tracks t JOIN runs r ON r.id = t.run_id WHERE r.pid = {pid}"
    ))
}

#[test]
fn two_hosts_share_a_library_and_analyze_each_file_once() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    tiny_library(&lib, 2000);
    two_hosts_analyze_each_file_once(tmp.path(), &lib, 2000, "hosts");
}

#[test]
fn two_hosts_share_even_a_small_library_of_real_tracks() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    for i in 0..25 {
        tone(&lib.join(format!("t{i:02}.flac")), 200 + 20 * i, 2);
    }
    two_hosts_analyze_each_file_once(tmp.path(), &lib, 25, "small");
}

/// Two `trackmill scan` processes with one worker each, on one library of `files` files in one
/// PostgreSQL schema: both work, each file is analysed once, and each host's rows are its own.
fn two_hosts_analyze_each_file_once(dir: &Path, lib: &Path, files: usize, tag: &str) {
    let schema = PgSchema::new(tag);
    let url = schema.url();
    let (sa, sb) = (dir.join("a.json"), dir.join("b.json"));
    let cfg = config(dir, "");
    let args = ["--workers", "1", "--config", cfg.to_str().unwrap()];
    let mut a = spawn_scan_url(&[lib], &url, &sa, &args);
    let mut b = spawn_scan_url(&[lib], &url, &sb, &args);
    let (pa, pb) = (a.pid(), b.pid());
    let (mut end_a, mut end_b) = (None, None);
    wait_for("both hosts to finish", Duration::from_secs(600), || {
        if end_a.is_none() && !running(&mut a) {
            end_a = Some(Instant::now());
        }
        if end_b.is_none() && !running(&mut b) {
            end_b = Some(Instant::now());
        }
        (end_a.is_some() && end_b.is_some()).then_some(())
    });
    let va = a.finish(Duration::from_secs(1));
    let vb = b.finish(Duration::from_secs(1));
    // The host that runs out of files first waits only for the leases the other still holds.
    let (ea, eb) = (end_a.unwrap(), end_b.unwrap());
    let gap = ea.max(eb) - ea.min(eb);
    assert_accounted(&va);
    assert_accounted(&vb);
    let (na, nb) = (n(&va, "analyzed"), n(&vb, "analyzed"));
    eprintln!(
        "two hosts: a analysed {na} in {:.1}s, b analysed {nb} in {:.1}s; exits {gap:.1?} apart",
        va["elapsed_s"].as_f64().unwrap_or(0.0),
        vb["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    assert_eq!(
        na + nb,
        files as u64,
        "each file analysed once:\n{va:#}\n{vb:#}"
    );
    assert!(
        gap < Duration::from_secs(5),
        "one host ended {gap:?} after the other"
    );
    assert!(na > 0 && nb > 0, "both hosts did work: {na} and {nb}");
    for v in [&va, &vb] {
        assert_eq!(failed_total(v) + n(v, "quarantined"), 0, "{v:#}");
    }
    let f = files as i64;
    assert_eq!(schema.scalar("SELECT count(*) FROM tracks"), f);
    assert_eq!(schema.scalar("SELECT count(DISTINCT path) FROM tracks"), f);
    assert_eq!(
        schema.scalar("SELECT count(*) FROM tracks WHERE status = 'analyzed'"),
        f
    );
    // Each host's rows are exactly the files it analysed.
    assert_eq!(rows_of(&schema, pa), na as i64);
    assert_eq!(rows_of(&schema, pb), nb as i64);
    assert_eq!(schema.scalar("SELECT count(*) FROM leases"), 0);
    assert_eq!(
        schema.scalar("SELECT count(*) FROM runs WHERE status = 'completed'"),
        2
    );
}

#[test]
fn killed_host_files_are_taken_over_after_their_leases_expire() {
    const FILES: usize = 2000;
    let _serial = serial();
    let schema = PgSchema::new("takeover");
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    tiny_library(&lib, FILES);
    let cfg = config(tmp.path(), "[database]\nlease_ttl = \"2s\"\n");
    let url = schema.url();
    let (sa, sb) = (tmp.path().join("a.json"), tmp.path().join("b.json"));
    let args = ["--workers", "1", "--config", cfg.to_str().unwrap()];
    let mut a = spawn_scan_url(&[&lib], &url, &sa, &args);
    let mut b = spawn_scan_url(&[&lib], &url, &sb, &args);
    let (pa, pb) = (a.pid(), b.pid());

    // Host a's DB writer is the only process that changes its leases: stopped, it can neither
    // release nor renew them, so the list read then is what host a holds when it dies. Host a
    // holds none between its batches (the other host leased the next ones), so the writer is let
    // go again until a read finds some.
    let (a_writer, held) = wait_for(
        "both hosts to store results while host a holds leases",
        Duration::from_secs(300),
        || {
            assert!(running(&mut a), "host a ended early:\n{}", a.stderr());
            if rows_of(&schema, pa) < 100 || rows_of(&schema, pb) < 100 {
                return None;
            }
            let a_writer = db_writer_of(pa).expect("host a's DB writer");
            let a_run = schema.scalar(&format!("SELECT id FROM runs WHERE pid = {pa}"));
            signal(a_writer, Signal::SIGSTOP);
            let held: Vec<String> = schema
                .rows(&format!(
                    "SELECT encode(path, 'hex') FROM leases WHERE run_id = {a_run}"
                ))
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            if held.is_empty() {
                signal(a_writer, Signal::SIGCONT);
                return None;
            }
            Some((a_writer, held))
        },
    );
    a.signal(Signal::SIGKILL);
    a.wait_timeout(Duration::from_secs(10))
        .expect("host a dies of SIGKILL");
    wait_for(
        "host a's DB writer to die with it",
        Duration::from_secs(10),
        || is_dead(a_writer).then_some(()),
    );
    let a_rows = rows_of(&schema, pa);

    let vb = b.finish(Duration::from_secs(600));
    assert_accounted(&vb);
    eprintln!(
        "take-over: a stored {a_rows} before SIGKILL and held {} leases; b analysed {} \
         ({} first seen busy) in {:.1}s",
        held.len(),
        n(&vb, "analyzed"),
        n(&vb, "busy_elsewhere"),
        vb["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    // Host b met the dead host's files either still leased (busy, claimed once expired) or
    // already expired (taken over by its check): which one depends on the timing.
    let f = FILES as i64;
    assert_eq!(schema.scalar("SELECT count(*) FROM tracks"), f);
    assert_eq!(schema.scalar("SELECT count(DISTINCT path) FROM tracks"), f);
    assert_eq!(
        schema.scalar("SELECT count(*) FROM tracks WHERE status = 'analyzed'"),
        f
    );
    // Every file the dead host held was finished by the survivor.
    let list = held
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let taken = schema.scalar(&format!(
        "SELECT count(*) FROM tracks t JOIN runs r ON r.id = t.run_id \
         WHERE r.pid = {pb} AND encode(t.path, 'hex') IN ({list})"
    ));
    assert_eq!(taken, held.len() as i64);
    assert_eq!(schema.scalar("SELECT count(*) FROM leases"), 0);
}

#[test]
fn a_db_writer_that_can_never_commit_fails_the_run_with_its_error() {
    let _serial = serial();
    let schema = PgSchema::new("nocommit");
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    healthy_files(&lib, "h", 3);
    let cfg = config(tmp.path(), "");
    let cfg_arg = cfg.to_str().unwrap();
    let summary = tmp.path().join("s.json");
    // The schema and its tables exist (made by a first scan); then a trigger refuses every new
    // run: each DB writer started after it dies on its first write, having committed nothing.
    let (out, _) = scan_url(&lib, &schema.url(), &summary, &["--config", cfg_arg], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    schema.rows(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'closed for maintenance'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION refuse()",
    );
    healthy_files(&lib, "new", 2);
    let started = Instant::now();
    let mut scan = spawn_scan_url(&[&lib], &schema.url(), &summary, &["--config", cfg_arg]);
    let sup = scan.pid();
    // Every child the run starts (its restarted DB writers among them), until it ends.
    let mut seen = std::collections::BTreeSet::new();
    let st = loop {
        seen.extend(children(sup).into_iter().map(|(pid, _)| pid));
        if let Some(st) = scan.wait_timeout(Duration::from_millis(20)) {
            break st;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the run ends");
    };
    let took = started.elapsed();
    let err = scan.stderr();
    assert_eq!(st.code(), Some(10), "documented exit code:\n{err}");
    assert!(err.contains("run failed"), "{err}");
    assert!(
        err.contains("closed for maintenance"),
        "names the database's error:\n{err}"
    );
    let s = scan.summary();
    assert_eq!(s["status"], "failed", "{s:#}");
    assert!(took < Duration::from_secs(60), "bounded: {took:?}");
    assert!(children(sup).is_empty(), "no child outlives the run");
    assert_eq!(
        schema.scalar("SELECT count(*) FROM tracks"),
        3,
        "nothing new stored"
    );
}
