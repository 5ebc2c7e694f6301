//! The streaming scanner: walks the library roots in a thread and sends batches of files through
//! a bounded channel with a blocking send, so a slow pipeline stops the walk (backpressure) and
//! the supervisor never holds the library's file list. Symlink loops, unreadable directories and
//! non-UTF-8 names are handled; paths travel as bytes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use trackmill_types::{FileKey, PathBytes};

/// Files per batch sent to the supervisor (one skip-check round trip each).
pub const BATCH: usize = 256;
/// A partial batch is sent after this long, so a slow file system still makes progress.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

pub enum ScanMsg {
    Batch(Vec<FileKey>),
    /// Something could not be read; logged and counted, never fatal.
    Error(String),
    Done,
}

pub struct ScanSettings {
    pub roots: Vec<PathBuf>,
    /// Lower-case extensions; empty means every regular file.
    pub extensions: Vec<String>,
    pub follow_symlinks: bool,
}

/// Starts the scanner thread. Dropping the receiver (or setting `stop`) ends it.
pub fn start(
    settings: ScanSettings,
    tx: mpsc::Sender<ScanMsg>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("scanner".into())
        .spawn(move || walk(settings, tx, stop))
        .expect("spawn scanner thread")
}

pub(crate) fn wanted(name: &OsStr, exts: &[String]) -> bool {
    if exts.is_empty() {
        return true;
    }
    let bytes = name.as_bytes();
    let Some(dot) = bytes.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let ext = &bytes[dot + 1..];
    exts.iter().any(|e| e.as_bytes().eq_ignore_ascii_case(ext))
}

fn walk(settings: ScanSettings, tx: mpsc::Sender<ScanMsg>, stop: Arc<AtomicBool>) {
    let mut batch: Vec<FileKey> = Vec::with_capacity(BATCH);
    let mut first_at = Instant::now();
    for root in &settings.roots {
        let walker = walkdir::WalkDir::new(root)
            .follow_links(settings.follow_symlinks)
            .into_iter();
        for entry in walker {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let msg = match e.loop_ancestor() {
                        Some(anc) => format!(
                            "symlink loop at {} (back to {})",
                            lossy(e.path()),
                            anc.display()
                        ),
                        None => format!(
                            "cannot read {}: {}",
                            lossy(e.path()),
                            e.io_error().map_or(e.to_string(), |io| io.to_string())
                        ),
                    };
                    if tx.blocking_send(ScanMsg::Error(msg)).is_err() {
                        return;
                    }
                    continue;
                }
            };
            if !entry.file_type().is_file() || !wanted(entry.file_name(), &settings.extensions) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    if tx
                        .blocking_send(ScanMsg::Error(format!(
                            "cannot stat {}: {e}",
                            lossy(Some(entry.path()))
                        )))
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                first_at = Instant::now();
            }
            batch.push(FileKey {
                path: PathBytes::from_path(entry.path()),
                size: meta.len(),
                mtime_ns: meta
                    .mtime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(meta.mtime_nsec()),
            });
            if batch.len() >= BATCH || first_at.elapsed() >= FLUSH_AFTER {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.blocking_send(ScanMsg::Batch(full)).is_err() {
                    return;
                }
            }
        }
    }
    if !batch.is_empty() && tx.blocking_send(ScanMsg::Batch(batch)).is_err() {
        return;
    }
    let _ = tx.blocking_send(ScanMsg::Done);
}

fn lossy(p: Option<&std::path::Path>) -> String {
    p.map_or_else(
        || "?".into(),
        |p| String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn collect(root: &std::path::Path, exts: Vec<String>) -> (Vec<FileKey>, Vec<String>) {
        let (tx, mut rx) = mpsc::channel(2);
        let h = start(
            ScanSettings {
                roots: vec![root.to_path_buf()],
                extensions: exts,
                follow_symlinks: true,
            },
            tx,
            Arc::new(AtomicBool::new(false)),
        );
        let (mut files, mut errors) = (Vec::new(), Vec::new());
        while let Some(m) = rx.blocking_recv() {
            match m {
                ScanMsg::Batch(b) => files.extend(b),
                ScanMsg::Error(e) => errors.push(e),
                ScanMsg::Done => break,
            }
        }
        h.join().unwrap();
        (files, errors)
    }

    #[test]
    fn finds_files_survives_loops_and_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("a")).unwrap();
        std::fs::write(d.join("a/x.mp3"), b"1").unwrap();
        std::fs::write(d.join("a/cover.jpg"), b"1").unwrap();
        let odd = std::ffi::OsString::from_vec(b"bad\xffname.FLAC".to_vec());
        std::fs::write(d.join("a").join(&odd), b"1").unwrap();
        std::os::unix::fs::symlink(d, d.join("a/loop")).unwrap();
        let (files, errors) = collect(d, vec!["mp3".into(), "flac".into()]);
        let mut names: Vec<Vec<u8>> = files.iter().map(|f| f.path.0.clone()).collect();
        names.sort();
        assert_eq!(files.len(), 2, "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(b"bad\xffname.FLAC")));
        assert!(errors.iter().any(|e| e.contains("loop")), "{errors:?}");
    }

    #[test]
    fn blocking_send_is_backpressure() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(BATCH * 4) {
            std::fs::write(dir.path().join(format!("{i}.wav")), b"").unwrap();
        }
        let (tx, mut rx) = mpsc::channel(1);
        let h = start(
            ScanSettings {
                roots: vec![dir.path().into()],
                extensions: vec!["wav".into()],
                follow_symlinks: false,
            },
            tx,
            Arc::new(AtomicBool::new(false)),
        );
        // One batch fits in the channel; the scanner then blocks until we receive.
        let first = rx.blocking_recv();
        assert!(matches!(first, Some(ScanMsg::Batch(_))));
        drop(rx);
        h.join().unwrap();
    }
}
