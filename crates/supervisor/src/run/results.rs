//! What becomes of a file when its worker answers or dies: the result is stored, or the retry
//! policy decides between another attempt, a final failure and quarantine.

use super::{now_ms, Supervisor};
use crate::pool::{Exit, FileJob, Finished, InFlight};
use crate::retry::{decide, Decision};
use std::time::Instant;
use trackmill_types::{
    Attempt, CleanText, ExitKind, Failure, FailureClass, FileStats, Outcome, Record, RecordOutcome,
    Stage, ToDb, WorkerEvent,
};

impl Supervisor {
    pub(super) fn on_result(&mut self, f: Finished) {
        let Finished {
            pid,
            mut job,
            started,
            outcome,
            stats,
        } = f;
        self.summary.audio_s += stats.audio_s;
        self.analysis_time.observe(started.elapsed().as_secs_f64());
        self.summary.worker_peak_rss_bytes =
            self.summary.worker_peak_rss_bytes.max(stats.peak_rss_bytes);
        match outcome {
            Outcome::Analyzed(a) => self.store(job, RecordOutcome::Analyzed(a), stats),
            Outcome::Failed(f) => {
                job.history.push(Attempt {
                    attempt: job.history.len() as u32 + 1,
                    failure: f,
                    worker_pid: pid,
                    peak_rss_bytes: stats.peak_rss_bytes,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                    at_ms: now_ms(),
                });
                self.after_failure(job, stats);
            }
        }
    }

    /// Applies the retry policy to a file whose newest attempt failed.
    fn after_failure(&mut self, mut job: FileJob, stats: FileStats) {
        let last = job
            .history
            .last()
            .expect("a failure was just recorded")
            .failure
            .clone();
        match decide(
            &job.history,
            self.cfg.workers.max_attempts,
            self.cfg.workers.retry_backoff,
        ) {
            Decision::Retry { delay, alone } => {
                tracing::info!(
                    "retrying {:?} in {delay:?}{} after {} ({})",
                    job.key.path,
                    if alone { " alone" } else { "" },
                    last.class.as_str(),
                    last.message
                );
                job.alone |= alone;
                job.not_before = Instant::now() + delay;
                self.retries.push(job);
            }
            Decision::Fail => self.store(job, RecordOutcome::Failed(last), stats),
            Decision::Quarantine => {
                tracing::warn!(
                    "quarantined {:?} after {} attempts: {}",
                    job.key.path,
                    job.history.len(),
                    last.message
                );
                self.store(job, RecordOutcome::Quarantined(last), stats);
            }
        }
    }

    /// Sends a file's terminal result to the DB writer; the run counts it once it is committed.
    fn store(&mut self, job: FileJob, outcome: RecordOutcome, stats: FileStats) {
        let mut record = Record {
            run_id: self.run_id,
            key: job.key,
            outcome,
            stats,
            attempts: job.history,
        };
        // A record that would not fit one frame would break the DB writer's channel (it would be
        // restarted and sent it again, forever): the file is a protocol failure instead.
        if !record.fits_frame() {
            let f = Failure::new(
                FailureClass::Protocol,
                Stage::Worker,
                "the worker's result is too large to store",
            );
            tracing::error!("{:?}: {}", record.key.path, f.message);
            record.outcome = RecordOutcome::Failed(f);
        }
        self.db.send_acked(|seq| ToDb::Store {
            seq,
            record: Box::new(record),
        });
    }

    /// A worker ended: the event is logged and stored, and the file it was on (if any) gets
    /// an attempt with the cause of the exit.
    pub(super) fn on_worker_exit(&mut self, exit: Exit) {
        let Exit {
            kind,
            pid,
            message,
            in_flight,
            ..
        } = exit;
        self.summary.add_exit(kind);
        let planned = matches!(kind, ExitKind::Recycled | ExitKind::Stopped);
        if planned {
            tracing::debug!("{message}");
        } else {
            tracing::warn!(
                "{message}{}",
                in_flight
                    .as_ref()
                    .map_or(String::new(), |f| format!(" while on {:?}", f.job.key.path))
            );
        }
        if !planned || in_flight.is_some() {
            let event = WorkerEvent {
                run_id: self.run_id,
                at_ms: now_ms(),
                worker_pid: pid,
                exit: kind,
                path: in_flight.as_ref().map(|f| f.job.key.path.clone()),
                message: CleanText::new(&message),
                peak_rss_bytes: 0,
            };
            self.db.send_acked(|seq| ToDb::Event { seq, event });
        }
        if let Some(InFlight { mut job, started }) = in_flight {
            job.history.push(Attempt {
                attempt: job.history.len() as u32 + 1,
                failure: Failure::new(kind.failure_class(), Stage::Worker, &message),
                worker_pid: pid,
                peak_rss_bytes: 0,
                elapsed_ms: started.elapsed().as_millis() as u64,
                at_ms: now_ms(),
            });
            if self.interrupted && matches!(kind, ExitKind::Stopped | ExitKind::Killed) {
                self.summary.unfinished += 1;
            } else {
                self.after_failure(job, FileStats::default());
            }
        }
    }
}
