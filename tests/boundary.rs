//! End-to-end tests of the worker boundary with the real binary: no secret reaches a child's
//! environment, command line or the logs; a worker that tries to leave its sandbox is refused and
//! its file still ends normally; a FIFO swapped in for a file fails at once; links fanning out
//! over one album give each real file once; an absurd config value is a config error.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use trackmill_e2e::pgserver::{PgSchema, PG_BASE};
use trackmill_e2e::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A config file for DSP-only analysis (these tests are about the boundary, not the models).
fn config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("trackmill.toml");
    std::fs::write(&p, format!("[analysis]\nmodels = []\n{extra}")).unwrap();
    p
}

/// Random hex from the kernel: a password no test data or log line contains by chance.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut buf).unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn proc_text(pid: u32, what: &str) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/{what}"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
}

#[test]
fn the_database_password_is_in_no_child_environment_command_line_or_log() {
    let schema = PgSchema::new("secret");
    let password = random_hex(12);
    let url = format!(
        "{}?sslmode=disable&schema={}",
        PG_BASE.replace("postgres@", &format!("postgres:{password}@")),
        schema.name
    );
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    wav(&lib.join("a.wav"), 440.0, 300);
    let marker = tmp.path().join("marker");
    blocking_file(&lib.join("block.mp3"), &marker);
    let summary = tmp.path().join("s.json");
    let mut cmd = Command::new(binary());
    cmd.arg("scan")
        .arg(&lib)
        .arg("--config")
        .arg(config(tmp.path(), ""))
        .args(["--workers", "1", "--summary"])
        .arg(&summary)
        .env("TRACKMILL_DATABASE_URL", &url)
        .env("TRACKMILL_LOG", "debug,symphonia=off")
        .env("TRACKMILL_FAULT_INJECTION", "1");
    let mut scan = spawn_with(cmd, &summary);

    // While a worker is held on the blocking file, look at both kinds of child.
    let worker = take_blocked_pid(&marker, LIMIT);
    let writer = wait_for("the DB writer", LIMIT, || db_writer_of(scan.pid()));
    for (who, pid) in [("worker", worker), ("DB writer", writer)] {
        let cmdline = proc_text(pid, "cmdline").expect("a running child's command line");
        assert!(!cmdline.contains(&password), "{who} argv: {cmdline}");
        // The DB writer is non-dumpable: only a privileged reader gets its environment.
        match proc_text(pid, "environ") {
            Some(env) => {
                assert!(!env.contains(&password), "{who} environment: {env}");
                assert!(
                    !env.contains("TRACKMILL_DATABASE_URL"),
                    "{who} environment: {env}"
                );
            }
            None => assert_eq!(who, "DB writer", "the worker's environment is readable"),
        }
    }
    std::fs::remove_file(&marker).unwrap();
    let s = scan.finish(LIMIT);
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), 1, "{s:#}");
    let log = scan.stderr();
    assert!(log.contains("DEBUG"), "debug logging was on: {log}");
    assert!(
        !log.contains(&password),
        "the log shows the password:\n{log}"
    );
    assert_eq!(
        schema.scalar("SELECT count(*) FROM tracks WHERE status = 'analyzed'"),
        1
    );
}

#[test]
fn a_worker_that_tries_to_escape_is_refused_and_its_file_still_ends_normally() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    let work = tmp.path().join("work");
    let ctl = tmp.path().join("ctl");
    for d in [&lib, &work, &ctl] {
        std::fs::create_dir(d).unwrap();
    }
    let db = tmp.path().join("t.db");
    // A socket like the service's control socket, and a TCP port, both listening.
    let socket = ctl.join("control.sock");
    let unix = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    unix.set_nonblocking(true).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    wav(&lib.join("good.wav"), 330.0, 300);
    std::fs::write(
        lib.join("escape.mp3"),
        format!(
            "TRACKMILL-FAULT escape {} {} {port}\n",
            db.display(),
            socket.display()
        ),
    )
    .unwrap();
    let cfg = config(tmp.path(), "");
    let cfg_arg = cfg.to_str().unwrap();
    // The worker's working directory is `work` (the scan's).
    let mut cmd = scan_command_url(
        &[&lib],
        &format!("sqlite://{}", db.display()),
        &tmp.path().join("s.json"),
        &["--workers", "1", "--config", cfg_arg],
    );
    let out = cmd.current_dir(&work).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("s.json")).unwrap()).unwrap();
    assert_accounted(&s);
    assert_eq!(n(&s, "analyzed"), 1, "{s:#}\n{err}");
    let escaped = stored(&db, &lib.join("escape.mp3"));
    assert_eq!(escaped["status"], "failed", "{escaped:#}");
    assert_eq!(escaped["failure_class"], "corrupt", "{escaped:#}");
    assert_eq!(stored(&db, &lib.join("good.wav"))["status"], "analyzed");

    let attempts = ["write-cwd", "read-db", "connect-control", "connect-tcp"];
    for what in attempts {
        assert!(
            err.contains(&format!("fault escape {what}: ")),
            "the fault engine did not try {what}:\n{err}"
        );
    }
    match landlock_abi() {
        Some(abi) => {
            eprintln!("landlock ABI {abi}: every escape must be refused");
            for what in attempts {
                assert!(
                    err.contains(&format!("fault escape {what}: refused")),
                    "{what} was not refused:\n{err}"
                );
            }
            assert!(!err.contains("ALLOWED"), "{err}");
            let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
            assert!(left.is_empty(), "the worker wrote {left:?}");
            assert_eq!(
                unix.accept().map(drop).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
            assert_eq!(
                tcp.accept().map(drop).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
        }
        None => eprintln!("this kernel has no Landlock: the refusals are not checked"),
    }
}

#[test]
fn a_fifo_swapped_in_after_the_scan_fails_at_once_as_not_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Two roots walked in order: the blocking file holds the only worker while the other file,
    // already found by the scanner as a regular file, is replaced by a FIFO.
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");
    std::fs::create_dir(&first).unwrap();
    std::fs::create_dir(&second).unwrap();
    let marker = tmp.path().join("marker");
    blocking_file(&first.join("block.mp3"), &marker);
    let target = second.join("swapped.wav");
    wav(&target, 440.0, 300);
    let db = tmp.path().join("t.db");
    let cfg = config(tmp.path(), "");
    let mut scan = spawn_scan(
        &[&first, &second],
        &db,
        &[
            "--workers",
            "1",
            "--job-timeout",
            "60s",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    take_blocked_pid(&marker, LIMIT);
    std::fs::remove_file(&target).unwrap();
    nix::unistd::mkfifo(
        &target,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let released = Instant::now();
    std::fs::remove_file(&marker).unwrap();
    let s = scan.finish(LIMIT);
    let took = released.elapsed();
    assert_accounted(&s);
    assert!(
        took < Duration::from_secs(30),
        "{took:?}: the FIFO waited for the job timeout"
    );
    let f = stored(&db, &target);
    assert_eq!(f["status"], "failed", "{f:#}");
    assert_eq!(f["failure_class"], "corrupt", "{f:#}");
    assert!(
        f["failure_message"]
            .as_str()
            .unwrap_or("")
            .contains("not a regular file"),
        "{f:#}"
    );
    assert!(std::fs::metadata(&target).unwrap().file_type().is_fifo());
}

#[test]
fn links_fanning_out_eight_levels_over_one_album_analyze_each_real_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    let album = lib.join("f0/album");
    std::fs::create_dir_all(&album).unwrap();
    for i in 0..3 {
        wav(
            &album.join(format!("{i}.wav")),
            200.0 + 50.0 * i as f32,
            200,
        );
    }
    // f1 … f8 each hold two links to the level below: 2^8 paths lead into the album.
    for level in 1..=8 {
        let here = lib.join(format!("f{level}"));
        std::fs::create_dir(&here).unwrap();
        for name in ["a", "b"] {
            std::os::unix::fs::symlink(format!("../f{}", level - 1), here.join(name)).unwrap();
        }
    }
    let db = tmp.path().join("t.db");
    let cfg = config(tmp.path(), "");
    let (out, s) = scan(
        &lib,
        &db,
        &["--workers", "2", "--config", cfg.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_accounted(&s);
    assert_eq!(n(&s, "files_seen"), 3, "{s:#}\n{err}");
    assert_eq!(n(&s, "analyzed"), 3, "{s:#}\n{err}");
    assert!(
        err.contains("1530 aliases skipped"),
        "2 + 4 + … + 256 = 510 linked paths to each of 3 files:\n{err}"
    );
    let conn = open_db(&db);
    assert_eq!(query_i64(&conn, "SELECT count(*) FROM tracks"), 3);
    // Stored under their real paths.
    let real_inode = std::fs::metadata(album.join("0.wav")).unwrap().ino();
    assert!(real_inode > 0);
    assert_eq!(
        stored(&db, &std::fs::canonicalize(album.join("0.wav")).unwrap())["status"],
        "analyzed"
    );
}

#[test]
fn an_absurd_job_timeout_is_a_config_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let cfg = config(
        tmp.path(),
        "[workers]\njob_timeout = \"99999999999999999999s\"\n",
    );
    let db = format!("sqlite://{}", tmp.path().join("t.db").display());
    let run = |args: &[&str]| {
        Command::new(binary())
            .arg("scan")
            .arg(&lib)
            .args(["--db", &db])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("workers.job_timeout"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = run(&["--job-timeout", "99999999999999999999s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--job-timeout"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_lying_worker_costs_only_its_own_file_one_protocol_attempt_per_lie() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    wav(&lib.join("good-a.wav"), 330.0, 300);
    wav(&lib.join("good-b.wav"), 550.0, 300);
    let lies = [
        "empty-strings",
        "oversized",
        "huge-count",
        "wrong-job",
        "half-frame",
        "garbage",
    ];
    for lie in lies.iter().chain(&["largest-record"]) {
        std::fs::write(
            lib.join(format!("lie-{lie}.mp3")),
            format!("TRACKMILL-FAULT lie {lie}\n"),
        )
        .unwrap();
    }
    let cfg = config(
        tmp.path(),
        "[workers]\nmax_attempts = 2\nretry_backoff = \"10ms\"\n",
    );
    let db = tmp.path().join("t.db");
    let (out, s) = scan(
        &lib,
        &db,
        &["--workers", "2", "--config", cfg.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // Quarantined files make the run's exit code say so; the run itself completed.
    assert!(!err.contains("panicked"), "{err}");
    assert_accounted(&s);
    assert_eq!(n(&s, "files_seen"), 9, "{s:#}");
    assert_eq!(n(&s, "analyzed"), 3, "{s:#}\n{err}");
    assert_eq!(n(&s, "quarantined"), lies.len() as u64, "{s:#}\n{err}");
    assert_eq!(n(&s, "db_writer_restarts"), 0, "{s:#}\n{err}");
    let peak = n(&s, "supervisor_peak_rss_bytes");
    eprintln!("supervisor peak RSS: {:.1} MiB", peak as f64 / 1048576.0);
    assert!(peak > 0 && peak < 64 << 20, "supervisor peak RSS {peak}");
    for lie in lies {
        let f = stored(&db, &lib.join(format!("lie-{lie}.mp3")));
        assert_eq!(f["status"], "quarantined", "{lie}: {f:#}");
        let attempts = f["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{lie}: {f:#}");
        for a in attempts {
            assert_eq!(a["class"], "protocol", "{lie}: {f:#}");
        }
    }
    // A valid answer at every cap the reader allows is stored, cut to the database's limits.
    let largest = stored(&db, &lib.join("lie-largest-record.mp3"));
    assert_eq!(largest["status"], "analyzed", "{largest:#}");
    assert_eq!(largest["embeddings"].as_array().unwrap().len(), 32);
    for good in ["good-a.wav", "good-b.wav"] {
        let f = stored(&db, &lib.join(good));
        assert_eq!(f["status"], "analyzed", "{f:#}");
        assert_eq!(f["attempts"].as_array().unwrap().len(), 0, "{good}: {f:#}");
    }
    assert!(err.contains("frame stalled"), "{err}");
}
