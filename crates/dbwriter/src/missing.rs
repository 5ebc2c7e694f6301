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
    let row = conn.query_one("SELECT MIN(id), MAX(id) FROM tracks", &[])?;
    Ok(row.and_then(|r| Some((r[0].i64()?, r[1].i64()?))))
}

/// True when the file at `path` is gone for certain: it, or a directory on its way, does not
/// exist. Any other error (permissions, I/O) says nothing about it.
fn gone(path: &[u8]) -> bool {
    match std::fs::metadata(std::ffi::OsStr::from_bytes(path)) {
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory),
    }
}

/// Marks the gone files among the unmarked tracks with ids in `(start, end]` under `prefixes`;
/// returns how many.
pub(crate) fn sweep_window(
    conn: &mut dyn Conn,
    prefixes: &[Vec<u8>],
    start: i64,
    end: i64,
    now: i64,
) -> Result<u64, DbError> {
    let rows = conn.query(
        "SELECT id, path FROM tracks WHERE id > $1 AND id <= $2 AND missing_since IS NULL",
        &[Val::I64(start), Val::I64(end)],
    )?;
    let mut marked = 0;
    for r in rows {
        let (Some(id), Some(path)) = (r[0].i64(), r[1].bytes()) else {
            continue;
        };
        if prefixes.iter().any(|p| path.starts_with(p)) && gone(path) {
            marked += conn.exec(
                "UPDATE tracks SET missing_since = $1 WHERE id = $2",
                &[Val::I64(now), Val::I64(id)],
            )?;
        }
    }
    Ok(marked)
}

/// Deletes every missing track (their features, artists and embeddings go with them; their
/// attempts stay, detached); returns how many. With `dry_run`, only counts them.
pub(crate) fn prune(conn: &mut dyn Conn, dry_run: bool) -> Result<u64, DbError> {
    if dry_run {
        return count(conn);
    }
    conn.exec("DELETE FROM tracks WHERE missing_since IS NOT NULL", &[])
}

/// Tracks marked missing.
pub(crate) fn count(conn: &mut dyn Conn) -> Result<u64, DbError> {
    let row = conn.query_one(
        "SELECT COUNT(*) FROM tracks WHERE missing_since IS NOT NULL",
        &[],
    )?;
    Ok(row
        .and_then(|r| r[0].i64())
        .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}
