//! The supervisor's side of the DB writer: spawning and restarting it, the bounded set of
//! messages sent but not yet acknowledged (re-sent in order whenever a new writer says hello),
//! and matching each reply to what was asked, so the loop only routes what a reply means.

use crate::event::{attach, Event};
use crate::spawn::{signal_group, spawn_child, ChildSpec};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use trackmill_types::{
    CheckPolicy, FileKey, FromDb, PathBytes, RecordOutcome, Role, ToDb, Verdict,
};

/// Files paired with their verdicts, in order (a missing verdict is `Todo`).
fn zip_verdicts(files: Vec<FileKey>, verdicts: Vec<Verdict>) -> Vec<(FileKey, Verdict)> {
    let verdicts = verdicts.into_iter().chain(std::iter::repeat(Verdict::Todo));
    files.into_iter().zip(verdicts).collect()
}

/// The most control messages that can wait for an answer at once (see `DbClient::control`).
pub const MAX_CONTROL: usize = 7;

/// A writer that dies this many times in a row without committing anything cannot make
/// progress (bad database, or data it refuses every time): the run fails.
pub const MAX_FAILED_STARTS: u32 = 5;

/// A stored result the database has committed: what the run's counts count.
#[derive(Clone, Debug, PartialEq)]
pub enum Committed {
    Analyzed { partial: bool },
    Failed(trackmill_types::FailureClass),
    Quarantined,
}

impl Committed {
    fn of(m: &ToDb) -> Option<Committed> {
        let ToDb::Store { record, .. } = m else {
            return None;
        };
        Some(match &record.outcome {
            RecordOutcome::Analyzed(a) => Committed::Analyzed { partial: a.partial },
            RecordOutcome::Failed(f) => Committed::Failed(f.class),
            RecordOutcome::Quarantined(_) => Committed::Quarantined,
        })
    }
}

/// What a reply from the DB writer means for the loop.
#[derive(Debug, PartialEq)]
pub enum DbReply {
    /// Nothing for the loop: a flush, an answer no longer waited for.
    Nothing,
    /// Results now committed (worker events are committed too but not counted).
    Committed(Vec<Committed>),
    /// A new writer is up; `resent` messages went to it again.
    Up {
        pid: u32,
        resent: usize,
    },
    /// The writer speaks another protocol: the run cannot go on.
    Refused(String),
    RunStarted(i64),
    /// The verdicts of the outstanding skip-check, one per file (missing ones are `Todo`); no
    /// file is leased yet.
    Checked(Vec<(FileKey, Verdict)>),
    /// The verdicts of the outstanding lease: `Todo` files are now this run's (dispatch them),
    /// `Done` ones were stored meanwhile, `Busy` ones are another live run's.
    Leased(Vec<(FileKey, Verdict)>),
    /// The database refused a stored record for good; the file is stored as a `store` failure
    /// with the database's message instead (and counted so once committed).
    StoreRefused {
        path: PathBytes,
        message: String,
    },
    /// Files whose expired leases this run now holds, and how many other live runs still hold.
    Claimed {
        files: Vec<FileKey>,
        still_leased: u64,
    },
    /// The answer to the sweep: tracks newly marked missing, and missing in all.
    Swept {
        marked: u64,
        missing: u64,
    },
    Error {
        message: String,
        retrying: bool,
    },
}

pub struct DbClient {
    spec: ChildSpec,
    gen: u64,
    pid: u32,
    tx: Option<UnboundedSender<ToDb>>,
    ready: bool,
    alive: bool,
    /// Store/Event messages by sequence number, until acknowledged.
    unacked: BTreeMap<u64, ToDb>,
    next_seq: u64,
    /// The outstanding skip-check's files, to match its verdicts (the message is in `control`).
    check: Option<(u64, Vec<FileKey>)>,
    /// The outstanding lease's files, likewise.
    lease: Option<(u64, Vec<FileKey>)>,
    /// Stored records the database refused: they commit as `store` failures.
    refused: std::collections::BTreeSet<u64>,
    claim: Option<u64>,
    /// The outstanding sweep for missing files.
    sweep: Option<u64>,
    /// Control messages (run start/end, flush, the check, the claim) not yet answered, re-sent
    /// after a restart. At most [`MAX_CONTROL`]: one `StartRun`, the one outstanding `Check`
    /// (`check`), the one outstanding `Lease` (`lease`), the one outstanding `ClaimExpired`
    /// (`claim`), the one outstanding `SweepMissing` (`sweep`), and the run's `EndRun` and
    /// `Flush`, sent once when it finishes.
    control: Vec<ToDb>,
    next_query: u64,
    run_id: Option<i64>,
    restarts: u64,
    /// Deaths in a row of writers that committed nothing (hello or not).
    failed_starts: u32,
    /// The current writer has committed something.
    progressed: bool,
    restart_at: Option<Instant>,
}

impl DbClient {
    pub fn new(spec: ChildSpec) -> Self {
        DbClient {
            spec,
            gen: 0,
            pid: 0,
            tx: None,
            ready: false,
            alive: false,
            unacked: BTreeMap::new(),
            next_seq: 1,
            check: None,
            lease: None,
            refused: Default::default(),
            claim: None,
            sweep: None,
            control: Vec::new(),
            next_query: 1,
            run_id: None,
            restarts: 0,
            failed_starts: 0,
            progressed: false,
            restart_at: None,
        }
    }

    pub fn gen(&self) -> u64 {
        self.gen
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Said hello and has everything outstanding.
    pub fn ready(&self) -> bool {
        self.ready
    }

    pub fn alive(&self) -> bool {
        self.alive
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Restarts after the first start.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    pub fn failed_starts(&self) -> u32 {
        self.failed_starts
    }

    pub fn checking(&self) -> bool {
        self.check.is_some()
    }

    pub fn leasing(&self) -> bool {
        self.lease.is_some()
    }

    pub fn claiming(&self) -> bool {
        self.claim.is_some()
    }

    pub fn sweeping(&self) -> bool {
        self.sweep.is_some()
    }

    /// Nothing waits for an answer: every control message answered, every result committed.
    pub fn settled(&self) -> bool {
        self.control.is_empty() && self.unacked.is_empty()
    }

    /// A restart is scheduled and not yet made.
    pub fn restart_pending(&self) -> bool {
        self.restart_at.is_some()
    }

    pub fn spawn(&mut self, events: &UnboundedSender<Event>) -> std::io::Result<()> {
        self.gen += 1;
        let gen = self.gen;
        let spawned = spawn_child(&self.spec)?;
        self.pid = spawned.pid;
        self.tx = Some(attach::<_, ToDb, _>(spawned, events.clone(), move |msg| {
            Event::Db { gen, msg }
        })?);
        self.ready = false;
        self.alive = true;
        self.progressed = false;
        Ok(())
    }

    /// Starts the writer again once its backoff is over; a failed spawn counts as a death.
    pub fn restart_if_due(&mut self, now: Instant, events: &UnboundedSender<Event>) {
        if self.alive || self.restart_at.is_none_or(|at| now < at) {
            return;
        }
        self.restart_at = None;
        if let Err(e) = self.spawn(events) {
            tracing::error!("cannot restart the DB writer: {e}");
            self.on_exit(now);
        }
    }

    /// Matches a reply to what was asked.
    pub fn on_reply(&mut self, msg: FromDb) -> DbReply {
        match msg {
            FromDb::Hello(h) => {
                if let Err(e) = h.check(Role::DbWriter) {
                    return DbReply::Refused(e);
                }
                let resent = self.on_hello();
                DbReply::Up { pid: h.pid, resent }
            }
            FromDb::RunStarted { run_id } => {
                // The run's row committed; a restarted writer's answer to `ResumeRun` commits
                // nothing new, so a writer that dies on every batch still counts as failed.
                self.progressed |= self.run_id.is_none();
                self.answered(|m| matches!(m, ToDb::StartRun { .. }));
                self.run_id = Some(run_id);
                DbReply::RunStarted(run_id)
            }
            FromDb::CheckResult { query, verdicts } => {
                let Some((q, files)) = self.check.take_if(|(q, _)| *q == query) else {
                    return DbReply::Nothing;
                };
                self.answered(|m| matches!(m, ToDb::Check { query: x, .. } if *x == q));
                DbReply::Checked(zip_verdicts(files, verdicts))
            }
            FromDb::Leased { query, verdicts } => {
                let Some((q, files)) = self.lease.take_if(|(q, _)| *q == query) else {
                    return DbReply::Nothing;
                };
                self.answered(|m| matches!(m, ToDb::Lease { query: x, .. } if *x == q));
                DbReply::Leased(zip_verdicts(files, verdicts))
            }
            FromDb::StoreFailed { seq, message } => {
                let Some(ToDb::Store { record, .. }) = self.unacked.get(&seq) else {
                    return DbReply::Nothing;
                };
                let path = record.key.path.clone();
                self.refused.insert(seq);
                DbReply::StoreRefused {
                    path,
                    message: message.as_str().to_string(),
                }
            }
            FromDb::Claimed {
                query,
                files,
                still_leased,
            } => {
                if self.claim != Some(query) {
                    return DbReply::Nothing;
                }
                self.claim = None;
                self.answered(|m| matches!(m, ToDb::ClaimExpired { query: x, .. } if *x == query));
                DbReply::Claimed {
                    files,
                    still_leased,
                }
            }
            FromDb::Swept {
                query,
                marked,
                missing,
            } => {
                if self.sweep != Some(query) {
                    return DbReply::Nothing;
                }
                self.sweep = None;
                self.answered(|m| matches!(m, ToDb::SweepMissing { query: x, .. } if *x == query));
                DbReply::Swept { marked, missing }
            }
            FromDb::Acked { seqs } => {
                self.progressed |= !seqs.is_empty();
                let mut committed = Vec::new();
                for seq in seqs {
                    let Some(m) = self.unacked.remove(&seq) else {
                        continue;
                    };
                    if self.refused.remove(&seq) {
                        committed.push(Committed::Failed(trackmill_types::FailureClass::Store));
                    } else if let Some(c) = Committed::of(&m) {
                        committed.push(c);
                    }
                }
                DbReply::Committed(committed)
            }
            FromDb::Flushed { token } => {
                self.answered(|m| matches!(m, ToDb::Flush { token: t } if *t == token));
                DbReply::Nothing
            }
            FromDb::RunEnded { run_id } => {
                self.progressed = true;
                self.answered(|m| matches!(m, ToDb::EndRun { run_id: r, .. } if *r == run_id));
                DbReply::Nothing
            }
            FromDb::Error { message, retrying } => DbReply::Error {
                message: message.as_str().to_string(),
                retrying,
            },
        }
    }

    /// After a hello: everything not yet answered goes to the new writer, in order (a restarted
    /// writer first re-opens the run so the run's leases stay its own).
    fn on_hello(&mut self) -> usize {
        self.ready = true;
        if let Some(run_id) = self.run_id {
            self.raw_send(ToDb::ResumeRun { run_id });
        }
        let resend: Vec<ToDb> = self
            .control
            .iter()
            .filter(|m| matches!(m, ToDb::StartRun { .. }))
            .cloned()
            .chain(self.unacked.values().cloned())
            .chain(
                self.control
                    .iter()
                    .filter(|m| !matches!(m, ToDb::StartRun { .. }))
                    .cloned(),
            )
            .collect();
        let n = resend.len();
        for m in resend {
            self.raw_send(m);
        }
        n
    }

    fn push_control(&mut self, m: ToDb) {
        self.control.push(m);
        debug_assert!(
            self.control.len() <= MAX_CONTROL,
            "control messages waiting: {:?}",
            self.control
        );
    }

    fn raw_send(&mut self, m: ToDb) {
        if let (true, Some(tx)) = (self.ready, &self.tx) {
            let _ = tx.send(m);
        }
    }

    /// Sends a control message that must be answered (kept until it is).
    pub fn send_control(&mut self, m: ToDb) {
        self.push_control(m.clone());
        self.raw_send(m);
    }

    fn answered(&mut self, pred: impl Fn(&ToDb) -> bool) {
        self.control.retain(|m| !pred(m));
    }

    /// Sends a Store or Event built from its sequence number; kept until acknowledged.
    pub fn send_acked(&mut self, build: impl FnOnce(u64) -> ToDb) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let m = build(seq);
        self.unacked.insert(seq, m.clone());
        self.raw_send(m);
    }

    /// Asks which files need analysis; with `lease` the `Todo` ones are leased at once.
    pub fn send_check(&mut self, policy: CheckPolicy, files: Vec<FileKey>, lease: bool) {
        let query = self.next_query;
        self.next_query += 1;
        self.check = Some((query, files.clone()));
        self.send_control(ToDb::Check {
            query,
            policy,
            files,
            lease,
        });
    }

    /// Leases files this run is about to dispatch (answered by `Leased`).
    pub fn send_lease(&mut self, policy: CheckPolicy, files: Vec<FileKey>) {
        let query = self.next_query;
        self.next_query += 1;
        self.lease = Some((query, files.clone()));
        self.send_control(ToDb::Lease {
            query,
            policy,
            files,
        });
    }

    pub fn send_claim(&mut self, policy: CheckPolicy, limit: u32) {
        let query = self.next_query;
        self.next_query += 1;
        self.claim = Some(query);
        self.send_control(ToDb::ClaimExpired {
            query,
            policy,
            limit,
        });
    }

    /// Marks the stored tracks under `roots` whose files are gone (answered by `Swept`).
    pub fn send_sweep(&mut self, roots: Vec<PathBytes>) {
        let query = self.next_query;
        self.next_query += 1;
        self.sweep = Some(query);
        self.send_control(ToDb::SweepMissing { query, roots });
    }

    /// Closes the channel: the writer commits what it has and exits.
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// Ends the writer at once (a bad frame from it, or the final flush took too long).
    pub fn kill(&mut self) {
        signal_group(self.pid, nix::sys::signal::Signal::SIGKILL);
    }

    /// The writer was reaped: schedule its restart, backing off while writers keep dying
    /// without committing anything.
    pub fn on_exit(&mut self, now: Instant) {
        self.alive = false;
        self.tx = None;
        if std::mem::take(&mut self.progressed) {
            self.failed_starts = 0;
        } else {
            self.failed_starts += 1;
        }
        self.ready = false;
        self.restarts += 1;
        let delay = Duration::from_millis(200) * (1 << self.failed_starts.min(5));
        self.restart_at = Some(now + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackmill_types::{CleanText, Hello, PathBytes};

    fn client() -> DbClient {
        let spec = ChildSpec::plain("/bin/true", &[]);
        DbClient::new(spec)
    }

    fn key(n: u8) -> FileKey {
        FileKey {
            path: PathBytes(vec![b'/', b'a' + n]),
            size: 1,
            mtime_ns: 1,
        }
    }

    fn policy() -> CheckPolicy {
        CheckPolicy {
            retry_failed: false,
            analyzer_version: 1,
            models: Vec::new(),
        }
    }

    #[test]
    fn a_check_answer_is_matched_to_its_files_and_a_stale_one_ignored() {
        let mut db = client();
        db.send_check(policy(), vec![key(0), key(1)], false);
        assert!(db.checking());
        let stale = db.on_reply(FromDb::CheckResult {
            query: 99,
            verdicts: vec![Verdict::Done],
        });
        assert_eq!(stale, DbReply::Nothing);
        let r = db.on_reply(FromDb::CheckResult {
            query: 1,
            verdicts: vec![Verdict::Done],
        });
        assert_eq!(
            r,
            DbReply::Checked(vec![(key(0), Verdict::Done), (key(1), Verdict::Todo)])
        );
        assert!(!db.checking());
        assert!(db.settled());
    }

    #[test]
    fn unanswered_messages_are_resent_to_a_new_writer_in_order() {
        let mut db = client();
        db.send_control(ToDb::StartRun {
            host: CleanText::new("h"),
            pid: 1,
            roots: Vec::new(),
        });
        db.send_acked(|seq| ToDb::Flush { token: seq });
        db.send_check(policy(), vec![key(0)], false);
        let up = db.on_reply(FromDb::Hello(Hello::new(Role::DbWriter)));
        assert_eq!(
            up,
            DbReply::Up {
                pid: std::process::id(),
                resent: 3
            }
        );
        assert_eq!(
            db.on_reply(FromDb::RunStarted { run_id: 4 }),
            DbReply::RunStarted(4)
        );
        db.on_reply(FromDb::Acked { seqs: vec![1] });
        assert_eq!(db.unacked(), 0);
        assert!(db.checking());
    }

    #[test]
    fn a_writer_of_another_protocol_is_refused() {
        let mut db = client();
        let hello = Hello {
            protocol: 0,
            ..Hello::new(Role::DbWriter)
        };
        assert!(matches!(
            db.on_reply(FromDb::Hello(hello)),
            DbReply::Refused(_)
        ));
        let worker = Hello::new(Role::Worker);
        assert!(matches!(
            db.on_reply(FromDb::Hello(worker)),
            DbReply::Refused(_)
        ));
    }

    #[test]
    fn writers_that_say_hello_but_commit_nothing_count_as_failed_starts() {
        let mut db = client();
        let t = Instant::now();
        for n in 1..=MAX_FAILED_STARTS {
            db.on_reply(FromDb::Hello(Hello::new(Role::DbWriter)));
            db.on_exit(t);
            assert_eq!(db.failed_starts(), n, "hello does not reset the count");
        }
        // A writer that commits something resets it.
        db.on_reply(FromDb::Acked { seqs: vec![7] });
        db.on_exit(t);
        assert_eq!(db.failed_starts(), 0);
        // Opening the run commits its row; a restarted writer resuming it commits nothing (one
        // that then dies on every batch must not restart for ever).
        db.on_reply(FromDb::RunStarted { run_id: 4 });
        db.on_exit(t);
        assert_eq!(db.failed_starts(), 0);
        for n in 1..=2 {
            db.on_reply(FromDb::Hello(Hello::new(Role::DbWriter)));
            db.on_reply(FromDb::RunStarted { run_id: 4 });
            db.on_exit(t);
            assert_eq!(db.failed_starts(), n, "resuming the run is no progress");
        }
    }

    #[test]
    fn a_refused_record_commits_as_a_store_failure() {
        use trackmill_types::{Failure, FailureClass, FileStats, Record, RecordOutcome, Stage};
        let mut db = client();
        let record = |n| Record {
            run_id: 1,
            key: key(n),
            outcome: RecordOutcome::Failed(Failure::new(FailureClass::Corrupt, Stage::Decode, "x")),
            stats: FileStats::default(),
            attempts: Vec::new(),
        };
        for n in 0..2 {
            db.send_acked(|seq| ToDb::Store {
                seq,
                record: Box::new(record(n)),
            });
        }
        let refused = db.on_reply(FromDb::StoreFailed {
            seq: 2,
            message: CleanText::new("value too long"),
        });
        assert_eq!(
            refused,
            DbReply::StoreRefused {
                path: key(1).path,
                message: "value too long".into()
            }
        );
        assert_eq!(
            db.on_reply(FromDb::Acked { seqs: vec![1, 2] }),
            DbReply::Committed(vec![
                Committed::Failed(FailureClass::Corrupt),
                Committed::Failed(FailureClass::Store),
            ])
        );
    }

    #[test]
    fn a_lease_answer_is_matched_to_its_files() {
        let mut db = client();
        db.send_lease(policy(), vec![key(0), key(1), key(2)]);
        assert!(db.leasing());
        let r = db.on_reply(FromDb::Leased {
            query: 1,
            verdicts: vec![Verdict::Todo, Verdict::Busy, Verdict::Done],
        });
        assert_eq!(
            r,
            DbReply::Leased(vec![
                (key(0), Verdict::Todo),
                (key(1), Verdict::Busy),
                (key(2), Verdict::Done)
            ])
        );
        assert!(!db.leasing() && db.settled());
    }
}
