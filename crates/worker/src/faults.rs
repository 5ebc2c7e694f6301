//! Fault injection for the end-to-end tests, active only when `TRACKMILL_FAULT_INJECTION=1` is in
//! the worker's environment. A file whose content starts with `TRACKMILL-FAULT <kind> [arg]`
//! makes the worker misbehave for real, so the supervisor's handling of each failure class is
//! exercised against real processes, signals and kernel limits:
//!
//! - `alloc`: allocate and touch memory until the RLIMIT_AS cap makes an allocation fail (abort);
//! - `hang`: never answer (sleeps forever; SIGTERM ends it);
//! - `hang-ignore-term`: never answer and ignore SIGTERM (only SIGKILL ends it);
//! - `segv`: raise SIGSEGV;
//! - `abort`: abort();
//! - `block-while PATH`: wait while `PATH` exists, holding the file open (a test finds the
//!   worker by the file among its open descriptors: the sandbox lets a worker write nothing),
//!   then carry on (the file itself is not audio, so it ends as a corrupt failure);
//! - `escape DB SOCKET PORT`: try to leave the sandbox: create a file in the working directory,
//!   read the database file `DB`, connect to the Unix socket `SOCKET` and to TCP port `PORT` on
//!   127.0.0.1; each attempt is logged as `fault escape WHAT: refused (ERROR)` or
//!   `fault escape WHAT: ALLOWED`, then the file is analysed as usual (it is not audio, so it
//!   ends as a corrupt failure).
//! - `model-fail`: answer as if a model had failed on the file (a `crash` of stage `model`), and
//!   end the worker after the reply as a real model failure does.
//!
//! Any other file is analysed normally. And with `TRACKMILL_FAULT_HELLO_WHILE=PATH` in its
//! environment, a worker started while `PATH` exists never says hello (as one whose models sit on
//! a hung filesystem).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;
use trackmill_types::{Failure, FailureClass, Stage};

const MAGIC: &[u8] = b"TRACKMILL-FAULT ";
/// A worker started while the file this names exists never says hello.
pub const HELLO_ENV: &str = "TRACKMILL_FAULT_HELLO_WHILE";

/// Before the hello: hangs forever if [`HELLO_ENV`] names a file that exists.
pub fn before_hello() {
    if std::env::var_os(HELLO_ENV).is_some_and(|p| Path::new(&p).exists()) {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Looks at the start of the job's file (read at offset 0, so the analysis still reads it from
/// its start) and misbehaves as it says; returns the failure to answer with instead of
/// analysing it, for faults that stand for a failed stage rather than a dying process.
pub fn maybe_inject(file: &File) -> Option<Failure> {
    let mut head = [0u8; 512];
    let n = file.read_at(&mut head, 0).ok()?;
    let rest = head[..n].strip_prefix(MAGIC)?;
    let line = String::from_utf8_lossy(rest);
    let line = line.lines().next().unwrap_or("").trim().to_string();
    let (kind, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    match kind {
        "alloc" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 16 << 20]);
            }
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "hang-ignore-term" => {
            // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "segv" => {
            // SAFETY: restoring the default action (the Rust runtime installs its own handler for
            // stack overflows) and raising the signal in this process, which ends it.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }
        "abort" => std::process::abort(),
        "block-while" => {
            let marker = Path::new(arg);
            while marker.exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "model-fail" => {
            return Some(Failure::new(
                FailureClass::Crash,
                Stage::Model,
                "injected model failure",
            ))
        }
        "escape" => escape(arg),
        _ => {}
    }
    None
}

fn escape(arg: &str) {
    let mut args = arg.split_whitespace();
    let (db, socket, port) = (
        args.next().unwrap_or(""),
        args.next().unwrap_or(""),
        args.next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(9),
    );
    let written = std::env::current_dir()
        .and_then(|d| std::fs::write(d.join(format!("escaped-{}", std::process::id())), b"x"));
    report("write-cwd", written);
    report("read-db", std::fs::read(db).map(drop));
    report(
        "connect-control",
        std::os::unix::net::UnixStream::connect(socket).map(drop),
    );
    report(
        "connect-tcp",
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop),
    );
}

fn report(what: &str, result: std::io::Result<()>) {
    match result {
        Ok(()) => tracing::warn!("fault escape {what}: ALLOWED"),
        Err(e) => tracing::warn!("fault escape {what}: refused ({e})"),
    }
}
