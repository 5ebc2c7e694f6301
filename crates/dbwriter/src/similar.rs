//! Read side for the similarity queries: analysed tracks with what their similarity vector is
//! built from (features, chosen embeddings, first artist, album, duration), one by path or all of
//! them streamed in chunks of bounded size (keyset pagination on the row id), so a query's memory
//! does not grow with the library, in both sinks.

use crate::conn::{Conn, Dialect};
use crate::val::Val;
use crate::{annotate, open, open_read_only, DbError, DbUrl};
use trackmill_types::analysis::{Embedding, Features, TrackAnalysis};
use trackmill_types::CleanText;

/// One analysed track as the similarity queries read it. `analysis` holds the stored features
/// and the requested embeddings only (tags and audio properties are the fields beside it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredTrack {
    pub id: i64,
    /// The path as stored (bytes).
    pub path: Vec<u8>,
    pub title: Option<String>,
    /// First track artist.
    pub artist: Option<String>,
    pub album: Option<String>,
    pub album_artist: Option<String>,
    pub duration_s: Option<f64>,
    pub analysis: TrackAnalysis,
}

/// A read connection for similarity queries.
pub struct TrackReader {
    conn: Box<dyn Conn>,
    models: Vec<String>,
}

/// The columns of a [`StoredTrack`] row. The features come as text in both sinks: PostgreSQL
/// would otherwise hand its `jsonb` over as a JSON tree, built and then converted again for every
/// row (half of a query's CPU at 100,000 tracks).
fn cols(d: Dialect) -> String {
    let data = match d {
        Dialect::Postgres => "f.data::text",
        Dialect::Sqlite => "f.data",
    };
    format!("t.id, t.path, t.title, t.album, t.album_artist, COALESCE(t.duration_s, t.decoded_s), {data}")
}

fn opt_text(v: &Val) -> Option<String> {
    v.str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn features(v: &Val) -> Option<Features> {
    match v {
        Val::Text(s) => serde_json::from_str(s).ok(),
        Val::Json(j) => serde_json::from_value(j.clone()).ok(),
        _ => None,
    }
}

fn track(row: &[Val]) -> StoredTrack {
    StoredTrack {
        id: row[0].i64().unwrap_or(0),
        path: row[1].bytes().unwrap_or_default().to_vec(),
        title: opt_text(&row[2]),
        album: opt_text(&row[3]),
        album_artist: opt_text(&row[4]),
        duration_s: match row[5] {
            Val::F64(f) => Some(f),
            Val::I64(i) => Some(i as f64),
            _ => None,
        },
        artist: None,
        analysis: TrackAnalysis {
            features: features(&row[6]),
            ..TrackAnalysis::default()
        },
    }
}

impl TrackReader {
    /// Opens the database (applying migrations, as every reader does); `models` names the
    /// embeddings to read with each track (others are not fetched).
    pub fn open(url: &DbUrl, models: &[&str]) -> Result<Self, DbError> {
        Ok(TrackReader {
            conn: open(url).map_err(|e| annotate(url, e))?,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
        })
    }

    /// Opens the database read-only, for the API server: no migrations (the DB writer applies
    /// them), SQLite opened read-only, PostgreSQL transactions read-only by default; the schema
    /// must be there.
    pub fn open_read_only(url: &DbUrl, models: &[&str]) -> Result<Self, DbError> {
        Ok(TrackReader {
            conn: open_read_only(url).map_err(|e| annotate(url, e))?,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
        })
    }

    /// Fills artists and embeddings of tracks whose ids lie in `lo..=hi` (and are multiples of
    /// `stride`).
    fn complete(
        &mut self,
        tracks: &mut [StoredTrack],
        lo: i64,
        hi: i64,
        stride: i64,
    ) -> Result<(), DbError> {
        if tracks.is_empty() {
            return Ok(());
        }
        let mut range = vec![Val::I64(lo), Val::I64(hi)];
        if stride > 1 {
            range.push(Val::I64(stride));
        }
        let artists = self.conn.query(
            &format!(
                "SELECT ta.track_id, a.name FROM track_artists ta \
                 JOIN artists a ON a.id = ta.artist_id \
                 WHERE ta.position = 0 AND ta.track_id >= $1 AND ta.track_id <= $2{}",
                sample_filter("ta.track_id", stride, 3)
            ),
            &range,
        )?;
        let first = range.len() + 1;
        let mut params = range;
        let marks: Vec<String> = (0..self.models.len())
            .map(|i| format!("${}", i + first))
            .collect();
        params.extend(self.models.iter().map(|m| Val::Text(m.clone())));
        let emb = if self.models.is_empty() {
            Vec::new()
        } else {
            self.conn.query(
                &format!(
                    "SELECT track_id, model, vector FROM embeddings \
                     WHERE track_id >= $1 AND track_id <= $2{} AND model IN ({})",
                    sample_filter("track_id", stride, 3),
                    marks.join(", ")
                ),
                &params,
            )?
        };
        let index = |tracks: &[StoredTrack], id: Option<i64>| {
            id.and_then(|id| tracks.binary_search_by_key(&id, |t| t.id).ok())
        };
        for r in artists {
            if let Some(i) = index(tracks, r[0].i64()) {
                tracks[i].artist = opt_text(&r[1]);
            }
        }
        for r in emb {
            if let Some(i) = index(tracks, r[0].i64()) {
                tracks[i].analysis.embeddings.push(Embedding {
                    model: CleanText::new(r[1].str().unwrap_or_default()),
                    values: r[2].f32s().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    /// The analysed track stored for `path`; `None` when there is none (unknown path, a failed
    /// file, or one marked missing).
    pub fn track(&mut self, path: &[u8]) -> Result<Option<StoredTrack>, DbError> {
        let sql = format!(
            "SELECT {} FROM tracks t JOIN features f ON f.track_id = t.id \
             WHERE t.path = $1 AND t.status = 'analyzed' AND t.missing_since IS NULL",
            cols(self.conn.dialect())
        );
        let Some(row) = self.conn.query_one(&sql, &[Val::Bytes(path.to_vec())])? else {
            return Ok(None);
        };
        let mut t = [track(&row)];
        let id = t[0].id;
        self.complete(&mut t, id, id, 1)?;
        let [t] = t;
        Ok(Some(t))
    }

    /// Number of analysed tracks (those whose files are missing left out).
    pub fn count(&mut self) -> Result<u64, DbError> {
        let row = self.conn.query_one(
            "SELECT COUNT(*) FROM tracks WHERE status = 'analyzed' AND missing_since IS NULL",
            &[],
        )?;
        Ok(row
            .and_then(|r| r.first().and_then(Val::i64))
            .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// Streams every analysed track whose file is not missing, in id order, `chunk` rows at a time (at least 1): at most
    /// one chunk is held. Returns the number of tracks seen.
    pub fn for_each(
        &mut self,
        chunk: usize,
        f: &mut dyn FnMut(&StoredTrack),
    ) -> Result<u64, DbError> {
        self.for_each_every(chunk, 1, f)
    }

    /// As [`Self::for_each`], but only the tracks whose row id is a multiple of `stride`: an
    /// evenly spread sample of about one in `stride` (1 reads every track).
    pub fn for_each_every(
        &mut self,
        chunk: usize,
        stride: u64,
        f: &mut dyn FnMut(&StoredTrack),
    ) -> Result<u64, DbError> {
        let chunk = i64::try_from(chunk.max(1)).unwrap_or(i64::MAX);
        let stride = i64::try_from(stride.max(1)).unwrap_or(i64::MAX);
        let bounds = self
            .conn
            .query_one("SELECT MIN(id), MAX(id) FROM tracks", &[])?;
        let (Some(first), Some(last)) = (
            bounds.as_ref().and_then(|r| r[0].i64()),
            bounds.as_ref().and_then(|r| r[1].i64()),
        ) else {
            return Ok(0);
        };
        // Windows of row ids, not `id > last ORDER BY id LIMIT n`: a window holds at most
        // `chunk` rows (ids are unique), and a range on the primary key is planned well even
        // when the planner's statistics are stale (PostgreSQL right after a bulk load would
        // otherwise sort every remaining row per chunk). The status is filtered here, not in
        // SQL, for the same reason: an index on it would be scanned whole for every window.
        let span = chunk.saturating_mul(stride);
        let sql = format!(
            "SELECT {}, t.status, t.missing_since FROM tracks t \
             JOIN features f ON f.track_id = t.id \
             WHERE t.id > $1 AND t.id <= $2{} ORDER BY t.id",
            cols(self.conn.dialect()),
            sample_filter("t.id", stride, 3)
        );
        let mut seen = 0u64;
        let mut start = first.saturating_sub(1);
        while start < last {
            let end = start.saturating_add(span);
            let mut params = vec![Val::I64(start), Val::I64(end)];
            if stride > 1 {
                params.push(Val::I64(stride));
            }
            let rows = self.conn.query(&sql, &params)?;
            let mut tracks: Vec<StoredTrack> = rows
                .iter()
                .filter(|r| listed(r))
                .map(|r| track(r))
                .collect();
            drop(rows);
            self.complete(&mut tracks, start + 1, end, stride)?;
            for t in &tracks {
                f(t);
            }
            seen += tracks.len() as u64;
            start = end;
        }
        Ok(seen)
    }
}

/// True for a row (ending with status and `missing_since`) of an analysed track whose file was
/// not found gone.
fn listed(row: &[Val]) -> bool {
    match row {
        [.., status, missing] => status.str() == Some("analyzed") && missing.i64().is_none(),
        _ => false,
    }
}

/// ` AND <col> % $<n> = 0` when sampling, else nothing.
fn sample_filter(col: &str, stride: i64, n: usize) -> String {
    if stride > 1 {
        format!(" AND {col} % ${n} = 0")
    } else {
        String::new()
    }
}
