//! The service's status snapshot (`trackmill status`): every worker slot with its process, file
//! and history, the queue, the DB writer, totals and memory pressure.

use super::{Phase, Supervisor};
use std::time::Instant;
use trackmill_types::{DbWriterStatus, MemoryStatus, ServiceStatus, Totals};

impl Supervisor {
    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Starting => "starting",
            Phase::Running if self.paused() && self.pool.busy() > 0 => "draining",
            Phase::Running if self.paused() => "drained",
            Phase::Running if self.pass_active => "scanning",
            Phase::Running => "idle",
            Phase::Draining { .. } | Phase::Finishing | Phase::Done => "stopping",
        }
    }

    pub(super) fn status(&self) -> ServiceStatus {
        let workers = self.pool.statuses(Instant::now());
        let s = &self.summary;
        ServiceStatus {
            pid: std::process::id(),
            run_id: self.run_id,
            state: self.state_name().into(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            passes: self.service.as_ref().map_or(1, |svc| svc.passes),
            pass_active: self.pass_active,
            pass_pending: !self.pending.is_empty()
                || self.service.as_ref().is_some_and(|s| s.changes_waiting()),
            target_workers: self.pool.target() as u32,
            workers,
            queue_ready: (self.ready.len() + self.leased.len()) as u64,
            queue_retries: self.retries.len() as u64,
            db_writer: DbWriterStatus {
                pid: self.db.pid(),
                ready: self.db.ready(),
                unacked: self.db.unacked() as u64,
                restarts: self.db.restarts(),
            },
            totals: Totals {
                files_seen: s.files_seen,
                analyzed: s.analyzed,
                skipped_unchanged: s.skipped_unchanged,
                failed: s.failed.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                quarantined: s.quarantined,
                missing: s.missing,
                missing_in_db: s.missing_in_db,
                worker_exits: s
                    .worker_exits
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            },
            memory: MemoryStatus {
                level: self.pressure.level().as_str().into(),
                used_share: self.pressure.used_share(),
                busy_limit: self.pressure.limit() as u32,
                workers_rss_bytes: self.worker_rss,
            },
            degraded: self.pool.degraded(),
            analysis_seconds: self.analysis_time.clone(),
            api: self
                .api
                .as_ref()
                .map(crate::api::ApiClient::status)
                .unwrap_or_default(),
        }
    }
}
