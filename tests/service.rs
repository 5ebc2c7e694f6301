//! A running `trackmill serve` for the end-to-end tests: its configuration, its captured
//! stderr, its control-socket client, waits on its status and log, and a kill-and-reap guard.

use crate::{binary, signal};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(120);
/// Between two looks at an observable condition (not a wait for an outcome).
pub const POLL: Duration = Duration::from_millis(50);

/// A running `trackmill serve`; killed and reaped on drop, also when a test fails.
pub struct Service {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn config_text(dir: &Path, lib: &Path, workers: u32, extra: &str) -> String {
    format!(
        "[library]\nroots = [{lib:?}]\n\n[workers]\ncount = {workers}\nmax_attempts = 2\n\n\
         [database]\nurl = \"sqlite://{db}\"\n\n[service]\ncontrol_socket = {sock:?}\n\
         rescan_interval = \"1h\"\nwatch_debounce = \"300ms\"\n{extra}",
        db = dir.join("t.db").display(),
        sock = dir.join("run/control.sock"),
    )
}

impl Service {
    /// Writes the config (with `workers` workers and `extra` lines under `[service]`) and starts
    /// the service; returns once it answers `status`.
    pub fn start(dir: &Path, lib: &Path, workers: u32, extra: &str) -> Service {
        let config = dir.join("trackmill.toml");
        std::fs::write(&config, config_text(dir, lib, workers, extra)).unwrap();
        Self::start_with(dir, &config, &[])
    }

    pub fn start_with(dir: &Path, config: &Path, args: &[&str]) -> Service {
        let mut cmd = Command::new(binary());
        cmd.args(args).arg("serve").arg("--config").arg(config);
        Self::spawn(cmd, dir, config)
    }

    /// Starts `cmd` (which runs `serve` with `config`) with stderr captured.
    pub fn spawn(mut cmd: Command, dir: &Path, config: &Path) -> Service {
        let mut child = cmd
            .env("TRACKMILL_FAULT_INJECTION", "1")
            .env_remove("TRACKMILL_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start trackmill serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let svc = Service {
            child: Some(child),
            dir: dir.to_path_buf(),
            socket: dir.join("run/control.sock"),
            config: config.to_path_buf(),
            stderr,
        };
        svc.wait_status("the service answers", |_| true);
        svc
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    pub fn status(&self) -> Option<Value> {
        let out = self.ctl(&["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Polls `status --json` until `pred` holds; fails with the last reply and the log.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + DEADLINE;
        let mut last = Value::Null;
        while Instant::now() < until {
            if let Some(s) = self.status() {
                if pred(&s) {
                    return s;
                }
                last = s;
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "timed out waiting for {what}; last status {last:#}\nlog:\n{}",
            self.log()
        );
    }

    /// Waits until the first pass analysed its one file, committed it and went idle.
    pub fn wait_first_pass(&self) {
        self.wait_status("the first pass committed", |s| {
            s["state"] == "idle" && num(s, &["totals", "analyzed"]) == 1 && committed(s)
        });
    }

    pub fn wait_log(&self, needle: &str) {
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "timed out waiting for {needle:?} on stderr:\n{}",
            self.log()
        );
    }

    pub fn reload(&self, workers: u32, extra_workers_lines: &str) {
        let lib = self.dir.join("lib");
        let text = config_text(&self.dir, &lib, workers, "").replace(
            "max_attempts = 2\n",
            &format!("max_attempts = 2\n{extra_workers_lines}"),
        );
        std::fs::write(&self.config, text).unwrap();
        signal(self.pid(), Signal::SIGHUP);
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        signal(self.pid(), Signal::SIGTERM);
        let mut child = self.child.take().unwrap();
        let until = t + DEADLINE;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not exit after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn num(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64().unwrap_or(0)
}

/// Every result the service has so far is committed to the database.
pub fn committed(s: &Value) -> bool {
    num(s, &["db_writer", "unacked"]) == 0 && s["db_writer"]["ready"] == true
}
