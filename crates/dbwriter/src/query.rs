//! Read side for the CLI: one file's stored row, the failure list, counts by status.

use crate::conn::Conn;
use crate::val::{sha256, Val};
use crate::DbError;
use serde_json::{json, Map, Value};

const TRACK_COLS: &[&str] = &[
    "id",
    "path",
    "display_path",
    "size",
    "mtime_ns",
    "status",
    "analyzer_version",
    "run_id",
    "partial",
    "models",
    "failure_class",
    "failure_stage",
    "failure_message",
    "container",
    "codec",
    "sample_rate",
    "channels",
    "bits_per_sample",
    "duration_s",
    "decoded_s",
    "bitrate_kbps",
    "title",
    "album",
    "album_artist",
    "genres",
    "year",
    "track_number",
    "track_total",
    "disc_number",
    "disc_total",
    "musicbrainz_recording_id",
    "musicbrainz_track_id",
    "musicbrainz_album_id",
    "musicbrainz_artist_id",
    "musicbrainz_album_artist_id",
    "picture_count",
    "picture_bytes",
    "tags_truncated",
    "notes",
    "audio_s",
    "wall_us",
    "peak_rss_bytes",
    "updated_at",
    "missing_since",
];
const BOOL_COLS: &[&str] = &["partial", "tags_truncated"];
const JSON_COLS: &[&str] = &["genres", "models", "notes"];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn track_json(row: &[Val]) -> Map<String, Value> {
    let mut m = Map::new();
    for (name, v) in TRACK_COLS.iter().zip(row) {
        let j = if *name == "path" {
            Value::String(hex(v.bytes().unwrap_or_default()))
        } else if BOOL_COLS.contains(name) {
            v.i64().map_or(Value::Null, |i| Value::Bool(i != 0))
        } else if JSON_COLS.contains(name) {
            v.json()
        } else {
            v.to_json()
        };
        let key = if *name == "path" { "path_hex" } else { name };
        m.insert(key.to_owned(), j);
    }
    m
}

fn attempts(conn: &mut dyn Conn, path: &[u8]) -> Result<Value, DbError> {
    let rows = conn.query(
        "SELECT run_id, attempt, class, stage, message, worker_pid, peak_rss_bytes, elapsed_ms, at \
         FROM attempts WHERE path_sha = $1 ORDER BY at, run_id, attempt",
        &[sha256(path)],
    )?;
    let names = [
        "run_id",
        "attempt",
        "class",
        "stage",
        "message",
        "worker_pid",
        "peak_rss_bytes",
        "elapsed_ms",
        "at",
    ];
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                Value::Object(
                    names
                        .iter()
                        .zip(r)
                        .map(|(n, v)| ((*n).to_owned(), v.to_json()))
                        .collect(),
                )
            })
            .collect(),
    ))
}

pub(crate) fn show(conn: &mut dyn Conn, path: &[u8]) -> Result<Option<Value>, DbError> {
    let sql = format!(
        "SELECT {} FROM tracks WHERE path_sha = $1",
        TRACK_COLS.join(", ")
    );
    let Some(row) = conn.query_one(&sql, &[sha256(path)])? else {
        return Ok(None);
    };
    let mut m = track_json(&row);
    let id = Val::I64(row[0].i64().unwrap_or(0));
    let artists = conn.query(
        "SELECT a.name FROM track_artists ta JOIN artists a ON a.id = ta.artist_id \
         WHERE ta.track_id = $1 ORDER BY ta.position",
        std::slice::from_ref(&id),
    )?;
    m.insert(
        "artists".into(),
        Value::Array(artists.iter().map(|r| r[0].to_json()).collect()),
    );
    let features = conn.query_one(
        "SELECT data FROM features WHERE track_id = $1",
        std::slice::from_ref(&id),
    )?;
    m.insert(
        "features".into(),
        features.map_or(Value::Null, |r| r[0].json()),
    );
    let emb = conn.query(
        "SELECT model, dim, vector FROM embeddings WHERE track_id = $1 ORDER BY model",
        std::slice::from_ref(&id),
    )?;
    m.insert(
        "embeddings".into(),
        Value::Array(
            emb.iter()
                .map(|r| {
                    json!({"model": r[0].to_json(), "dim": r[1].to_json(),
                           "values": r[2].f32s().unwrap_or_default()})
                })
                .collect(),
        ),
    );
    m.insert("attempts".into(), attempts(conn, path)?);
    Ok(Some(Value::Object(m)))
}

pub(crate) fn failures(conn: &mut dyn Conn, limit: usize) -> Result<Vec<Value>, DbError> {
    let rows = conn.query(
        "SELECT path, display_path, status, failure_class, failure_stage, failure_message, \
         size, mtime_ns, run_id, updated_at FROM tracks \
         WHERE status IN ('failed', 'quarantined') ORDER BY updated_at DESC, id DESC LIMIT $1",
        &[Val::I64(i64::try_from(limit).unwrap_or(i64::MAX))],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let path = r[0].bytes().unwrap_or_default().to_vec();
        out.push(json!({
            "path_hex": hex(&path),
            "display_path": r[1].to_json(),
            "status": r[2].to_json(),
            "class": r[3].to_json(),
            "stage": r[4].to_json(),
            "message": r[5].to_json(),
            "size": r[6].to_json(),
            "mtime_ns": r[7].to_json(),
            "run_id": r[8].to_json(),
            "updated_at": r[9].to_json(),
            "attempts": attempts(conn, &path)?,
        }));
    }
    Ok(out)
}

pub(crate) fn counts(conn: &mut dyn Conn) -> Result<Value, DbError> {
    let rows = conn.query("SELECT status, COUNT(*) FROM tracks GROUP BY status", &[])?;
    let mut m = json!({"analyzed": 0, "failed": 0, "quarantined": 0, "total": 0});
    let mut total = 0;
    for r in rows {
        let n = r[1].i64().unwrap_or(0);
        total += n;
        if let Some(s) = r[0].str() {
            m[s] = Value::from(n);
        }
    }
    m["total"] = Value::from(total);
    m["missing"] = Value::from(crate::missing::count(conn)?);
    Ok(m)
}
