//! End-to-end scans of the real binary: hostile libraries, worker deaths of every class, resume.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use trackmill_e2e::*;

fn hostile_library(dir: &Path) {
    tone(&dir.join("a.flac"), 440, 4);
    tone(&dir.join("b.mp3"), 220, 4);
    tone(&dir.join("c.ogg"), 330, 3);
    tone(&dir.join("d.wav"), 550, 3);
    let flac = std::fs::read(dir.join("a.flac")).unwrap();
    std::fs::write(dir.join("truncated.flac"), &flac[..flac.len() / 2]).unwrap();
    std::fs::write(dir.join("headeronly.flac"), &flac[..40]).unwrap();
    std::fs::write(
        dir.join("garbage.mp3"),
        (0..20000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(dir.join("empty.wav"), b"").unwrap();
    std::fs::copy(dir.join("a.flac"), dir.join("wrong-extension.mp3")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"non-utf8-\xff\xfe.mp3");
    std::fs::copy(dir.join("b.mp3"), dir.join(odd)).unwrap();
    // NUL and control bytes in tags.
    hostile_tags(&dir.join("b.mp3"), &dir.join("tagged.mp3"));
}

#[test]
fn hostile_library_every_file_accounted_and_resume_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    hostile_library(&lib);
    let db = tmp.path().join("t.db");
    let (out, s) = scan(&lib, &db, &["--workers", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(n(&s, "files_seen"), 11, "{s:#}");
    assert_accounted(&s);
    assert_eq!(n(&s, "quarantined"), 0, "{s:#}");
    // Healthy files (including the mislabelled one and the non-UTF-8 name) are analysed.
    assert!(n(&s, "analyzed") >= 8, "{s:#}");
    assert!(s["failed"]["corrupt"].as_u64().unwrap() >= 3, "{s:#}");
    let t = stored(&db, &lib.join("tagged.mp3"));
    assert_eq!(t["status"], "analyzed", "{t:#}");
    let title = t["title"].as_str().unwrap_or("");
    assert!(
        !title.bytes().any(|b| b < 0x20 && b != b'\t'),
        "title {title:?}"
    );
    let g = stored(&db, &lib.join("garbage.mp3"));
    assert_eq!(g["status"], "failed");

    let (_, again) = scan(&lib, &db, &["--workers", "2"]);
    assert_eq!(n(&again, "analyzed"), 0, "{again:#}");
    assert_eq!(n(&again, "skipped_unchanged"), 11, "{again:#}");
    assert_accounted(&again);

    // A changed file is analysed again.
    tone(&lib.join("d.wav"), 660, 2);
    let (_, third) = scan(&lib, &db, &["--workers", "2"]);
    assert_eq!(n(&third, "analyzed"), 1, "{third:#}");
}

#[test]
fn worker_deaths_are_classified_and_poison_is_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    for i in 0..6 {
        tone(&lib.join(format!("good{i}.flac")), 200 + 50 * i, 2);
    }
    std::fs::write(lib.join("segv.mp3"), b"TRACKMILL-FAULT segv\n").unwrap();
    std::fs::write(lib.join("abort.mp3"), b"TRACKMILL-FAULT abort\n").unwrap();
    std::fs::write(lib.join("oom.mp3"), b"TRACKMILL-FAULT alloc\n").unwrap();
    std::fs::write(lib.join("hang.mp3"), b"TRACKMILL-FAULT hang-ignore-term\n").unwrap();
    let db = tmp.path().join("t.db");
    let (out, s) = scan(
        &lib,
        &db,
        &[
            "--workers",
            "2",
            "--memory-limit",
            "256MiB",
            "--job-timeout",
            "2s",
            "--max-attempts",
            "3",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), 6, "{s:#}\n{err}");
    assert_eq!(n(&s, "quarantined"), 4, "{s:#}\n{err}");
    let exits = &s["worker_exits"];
    assert_eq!(exits["crash"], 6, "segv and abort: 3 attempts each: {s:#}");
    assert_eq!(exits["oom"], 3, "{s:#}\n{err}");
    assert_eq!(exits["timeout"], 2, "a hang is retried once: {s:#}");
    let oom = stored(&db, &lib.join("oom.mp3"));
    assert_eq!(oom["status"], "quarantined", "{oom:#}");
    let attempts = oom["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{oom:#}");
    let hang = stored(&db, &lib.join("hang.mp3"));
    assert_eq!(hang["attempts"].as_array().unwrap().len(), 2, "{hang:#}");
}

#[test]
fn bad_root_config_and_db_give_documented_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(binary())
            .args(args)
            .output()
            .unwrap()
    };
    let missing = tmp.path().join("nope");
    assert_eq!(
        run(&["scan", missing.to_str().unwrap()]).status.code(),
        Some(4)
    );
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[workers]\ncuont = 2\n").unwrap();
    let out = run(&[
        "scan",
        tmp.path().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuont"));
    let out = run(&["scan", tmp.path().to_str().unwrap(), "--db", "mysql://x"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn recycled_workers_exit_as_planned_and_cost_no_file_an_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    let files = healthy_files(&lib, "h", 8);
    let db = tmp.path().join("t.db");
    // Every worker exits after one file; a job sent to it after its last would reset its
    // channel and count as a protocol failure of that file.
    let (out, s) = scan(&lib, &db, &["--workers", "2", "--recycle-after", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), files.len() as u64, "{s:#}\n{err}");
    let exits = &s["worker_exits"];
    assert_eq!(exits["recycled"], files.len() as u64, "{s:#}\n{err}");
    assert_eq!(exits["protocol"], 0, "{s:#}\n{err}");
    assert!(!err.contains("retrying"), "{err}");
    let conn = open_db(&db);
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM attempts"), 0);
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM events"), 0);
}

/// A config file for a DSP-only scan with `toml` added.
fn dsp_config(dir: &Path, toml: &str) -> std::path::PathBuf {
    let p = dir.join("trackmill.toml");
    std::fs::write(&p, format!("[analysis]\nmodels = []\n\n{toml}")).unwrap();
    p
}

/// How many failed attempts are stored for `file`.
fn attempts(db: &Path, file: &Path) -> usize {
    stored(db, file)["attempts"]
        .as_array()
        .map_or(0, |a| a.len())
}

#[test]
fn after_a_model_failure_the_next_file_goes_to_a_fresh_worker_and_pays_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    // The failing file sorts first, so every healthy file comes after a model failure.
    let healthy = healthy_files(&lib, "h", 4);
    std::fs::write(lib.join("a-model.mp3"), b"TRACKMILL-FAULT model-fail\n").unwrap();
    let db = tmp.path().join("t.db");
    let cfg = dsp_config(tmp.path(), "");
    let (out, s) = scan(
        &lib,
        &db,
        &[
            "--workers",
            "1",
            "--max-attempts",
            "3",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), healthy.len() as u64, "{s:#}\n{err}");
    assert_eq!(n(&s, "quarantined"), 1, "{s:#}");
    let exits = &s["worker_exits"];
    assert_eq!(
        exits["protocol"], 0,
        "no file sent to a leaving worker: {s:#}"
    );
    assert!(
        exits["recycled"].as_u64().unwrap() >= 3,
        "a fresh worker after each model failure: {s:#}"
    );
    for f in &healthy {
        assert_eq!(
            attempts(&db, f),
            0,
            "{} was charged an attempt",
            f.display()
        );
    }
    assert_eq!(attempts(&db, &lib.join("a-model.mp3")), 3);
}

#[test]
fn a_worker_that_never_says_hello_is_stopped_and_the_scan_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    let healthy = healthy_files(&lib, "h", 3);
    let db = tmp.path().join("t.db");
    let summary = tmp.path().join("s.json");
    let marker = tmp.path().join("no-hello");
    std::fs::write(&marker, b"").unwrap();
    let cfg = dsp_config(tmp.path(), "[workers]\nhello_timeout = \"1s\"\n");
    let url = format!("sqlite://{}", db.display());
    let extra = ["--workers", "1", "--config", cfg.to_str().unwrap()];
    let mut cmd = scan_command_url(&[&lib], &url, &summary, &extra);
    cmd.env("TRACKMILL_FAULT_HELLO_WHILE", &marker);
    let mut run = spawn_with(cmd, &summary);
    wait_for(
        "a worker stopped for its missing hello",
        Duration::from_secs(60),
        || {
            run.stderr()
                .contains("said no hello within 1s")
                .then_some(())
        },
    );
    // The filesystem "recovers": the next worker starts normally.
    std::fs::remove_file(&marker).unwrap();
    let s = run.finish(Duration::from_secs(60));
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), healthy.len() as u64, "{s:#}");
    assert!(s["worker_exits"]["timeout"].as_u64().unwrap() >= 1, "{s:#}");
    for f in &healthy {
        assert_eq!(
            attempts(&db, f),
            0,
            "no file pays for a worker that never started"
        );
    }
}

#[test]
fn a_batch_of_more_than_a_thousand_files_commits_and_the_scan_ends() {
    // batch_size goes up to 100,000. With 1,200 results in one batch, no statement may grow past
    // what SQLite parses (it refused the lease release, a chain of 1,200 ORs, and every restarted
    // DB writer died on the same batch), and the files' leases go with the commit.
    const FILES: usize = 1_200;
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    tiny_library(&lib, FILES);
    let db = tmp.path().join("t.db");
    let cfg = dsp_config(
        tmp.path(),
        "[database]\nbatch_size = 5000\nbatch_interval = \"60s\"\nmax_unacked = 10000\n",
    );
    let mut run = spawn_scan(
        &[&lib],
        &db,
        &["--workers", "2", "--config", cfg.to_str().unwrap()],
    );
    let s = run.finish(Duration::from_secs(300));
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), FILES as u64, "{s:#}");
    let err = run.stderr();
    assert!(
        !err.contains("Expression tree") && !err.contains("DB writer did not finish"),
        "no DB writer died:\n{err}"
    );
    let conn = open_db(&db);
    assert_eq!(
        query_i64(&conn, "SELECT COUNT(*) FROM tracks"),
        FILES as i64
    );
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM leases"), 0);
}
