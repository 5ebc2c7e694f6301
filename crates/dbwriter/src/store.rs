//! Writing results: one record or worker event becomes idempotent upserts, so re-sending the
//! same message (after a writer restart or a lost acknowledgement) never duplicates a row; and the
//! `store` failure that stands in for a record the database refused.

use crate::conn::{Conn, Stmt};
use crate::simstore;
use crate::val::{json_text, opt, sha256, text, u64v, Val};
use crate::{DbError, SqlKind};
use std::fmt::Write as _;
use trackmill_types::{
    Attempt, CleanText, Failure, FailureClass, Record, RecordOutcome, Stage, TrackAnalysis,
    WorkerEvent, ANALYZER_VERSION,
};

/// A message waiting for the next commit.
#[derive(Clone, Debug)]
pub(crate) enum BatchItem {
    Store(u64, Box<Record>),
    Event(u64, WorkerEvent),
}

impl BatchItem {
    pub fn seq(&self) -> u64 {
        match self {
            BatchItem::Store(s, _) | BatchItem::Event(s, _) => *s,
        }
    }
}

/// Most parameters one statement gets (SQLite allows 32,766, PostgreSQL 65,535).
const MAX_PARAMS: usize = 30_000;

/// Multi-row statements: `INSERT … VALUES (…), (…) {suffix}`, cut so no statement exceeds
/// [`MAX_PARAMS`]. Plain SQL that both dialects accept.
pub(crate) fn insert_rows(out: &mut Vec<Stmt>, head: &str, suffix: &str, rows: Vec<Vec<Val>>) {
    let Some(width) = rows.first().map(Vec::len) else {
        return;
    };
    let per = (MAX_PARAMS / width.max(1)).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Val>> = rows.by_ref().take(per).collect();
        // `{head} VALUES ($1, $2), ($3, $4) {suffix}`, written into one string.
        let mut sql = String::with_capacity(head.len() + suffix.len() + chunk.len() * width * 7);
        sql.push_str(head);
        sql.push_str(" VALUES ");
        let mut n = 0;
        for row in 0..chunk.len() {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for col in 0..width {
                n += 1;
                let _ = write!(sql, "{}${n}", if col == 0 { "" } else { ", " });
            }
            sql.push(')');
        }
        sql.push(' ');
        sql.push_str(suffix);
        out.push((sql, chunk.into_iter().flatten().collect()));
    }
}

/// `n` placeholders from `$first` on, for an `IN (…)` list: `$first, $first+1, …`.
pub(crate) fn marks(first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 7);
    for i in first..first + n {
        let _ = write!(out, "{}${i}", if i == first { "" } else { ", " });
    }
    out
}

/// `DELETE FROM {table} WHERE {col} IN (…)`, cut like [`insert_rows`].
fn delete_in(out: &mut Vec<Stmt>, table: &str, col: &str, keys: &[Val]) {
    for chunk in keys.chunks(MAX_PARAMS) {
        out.push((
            format!(
                "DELETE FROM {table} WHERE {col} IN ({})",
                marks(1, chunk.len())
            ),
            chunk.to_vec(),
        ));
    }
}

/// Writes a batch with few statements in two pipelined rounds: first the rows whose ids the
/// others need (tracks, artists), in path and name order so concurrent writers lock rows alike;
/// then children and events. Every statement is an upsert or replaces what it writes, so a batch
/// applied twice leaves the same rows as once.
pub(crate) fn write_batch(
    conn: &mut dyn Conn,
    items: &[BatchItem],
    now: i64,
) -> Result<(), DbError> {
    // One record per path (the last one sent wins): a multi-row upsert may touch a row once.
    let mut latest = std::collections::BTreeMap::new();
    for p in items {
        if let BatchItem::Store(_, r) = p {
            latest.insert(r.key.path.as_bytes(), r.as_ref());
        }
    }
    let records: Vec<&Record> = latest.into_values().collect();

    let mut names: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.outcome {
            RecordOutcome::Analyzed(a) => Some(a.tags.artists.iter()),
            _ => None,
        })
        .flatten()
        .map(|n| n.as_str().trim())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();

    let mut first: Vec<Stmt> = Vec::new();
    if let Some(r0) = records.first() {
        let cols = track_columns(r0, now);
        let names_sql: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
        let sets: Vec<String> = names_sql
            .iter()
            .filter(|n| **n != "path" && **n != "path_sha")
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        let rows = records
            .iter()
            .map(|r| track_columns(r, now).into_iter().map(|(_, v)| v).collect())
            .collect();
        insert_rows(
            &mut first,
            &format!("INSERT INTO tracks ({})", names_sql.join(", ")),
            &format!(
                "ON CONFLICT (path_sha) DO UPDATE SET {} RETURNING id, path",
                sets.join(", ")
            ),
            rows,
        );
    }
    let track_stmts = first.len();
    insert_rows(
        &mut first,
        "INSERT INTO artists (name, name_sha)",
        "ON CONFLICT (name_sha) DO UPDATE SET name = excluded.name RETURNING id, name",
        names
            .iter()
            .map(|n| vec![text(n), sha256(n.as_bytes())])
            .collect(),
    );
    let results = conn.query_many(&first)?;
    let mut track_ids = std::collections::HashMap::new();
    let mut artist_ids = std::collections::HashMap::new();
    for (i, rows) in results.iter().enumerate() {
        for row in rows {
            let id = row[0].i64().unwrap_or(0);
            if i < track_stmts {
                track_ids.insert(row[1].bytes().unwrap_or_default().to_vec(), id);
            } else if let Some(n) = row[1].str() {
                artist_ids.insert(n.to_owned(), id);
            }
        }
    }

    let mut second: Vec<Stmt> = Vec::new();
    let mut ids = Vec::with_capacity(records.len());
    for r in &records {
        let id = track_ids
            .get(r.key.path.as_bytes())
            .copied()
            .ok_or_else(|| DbError::sql("track upsert returned no id", SqlKind::Fatal))?;
        ids.push(id);
    }
    let id_vals: Vec<Val> = ids.iter().map(|i| Val::I64(*i)).collect();
    // The statistics lose what the replaced rows gave them and gain what the new ones give.
    let mut delta = simstore::removal(conn, &ids)?;
    for table in ["track_artists", "features", "embeddings", "similarity"] {
        delete_in(&mut second, table, "track_id", &id_vals);
    }
    let mut similarity = Vec::new();
    let mut track_artists = Vec::new();
    let mut features = Vec::new();
    let mut embeddings = Vec::new();
    let mut attempts = Vec::new();
    let mut leases = Vec::new();
    for (r, &track_id) in records.iter().zip(&ids) {
        if let RecordOutcome::Analyzed(a) = &r.outcome {
            for (pos, name) in a.tags.artists.iter().enumerate() {
                if let Some(artist) = artist_ids.get(name.as_str().trim()) {
                    track_artists.push(vec![
                        Val::I64(track_id),
                        Val::I64(*artist),
                        u64v(pos as u64),
                    ]);
                }
            }
            if let Some(f) = &a.features {
                features.push(feature_row(track_id, f)?);
            }
            similarity.extend(simstore::row(track_id, a, &mut delta));
            let mut models = std::collections::HashSet::new();
            for e in a.embeddings.iter().rev() {
                if models.insert(e.model.as_str()) {
                    embeddings.push(vec![
                        Val::I64(track_id),
                        text(e.model.as_str()),
                        u64v(e.values.len() as u64),
                        Val::F32s(e.values.clone()),
                    ]);
                }
            }
        }
        let path = Val::Bytes(r.key.path.as_bytes().to_vec());
        let sha = sha256(r.key.path.as_bytes());
        for at in &r.attempts {
            attempts.push(attempt_row(&path, &sha, track_id, r.run_id, at));
        }
        leases.push((sha, r.run_id));
    }
    insert_rows(
        &mut second,
        "INSERT INTO track_artists (track_id, artist_id, position)",
        "ON CONFLICT DO NOTHING",
        track_artists,
    );
    insert_rows(
        &mut second,
        "INSERT INTO features (track_id, bpm, key, mode, key_strength, integrated_lufs, \
         loudness_range_lu, true_peak_dbtp, replaygain_track_gain_db, replaygain_track_peak, \
         onset_rate, silence_ratio, data)",
        "",
        features,
    );
    insert_rows(
        &mut second,
        "INSERT INTO embeddings (track_id, model, dim, vector)",
        "",
        embeddings,
    );
    insert_rows(
        &mut second,
        "INSERT INTO similarity (track_id, version, data)",
        "",
        similarity,
    );
    second.extend(delta.statements());
    insert_rows(
        &mut second,
        "INSERT INTO attempts (path, path_sha, track_id, run_id, attempt, class, stage, message, \
         worker_pid, peak_rss_bytes, elapsed_ms, at)",
        "ON CONFLICT (path_sha, run_id, attempt, at) DO NOTHING",
        attempts,
    );
    // Per run, one `IN` list: a chain of `(path_sha = … AND run_id = …) OR …` would be an
    // expression as deep as the batch is long, and SQLite refuses one over 1,000 deep.
    let mut by_run: std::collections::BTreeMap<i64, Vec<Val>> = std::collections::BTreeMap::new();
    for (sha, run) in leases {
        by_run.entry(run).or_default().push(sha);
    }
    for (run, shas) in by_run {
        for chunk in shas.chunks(MAX_PARAMS - 1) {
            let sql = format!(
                "DELETE FROM leases WHERE run_id = $1 AND path_sha IN ({})",
                marks(2, chunk.len())
            );
            let mut params = Vec::with_capacity(chunk.len() + 1);
            params.push(Val::I64(run));
            params.extend_from_slice(chunk);
            second.push((sql, params));
        }
    }
    let events = items
        .iter()
        .filter_map(|p| match p {
            BatchItem::Event(seq, e) => Some(event_row(*seq, e)),
            BatchItem::Store(..) => None,
        })
        .collect();
    insert_rows(
        &mut second,
        "INSERT INTO events (run_id, seq, at, worker_pid, exit_kind, path, display_path, \
         message, peak_rss_bytes)",
        "ON CONFLICT (run_id, seq) DO NOTHING",
        events,
    );
    conn.query_many(&second)?;
    Ok(())
}

fn ctext(t: &Option<CleanText>) -> Val {
    opt(t.as_ref(), |t| text(t.as_str()))
}

fn u32v(v: Option<u32>) -> Val {
    opt(v, |v| Val::I64(v.into()))
}

fn json_list(v: &[CleanText]) -> Val {
    if v.is_empty() {
        Val::Null
    } else {
        Val::Json(serde_json::Value::from(
            v.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>(),
        ))
    }
}

fn track_columns(r: &Record, now: i64) -> Vec<(&'static str, Val)> {
    let failure: Option<&Failure> = match &r.outcome {
        RecordOutcome::Analyzed(_) => None,
        RecordOutcome::Failed(f) | RecordOutcome::Quarantined(f) => Some(f),
    };
    let a: Option<&TrackAnalysis> = match &r.outcome {
        RecordOutcome::Analyzed(a) => Some(a),
        _ => None,
    };
    let version = a.map_or(ANALYZER_VERSION, |a| a.analyzer_version);
    let mut cols = vec![
        ("path", Val::Bytes(r.key.path.as_bytes().to_vec())),
        ("path_sha", sha256(r.key.path.as_bytes())),
        ("display_path", text(r.key.path.display().as_str())),
        ("size", u64v(r.key.size)),
        ("mtime_ns", Val::I64(r.key.mtime_ns)),
        ("status", text(r.outcome.status())),
        ("analyzer_version", Val::I64(version.into())),
        ("run_id", Val::I64(r.run_id)),
        ("partial", Val::Bool(a.is_some_and(|a| a.partial))),
        ("models", a.map_or(Val::Null, |a| json_list(&a.models))),
        ("failure_class", opt(failure, |f| text(f.class.as_str()))),
        ("failure_stage", opt(failure, |f| text(f.stage.as_str()))),
        (
            "failure_message",
            opt(failure, |f| text(f.message.as_str())),
        ),
        ("audio_s", Val::F64(r.stats.audio_s)),
        ("wall_us", u64v(r.stats.wall_us)),
        ("peak_rss_bytes", u64v(r.stats.peak_rss_bytes)),
        ("updated_at", Val::I64(now)),
        // A file analysed (or failed) now exists: it is no longer missing.
        ("missing_since", Val::Null),
    ];
    let au = a.map(|a| &a.audio);
    let t = a.map(|a| &a.tags);
    cols.extend([
        ("container", opt(au, |au| text(au.container.as_str()))),
        ("codec", opt(au, |au| text(au.codec.as_str()))),
        ("sample_rate", u32v(au.map(|au| au.sample_rate))),
        ("channels", u32v(au.map(|au| au.channels.into()))),
        (
            "bits_per_sample",
            u32v(au.and_then(|au| au.bits_per_sample.map(u32::from))),
        ),
        ("duration_s", opt(au.and_then(|au| au.duration_s), Val::F64)),
        ("decoded_s", opt(au.map(|au| au.decoded_s), Val::F64)),
        ("bitrate_kbps", u32v(au.and_then(|au| au.bitrate_kbps))),
        ("title", t.map_or(Val::Null, |t| ctext(&t.title))),
        ("album", t.map_or(Val::Null, |t| ctext(&t.album))),
        (
            "album_artist",
            t.map_or(Val::Null, |t| ctext(&t.album_artist)),
        ),
        ("genres", t.map_or(Val::Null, |t| json_list(&t.genres))),
        ("year", opt(t.and_then(|t| t.year), |y| Val::I64(y.into()))),
        ("track_number", u32v(t.and_then(|t| t.track_number))),
        ("track_total", u32v(t.and_then(|t| t.track_total))),
        ("disc_number", u32v(t.and_then(|t| t.disc_number))),
        ("disc_total", u32v(t.and_then(|t| t.disc_total))),
        (
            "musicbrainz_recording_id",
            t.map_or(Val::Null, |t| ctext(&t.musicbrainz_recording_id)),
        ),
        (
            "musicbrainz_track_id",
            t.map_or(Val::Null, |t| ctext(&t.musicbrainz_track_id)),
        ),
        (
            "musicbrainz_album_id",
            t.map_or(Val::Null, |t| ctext(&t.musicbrainz_album_id)),
        ),
        (
            "musicbrainz_artist_id",
            t.map_or(Val::Null, |t| ctext(&t.musicbrainz_artist_id)),
        ),
        (
            "musicbrainz_album_artist_id",
            t.map_or(Val::Null, |t| ctext(&t.musicbrainz_album_artist_id)),
        ),
        ("picture_count", u32v(t.map(|t| t.picture_count))),
        ("picture_bytes", opt(t.map(|t| t.picture_bytes), u64v)),
        ("tags_truncated", opt(t.map(|t| t.truncated), Val::Bool)),
        ("notes", a.map_or(Val::Null, |a| json_list(&a.notes))),
    ]);
    cols
}

fn feature_row(track_id: i64, f: &trackmill_types::Features) -> Result<Vec<Val>, DbError> {
    let data = json_text(f).map_err(|e| DbError::sql(e.to_string(), SqlKind::Record))?;
    let r = |v: f32| Val::F64(f64::from(v));
    Ok(vec![
        Val::I64(track_id),
        r(f.bpm),
        Val::I64(f.key.into()),
        text(f.mode.as_str()),
        r(f.key_strength),
        r(f.integrated_lufs),
        r(f.loudness_range_lu),
        r(f.true_peak_dbtp),
        r(f.replaygain_track_gain_db),
        r(f.replaygain_track_peak),
        r(f.onset_rate),
        r(f.silence_ratio),
        data,
    ])
}

fn attempt_row(path: &Val, sha: &Val, track_id: i64, run_id: i64, at: &Attempt) -> Vec<Val> {
    vec![
        path.clone(),
        sha.clone(),
        Val::I64(track_id),
        Val::I64(run_id),
        Val::I64(at.attempt.into()),
        text(at.failure.class.as_str()),
        text(at.failure.stage.as_str()),
        text(at.failure.message.as_str()),
        Val::I64(at.worker_pid.into()),
        u64v(at.peak_rss_bytes),
        u64v(at.elapsed_ms),
        Val::I64(at.at_ms),
    ]
}

fn event_row(seq: u64, e: &WorkerEvent) -> Vec<Val> {
    vec![
        Val::I64(e.run_id),
        u64v(seq),
        Val::I64(e.at_ms),
        Val::I64(e.worker_pid.into()),
        text(e.exit.as_str()),
        opt(e.path.as_ref(), |p| Val::Bytes(p.as_bytes().to_vec())),
        opt(e.path.as_ref(), |p| text(p.display().as_str())),
        text(e.message.as_str()),
        u64v(e.peak_rss_bytes),
    ]
}

/// The record that stands in for `r` once the database refused it for good: the file as failed,
/// class and stage `store`, the database's message, and the attempts that came before (the
/// refusal is the row's failure, not an attempt: a re-sent record adds nothing). `minimal` (when
/// even that was refused): no attempts, the message cut to 200 characters.
pub(crate) fn store_failure(r: &Record, message: &str, minimal: bool) -> Record {
    let message: String = if minimal {
        message.chars().take(200).collect()
    } else {
        message.to_owned()
    };
    Record {
        run_id: r.run_id,
        key: r.key.clone(),
        outcome: RecordOutcome::Failed(Failure::new(FailureClass::Store, Stage::Store, &message)),
        stats: r.stats.clone(),
        attempts: if minimal {
            Vec::new()
        } else {
            r.attempts.clone()
        },
    }
}
