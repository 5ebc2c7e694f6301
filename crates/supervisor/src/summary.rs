//! The run summary: counts by outcome, failure class and worker exit, written as JSON by
//! `--summary FILE` and printed at the end of a scan.

use serde::Serialize;
use std::collections::BTreeMap;
use trackmill_types::{ExitKind, FailureClass};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub run_id: i64,
    /// "completed"; "interrupted" (stopped short, or results left unstored: see `unstored`);
    /// "failed" (the DB writer could not make progress: see `error`).
    pub status: String,
    /// Why the run failed, naming the database's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files the scanner yielded (plus files taken over from an expired lease).
    pub files_seen: u64,
    /// Analyzed, failed and quarantined count results the database has committed.
    pub analyzed: u64,
    pub skipped_unchanged: u64,
    /// Final failures by class (e.g. corrupt).
    pub failed: BTreeMap<String, u64>,
    pub quarantined: u64,
    /// Files left unfinished because the run was interrupted (they are redone next time).
    pub unfinished: u64,
    /// Results the DB writer had not committed when the run ended (they are redone next time).
    pub unstored: u64,
    /// Files another live run held a lease on (shared database), not counted in `files_seen`.
    pub busy_elsewhere: u64,
    /// Files skipped because the walk had already yielded them under another path (symbolic or
    /// hard links); not counted in `files_seen`.
    pub aliases: u64,
    /// Stored tracks under the roots whose files a completed pass found gone (marked missing:
    /// kept with their analysis, left out of queries); not counted in `files_seen`.
    pub missing: u64,
    /// Tracks marked missing in the database after the last sweep, by any run (`trackmill prune`
    /// deletes them).
    pub missing_in_db: u64,
    pub partial: u64,
    pub worker_exits: BTreeMap<String, u64>,
    pub db_writer_restarts: u64,
    pub scan_errors: u64,
    pub elapsed_s: f64,
    pub audio_s: f64,
    pub supervisor_peak_rss_bytes: u64,
    pub worker_peak_rss_bytes: u64,
}

impl Summary {
    pub fn new() -> Self {
        let mut s = Summary::default();
        for k in ExitKind::ALL {
            s.worker_exits.insert(k.as_str().into(), 0);
        }
        s
    }

    pub fn add_failed(&mut self, class: FailureClass) {
        *self.failed.entry(class.as_str().into()).or_default() += 1;
    }

    pub fn add_exit(&mut self, kind: ExitKind) {
        *self.worker_exits.entry(kind.as_str().into()).or_default() += 1;
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Files that reached a terminal state or were skipped.
    pub fn settled(&self) -> u64 {
        self.analyzed + self.failed_total() + self.quarantined + self.skipped_unchanged
    }

    pub fn line(&self) -> String {
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let exits: Vec<String> = self
            .worker_exits
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let missing = if self.missing_in_db > 0 {
            format!(
                "; {} tracks found gone ({} missing in all: `trackmill prune` deletes them)",
                self.missing, self.missing_in_db
            )
        } else {
            String::new()
        };
        format!(
            "{}: {} files seen, {} analysed, {} unchanged, {} failed [{}], {} quarantined, {} unfinished, {} not stored; worker exits [{}]; {:.1}s, {:.0}s of audio{missing}",
            self.status,
            self.files_seen,
            self.analyzed,
            self.skipped_unchanged,
            self.failed_total(),
            failed.join(" "),
            self.quarantined,
            self.unfinished,
            self.unstored,
            exits.join(" "),
            self.elapsed_s,
            self.audio_s
        )
    }
}
