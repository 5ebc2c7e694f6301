//! Operators' commands from the control socket: status, pool size, killing a worker, drain and
//! resume, retries.

use super::{Phase, Supervisor};
use nix::sys::signal::Signal;
use std::time::Instant;
use trackmill_types::{ControlCommand, ControlResponse};

impl Supervisor {
    pub(super) fn on_control(&mut self, command: ControlCommand) -> ControlResponse {
        let stopping = !matches!(self.phase, Phase::Starting | Phase::Running);
        match command {
            ControlCommand::Status => ControlResponse::Status(Box::new(self.status())),
            _ if stopping => ControlResponse::Refused("the service is shutting down".into()),
            ControlCommand::Workers { count } => {
                let mut cfg = self.cfg.clone();
                cfg.workers.count = count as usize;
                if let Err(e) = cfg.validate() {
                    return ControlResponse::Refused(e.to_string());
                }
                self.cfg.workers.count = cfg.workers.count;
                let n = self.cfg.worker_count();
                self.set_target(n);
                ControlResponse::Done(format!("workers: {n}"))
            }
            ControlCommand::Kill { worker, signal } => self.kill_on_request(worker, signal),
            ControlCommand::Drain => {
                if let Some(svc) = self.service.as_mut() {
                    svc.paused = true;
                }
                tracing::info!("drain: no new files start; {} in flight", self.pool.busy());
                ControlResponse::Done(format!(
                    "draining: no new files start; {} in flight finish",
                    self.pool.busy()
                ))
            }
            ControlCommand::Resume => {
                if let Some(svc) = self.service.as_mut() {
                    svc.paused = false;
                }
                tracing::info!("resume");
                ControlResponse::Done("resumed".into())
            }
            ControlCommand::Retry { paths } => {
                let paths: Vec<_> = paths
                    .iter()
                    .map(|p| crate::config::normalize_path(p.as_path()))
                    .collect();
                if let Some(p) = paths.iter().find(|p| !self.in_library(p)) {
                    return ControlResponse::Refused(format!(
                        "{} is not under a library root",
                        p.display()
                    ));
                }
                let n = paths.len();
                self.pending.add_paths(paths, true);
                tracing::info!("retry requested for {n} path(s)");
                ControlResponse::Done(format!(
                    "{n} path(s) will be analysed again{}",
                    self.when_retried()
                ))
            }
            ControlCommand::RetryAllFailed => {
                self.pending.add_full(true);
                tracing::info!("retry of every failed and quarantined file requested");
                ControlResponse::Done(format!(
                    "failed and quarantined files will be analysed again{}",
                    self.when_retried()
                ))
            }
        }
    }

    /// `trackmill kill`: the file in flight is requeued and not held against it (class killed).
    /// When a retry requested now runs: at once, or after the pass that is running.
    fn when_retried(&self) -> &'static str {
        if self.pass_active {
            " after the current pass"
        } else {
            ""
        }
    }

    fn kill_on_request(&mut self, worker: u32, signal: i32) -> ControlResponse {
        let ix = worker as usize;
        let sig = match Signal::try_from(signal) {
            Ok(s) => s,
            Err(_) => return ControlResponse::Refused(format!("{signal} is not a signal")),
        };
        let Some((pid, file)) = self.pool.signal_on_request(ix, sig, Instant::now()) else {
            return ControlResponse::Refused(format!("no worker runs in slot {worker}"));
        };
        tracing::warn!(
            "operator: {} to worker {pid} (slot {worker}){}",
            sig.as_str(),
            file.as_ref()
                .map_or(String::new(), |p| format!("; {p:?} is requeued"))
        );
        ControlResponse::Done(format!(
            "sent {} to worker {pid} (slot {worker}){}",
            sig.as_str(),
            file.map_or(String::new(), |p| format!("; {p:?} will be analysed again"))
        ))
    }
}
