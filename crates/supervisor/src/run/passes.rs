//! Scan passes: what the next walk covers (the whole library, changed paths, retries), when the
//! service starts one (at start, on its rescan timer, after coalesced file-system changes, on an
//! operator's request), and the service's own state between passes.

use super::{Phase, Supervisor};
use crate::event::Event;
use crate::scanner::ScanSettings;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Above this many changed paths waiting, the next pass walks the whole library instead.
const MAX_PATHS: usize = crate::watch::MAX_CHANGES;
/// Changes keep arriving (a large copy): a pass starts anyway after this many debounce periods.
const MAX_DEBOUNCES: u32 = 10;

/// Work waiting for the next pass. Passes never overlap: one starts only when the previous one
/// has settled every file, so no file is ever queued twice.
#[derive(Debug, Default)]
pub struct PassQueue {
    full: bool,
    /// A full pass that also re-analyses files stored as failed or quarantined.
    full_retry: bool,
    paths: BTreeSet<PathBuf>,
    retry_paths: BTreeSet<PathBuf>,
}

/// What one pass walks.
pub struct PassPlan {
    pub roots: Vec<PathBuf>,
    pub retry_failed: bool,
    pub full: bool,
}

impl PassQueue {
    /// The first pass of a run: the whole library.
    pub fn first(retry_failed: bool) -> Self {
        PassQueue {
            full: !retry_failed,
            full_retry: retry_failed,
            ..PassQueue::default()
        }
    }

    pub fn add_full(&mut self, retry_failed: bool) {
        if retry_failed {
            self.full_retry = true;
        } else {
            self.full = true;
        }
    }

    pub fn add_paths(&mut self, paths: impl IntoIterator<Item = PathBuf>, retry_failed: bool) {
        let set = if retry_failed {
            &mut self.retry_paths
        } else {
            &mut self.paths
        };
        set.extend(paths);
        if set.len() > MAX_PATHS {
            set.clear();
            self.add_full(retry_failed);
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.full && !self.full_retry && self.paths.is_empty() && self.retry_paths.is_empty()
    }

    /// The next pass: retries first, then a full walk, then changed paths.
    pub fn take(&mut self, roots: &[PathBuf]) -> Option<PassPlan> {
        if self.full_retry {
            *self = PassQueue::default();
            return Some(PassPlan {
                roots: roots.to_vec(),
                retry_failed: true,
                full: true,
            });
        }
        if !self.retry_paths.is_empty() {
            let paths = outermost(std::mem::take(&mut self.retry_paths));
            if !paths.is_empty() {
                return Some(PassPlan {
                    roots: paths,
                    retry_failed: true,
                    full: false,
                });
            }
        }
        if self.full {
            self.full = false;
            self.paths.clear();
            return Some(PassPlan {
                roots: roots.to_vec(),
                retry_failed: false,
                full: true,
            });
        }
        let paths = outermost(std::mem::take(&mut self.paths));
        (!paths.is_empty()).then_some(PassPlan {
            roots: paths,
            retry_failed: false,
            full: false,
        })
    }
}

/// Paths that still exist, without those inside another one of the set (a walk of a directory
/// already yields its files; walking them again would queue them twice).
fn outermost(paths: BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if out.last().is_some_and(|k| p.starts_with(k)) || !p.exists() {
            continue;
        }
        out.push(p);
    }
    out
}

/// The wanted file extensions, lower case, as the walk and the watcher compare them.
fn extensions(cfg: &crate::Config) -> Vec<String> {
    cfg.library
        .extensions
        .iter()
        .map(|e| e.to_ascii_lowercase())
        .collect()
}

/// State that only the long-running service has.
pub struct ServiceState {
    pub config_path: Option<PathBuf>,
    pub passes: u64,
    /// `trackmill drain`: no new files start until `resume`.
    pub paused: bool,
    next_rescan: Option<Instant>,
    changes: BTreeSet<PathBuf>,
    first_change: Option<Instant>,
    last_change: Instant,
    changes_overflowed: bool,
    /// Filled by the watcher thread, bounded there.
    watched: crate::watch::ChangeSet,
    watcher: Option<notify::RecommendedWatcher>,
    events: mpsc::UnboundedSender<Event>,
    pub watchdog: Option<crate::systemd::Watchdog>,
    last_status_note: Instant,
}

impl ServiceState {
    pub fn new(
        cfg: &crate::Config,
        config_path: Option<PathBuf>,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Self {
        let mut s = ServiceState {
            config_path,
            passes: 0,
            paused: false,
            next_rescan: None,
            changes: BTreeSet::new(),
            first_change: None,
            last_change: Instant::now(),
            changes_overflowed: false,
            watched: crate::watch::ChangeSet::default(),
            watcher: None,
            events: events.clone(),
            watchdog: crate::systemd::Watchdog::from_env(),
            last_status_note: Instant::now(),
        };
        s.watch(cfg);
        s
    }

    /// A new rescan interval counts from now.
    pub fn reschedule(&mut self, every: Duration) {
        self.next_rescan = (!every.is_zero()).then(|| Instant::now() + every);
    }

    /// File-system changes are being collected for the next pass.
    pub fn changes_waiting(&self) -> bool {
        self.first_change.is_some()
    }

    /// (Re)starts watching the library roots, if `service.watch` is on.
    pub fn watch(&mut self, cfg: &crate::Config) {
        self.watcher = None;
        if cfg.service.watch {
            self.watcher = crate::watch::start(
                &cfg.library.roots,
                extensions(cfg),
                self.watched.clone(),
                self.events.clone(),
            );
        }
    }
}

impl Supervisor {
    pub(super) fn paused(&self) -> bool {
        self.service.as_ref().is_some_and(|s| s.paused)
    }

    /// The walk to start now, if one is due and none is running.
    pub(super) fn next_pass(&mut self) -> Option<ScanSettings> {
        if self.phase != Phase::Running || self.pass_active || self.paused() {
            return None;
        }
        let plan = self.pending.take(&self.roots)?;
        self.pass_active = true;
        self.scan_done = false;
        self.claims_done = false;
        self.policy.retry_failed = plan.retry_failed;
        self.sweep_due = plan.full.then(|| plan.roots.clone());
        if let Some(svc) = self.service.as_mut() {
            svc.passes += 1;
            if plan.full {
                let every = self.cfg.service.rescan_interval;
                svc.next_rescan = (!every.is_zero()).then(|| Instant::now() + every);
            }
            tracing::info!(
                "pass {}: {} {}{}",
                svc.passes,
                if plan.full {
                    "library"
                } else {
                    "changed paths"
                },
                plan.roots
                    .iter()
                    .take(3)
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if plan.roots.len() > 3 {
                    format!(" and {} more", plan.roots.len() - 3)
                } else {
                    String::new()
                }
            );
        }
        Some(ScanSettings {
            roots: plan.roots,
            extensions: extensions(&self.cfg),
            follow_symlinks: self.cfg.library.follow_symlinks,
        })
    }

    /// The service's pass has settled every file: go idle until the next one.
    pub(super) fn pass_finished(&mut self) {
        self.pass_active = false;
        self.policy.retry_failed = false;
        let s = &self.summary;
        tracing::info!(
            "pass finished: {} files seen, {} analysed, {} unchanged, {} failed, {} quarantined so far; idle",
            s.files_seen,
            s.analyzed,
            s.skipped_unchanged,
            s.failed_total(),
            s.quarantined
        );
        self.note_status();
    }

    pub(super) fn on_started(&mut self) {
        if let Some(svc) = self.service.as_ref() {
            tracing::info!(
                "serving {} root(s) with {} workers; rescan every {:?}, watching: {}",
                self.roots.len(),
                self.pool.target(),
                self.cfg.service.rescan_interval,
                svc.watcher.is_some()
            );
            crate::systemd::ready();
        }
    }

    /// Takes what the watcher collected (already filtered and bounded there) into the changes
    /// waiting for their debounce; this set is bounded by the same limit.
    pub(super) fn on_fs_changed(&mut self) {
        let Some(svc) = self.service.as_mut() else {
            return;
        };
        let taken = svc.watched.take();
        if taken.paths.is_empty() && !taken.overflowed {
            return;
        }
        let now = Instant::now();
        svc.first_change.get_or_insert(now);
        svc.last_change = now;
        if svc.changes_overflowed {
            return;
        }
        svc.changes.extend(taken.paths);
        if taken.overflowed || svc.changes.len() > MAX_PATHS {
            svc.changes.clear();
            svc.changes_overflowed = true;
        }
    }

    /// Timers of the service: rescan interval, debounced changes, watchdog, status line.
    pub(super) fn service_tick(&mut self, now: Instant) {
        let Some(svc) = self.service.as_mut() else {
            return;
        };
        if let Some(w) = svc.watchdog.as_mut() {
            w.tick(now);
        }
        if svc.next_rescan.is_some_and(|t| now >= t) {
            svc.next_rescan = None;
            self.pending.add_full(false);
        }
        let debounce = self.cfg.service.watch_debounce;
        if let Some(first) = svc.first_change {
            let quiet = now.duration_since(svc.last_change) >= debounce;
            let too_long = now.duration_since(first) >= debounce * MAX_DEBOUNCES;
            if quiet || too_long {
                svc.first_change = None;
                if std::mem::take(&mut svc.changes_overflowed) {
                    self.pending.add_full(false);
                } else {
                    let changes = std::mem::take(&mut svc.changes);
                    tracing::debug!("{} changed paths under the library", changes.len());
                    self.pending.add_paths(changes, false);
                }
            }
        }
        if now.duration_since(svc.last_status_note) >= Duration::from_secs(5) {
            svc.last_status_note = now;
            self.note_status();
        }
    }

    /// A one-line state for systemd (`systemctl status`).
    fn note_status(&mut self) {
        if self.service.is_none() {
            return;
        }
        let s = &self.summary;
        crate::systemd::status(&format!(
            "{}; {} workers ({} busy); {} analysed, {} failed, {} quarantined, {} unchanged",
            if self.pass_active { "scanning" } else { "idle" },
            self.pool.alive(),
            self.pool.busy(),
            s.analyzed,
            s.failed_total(),
            s.quarantined,
            s.skipped_unchanged
        ));
    }

    /// True when a retry or change request for `path` lies inside the library.
    pub(super) fn in_library(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_missing_paths_are_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("album")).unwrap();
        std::fs::write(d.join("album/a.mp3"), b"").unwrap();
        std::fs::write(d.join("b.mp3"), b"").unwrap();
        let mut p = PassQueue::default();
        p.add_paths(
            [
                d.join("album/a.mp3"),
                d.join("album"),
                d.join("b.mp3"),
                d.join("gone.mp3"),
            ],
            false,
        );
        let plan = p.take(&[d.to_path_buf()]).unwrap();
        assert!(!plan.full && !plan.retry_failed);
        assert_eq!(plan.roots, vec![d.join("album"), d.join("b.mp3")]);
        assert!(p.is_empty());
        assert!(p.take(&[d.to_path_buf()]).is_none());
    }

    #[test]
    fn retries_come_first_and_a_full_pass_covers_changes() {
        let root = PathBuf::from("/");
        let mut p = PassQueue::default();
        p.add_paths([root.clone()], false);
        p.add_full(false);
        p.add_paths([root.clone()], true);
        let first = p.take(std::slice::from_ref(&root)).unwrap();
        assert!(first.retry_failed && !first.full);
        let second = p.take(std::slice::from_ref(&root)).unwrap();
        assert!(second.full && !second.retry_failed);
        assert!(p.take(std::slice::from_ref(&root)).is_none());
    }
}
