//! SIGHUP: re-read the config file and apply what can change while serving (the pool size and
//! limits, the library, the rescan timer). An invalid file is refused and the running
//! configuration stays.

use super::Supervisor;
use crate::config::{Config, RootError};

impl Supervisor {
    pub(super) fn on_reload(&mut self) {
        let Some(path) = self.service.as_ref().and_then(|s| s.config_path.clone()) else {
            tracing::warn!("SIGHUP: no --config file to reload; nothing changes");
            return;
        };
        let new = match Config::load(&path).and_then(canonical_roots) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("SIGHUP: reload refused, the running configuration stays: {e}");
                return;
            }
        };
        let old = std::mem::replace(&mut self.cfg, new);
        // What a running service cannot change: the database, the analysis set-up, the socket.
        let mut restart_needed = Vec::new();
        if old.database != self.cfg.database {
            restart_needed.push("database");
        }
        if old.analysis != self.cfg.analysis {
            restart_needed.push("analysis");
        }
        if old.service.control_socket != self.cfg.service.control_socket {
            restart_needed.push("service.control_socket");
        }
        if old.service.metrics_addr != self.cfg.service.metrics_addr {
            restart_needed.push("service.metrics_addr");
        }
        if old.api != self.cfg.api {
            restart_needed.push("api");
        }
        if old.memory.high != self.cfg.memory.high
            || old.memory.critical != self.cfg.memory.critical
        {
            restart_needed.push("memory.high/critical");
        }
        self.cfg.database = old.database.clone();
        self.cfg.analysis = old.analysis.clone();
        self.cfg.service.control_socket = old.service.control_socket.clone();
        self.cfg.service.metrics_addr = old.service.metrics_addr.clone();
        self.cfg.api = old.api.clone();
        self.cfg.memory.high = old.memory.high;
        self.cfg.memory.critical = old.memory.critical;
        if !restart_needed.is_empty() {
            tracing::warn!(
                "SIGHUP: changes to {} take effect after a restart",
                restart_needed.join(", ")
            );
        }
        let library_changed = old.library != self.cfg.library;
        if library_changed {
            self.roots = self.cfg.library.roots.clone();
            // New workers' sandboxes read under the new roots.
            let procs = self.pool.procs_mut();
            procs.args = crate::spawn::with_library_roots(&procs.args, &self.roots);
            self.pending.add_full(false);
        }
        if library_changed || old.service.watch != self.cfg.service.watch {
            if let Some(svc) = self.service.as_mut() {
                svc.watch(&self.cfg);
            }
        }
        if old.service.rescan_interval != self.cfg.service.rescan_interval {
            if let Some(svc) = self.service.as_mut() {
                svc.reschedule(self.cfg.service.rescan_interval);
            }
        }
        self.pool
            .configure(crate::pool::PoolSettings::new(&self.cfg));
        let workers = self.cfg.worker_count();
        tracing::info!(
            "SIGHUP: configuration reloaded from {}: {} → {} workers{}",
            path.display(),
            self.pool.target(),
            workers,
            if library_changed {
                "; library changed, rescanning"
            } else {
                ""
            }
        );
        self.set_target(workers);
    }

    /// Grows or shrinks the pool (see [`crate::pool::Pool::set_target`]) and the busy limit
    /// that memory pressure allows.
    pub(super) fn set_target(&mut self, n: usize) {
        self.pool.set_target(n);
        self.pressure.set_workers(self.pool.target());
    }
}

/// The library roots as absolute, resolved directories; a missing root refuses the reload.
fn canonical_roots(mut cfg: Config) -> Result<Config, crate::ConfigError> {
    let roots = crate::config::canonical_roots(&cfg.library.roots).map_err(|e| {
        crate::ConfigError::Invalid(match e {
            RootError::NotADirectory(r) => {
                format!("library root {} is not a directory", r.display())
            }
            RootError::Unreadable(r, e) => format!("library root {}: {e}", r.display()),
        })
    })?;
    if roots.is_empty() {
        return Err(crate::ConfigError::Invalid("library.roots is empty".into()));
    }
    cfg.library.roots = roots;
    Ok(cfg)
}
