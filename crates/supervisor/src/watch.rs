//! File-system change notifications for `serve` (inotify through the `notify` crate). The watcher
//! thread coalesces created, written and moved-in paths into one bounded set shared with the
//! event loop and wakes the loop with a single [`Event::FsChanged`] until the loop takes the set:
//! a burst of any size (100,000 files copied in, a tool touching every file) costs at most
//! [`MAX_CHANGES`] paths and one queued event; past the bound it collapses to "walk the whole
//! library", as does an overflow of the kernel's own event queue (events lost).

use crate::event::Event;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc::UnboundedSender;

/// Most changed paths held between two takes; more means the next pass walks the whole library.
pub const MAX_CHANGES: usize = 10_000;

/// Changes seen since the event loop last took them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Directories and files with a wanted extension (at most [`MAX_CHANGES`]).
    pub paths: BTreeSet<PathBuf>,
    /// More than [`MAX_CHANGES`] paths changed: `paths` is empty and the whole library is due.
    pub overflowed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    changes: Changes,
    /// An [`Event::FsChanged`] is queued and not yet taken: no second one is sent.
    woken: bool,
}

/// The set the watcher fills and the event loop empties.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet(Arc<Mutex<Shared>>);

impl ChangeSet {
    /// Adds paths; true when the event loop must be woken (nothing was waiting before).
    pub fn add(&self, paths: impl IntoIterator<Item = PathBuf>) -> bool {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut added = false;
        for p in paths {
            added = true;
            if s.changes.overflowed {
                continue;
            }
            s.changes.paths.insert(p);
            if s.changes.paths.len() > MAX_CHANGES {
                s.changes.paths = BTreeSet::new();
                s.changes.overflowed = true;
            }
        }
        added && !std::mem::replace(&mut s.woken, true)
    }

    /// Changes were lost (the kernel's event queue overflowed): the whole library is due. True
    /// when the event loop must be woken.
    pub fn lost(&self) -> bool {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.changes.paths = BTreeSet::new();
        s.changes.overflowed = true;
        !std::mem::replace(&mut s.woken, true)
    }

    /// Everything collected so far; the next change wakes the loop again.
    pub fn take(&self) -> Changes {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.woken = false;
        std::mem::take(&mut s.changes)
    }
}

/// Watches every root recursively, keeping only what a walk would pick up (a directory, or a file
/// with one of `extensions`, lower case) so that a cover image or a database file inside the
/// library never starts a pass. `None` (with a warning) when the watcher cannot start, in which
/// case the rescan interval alone finds new files.
pub fn start(
    roots: &[PathBuf],
    extensions: Vec<String>,
    changes: ChangeSet,
    events: UnboundedSender<Event>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if ev.need_rescan() => {
            tracing::warn!("file-system watch: events were lost; the whole library is due");
            if changes.lost() {
                let _ = events.send(Event::FsChanged);
            }
        }
        Ok(ev) => {
            let wanted = matches!(
                ev.kind,
                EventKind::Create(_)
                    | EventKind::Modify(_)
                    | EventKind::Access(AccessKind::Close(AccessMode::Write))
            );
            if !wanted {
                return;
            }
            let paths = ev.paths.into_iter().filter(|p| {
                p.is_dir()
                    || p.file_name()
                        .is_some_and(|n| crate::scanner::wanted(n, &extensions))
            });
            if changes.add(paths) {
                let _ = events.send(Event::FsChanged);
            }
        }
        Err(e) => tracing::warn!("file-system watch: {e}"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the library ({e}); relying on the rescan interval");
            return None;
        }
    };
    for root in roots {
        if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
            tracing::warn!(
                "cannot watch {} ({e}; raise fs.inotify.max_user_watches?); relying on the rescan interval",
                root.display()
            );
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_wakes_once_and_collapses_past_the_bound() {
        let set = ChangeSet::default();
        assert!(!set.add(std::iter::empty()), "nothing changed: no wake");
        assert!(set.add([PathBuf::from("/lib/a.mp3")]));
        assert!(!set.add([PathBuf::from("/lib/b.mp3")]), "already woken");
        let first = set.take();
        assert_eq!(first.paths.len(), 2);
        assert!(!first.overflowed);

        let burst = (0..MAX_CHANGES * 3).map(|i| PathBuf::from(format!("/lib/{i}.mp3")));
        assert!(set.add(burst), "taken: the next change wakes again");
        assert!(!set.add([PathBuf::from("/lib/late.mp3")]));
        {
            let s = set.0.lock().unwrap();
            assert!(s.changes.paths.is_empty(), "no path kept past the bound");
            assert!(s.changes.overflowed);
        }
        let taken = set.take();
        assert!(taken.overflowed && taken.paths.is_empty());
        assert_eq!(set.take(), Changes::default());

        assert!(set.add([PathBuf::from("/lib/a.mp3")]));
        assert!(!set.lost(), "already woken");
        let lost = set.take();
        assert!(
            lost.overflowed && lost.paths.is_empty(),
            "lost events mean a full walk"
        );
        assert!(set.lost(), "taken: a loss wakes the loop");
    }
}
