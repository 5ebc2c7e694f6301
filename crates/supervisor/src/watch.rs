//! File-system change notifications for `serve` (inotify through the `notify` crate): created,
//! written, moved-in files and directories under the library roots become one
//! [`Event::FsChanged`] each; the supervisor coalesces them into a pass over what changed.

use crate::event::Event;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::PathBuf;
use tokio::sync::mpsc::UnboundedSender;

/// Watches every root recursively; `None` (with a warning) when the watcher cannot start, in which
/// case the rescan interval alone finds new files.
pub fn start(
    roots: &[PathBuf],
    events: UnboundedSender<Event>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            let wanted = matches!(
                ev.kind,
                EventKind::Create(_)
                    | EventKind::Modify(_)
                    | EventKind::Access(AccessKind::Close(AccessMode::Write))
            );
            if wanted && !ev.paths.is_empty() {
                let _ = events.send(Event::FsChanged(ev.paths));
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
