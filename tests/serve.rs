//! End-to-end tests of `trackmill serve` and its clients: scaling through the config file and
//! SIGHUP, operator and external kills, the control socket's uid check, SIGTERM and resume, new
//! files found through file-system notifications, drain and resume, failures and retry. Every
//! wait is on a `trackmill status --json` reply, a file the fault engine writes, or a line on
//! the service's stderr.

use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use trackmill_e2e::service::*;
use trackmill_e2e::*;

fn alive(s: &Value) -> u64 {
    num(s, &["alive_workers"])
}

fn busy(s: &Value) -> usize {
    s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "busy")
        .count()
}

/// A tone written next to the library and moved in, so the service never sees half a file.
fn add_tone(dir: &Path, dest: &Path, freq: u32) {
    let tmp = dir.join(format!("incoming-{freq}.flac"));
    tone(&tmp, freq, 1);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    (tmp, lib)
}

/// A library of one tone, `a.flac`.
fn setup_one_tone() -> (tempfile::TempDir, PathBuf) {
    let (tmp, lib) = setup();
    tone(&lib.join("a.flac"), 440, 1);
    (tmp, lib)
}

#[test]
fn pool_follows_the_config_file_on_sighup_without_losing_a_file() {
    let (tmp, lib) = setup();
    let d = tmp.path();
    for i in 0..4 {
        tone(&lib.join(format!("t{i}.flac")), 300 + 40 * i, 1);
    }
    let markers: Vec<PathBuf> = (0..4).map(|i| d.join(format!("m{i}"))).collect();
    for (i, m) in markers.iter().enumerate() {
        blocking_file(&lib.join(format!("b{i}.mp3")), m);
    }
    let svc = Service::start(d, &lib, 2, "");
    svc.wait_status("2 workers", |s| {
        alive(s) == 2 && num(s, &["target_workers"]) == 2
    });

    // 2 → 4: four workers, each busy on a blocker at the same time.
    svc.reload(4, "");
    svc.wait_status("4 workers, 4 busy", |s| {
        num(s, &["target_workers"]) == 4 && alive(s) == 4 && busy(s) == 4
    });
    for m in &markers {
        take_blocked_pid(m, DEADLINE);
    }

    // An invalid file is refused and the pool stays.
    std::fs::write(&svc.config, "[workers]\ncount = \"many\"\n").unwrap();
    signal(svc.pid(), Signal::SIGHUP);
    svc.wait_log("reload refused");
    let s = svc.status().unwrap();
    assert_eq!(num(&s, &["target_workers"]), 4, "{s:#}");
    // So is a value out of range, named by its key; the service keeps serving.
    svc.reload(4, "job_timeout = \"99999999999999999999s\"\n");
    svc.wait_log("workers.job_timeout");
    let s = svc.status().unwrap();
    assert_eq!(num(&s, &["target_workers"]), 4, "{s:#}");

    // 4 → 1: no in-flight file is dropped; busy workers stop only after their file.
    svc.reload(1, "");
    let s = svc.wait_status("target 1", |s| num(s, &["target_workers"]) == 1);
    assert_eq!(busy(&s), 4, "busy workers must finish their files: {s:#}");
    for (k, m) in markers.iter().enumerate() {
        std::fs::remove_file(m).unwrap();
        let left = (3 - k as u64).max(1);
        svc.wait_status("a blocker settled and its worker stopped", |s| {
            num(s, &["totals", "failed", "corrupt"]) == k as u64 + 1 && alive(s) == left
        });
    }
    // Files keep completing on the shrunk pool: new ones are analysed by the one worker.
    for i in 0..3 {
        add_tone(d, &lib.join(format!("new{i}.flac")), 700 + 30 * i);
    }
    let s = svc.wait_status("new files analysed", |s| {
        num(s, &["totals", "analyzed"]) == 7
            && s["state"] == "idle"
            && !s["pass_pending"].as_bool().unwrap()
            && committed(s)
    });
    assert_eq!(alive(&s), 1, "{s:#}");
    // Stopped slots leave no row behind: the table lists the live workers only.
    assert_eq!(s["workers"].as_array().unwrap().len(), 1, "{s:#}");
    assert_eq!(num(&s, &["target_workers"]), 1, "{s:#}");
    assert_eq!(num(&s, &["totals", "files_seen"]), 11, "{s:#}");
    assert_eq!(num(&s, &["totals", "quarantined"]), 0, "{s:#}");
    assert_eq!(num(&s, &["totals", "worker_exits", "killed"]), 0, "{s:#}");
    assert_eq!(num(&s, &["totals", "worker_exits", "stopped"]), 3, "{s:#}");
    let counts = trackmill_dbwriter::counts(
        &trackmill_dbwriter::DbUrl::parse(&format!("sqlite://{}", d.join("t.db").display()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(counts["total"], 11, "{counts}");
}

#[test]
fn killed_workers_are_replaced_and_their_file_requeued() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    tone(&lib.join("b.flac"), 550, 1);
    let marker = d.join("m");
    blocking_file(&lib.join("block.mp3"), &marker);
    let svc = Service::start(d, &lib, 2, "");
    let first = take_blocked_pid(&marker, DEADLINE);
    let s = svc.wait_status("the blocker is in flight", |s| busy(s) == 1);
    let w = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"] == first)
        .unwrap_or_else(|| panic!("no worker {first}: {s:#}"));
    let id = w["id"].as_u64().unwrap().to_string();

    // An operator's kill.
    let out = svc.ctl(&["kill", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = take_blocked_pid(&marker, DEADLINE);
    assert_ne!(second, first);
    let s = svc.wait_status("a replacement in the killed slot", |s| {
        let w = &s["workers"][id.parse::<usize>().unwrap()];
        num(s, &["totals", "worker_exits", "killed"]) == 1
            && w["last_exit"] == "killed"
            && num(w, &["restarts"]) >= 1
            && num(w, &["pid"]) != 0
    });
    assert_eq!(alive(&s), 2, "{s:#}");

    // An external SIGKILL.
    signal(second, Signal::SIGKILL);
    let third = take_blocked_pid(&marker, DEADLINE);
    assert_ne!(third, second);
    svc.wait_status("the second kill counted", |s| {
        num(s, &["totals", "worker_exits", "killed"]) == 2 && alive(s) == 2
    });

    // Kills are not held against the file (max_attempts = 2): it ends as what it is.
    std::fs::remove_file(&marker).unwrap();
    let s = svc.wait_status("every file settled", |s| {
        num(s, &["totals", "analyzed"]) == 2
            && num(s, &["totals", "failed", "corrupt"]) == 1
            && committed(s)
    });
    assert_eq!(num(&s, &["totals", "quarantined"]), 0, "{s:#}");

    // `failures` shows every attempt's cause.
    let db_url = format!("sqlite://{}", d.join("t.db").display());
    let rows = trackmill_json(["failures", "--json", "--db", &db_url]);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["display_path"].as_str().unwrap().ends_with("block.mp3"))
        .unwrap_or_else(|| panic!("{rows:#}"));
    assert_eq!(row["status"], "failed", "{row:#}");
    let killed = row["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["class"] == "killed")
        .count();
    assert_eq!(killed, 2, "{row:#}");

    // `retry PATH` analyses the failed file again; a path outside the library is refused.
    let out = svc.ctl(&["retry", lib.join("block.mp3").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    svc.wait_status("the retried file settled again", |s| {
        num(s, &["totals", "failed", "corrupt"]) == 2 && s["state"] == "idle"
    });
    let out = svc.ctl(&["retry", "--all-failed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = svc.wait_status("every failed file settled again", |s| {
        num(s, &["totals", "failed", "corrupt"]) == 3 && s["state"] == "idle"
    });
    assert_eq!(
        num(&s, &["totals", "analyzed"]),
        2,
        "analysed files are not redone: {s:#}"
    );
    let out = svc.ctl(&["retry", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(8));
    let out = svc.ctl(&["kill", "99"]);
    assert_eq!(out.status.code(), Some(8));
}

#[test]
fn another_uid_cannot_use_the_control_socket() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    let svc = Service::start(d, &lib, 1, "");
    let run_dir = d.join("run");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run_dir), 0o700);
    assert_eq!(mode(&svc.socket), 0o600);
    let as_nobody = || {
        let mut c = Command::new(binary());
        c.arg("status").arg("--socket").arg(&svc.socket);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))?;
                Ok(())
            });
        }
        c.output().unwrap()
    };
    // The private directory keeps it out.
    let out = as_nobody();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Even with the file modes opened, the peer's uid is checked.
    for p in [d, run_dir.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&svc.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(err.contains("uid 65534"), "{err}");
    svc.wait_log("refused a client with uid 65534");
    assert!(svc.status().is_some());
}

#[test]
fn sigterm_during_a_scan_exits_cleanly_and_the_next_start_resumes() {
    let (tmp, lib) = setup();
    let d = tmp.path();
    for i in 0..4 {
        tone(&lib.join(format!("t{i}.flac")), 300 + 50 * i, 1);
    }
    let marker = d.join("m");
    blocking_file(&lib.join("block.mp3"), &marker);
    let mut svc = Service::start(d, &lib, 2, "shutdown_grace = \"2s\"\n");
    take_blocked_pid(&marker, DEADLINE);
    let s = svc.status().unwrap();
    assert_eq!(s["state"], "scanning", "{s:#}");
    let (st, took) = svc.terminate();
    eprintln!("SIGTERM to exit with a busy worker and a 2s grace: {took:?}");
    assert_eq!(st.code(), Some(0), "{}", svc.log());
    // 2 s of grace, then the worker is stopped (at worst after workers.kill_grace, 5 s) and the
    // DB writer flushes.
    assert!(
        took < Duration::from_secs(7),
        "took {took:?}:\n{}",
        svc.log()
    );
    assert!(svc.log().contains("SIGTERM: stopping"), "{}", svc.log());
    assert!(!svc.socket.exists(), "the socket is removed at exit");
    let conn = open_db(&d.join("t.db"));
    assert_eq!(
        query_i64(
            &conn,
            "SELECT COUNT(*) FROM runs WHERE status = 'interrupted'"
        ),
        1,
        "a stop in the middle of a pass leaves work undone"
    );
    drop(conn);

    std::fs::remove_file(&marker).unwrap();
    let mut svc = Service::start_with(d, &d.join("trackmill.toml"), &[]);
    let s = svc.wait_status("the resumed pass settled", |s| {
        s["state"] == "idle" && committed(s)
    });
    let t = &s["totals"];
    assert_eq!(num(t, &["failed", "corrupt"]), 1, "{s:#}");
    assert_eq!(
        num(t, &["analyzed"]) + num(t, &["skipped_unchanged"]),
        4,
        "{s:#}"
    );
    let url = trackmill_dbwriter::DbUrl::parse(&format!("sqlite://{}", d.join("t.db").display()))
        .unwrap();
    let counts = trackmill_dbwriter::counts(&url).unwrap();
    assert_eq!(counts["analyzed"], 4, "{counts}");
    assert_eq!(counts["failed"], 1, "{counts}");
    let (st, _) = svc.terminate();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn files_added_while_serving_are_analyzed_without_a_restart() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    let svc = Service::start(d, &lib, 1, "");
    svc.wait_first_pass();
    add_tone(d, &lib.join("b.flac"), 500);
    add_tone(d, &lib.join("album/c.flac"), 600);
    let s = svc.wait_status("new files analysed", |s| {
        num(s, &["totals", "analyzed"]) == 3 && committed(s)
    });
    // The rescan timer is an hour away: only the file-system watch found them.
    assert!(num(&s, &["passes"]) >= 2, "{s:#}");
    assert!(svc.log().contains("changed paths"), "{}", svc.log());
    let c = stored(&d.join("t.db"), &lib.join("album/c.flac"));
    assert_eq!(c["status"], "analyzed", "{c:#}");
}

#[test]
fn drain_holds_new_work_until_resume() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    let svc = Service::start(d, &lib, 1, "");
    svc.wait_first_pass();
    let out = svc.ctl(&["drain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    add_tone(d, &lib.join("b.flac"), 500);
    // The change is seen and its pass is due, but nothing starts while drained.
    let s = svc.wait_status("a pass pending while drained", |s| {
        s["state"] == "drained" && s["pass_pending"] == true
    });
    assert_eq!(num(&s, &["totals", "analyzed"]), 1, "{s:#}");
    let out = svc.ctl(&["resume"]);
    assert!(out.status.success());
    svc.wait_status("the new file analysed", |s| {
        num(s, &["totals", "analyzed"]) == 2
    });
    // `trackmill workers N` resizes the pool until the next reload.
    let out = svc.ctl(&["workers", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    svc.wait_status("3 workers", |s| {
        num(s, &["target_workers"]) == 3 && alive(s) == 3
    });
    let out = svc.ctl(&["workers", "5000"]);
    assert_eq!(out.status.code(), Some(8));
}

#[test]
fn metrics_endpoint_serves_prometheus_text_on_loopback() {
    use std::io::{Read, Write};
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    std::fs::write(lib.join("bad.mp3"), b"not audio at all").unwrap();
    let svc = Service::start(d, &lib, 1, "metrics_addr = \"127.0.0.1:0\"\n");
    svc.wait_first_pass();
    svc.wait_log("metrics on http://");
    let log = svc.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .unwrap()
        .to_string();
    let get = |path: &str| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text
    };
    let text = get("/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        "trackmill_files_total{outcome=\"analyzed\"} 1\n",
        "trackmill_files_failed_total{class=\"corrupt\"} 1\n",
        "trackmill_worker_exits_total{cause=\"killed\"} 0\n",
        "trackmill_queue_depth 0\n",
        "trackmill_analysis_seconds_count 2\n",
        "trackmill_analysis_seconds_bucket{le=\"+Inf\"} 2\n",
        "trackmill_worker_rss_bytes{worker=\"0\"",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(get("/other").starts_with("HTTP/1.1 404"));

    // Off the loopback it is refused as a config error.
    let cfg = d.join("bad.toml");
    std::fs::write(
        &cfg,
        config_text(d, &lib, 1, "metrics_addr = \"0.0.0.0:9187\"\n")
            .replace("run/control.sock", "run2/control.sock"),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn a_stale_socket_is_reclaimed_and_a_live_one_is_never_taken() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    let mut svc = Service::start(d, &lib, 1, "");
    svc.wait_first_pass();
    // A second service on the same socket is refused while the first answers.
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&svc.config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another trackmill service")
            && err.contains(&format!("(pid {})", svc.pid()))
            && err.contains("control.sock.lock"),
        "the refusal names the lock and its holder: {err}"
    );
    assert!(
        svc.status().is_some(),
        "the running service keeps its socket"
    );

    // A crash leaves the socket file behind; the next start reclaims it.
    let mut child = svc.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(svc.socket.exists());
    let svc = Service::start_with(d, &svc.config, &["--log-format", "json"]);
    svc.wait_log("removing the stale control socket");
    let s = svc.wait_status("the restarted pass", |s| s["state"] == "idle");
    assert_eq!(num(&s, &["totals", "skipped_unchanged"]), 1, "{s:#}");
    // --log-format json: every line of the service's own log is one JSON object.
    let log = svc.log();
    let line = log
        .lines()
        .find(|l| l.contains("removing the stale control socket"))
        .unwrap();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{v}");
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    let notify = d.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let config = d.join("trackmill.toml");
    std::fs::write(&config, config_text(d, &lib, 1, "")).unwrap();
    // systemd names the main pid in WATCHDOG_PID: the shell's pid, which exec keeps.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" serve --config \"$1\"")
        .arg(binary())
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "200000");
    let mut svc = Service::spawn(cmd, d, &config);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut wait_for = |what: &str, seen: &mut String| {
        while !seen.contains(what) {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {what} from the service ({e}); got {seen}"));
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    };
    wait_for("READY=1", &mut seen);
    wait_for("WATCHDOG=1", &mut seen);
    wait_for("STATUS=", &mut seen);
    let (st, _) = svc.terminate();
    assert_eq!(st.code(), Some(0));
    wait_for("STOPPING=1", &mut seen);
}

#[test]
fn sigterm_while_idle_records_a_completed_run() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    let mut svc = Service::start(d, &lib, 1, "");
    svc.wait_first_pass();
    let (st, _) = svc.terminate();
    assert_eq!(st.code(), Some(0), "{}", svc.log());
    assert!(svc.log().contains("stopped: completed"), "{}", svc.log());
    let conn = open_db(&d.join("t.db"));
    assert_eq!(
        query_i64(
            &conn,
            "SELECT COUNT(*) FROM runs WHERE status = 'completed' AND analyzed = 1 AND ended_at IS NOT NULL"
        ),
        1,
        "an idle service had nothing left to do"
    );
    assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM runs"), 1);
}

/// A `serve` started without waiting for it; killed and reaped on drop.
struct Raw(Child);

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_services_started_at_once_share_no_socket() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    let config = d.join("trackmill.toml");
    std::fs::write(&config, config_text(d, &lib, 1, "")).unwrap();
    // A socket left by a crash: both services would find it stale.
    let run = d.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(run.join("control.sock")).unwrap());
    let start = || {
        Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("TRACKMILL_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map(Raw)
            .unwrap()
    };
    let mut both = [start(), start()];
    // Exactly one gives up with the control-socket exit code; the other keeps serving.
    let (loser, code) = wait_for("one service to give up", DEADLINE, || {
        both.iter_mut()
            .enumerate()
            .find_map(|(i, c)| c.0.try_wait().unwrap().map(|st| (i, st.code())))
    });
    let mut err = String::new();
    std::io::Read::read_to_string(both[loser].0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(6), "{err}");
    let winner = &mut both[1 - loser];
    // The holder's pid is named once it has written it (a moment after taking the lock).
    assert!(err.contains("holds the lock"), "{err}");
    let client = Service {
        child: None,
        dir: d.to_path_buf(),
        socket: run.join("control.sock"),
        config: config.clone(),
        stderr: Arc::default(),
    };
    let s = client.wait_status("the remaining service settled", |s| {
        s["state"] == "idle" && num(s, &["totals", "analyzed"]) == 1 && committed(s)
    });
    assert_eq!(
        s["pid"].as_u64().map(|p| p as u32),
        Some(winner.0.id()),
        "{s:#}"
    );
    assert!(
        winner.0.try_wait().unwrap().is_none(),
        "the winner still runs"
    );
}

#[test]
fn a_burst_of_changes_collapses_to_one_walk_of_the_library() {
    let (tmp, lib) = setup_one_tone();
    let d = tmp.path();
    // The burst lands in a directory watched from the start: inside a directory created during
    // the burst, what is made before the watcher has added its watch sends no event at all (a
    // loaded machine showed that: one changed path, the new directory, whose walk then found
    // everything).
    let burst = lib.join("burst");
    std::fs::create_dir(&burst).unwrap();
    // A debounce long enough that a loaded machine creating the burst never pauses that long
    // (a pass then starts at most 10 debounces after the first change).
    let config = d.join("trackmill.toml");
    let text = config_text(d, &lib, 1, "").replace("\"300ms\"", "\"2s\"");
    std::fs::write(&config, text).unwrap();
    let svc = Service::start_with(d, &config, &[]);
    svc.wait_first_pass();
    // More new directories than the watcher keeps paths for (10,000) arrive at once.
    for i in 0..10_050 {
        std::fs::create_dir(burst.join(i.to_string())).unwrap();
    }
    tone(&burst.join("late.flac"), 500, 1);
    let s = svc.wait_status("the file in the burst analysed", |s| {
        s["state"] == "idle" && num(s, &["totals", "analyzed"]) == 2 && committed(s)
    });
    let log = svc.log();
    let passes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(": pass ") && !l.contains("pass finished"))
        .collect();
    assert!(
        passes.iter().skip(1).all(|l| l.contains(": library ")),
        "after the burst only whole-library walks: {passes:#?}"
    );
    assert!(passes.len() >= 2, "{s:#}\n{log}");
    eprintln!(
        "burst: kernel queue overflowed: {}",
        log.contains("events were lost")
    );
}
