//! Tracks whose files are gone. After a completed pass over the library the writer looks at every
//! stored track under the pass's roots, in windows of row ids, and marks those whose file no
//! longer exists (`missing_since`); the row keeps its status and analysis. A file seen again is
//! unmarked (by the check that finds it, or by the store of its new analysis), so a disk that
//! was unmounted for a pass costs nothing once it is back. Queries skip missing tracks; `prune`
//! deletes them.

use crate::conn::Conn;
use crate::val::{sha256, Val};
use crate::DbError;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use trackmill_types::{FileKey, PathBytes};

/// Rows looked at per transaction.
pub(crate) const WINDOW: i64 = 1000;

/// The file of `f` exists again.
pub(crate) fn mark_present(conn: &mut dyn Conn, f: &FileKey) -> Result<(), DbError> {
    conn.exec(
        "UPDATE tracks SET missing_since = NULL WHERE path_sha = $1",
        &[sha256(f.path.as_bytes())],
    )?;
    Ok(())
}

/// The roots worth sweeping, each as the byte prefix its tracks' paths start with. A root that
/// is not a directory with at least one entry is left out: an unmounted disk leaves an empty
/// mount point, and its tracks are not gone.
pub(crate) fn prefixes(roots: &[PathBytes]) -> Vec<Vec<u8>> {
    roots
        .iter()
        .filter(|r| {
            let dir = Path::new(std::ffi::OsStr::from_bytes(r.as_bytes()));
            let ok = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
            if !ok {
                tracing::warn!(
                    "{}: not a directory with entries (an unmounted disk?); its tracks are not \
                     marked missing",
                    dir.display()
                );
            }
            ok
        })
        .map(|r| {
            let mut p = r.as_bytes().to_vec();
            if p.last() != Some(&b'/') {
                p.push(b'/');
            }
            p
        })
        .collect()
}

/// The range of row ids to sweep, `None` when there are no tracks.
pub(crate) fn id_range(conn: &mut dyn Conn) -> Result<Option<(i64, i64)>, DbError> {
    crate::conn::key_range(conn, "tracks", "id")
}

/// Answers "is this file gone for certain?", remembering what it learnt of each directory.
///
/// A file is gone when it, or a directory on its way, does not exist, and the nearest ancestor
/// that does exist is a directory with entries: an unmounted disk leaves an empty mount point, so
/// the files below one (a disk mounted inside a root, an automounter that failed, a link to such
/// a mount) are not gone, only out of reach. Any other error (permissions, I/O) says nothing.
#[derive(Default)]
pub(crate) struct Gone {
    /// Directory → its state (see [`Gone::dir_state`]), for the ancestors already looked at.
    dirs: std::collections::HashMap<std::path::PathBuf, Option<bool>>,
}

impl Gone {
    pub(crate) fn check(&mut self, path: &[u8]) -> bool {
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        match std::fs::metadata(path) {
            Ok(_) => return false,
            Err(e) if !not_there(&e) => return false,
            Err(_) => {}
        }
        for dir in path.ancestors().skip(1) {
            if let Some(has_entries) = self.dir_state(dir) {
                return has_entries;
            }
        }
        false
    }

    /// `None`: `dir` does not exist; `Some(true)`: a directory with entries (or a file where a
    /// directory was: the path cannot come back as it was); `Some(false)`: an empty directory,
    /// or one that cannot be read.
    fn dir_state(&mut self, dir: &Path) -> Option<bool> {
        if let Some(v) = self.dirs.get(dir) {
            return *v;
        }
        let v = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                Some(std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()))
            }
            Ok(_) => Some(true),
            Err(e) if not_there(&e) => None,
            Err(_) => Some(false),
        };
        self.dirs.insert(dir.to_path_buf(), v);
        v
    }
}

fn not_there(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// The tracks with ids in `(start, end]`, marked missing or not: (id, path).
pub(crate) fn window(
    conn: &mut dyn Conn,
    start: i64,
    end: i64,
    marked: bool,
) -> Result<Vec<(i64, Vec<u8>)>, DbError> {
    let rows = conn.query(
        &format!(
            "SELECT id, path FROM tracks WHERE id > $1 AND id <= $2 AND missing_since IS {}NULL",
            if marked { "NOT " } else { "" }
        ),
        &[Val::I64(start), Val::I64(end)],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r[0].i64()?, r[1].bytes()?.to_vec())))
        .collect())
}

/// Marks the tracks `ids` missing (those not marked meanwhile); returns how many.
pub(crate) fn mark(conn: &mut dyn Conn, ids: &[i64], now: i64) -> Result<u64, DbError> {
    let mut n = 0;
    for id in ids {
        n += conn.exec(
            "UPDATE tracks SET missing_since = $1 WHERE id = $2 AND missing_since IS NULL",
            &[Val::I64(now), Val::I64(*id)],
        )?;
    }
    Ok(n)
}

/// Deletes the missing tracks whose files are still gone (their features, artists, embeddings
/// and similarity rows go with them, and they leave the library statistics; their attempts stay,
/// detached) and unmarks those that are back, one window of
/// row ids at a time; returns how many are (with `dry_run`: would be) deleted.
pub(crate) fn prune(conn: &mut dyn Conn, dry_run: bool) -> Result<u64, DbError> {
    let Some((first, last)) = id_range(conn)? else {
        return Ok(0);
    };
    let mut gone = Gone::default();
    let mut deleted = 0;
    let mut start = first - 1;
    while start < last {
        let end = start.saturating_add(WINDOW);
        for (id, path) in window(conn, start, end, true)? {
            let still_gone = gone.check(&path);
            if !dry_run && still_gone {
                let removed = crate::simstore::removal(conn, &[id])?;
                conn.exec("DELETE FROM tracks WHERE id = $1", &[Val::I64(id)])?;
                conn.query_many(&removed.statements())?;
            } else if !dry_run {
                conn.exec(
                    "UPDATE tracks SET missing_since = NULL WHERE id = $1",
                    &[Val::I64(id)],
                )?;
            }
            deleted += u64::from(still_gone);
        }
        start = end;
    }
    Ok(deleted)
}

/// Tracks marked missing.
pub(crate) fn count(conn: &mut dyn Conn) -> Result<u64, DbError> {
    crate::conn::count(
        conn,
        "SELECT COUNT(*) FROM tracks WHERE missing_since IS NOT NULL",
    )
}
