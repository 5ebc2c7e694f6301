//! The streaming scanner: walks the library roots in a thread and sends batches of files through
//! a bounded channel with a blocking send, so a slow pipeline stops the walk (backpressure) and
//! the supervisor never holds the library's file list. Symlink loops, unreadable directories and
//! non-UTF-8 names are handled; paths travel as bytes.
//!
//! A file is yielded once per pass even when links make it reachable under several paths (a
//! symlinked album, links fanning out over the same directories, hard links): the others are
//! counted as aliases ([`Aliases`]). A file reached through a symbolic link whose real path lies
//! under a root is always an alias (the walk reaches it at its real path); other candidates (hard
//! links, link targets outside the roots) are told apart by device and inode in a set of at most
//! [`MAX_TRACKED`] entries, so memory stays bounded whatever the library holds.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use trackmill_types::{FileKey, PathBytes};

/// Files per batch sent to the supervisor (one skip-check round trip each).
pub const BATCH: usize = 256;
/// A partial batch is sent after this long, so a slow file system still makes progress.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Files remembered by device and inode per pass (hard links and files reached through links
/// that leave the roots); past this, further such aliases are no longer recognised.
pub const MAX_TRACKED: usize = 100_000;

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

/// Starts the scanner thread. Dropping the receiver (or setting `stop`) ends it. `aliases` is
/// increased by one for every file skipped because this pass already yielded it under another
/// path (the run's summary reads it).
pub fn start(
    settings: ScanSettings,
    tx: mpsc::Sender<ScanMsg>,
    stop: Arc<AtomicBool>,
    aliases: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("scanner".into())
        .spawn(move || walk(settings, tx, stop, aliases))
        .expect("spawn scanner thread")
}

/// Which files of one pass are the same file under another path.
pub struct Aliases {
    /// The pass's roots (absolute, without symbolic links).
    roots: Vec<PathBuf>,
    /// (device, inode) of the candidates yielded so far.
    seen: HashSet<(u64, u64)>,
    count: Arc<AtomicU64>,
    warned: bool,
}

impl Aliases {
    pub fn new(roots: Vec<PathBuf>, count: Arc<AtomicU64>) -> Self {
        Aliases {
            roots,
            seen: HashSet::new(),
            count,
            warned: false,
        }
    }

    /// True when the file at `path` (reached through a symbolic link when `via_link`) was or
    /// will be yielded under another path in this pass; it is then counted.
    pub fn is_alias(&mut self, path: &Path, via_link: bool, meta: &std::fs::Metadata) -> bool {
        let alias = if via_link
            && std::fs::canonicalize(path)
                .is_ok_and(|real| real != path && self.roots.iter().any(|r| real.starts_with(r)))
        {
            true
        } else if via_link || meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if self.seen.contains(&key) {
                true
            } else {
                if self.seen.len() < MAX_TRACKED {
                    self.seen.insert(key);
                } else if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        "scan: more than {MAX_TRACKED} linked files; further aliases are not recognised in this pass"
                    );
                }
                false
            }
        } else {
            false
        };
        if alias {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        alias
    }
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

fn walk(
    settings: ScanSettings,
    tx: mpsc::Sender<ScanMsg>,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) {
    let mut batch: Vec<FileKey> = Vec::with_capacity(BATCH);
    let mut first_at = Instant::now();
    let mut aliases = Aliases::new(settings.roots.clone(), count.clone());
    for root in &settings.roots {
        let walker = walkdir::WalkDir::new(root)
            .follow_links(settings.follow_symlinks)
            .into_iter();
        // Per depth of the current directory chain: whether a symbolic link led there.
        let mut linked: Vec<bool> = Vec::new();
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
            let parent_linked = entry
                .depth()
                .checked_sub(1)
                .and_then(|d| linked.get(d).copied())
                .unwrap_or(false);
            let via_link = parent_linked || entry.path_is_symlink();
            if entry.file_type().is_dir() {
                linked.truncate(entry.depth());
                linked.push(via_link);
                continue;
            }
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
            if aliases.is_alias(entry.path(), via_link, &meta) {
                continue;
            }
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
    let n = count.load(Ordering::Relaxed);
    if n > 0 {
        tracing::info!("scan: {n} aliases skipped (files already found under another path)");
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
            Arc::default(),
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
    fn links_fanning_out_over_one_album_yield_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        // f0/album holds the files; f1..f8 each hold two links to the level below: 2^8 paths
        // lead to every file.
        std::fs::create_dir_all(d.join("f0/album")).unwrap();
        for i in 0..3 {
            std::fs::write(d.join(format!("f0/album/{i}.flac")), b"1").unwrap();
        }
        for level in 1..=8 {
            let here = d.join(format!("f{level}"));
            std::fs::create_dir(&here).unwrap();
            for name in ["a", "b"] {
                std::os::unix::fs::symlink(format!("../f{}", level - 1), here.join(name)).unwrap();
            }
        }
        // A hard link and a link to a file outside the root count once each.
        std::fs::hard_link(d.join("f0/album/0.flac"), d.join("hard.flac")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.flac"), b"1").unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.flac"), d.join("out1.flac")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.flac"), d.join("out2.flac")).unwrap();

        let (tx, mut rx) = mpsc::channel(2);
        let count = Arc::new(AtomicU64::new(0));
        let h = start(
            ScanSettings {
                roots: vec![d.clone()],
                extensions: vec!["flac".into()],
                follow_symlinks: true,
            },
            tx,
            Arc::new(AtomicBool::new(false)),
            count.clone(),
        );
        let mut files = Vec::new();
        while let Some(m) = rx.blocking_recv() {
            match m {
                ScanMsg::Batch(b) => files.extend(b),
                ScanMsg::Error(e) => panic!("{e}"),
                ScanMsg::Done => break,
            }
        }
        h.join().unwrap();
        let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
        // 0.flac (or its hard link), 1.flac, 2.flac, and x.flac once.
        assert_eq!(files.len(), 4, "{names:#?}");
        assert!(
            names.iter().any(|n| n.ends_with("f0/album/1.flac")),
            "{names:#?}"
        );
        // 2 + 4 + … + 256 = 510 paths through links to each of the 3 files, plus the second
        // name of the hard link and the second link to the outside file.
        assert_eq!(count.load(Ordering::Relaxed), 510 * 3 + 2, "{names:#?}");
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
            Arc::default(),
        );
        // One batch fits in the channel; the scanner then blocks until we receive.
        let first = rx.blocking_recv();
        assert!(matches!(first, Some(ScanMsg::Batch(_))));
        drop(rx);
        h.join().unwrap();
    }
}
