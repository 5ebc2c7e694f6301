//! The supervisor's side of the DB writer: spawning and restarting it, and the bounded set of
//! messages sent but not yet acknowledged, re-sent in order whenever a new writer says hello.

use crate::event::{attach, ChildMsg, Event, Who};
use crate::spawn::{spawn_child, ChildSpec};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use trackmill_types::{CheckPolicy, FileKey, ToDb};

/// The most control messages that can wait for an answer at once (see `DbClient::control`).
pub const MAX_CONTROL: usize = 5;

pub struct DbClient {
    spec: ChildSpec,
    pub gen: u64,
    pub pid: u32,
    tx: Option<UnboundedSender<ToDb>>,
    pub ready: bool,
    /// Store/Event messages by sequence number, until acknowledged.
    pub unacked: BTreeMap<u64, ToDb>,
    next_seq: u64,
    /// The outstanding skip-check's files, to match its verdicts (the message is in `control`).
    pub check: Option<(u64, Vec<FileKey>)>,
    pub claim: Option<u64>,
    /// Control messages (run start/end, flush, the check, the claim) not yet answered, re-sent
    /// after a restart. At most [`MAX_CONTROL`]: one `StartRun`, the one outstanding `Check`
    /// (`check`), the one outstanding `ClaimExpired` (`claim`), and the run's `EndRun` and
    /// `Flush`, sent once when it finishes.
    pub control: Vec<ToDb>,
    next_query: u64,
    pub restarts: u64,
    /// Deaths without a hello in a row: the writer cannot start (bad database).
    pub failed_starts: u32,
    pub restart_at: Option<Instant>,
    pub alive: bool,
}

impl DbClient {
    pub fn new(spec: ChildSpec) -> Self {
        DbClient {
            spec,
            gen: 0,
            pid: 0,
            tx: None,
            ready: false,
            unacked: BTreeMap::new(),
            next_seq: 1,
            check: None,
            claim: None,
            control: Vec::new(),
            next_query: 1,
            restarts: 0,
            failed_starts: 0,
            restart_at: None,
            alive: false,
        }
    }

    pub fn spawn(&mut self, events: &UnboundedSender<Event>) -> std::io::Result<()> {
        self.gen += 1;
        let spawned = spawn_child(&self.spec)?;
        self.pid = spawned.pid;
        self.tx = Some(attach::<_, ToDb>(
            spawned,
            Who::DbWriter { gen: self.gen },
            events.clone(),
            ChildMsg::Db,
        )?);
        self.ready = false;
        self.alive = true;
        Ok(())
    }

    /// After a hello: everything not yet answered goes to the new writer, in order (a restarted
    /// writer first re-opens the run so the run's leases stay its own).
    pub fn on_hello(&mut self, run_id: Option<i64>) {
        self.ready = true;
        if let Some(run_id) = run_id {
            self.raw_send(ToDb::ResumeRun { run_id });
        }
        self.failed_starts = 0;
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
        for m in resend {
            self.raw_send(m);
        }
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

    pub fn answered(&mut self, pred: impl Fn(&ToDb) -> bool) {
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

    pub fn ack(&mut self, seqs: &[u64]) {
        for s in seqs {
            self.unacked.remove(s);
        }
    }

    pub fn send_check(&mut self, policy: CheckPolicy, files: Vec<FileKey>) {
        let query = self.next_query;
        self.next_query += 1;
        self.check = Some((query, files.clone()));
        self.send_control(ToDb::Check {
            query,
            policy,
            files,
            lease: true,
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

    /// Closes the channel: the writer commits what it has and exits.
    pub fn close(&mut self) {
        self.tx = None;
    }

    pub fn on_exit(&mut self) {
        self.alive = false;
        self.tx = None;
        if !self.ready {
            self.failed_starts += 1;
        }
        self.ready = false;
        self.restarts += 1;
        let delay = Duration::from_millis(200) * (1 << self.failed_starts.min(5));
        self.restart_at = Some(Instant::now() + delay);
    }
}
