//! The DB writer's replies and exits, routed to the run: the run starts, checked files join the
//! queue, claimed files too, and a writer that cannot make progress ends the run.

use super::{Phase, Supervisor, CLAIM_POLL_MAX};
use crate::dbclient::{Committed, DbReply, MAX_FAILED_STARTS};
use crate::event::{ChildExit, ChildMsg};
use crate::pool::{describe, FileJob};
use std::time::{Duration, Instant};
use trackmill_types::{FromDb, Verdict};

impl Supervisor {
    pub(super) fn on_db(&mut self, msg: ChildMsg<FromDb>) {
        match msg {
            ChildMsg::Frame(frame) => self.on_db_reply(frame),
            ChildMsg::BadChannel(e) => {
                tracing::error!("DB writer sent a bad frame ({e}); restarting it");
                self.db.kill();
            }
            ChildMsg::Exited(exit) => self.on_db_exit(exit),
        }
    }

    fn on_db_reply(&mut self, frame: FromDb) {
        match self.db.on_reply(frame) {
            DbReply::Nothing => {}
            DbReply::Committed(results) => {
                for r in results {
                    let s = &mut self.summary;
                    match r {
                        Committed::Analyzed { partial } => {
                            s.analyzed += 1;
                            s.partial += u64::from(partial);
                        }
                        Committed::Failed(class) => s.add_failed(class),
                        Committed::Quarantined => s.quarantined += 1,
                    }
                }
            }
            DbReply::Up { pid, resent } => {
                if self.db.restarts() > 0 {
                    tracing::info!("DB writer {pid} is up; re-sending {resent} messages");
                }
            }
            DbReply::Refused(e) => {
                self.fatal = Some(e);
                self.phase = Phase::Done;
            }
            DbReply::RunStarted(run_id) => {
                self.run_id = run_id;
                if self.phase == Phase::Starting {
                    tracing::info!("run {run_id} started");
                    self.phase = Phase::Running;
                    self.on_started();
                }
            }
            DbReply::Checked(verdicts) => {
                let leased = !self.lease_on_dispatch;
                for (key, v) in verdicts {
                    self.on_verdict(key, v, leased);
                }
            }
            DbReply::Leased(verdicts) => {
                for (key, v) in verdicts {
                    self.on_verdict(key, v, true);
                }
            }
            DbReply::Swept { marked, missing } => {
                self.summary.missing += marked;
                self.summary.missing_in_db = missing;
            }
            DbReply::StoreRefused { path, message } => {
                tracing::error!(
                    "database refused the record of {path:?}; stored as a store failure: {message}"
                );
            }
            DbReply::Claimed {
                files,
                still_leased,
            } => {
                if files.is_empty() {
                    if still_leased == 0 {
                        self.claims_done = true;
                    } else {
                        // Other live runs hold files this run saw busy: ask again within a second
                        // (sooner with a short lease), so this run ends soon after they do.
                        self.claim_not_before = Instant::now()
                            + (self.cfg.database.lease_ttl / 4)
                                .clamp(Duration::from_millis(200), CLAIM_POLL_MAX);
                    }
                }
                for key in files {
                    self.summary.files_seen += 1;
                    self.leased.push_back(FileJob::new(key));
                }
            }
            DbReply::Error { message, retrying } => {
                if retrying {
                    tracing::warn!(
                        "database: {message} (retrying; {} results wait)",
                        self.db.unacked()
                    );
                } else {
                    tracing::error!("database: {message}");
                }
            }
        }
    }

    /// A checked (`leased: false`) or leased file: `Todo` joins the queue (checked files wait to
    /// be leased), `Done` is skipped, `Busy` belongs to another live run.
    fn on_verdict(&mut self, key: trackmill_types::FileKey, v: Verdict, leased: bool) {
        match v {
            Verdict::Todo if leased => self.leased.push_back(FileJob::new(key)),
            Verdict::Todo => self.ready.push_back(FileJob::new(key)),
            Verdict::Done => self.summary.skipped_unchanged += 1,
            Verdict::Busy => {
                self.summary.files_seen -= 1;
                self.summary.busy_elsewhere += 1;
            }
        }
    }

    fn on_db_exit(&mut self, exit: ChildExit) {
        let clean = exit.status.success()
            && self.phase == Phase::Finishing
            && self.end_sent
            && self.db.settled();
        self.db.on_exit(Instant::now());
        if clean {
            self.phase = Phase::Done;
            return;
        }
        let last = exit.last_stderr;
        tracing::warn!(
            "DB writer {} ended ({}){}",
            self.db.pid(),
            describe(exit.status),
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        );
        if self.db.failed_starts() >= MAX_FAILED_STARTS {
            self.fatal = Some(format!(
                "the DB writer died {} times in a row without committing anything: {last}",
                self.db.failed_starts()
            ));
            self.pool.kill_all_now();
            self.phase = Phase::Done;
        }
    }
}
