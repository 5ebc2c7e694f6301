//! Support for the end-to-end tests: locating the built binary, generating real audio, running
//! scans (to completion, or as a child to signal) into SQLite or any database URL, finding
//! processes in /proc, and reading summaries and the database; `pgserver` handles the PostgreSQL
//! server, `records` makes realistic analysis records for the DB-writer tests and benchmark.

pub mod pgserver;
pub mod records;
pub mod service;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `trackmill` binary built in this workspace (`cargo xtask test` builds it first).
pub fn binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    let exe = target.join("debug/trackmill");
    assert!(
        exe.exists(),
        "{} is missing: run `cargo build -p trackmill` (cargo xtask test does)",
        exe.display()
    );
    exe
}

/// Runs `trackmill ARGS…` to completion, asserts it succeeded, and parses its standard output as
/// JSON.
pub fn trackmill_json<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run trackmill");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Generates `seconds` of a sine at `freq` Hz into `path` with ffmpeg (format from the extension).
pub fn tone(path: &Path, freq: u32, seconds: u32) {
    let st = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:duration={seconds}"))
        .arg(path)
        .status()
        .expect("ffmpeg is installed (cargo xtask setup)");
    assert!(st.success(), "ffmpeg failed for {}", path.display());
}

/// `ms` milliseconds of a sine at `freq` Hz as a 16-bit mono PCM WAV file at 22,050 Hz: tiny real
/// audio, quick to make by the thousand (also used by `cargo xtask bench pipeline`).
pub fn wav_bytes(freq: f32, ms: u32) -> Vec<u8> {
    const RATE: u32 = 22_050;
    let samples = RATE * ms / 1000;
    let data_len = samples * 2;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&RATE.to_le_bytes());
    b.extend_from_slice(&(RATE * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f32 / RATE as f32;
        let v = (t * freq * std::f32::consts::TAU).sin() * 0.5 * f32::from(i16::MAX);
        b.extend_from_slice(&(v as i16).to_le_bytes());
    }
    b
}

/// Writes [`wav_bytes`] to `path`.
pub fn wav(path: &Path, freq: f32, ms: u32) {
    std::fs::write(path, wav_bytes(freq, ms)).expect("write wav");
}

/// `n` tiny WAV files (0.2 s, each at its own pitch) named `0000.wav`… in `dir`.
pub fn tiny_library(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        wav(
            &dir.join(format!("{i:04}.wav")),
            110.0 + i as f32 * 0.75,
            200,
        );
    }
}

/// Copies `src` to `dst` (same format) with NUL, SOH and BEL bytes in its title and ESC in its
/// artist. The title `bad␁title␇` gets its `a` overwritten by NUL: in ID3v2.4 a NUL separates
/// values, in a FLAC/Vorbis comment it is part of the text.
pub fn hostile_tags(src: &Path, dst: &Path) {
    let st = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(src)
        .args([
            "-metadata",
            "title=bad\u{1}title\u{7}",
            "-metadata",
            "artist=x\u{1b}[31my",
            "-c",
            "copy",
        ])
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
    let mut bytes = std::fs::read(dst).unwrap();
    if let Some(pos) = bytes.windows(3).position(|w| w == b"bad") {
        bytes[pos + 1] = 0; // a NUL inside the title frame
    }
    std::fs::write(dst, bytes).unwrap();
}

/// `trackmill scan ROOTS… --db URL --summary SUMMARY EXTRA…` with the fault engine enabled.
pub fn scan_command_url(roots: &[&Path], url: &str, summary: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("scan")
        .args(roots)
        .arg("--db")
        .arg(url)
        .arg("--summary")
        .arg(summary)
        .args(extra)
        .env("TRACKMILL_FAULT_INJECTION", "1");
    cmd
}

/// `trackmill scan ROOTS… --db sqlite://DB --summary DB.summary.json EXTRA…`.
fn scan_command(roots: &[&Path], db: &Path, extra: &[&str]) -> Command {
    let url = format!("sqlite://{}", db.display());
    scan_command_url(roots, &url, &summary_path(db), extra)
}

fn summary_path(db: &Path) -> PathBuf {
    db.with_extension("summary.json")
}

fn read_summary(summary: &Path, stderr: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(summary)
        .unwrap_or_else(|_| panic!("no summary; stderr:\n{stderr}"));
    serde_json::from_str(&text).unwrap()
}

pub fn scan(lib: &Path, db: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let url = format!("sqlite://{}", db.display());
    scan_url(lib, &url, &summary_path(db), extra, &[])
}

/// Scans `lib` into the database at `url` with extra arguments and environment variables, writing
/// the summary to `summary`; waits for the end.
pub fn scan_url(
    lib: &Path,
    url: &str,
    summary: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, serde_json::Value) {
    let _ = std::fs::remove_file(summary);
    let out = scan_command_url(&[lib], url, summary, extra)
        .envs(env.iter().copied())
        .output()
        .expect("run trackmill");
    let v = read_summary(summary, &String::from_utf8_lossy(&out.stderr));
    (out, v)
}

/// A `trackmill scan` running as a child, to be signalled while it works. Its stderr is collected
/// by a thread (so the pipe never fills); dropping it kills and reaps the process.
pub struct ScanChild {
    child: Child,
    summary: PathBuf,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Starts `trackmill scan ROOTS…` (see [`scan`]) without waiting for it.
pub fn spawn_scan(roots: &[&Path], db: &Path, extra: &[&str]) -> ScanChild {
    spawn_with(scan_command(roots, db, extra), &summary_path(db))
}

/// Starts `trackmill scan ROOTS…` into the database at `url` (see [`scan_url`]).
pub fn spawn_scan_url(roots: &[&Path], url: &str, summary: &Path, extra: &[&str]) -> ScanChild {
    spawn_with(scan_command_url(roots, url, summary, extra), summary)
}

/// Starts a scan command (e.g. from [`scan_command_url`], with more environment) whose summary
/// goes to `summary`.
pub fn spawn_with(mut cmd: Command, summary: &Path) -> ScanChild {
    let _ = std::fs::remove_file(summary);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trackmill");
    let mut pipe = child.stderr.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    ScanChild {
        child,
        summary: summary.to_path_buf(),
        stderr,
        reader: Some(reader),
    }
}

impl ScanChild {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.pid(), sig);
    }

    /// Everything the scan wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `limit` for the scan to exit; None if it is still running then.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait for trackmill") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the scan to exit (panicking with its stderr after `limit`) and asserts success.
    pub fn finish(&mut self, limit: Duration) -> serde_json::Value {
        let st = self
            .wait_timeout(limit)
            .unwrap_or_else(|| panic!("scan still running after {limit:?}:\n{}", self.stderr()));
        assert!(st.success(), "scan failed ({st}):\n{}", self.stderr());
        self.summary()
    }

    pub fn summary(&self) -> serde_json::Value {
        read_summary(&self.summary, &self.stderr())
    }
}

impl Drop for ScanChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Sends `sig` to one process (not its group); a process already gone is not an error.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Polls `probe` until it yields a value, panicking with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a worker that the fault engine's `block-while MARKER` holds (found by the blocking
/// file among its open descriptors: a sandboxed worker can write nothing to say so) and returns
/// its pid. Each worker is returned once per marker, so a retry can be told from this attempt.
pub fn take_blocked_pid(marker: &Path, limit: Duration) -> u32 {
    static TAKEN: Mutex<Vec<(PathBuf, u32)>> = Mutex::new(Vec::new());
    let want = format!("TRACKMILL-FAULT block-while {}\n", marker.display());
    let pid = wait_for(
        &format!("a worker blocked on {}", marker.display()),
        limit,
        || {
            let taken = TAKEN.lock().unwrap();
            std::fs::read_dir("/proc")
                .ok()?
                .flatten()
                .find_map(|entry| {
                    let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                    if taken.iter().any(|(m, p)| *p == pid && m == marker) {
                        return None;
                    }
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                    if !cmd.split(|&b| b == 0).any(|a| a == b"worker") {
                        return None;
                    }
                    let holds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                        .ok()?
                        .flatten()
                        .any(|fd| {
                            // Only regular files: opening a pipe's descriptor would read the worker's stderr.
                            if !std::fs::metadata(fd.path()).is_ok_and(|m| m.is_file()) {
                                return false;
                            }
                            let mut head = vec![0u8; want.len()];
                            std::fs::File::open(fd.path())
                                .and_then(|mut f| f.read_exact(&mut head))
                                .is_ok_and(|()| head == want.as_bytes())
                        });
                    holds.then_some(pid)
                })
        },
    );
    TAKEN.lock().unwrap().push((marker.to_path_buf(), pid));
    pid
}

/// `/proc/PID/stat`: the state letter and the parent pid, if the process exists.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The living children of `ppid` with their command lines (arguments joined by spaces).
pub fn children(ppid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if proc_stat(pid).is_some_and(|(state, parent)| parent == ppid && state != 'Z') {
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// The DB writer among the children of the supervisor `ppid`.
pub fn db_writer_of(ppid: u32) -> Option<u32> {
    children(ppid)
        .into_iter()
        .find(|(_, cmd)| cmd.contains("db-writer"))
        .map(|(pid, _)| pid)
}

/// True once `pid` has exited: no /proc entry, or a zombie waiting for a parent to reap it.
pub fn is_dead(pid: u32) -> bool {
    proc_stat(pid).is_none_or(|(state, _)| state == 'Z' || state == 'X')
}

/// Opens the scan's SQLite database read-only.
pub fn open_db(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// One integer from a query (e.g. a COUNT).
pub fn query_i64(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A library of `n` copies of one real 1-second FLAC tone, named `{prefix}{i:03}.flac`.
pub fn healthy_files(dir: &Path, prefix: &str, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let first = dir.join(format!("{prefix}000.flac"));
    tone(&first, 440, 1);
    let mut out = vec![first.clone()];
    for i in 1..n {
        let p = dir.join(format!("{prefix}{i:03}.flac"));
        std::fs::copy(&first, &p).unwrap();
        out.push(p);
    }
    out
}

/// A file that makes the fault engine block its worker while `marker` exists (the marker is
/// created here). The file is not audio: once unblocked it fails as corrupt.
pub fn blocking_file(path: &Path, marker: &Path) {
    std::fs::write(marker, b"").unwrap();
    std::fs::write(
        path,
        format!("TRACKMILL-FAULT block-while {}\n", marker.display()),
    )
    .unwrap();
}

pub fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

pub fn failed_total(v: &serde_json::Value) -> u64 {
    v["failed"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum()
}

/// The accounting invariant: every file seen ends in exactly one state.
pub fn assert_accounted(v: &serde_json::Value) {
    assert_eq!(
        n(v, "files_seen"),
        n(v, "analyzed") + failed_total(v) + n(v, "quarantined") + n(v, "skipped_unchanged"),
        "accounting broken: {v:#}"
    );
}

pub fn stored(db: &Path, file: &Path) -> serde_json::Value {
    stored_url(&format!("sqlite://{}", db.display()), file)
}

/// What the database at `url` holds for `file` (`Null` when nothing).
pub fn stored_url(url: &str, file: &Path) -> serde_json::Value {
    let url = trackmill_dbwriter::DbUrl::parse(url).unwrap();
    use std::os::unix::ffi::OsStrExt;
    trackmill_dbwriter::show(&url, file.as_os_str().as_bytes())
        .unwrap()
        .unwrap_or(serde_json::Value::Null)
}

/// The kernel's Landlock ABI, `None` when it has no Landlock.
pub fn landlock_abi() -> Option<i64> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute only returns the version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    (v > 0).then_some(v)
}
