//! Read side for the similarity queries: the library statistics, the stored similarity rows of
//! every analysed track streamed in windows of row ids (so a query holds one window, whatever the
//! library size, in both sinks), and a track's path and tags, looked up only for the few tracks a
//! query keeps.

use crate::conn::Conn;
use crate::simstore::VERSION;
use crate::val::Val;
use crate::{annotate, open, open_read_only, DbError, DbUrl};
use trackmill_similarity::vector::STAT_DIMS;
use trackmill_similarity::LibraryStats;

/// What is shown and written for a track: its path and tags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackMeta {
    pub id: i64,
    /// The path as stored (bytes).
    pub path: Vec<u8>,
    pub title: Option<String>,
    /// First track artist.
    pub artist: Option<String>,
    pub album: Option<String>,
    pub album_artist: Option<String>,
    pub duration_s: Option<f64>,
}

/// One stored similarity row (`trackmill_similarity::StoredView::parse` reads it).
#[derive(Clone, Debug, PartialEq)]
pub struct SimilarityRow {
    pub id: i64,
    pub data: Vec<u8>,
}

/// A read connection for similarity queries.
pub struct TrackReader {
    conn: Box<dyn Conn>,
}

fn opt_text(v: &Val) -> Option<String> {
    v.str().filter(|s| !s.is_empty()).map(str::to_owned)
}

impl TrackReader {
    /// Opens the database, applying migrations as every reader does.
    pub fn open(url: &DbUrl) -> Result<Self, DbError> {
        Ok(TrackReader {
            conn: open(url).map_err(|e| annotate(url, e))?,
        })
    }

    /// Opens the database read-only, for the API server: no migrations (the DB writer applies
    /// them), SQLite opened read-only, PostgreSQL transactions read-only by default. A schema
    /// older than [`crate::SCHEMA_VERSION`] is refused with a clear error (the service's DB
    /// writer migrates it when it starts).
    pub fn open_read_only(url: &DbUrl) -> Result<Self, DbError> {
        let mut conn = open_read_only(url).map_err(|e| annotate(url, e))?;
        // No migrations table yet reads as version 0: nothing was ever migrated.
        let version = crate::schema::version(conn.as_mut()).unwrap_or(0);
        if version < crate::SCHEMA_VERSION {
            return Err(DbError::Schema(format!(
                "the database's schema is version {version}, this trackmill reads version {}: \
                 a scan or the service's DB writer migrates it",
                crate::SCHEMA_VERSION
            )));
        }
        Ok(TrackReader { conn })
    }

    /// Number of analysed tracks (those whose files are missing left out).
    pub fn count(&mut self) -> Result<u64, DbError> {
        crate::conn::count(
            self.conn.as_mut(),
            "SELECT COUNT(*) FROM tracks WHERE status = 'analyzed' AND missing_since IS NULL",
        )
    }

    /// The library statistics of every stored track (those marked missing included: they are
    /// still part of the library until pruned).
    pub fn stats(&mut self) -> Result<LibraryStats, DbError> {
        let rows = self.conn.query(
            "SELECT dim, n, total, total_sq FROM similarity_stats WHERE version = $1",
            &[Val::I64(VERSION)],
        )?;
        let (mut n, mut sum, mut sum_sq) =
            ([0u64; STAT_DIMS], [0f64; STAT_DIMS], [0f64; STAT_DIMS]);
        for r in rows {
            let Some(i) = r[0].i64().and_then(|i| usize::try_from(i).ok()) else {
                continue;
            };
            if i < STAT_DIMS {
                n[i] = r[1].i64().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                sum[i] = r[2].f64().unwrap_or(0.0);
                sum_sq[i] = r[3].f64().unwrap_or(0.0);
            }
        }
        Ok(LibraryStats::from_sums(&n, &sum, &sum_sq))
    }

    /// First and last row id that has a stored similarity row; `None` for an empty library.
    pub fn bounds(&mut self) -> Result<Option<(i64, i64)>, DbError> {
        crate::conn::key_range(self.conn.as_mut(), "similarity", "track_id")
    }

    /// The stored rows of the analysed tracks with `after < id <= upto`, in id order, leaving out
    /// tracks marked missing. Two range reads: the narrow similarity table, and the index of
    /// missing tracks (small), so no per-row lookup into the tracks table.
    pub fn window(&mut self, after: i64, upto: i64) -> Result<Vec<SimilarityRow>, DbError> {
        let range = vec![Val::I64(after), Val::I64(upto)];
        let mut with_version = range.clone();
        with_version.push(Val::I64(VERSION));
        let [rows, missing] = crate::conn::query_each(
            self.conn.as_mut(),
            [
                (
                    "SELECT track_id, data FROM similarity \
                     WHERE track_id > $1 AND track_id <= $2 AND version = $3 ORDER BY track_id"
                        .to_owned(),
                    with_version,
                ),
                (
                    "SELECT id FROM tracks \
                     WHERE missing_since IS NOT NULL AND id > $1 AND id <= $2"
                        .to_owned(),
                    range,
                ),
            ],
        )?;
        let missing: std::collections::HashSet<i64> =
            missing.iter().filter_map(|r| r[0].i64()).collect();
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let mut r = r.into_iter();
                let id = r.next()?.i64()?;
                let data = match r.next()? {
                    Val::Bytes(b) => b,
                    _ => return None,
                };
                (!missing.contains(&id)).then_some(SimilarityRow { id, data })
            })
            .collect())
    }

    /// The analysed track stored for `path` with its similarity row; `None` when there is none
    /// (unknown path, a failed file, one marked missing, one without features).
    pub fn seed(&mut self, path: &[u8]) -> Result<Option<(TrackMeta, Vec<u8>)>, DbError> {
        let row = self.conn.query_one(
            "SELECT t.id, s.data FROM tracks t JOIN similarity s ON s.track_id = t.id \
             WHERE t.path = $1 AND t.status = 'analyzed' AND t.missing_since IS NULL \
             AND s.version = $2",
            &[Val::Bytes(path.to_vec()), Val::I64(VERSION)],
        )?;
        let Some((id, data)) = row.and_then(|r| Some((r[0].i64()?, r[1].bytes()?.to_vec()))) else {
            return Ok(None);
        };
        Ok(self.meta(id)?.map(|m| (m, data)))
    }

    /// Path and tags of track `id`.
    pub fn meta(&mut self, id: i64) -> Result<Option<TrackMeta>, DbError> {
        let [track, artist] = crate::conn::query_each(
            self.conn.as_mut(),
            [
                (
                    "SELECT t.id, t.path, t.title, t.album, t.album_artist, \
                     COALESCE(t.duration_s, t.decoded_s) FROM tracks t WHERE t.id = $1"
                        .to_owned(),
                    vec![Val::I64(id)],
                ),
                (
                    "SELECT a.name FROM track_artists ta JOIN artists a ON a.id = ta.artist_id \
                     WHERE ta.track_id = $1 ORDER BY ta.position LIMIT 1"
                        .to_owned(),
                    vec![Val::I64(id)],
                ),
            ],
        )?;
        let Some(row) = track.first() else {
            return Ok(None);
        };
        Ok(Some(TrackMeta {
            id,
            path: row[1].bytes().unwrap_or_default().to_vec(),
            title: opt_text(&row[2]),
            album: opt_text(&row[3]),
            album_artist: opt_text(&row[4]),
            duration_s: row[5].f64(),
            artist: artist.first().and_then(|r| opt_text(&r[0])),
        }))
    }
}
