//! Memory pressure: samples system memory and decides how many workers may be busy. Above
//! `memory.high` the limit halves; above `memory.critical` the largest worker is also killed (its
//! file requeued without penalty). Below `high` the limit recovers by one worker per stable period.

use std::time::{Duration, Instant};
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Normal,
    High,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

pub struct Pressure {
    /// `None` where memory cannot be read; pressure handling is then off.
    sys: Option<System>,
    high: f64,
    critical: f64,
    /// Current cap on busy workers.
    limit: usize,
    level: Level,
    used_share: f64,
    calm_since: Option<Instant>,
    last_cut: Option<Instant>,
}

/// After this long below `high`, one more worker may be busy again.
const RECOVER_STEP: Duration = Duration::from_secs(5);
/// Successive halvings are at least this far apart, so one spike does not drop to one worker.
const CUT_INTERVAL: Duration = Duration::from_secs(2);

pub enum Action {
    None,
    KillLargest,
}

impl Pressure {
    pub fn new(high: f64, critical: f64, workers: usize) -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .ok();
        Pressure {
            sys,
            high,
            critical,
            limit: workers,
            level: Level::Normal,
            used_share: 0.0,
            calm_since: None,
            last_cut: None,
        }
    }

    /// Current cap on busy workers.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// Share of RAM in use at the last sample.
    pub fn used_share(&self) -> f64 {
        self.used_share
    }

    /// The pool's size changed: at normal pressure the limit follows it; under pressure it
    /// only shrinks with it.
    pub fn set_workers(&mut self, n: usize) {
        self.limit = if self.level == Level::Normal {
            n
        } else {
            self.limit.min(n)
        };
    }

    /// Samples memory and updates the limit; `workers` is the configured pool size.
    pub fn poll(&mut self, workers: usize, now: Instant) -> Action {
        let Some(sys) = self.sys.as_mut() else {
            return Action::None;
        };
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let total = sys.total_memory().max(1) as f64;
        let used = total - sys.available_memory() as f64;
        self.used_share = used / total;
        let prev = self.level;
        self.level = if self.used_share >= self.critical {
            Level::Critical
        } else if self.used_share >= self.high {
            Level::High
        } else {
            Level::Normal
        };
        match self.level {
            Level::Normal => {
                let since = *self.calm_since.get_or_insert(now);
                if self.limit < workers && now.duration_since(since) >= RECOVER_STEP {
                    self.limit += 1;
                    self.calm_since = Some(now);
                    tracing::info!(
                        "memory pressure eased ({:.0}% used): up to {} busy workers",
                        self.used_share * 100.0,
                        self.limit
                    );
                }
                self.limit = self.limit.min(workers);
                Action::None
            }
            Level::High | Level::Critical => {
                self.calm_since = None;
                if self
                    .last_cut
                    .is_none_or(|t| now.duration_since(t) >= CUT_INTERVAL)
                    && self.limit > 1
                {
                    self.limit = (self.limit / 2).max(1);
                    self.last_cut = Some(now);
                    tracing::warn!(
                        "memory pressure {} ({:.0}% of RAM used): at most {} busy workers",
                        self.level.as_str(),
                        self.used_share * 100.0,
                        self.limit
                    );
                } else if prev != self.level {
                    tracing::warn!(
                        "memory pressure {} ({:.0}% of RAM used)",
                        self.level.as_str(),
                        self.used_share * 100.0
                    );
                }
                if self.level == Level::Critical {
                    Action::KillLargest
                } else {
                    Action::None
                }
            }
        }
    }
}
