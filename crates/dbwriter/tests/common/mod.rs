//! Test harness: runs the real writer in a thread over a socketpair, speaks real frames, and
//! gives each test its own SQLite file or PostgreSQL schema (dropped afterwards).
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use trackmill_dbwriter::{DbError, DbUrl, WriterOptions};
use trackmill_types::frame::{read_frame, write_frame, MAX_FRAME};
use trackmill_types::*;

pub use trackmill_e2e::pgserver::PG_BASE;

pub enum Backend {
    Sqlite(tempfile::TempDir),
    Pg { schema: String },
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Backend {
    pub fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    pub fn pg() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let schema = format!("t_dbw_{}_{}_{}", std::process::id(), n, nanos());
        Backend::Pg { schema }
    }

    pub fn url_string(&self) -> String {
        match self {
            Backend::Sqlite(d) => d.path().join("sub/trackmill.db").display().to_string(),
            Backend::Pg { schema } => format!(
                "{PG_BASE}?sslmode=disable&schema={schema}&application_name=trackmill-dbwriter-{schema}"
            ),
        }
    }

    pub fn url(&self) -> DbUrl {
        DbUrl::parse(&self.url_string()).expect("url")
    }

    pub fn app_name(&self) -> Option<String> {
        match self {
            Backend::Pg { schema } => Some(format!("trackmill-dbwriter-{schema}")),
            Backend::Sqlite(_) => None,
        }
    }

    /// One integer from a query run on a separate connection.
    pub fn scalar(&self, sql: &str) -> i64 {
        match self {
            Backend::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join("sub/trackmill.db")).unwrap();
                c.query_row(sql, [], |r| r.get(0)).unwrap()
            }
            Backend::Pg { schema } => {
                let sql = format!("SET search_path TO {schema}; {sql}");
                pg_rows(&sql)
                    .last()
                    .and_then(|r| r.first().cloned())
                    .flatten()
                    .expect("a value")
                    .parse()
                    .expect("an integer")
            }
        }
    }

    /// A literal for `bytes` in this dialect's SQL.
    pub fn bytes_lit(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|x| format!("{x:02x}")).collect();
        match self {
            Backend::Sqlite(_) => format!("X'{hex}'"),
            Backend::Pg { .. } => format!("'\\x{hex}'::bytea"),
        }
    }

    pub fn exec(&self, sql: &str) {
        match self {
            Backend::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join("sub/trackmill.db")).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Backend::Pg { schema } => {
                pg_rows(&format!("SET search_path TO {schema}; {sql}"));
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Pg { schema } = self {
            pg_rows(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

/// Runs `sql` (simple protocol) on a fresh connection; returns every row's text values.
pub fn pg_rows(sql: &str) -> Vec<Vec<Option<String>>> {
    trackmill_e2e::pgserver::pg_rows(sql).expect("sql on postgres at 127.0.0.1:5432")
}

/// The supervisor's end of one writer.
pub struct Client {
    pub chan: UnixStream,
    pub thread: Option<JoinHandle<Result<(), DbError>>>,
}

impl Client {
    pub fn start(b: &Backend, opts: WriterOptions) -> Client {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let url = b.url();
        let thread = std::thread::spawn(move || trackmill_dbwriter::run(&url, theirs, opts));
        ours.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut c = Client {
            chan: ours,
            thread: Some(thread),
        };
        match c.recv() {
            FromDb::Hello(h) => {
                assert_eq!(h.role, Role::DbWriter);
                assert_eq!(h.protocol, PROTOCOL_VERSION);
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        c
    }

    pub fn send(&mut self, m: &ToDb) {
        write_frame(&mut self.chan, m).unwrap();
    }

    pub fn recv(&mut self) -> FromDb {
        read_frame(&mut self.chan, MAX_FRAME).expect("a frame from the writer")
    }

    /// Next message that is not an `Error{retrying: true}`; those are collected in `errors`.
    pub fn recv_skip_errors(&mut self, errors: &mut Vec<String>) -> FromDb {
        loop {
            match self.recv() {
                FromDb::Error {
                    message,
                    retrying: true,
                } => errors.push(message.into_string()),
                other => return other,
            }
        }
    }

    pub fn start_run(&mut self) -> i64 {
        self.start_run_in(&["/music"])
    }

    /// Opens a run over these library roots.
    pub fn start_run_in(&mut self, roots: &[&str]) -> i64 {
        self.send(&ToDb::StartRun {
            host: CleanText::new("testhost"),
            pid: std::process::id(),
            roots: roots.iter().map(|r| CleanText::new(r)).collect(),
        });
        // A writer that finds the database busy while it connects (another writer migrating the
        // same new file) reports it as retrying and tries again; that is not this call's answer.
        let mut retried = Vec::new();
        match self.recv_skip_errors(&mut retried) {
            FromDb::RunStarted { run_id } => run_id,
            other => panic!("expected RunStarted, got {other:?} (after {retried:?})"),
        }
    }

    /// `Check` that leases the `Todo` files.
    pub fn check(&mut self, query: u64, policy: CheckPolicy, files: Vec<FileKey>) -> Vec<Verdict> {
        self.check_with(query, policy, files, true)
    }

    /// `Check` that leases nothing.
    pub fn peek(&mut self, query: u64, policy: CheckPolicy, files: Vec<FileKey>) -> Vec<Verdict> {
        self.check_with(query, policy, files, false)
    }

    fn check_with(
        &mut self,
        query: u64,
        policy: CheckPolicy,
        files: Vec<FileKey>,
        lease: bool,
    ) -> Vec<Verdict> {
        let n = files.len();
        self.send(&ToDb::Check {
            query,
            policy,
            files,
            lease,
        });
        match self.recv() {
            FromDb::CheckResult { query: q, verdicts } => {
                assert_eq!(q, query);
                assert_eq!(verdicts.len(), n);
                verdicts
            }
            other => panic!("expected CheckResult, got {other:?}"),
        }
    }

    /// `Lease`, answered by `Leased`.
    pub fn lease(&mut self, query: u64, policy: CheckPolicy, files: Vec<FileKey>) -> Vec<Verdict> {
        let n = files.len();
        self.send(&ToDb::Lease {
            query,
            policy,
            files,
        });
        match self.recv() {
            FromDb::Leased { query: q, verdicts } => {
                assert_eq!(q, query);
                assert_eq!(verdicts.len(), n);
                verdicts
            }
            other => panic!("expected Leased, got {other:?}"),
        }
    }

    /// Sends Flush and collects acks until Flushed.
    pub fn flush(&mut self, token: u64) -> Vec<u64> {
        let (acked, refused) = self.flush_refused(token);
        assert!(refused.is_empty(), "records refused: {refused:?}");
        acked
    }

    /// Sends Flush; the acks and the `StoreFailed` (seq, message) pairs until Flushed. Each
    /// refused seq must come before the ack that carries it.
    pub fn flush_refused(&mut self, token: u64) -> (Vec<u64>, Vec<(u64, String)>) {
        self.send(&ToDb::Flush { token });
        let mut acked = Vec::new();
        let mut refused: Vec<(u64, String)> = Vec::new();
        let mut errors = Vec::new();
        loop {
            match self.recv_skip_errors(&mut errors) {
                FromDb::Acked { seqs } => acked.extend(seqs),
                FromDb::StoreFailed { seq, message } => {
                    assert!(!acked.contains(&seq), "StoreFailed {seq} after its ack");
                    refused.push((seq, message.into_string()));
                }
                FromDb::Flushed { token: t } => {
                    assert_eq!(t, token);
                    for (seq, _) in &refused {
                        assert!(acked.contains(seq), "refused {seq} never acked");
                    }
                    return (acked, refused);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Closes the channel and waits for the writer to exit.
    pub fn close(mut self) -> Result<(), DbError> {
        let _ = self.chan.shutdown(std::net::Shutdown::Both);
        self.thread.take().unwrap().join().unwrap()
    }
}

pub fn policy(version: u32, retry_failed: bool) -> CheckPolicy {
    CheckPolicy {
        retry_failed,
        analyzer_version: version,
        models: Vec::new(),
    }
}

pub fn key(path: &[u8], size: u64, mtime_ns: i64) -> FileKey {
    FileKey {
        path: PathBytes(path.to_vec()),
        size,
        mtime_ns,
    }
}

pub fn stats() -> FileStats {
    FileStats {
        size: 5_000_000,
        audio_s: 215.3,
        wall_us: 1_800_000,
        stages: StageTimes {
            probe_us: 900,
            tags_us: 1200,
            decode_us: 700_000,
            features_us: 600_000,
            model_us: 400_000,
        },
        peak_rss_bytes: 120 << 20,
    }
}

/// A realistic analysed record: tags, features, two embeddings.
pub fn analysed(run_id: i64, k: FileKey, i: u64) -> Record {
    Record {
        run_id,
        key: k,
        outcome: RecordOutcome::Analyzed(Box::new(trackmill_e2e::records::sample_analysis(i))),
        stats: stats(),
        attempts: vec![],
    }
}

pub fn attempt(n: u32, class: FailureClass) -> Attempt {
    Attempt {
        attempt: n,
        failure: Failure::new(
            class,
            Stage::Worker,
            format!("worker died ({})", class.as_str()),
        ),
        worker_pid: 4242 + n,
        peak_rss_bytes: 512 << 20,
        elapsed_ms: 1500,
        at_ms: 1_700_000_000_000 + i64::from(n),
    }
}

pub fn failed(run_id: i64, k: FileKey) -> Record {
    Record {
        run_id,
        key: k,
        outcome: RecordOutcome::Failed(Failure::new(
            FailureClass::Corrupt,
            Stage::Decode,
            "no audio stream",
        )),
        stats: stats(),
        attempts: vec![attempt(1, FailureClass::Corrupt)],
    }
}

pub fn quarantined(run_id: i64, k: FileKey) -> Record {
    Record {
        run_id,
        key: k,
        outcome: RecordOutcome::Quarantined(Failure::new(
            FailureClass::Crash,
            Stage::Worker,
            "killed its worker 3 times",
        )),
        stats: stats(),
        attempts: (1..=3).map(|n| attempt(n, FailureClass::Crash)).collect(),
    }
}

pub fn event(run_id: i64, path: &[u8]) -> WorkerEvent {
    WorkerEvent {
        run_id,
        at_ms: 1_700_000_000_000,
        worker_pid: 777,
        exit: ExitKind::Crash,
        path: Some(PathBytes(path.to_vec())),
        message: CleanText::new("SIGSEGV"),
        peak_rss_bytes: 300 << 20,
    }
}

/// Defines `sqlite_NAME` and `pg_NAME` tests that run `body(Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                ($body)(common::Backend::sqlite());
            }
            #[test]
            fn pg() {
                ($body)(common::Backend::pg());
            }
        }
    };
}
