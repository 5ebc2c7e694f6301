//! The writer's side of the `similarity` and `similarity_stats` tables (schema version 5): each
//! analysed track's stored similarity form (`trackmill_similarity::stored`), written in the same
//! transaction as its analysis, and the library statistics the vectors are standardised against,
//! kept as per-dimension counts, sums and sums of squares that every store adds its tracks to and
//! takes their previous values from. Additions commute, so concurrent writers on one PostgreSQL
//! library never read-modify-write a shared row, and a batch applied twice leaves the same sums.

use crate::conn::{Conn, Stmt};
use crate::val::{text, Val};
use crate::DbError;
use trackmill_similarity::stored::{encode, StoredView, STORED_VERSION};
use trackmill_similarity::vector::STAT_DIMS;
use trackmill_types::analysis::{Embedding, Features, TrackAnalysis};
use trackmill_types::CleanText;

/// The `version` column of the rows this build writes and reads.
pub(crate) const VERSION: i64 = STORED_VERSION as i64;

/// Ids per `IN (…)` list.
const IDS_PER_STMT: usize = 10_000;
/// Tracks per backfill window.
const WINDOW: i64 = 1000;

/// Changes to the library statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Delta {
    n: [i64; STAT_DIMS],
    sum: [f64; STAT_DIMS],
    sum_sq: [f64; STAT_DIMS],
}

impl Delta {
    /// Adds (`sign` 1) or takes away (`sign` −1) one track's stored row; a row that does not
    /// parse counts for nothing (it was never added either).
    pub fn apply(&mut self, data: &[u8], sign: i64) {
        let Some(v) = StoredView::parse(data) else {
            return;
        };
        for (i, x) in v.raws().iter().enumerate() {
            if x.is_finite() {
                let x = f64::from(*x);
                self.n[i] += sign;
                self.sum[i] += sign as f64 * x;
                self.sum_sq[i] += sign as f64 * x * x;
            }
        }
    }

    /// One `UPDATE` per dimension that changed, in dimension order (concurrent writers lock the
    /// rows alike).
    pub fn statements(&self) -> Vec<Stmt> {
        (0..STAT_DIMS)
            .filter(|&i| self.n[i] != 0 || self.sum[i] != 0.0 || self.sum_sq[i] != 0.0)
            .map(|i| {
                (
                    "UPDATE similarity_stats SET n = n + $1, total = total + $2, total_sq = total_sq + $3 \
                     WHERE version = $4 AND dim = $5"
                        .to_owned(),
                    vec![
                        Val::I64(self.n[i]),
                        Val::F64(self.sum[i]),
                        Val::F64(self.sum_sq[i]),
                        Val::I64(VERSION),
                        Val::I64(i as i64),
                    ],
                )
            })
            .collect()
    }
}

/// The stored row of an analysed record (`None` without features), as
/// `(track_id, version, data)` values; what it gives the statistics is added to `delta`.
pub(crate) fn row(track_id: i64, a: &TrackAnalysis, delta: &mut Delta) -> Option<Vec<Val>> {
    let data = encode(a)?;
    delta.apply(&data, 1);
    Some(vec![
        Val::I64(track_id),
        Val::I64(VERSION),
        Val::Bytes(data),
    ])
}

/// `SELECT data FROM similarity` for `ids` (this version's rows), cut into lists.
pub(crate) fn select_rows(ids: &[Val]) -> Vec<Stmt> {
    ids.chunks(IDS_PER_STMT)
        .map(|chunk| {
            let mut params = vec![Val::I64(VERSION)];
            params.extend_from_slice(chunk);
            (
                format!(
                    "SELECT data FROM similarity WHERE version = $1 AND track_id IN ({})",
                    crate::store::marks(2, chunk.len())
                ),
                params,
            )
        })
        .collect()
}

/// What taking the tracks `ids` out of the statistics changes: read before they are deleted
/// (their rows go with them, by cascade), applied after ([`Delta::statements`]), so a prune
/// takes the statistics' row locks last, as a store does.
pub(crate) fn removal(conn: &mut dyn Conn, ids: &[i64]) -> Result<Delta, DbError> {
    let ids: Vec<Val> = ids.iter().map(|i| Val::I64(*i)).collect();
    let mut delta = Delta::default();
    for rows in conn.query_many(&select_rows(&ids))? {
        for r in rows {
            delta.apply(r[0].bytes().unwrap_or_default(), -1);
        }
    }
    Ok(delta)
}

/// Writes the stored row of every analysed track that has features, and the statistics, from
/// the stored analysis (features, first artist, album, duration, embeddings), one window of row
/// ids at a time: the migration to version 5, for libraries written before it. Returns the
/// number of rows written.
pub(crate) fn backfill(conn: &mut dyn Conn) -> Result<u64, DbError> {
    let Some((first, last)) = crate::missing::id_range(conn)? else {
        return Ok(0);
    };
    let features_sql = match conn.dialect() {
        crate::conn::Dialect::Postgres => "f.data::text",
        crate::conn::Dialect::Sqlite => "f.data",
    };
    let mut written = 0;
    let mut start = first - 1;
    while start < last {
        let end = start.saturating_add(WINDOW);
        let range = [Val::I64(start), Val::I64(end)];
        let [tracks, artists, embeddings] = crate::conn::query_each(
            conn,
            [
                (
                    format!(
                        "SELECT t.id, t.album, t.album_artist, COALESCE(t.duration_s, t.decoded_s), \
                         {features_sql} FROM tracks t JOIN features f ON f.track_id = t.id \
                         WHERE t.status = 'analyzed' AND t.id > $1 AND t.id <= $2 ORDER BY t.id"
                    ),
                    range.to_vec(),
                ),
                (
                    "SELECT ta.track_id, a.name FROM track_artists ta \
                     JOIN artists a ON a.id = ta.artist_id \
                     WHERE ta.track_id > $1 AND ta.track_id <= $2 ORDER BY ta.track_id, ta.position"
                        .to_owned(),
                    range.to_vec(),
                ),
                (
                    "SELECT track_id, model, vector FROM embeddings \
                     WHERE track_id > $1 AND track_id <= $2"
                        .to_owned(),
                    range.to_vec(),
                ),
            ],
        )?;
        let mut records: std::collections::BTreeMap<i64, TrackAnalysis> = tracks
            .iter()
            .filter_map(|r| {
                let features: Features = match &r[4] {
                    Val::Text(s) => serde_json::from_str(s).ok()?,
                    _ => return None,
                };
                let mut a = TrackAnalysis {
                    features: Some(features),
                    ..TrackAnalysis::default()
                };
                a.tags.album = r[1].str().map(CleanText::new);
                a.tags.album_artist = r[2].str().map(CleanText::new);
                a.audio.duration_s = r[3].f64();
                Some((r[0].i64()?, a))
            })
            .collect();
        for r in &artists {
            if let (Some(a), Some(name)) =
                (r[0].i64().and_then(|id| records.get_mut(&id)), r[1].str())
            {
                if a.tags.artists.is_empty() {
                    a.tags.artists.push(CleanText::new(name));
                }
            }
        }
        for r in &embeddings {
            if let (Some(a), Some(model), Some(values)) = (
                r[0].i64().and_then(|id| records.get_mut(&id)),
                r[1].str(),
                r[2].f32s(),
            ) {
                a.embeddings.push(Embedding {
                    model: CleanText::new(model),
                    values,
                });
            }
        }
        let mut delta = Delta::default();
        let rows: Vec<Vec<Val>> = records
            .iter()
            .filter_map(|(id, a)| row(*id, a, &mut delta))
            .collect();
        written += rows.len() as u64;
        let mut stmts = Vec::new();
        crate::store::insert_rows(
            &mut stmts,
            "INSERT INTO similarity (track_id, version, data)",
            "",
            rows,
        );
        stmts.extend(delta.statements());
        conn.query_many(&stmts)?;
        start = end;
    }
    Ok(written)
}

/// The statistics' rows of this version, all zero (the migration adds them).
pub(crate) fn zero_stats() -> Vec<Stmt> {
    (0..STAT_DIMS)
        .map(|i| {
            (
                "INSERT INTO similarity_stats (version, dim, name, n, total, total_sq) \
                 VALUES ($1, $2, $3, 0, 0, 0)"
                    .to_owned(),
                vec![
                    Val::I64(VERSION),
                    Val::I64(i as i64),
                    text(trackmill_similarity::vector::STAT_NAMES[i]),
                ],
            )
        })
        .collect()
}
