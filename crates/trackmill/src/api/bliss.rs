//! Routes compatible with Bliss Mixer's HTTP API, which the Lyrion Music Server plugin
//! BlissMixer calls: `POST /api/mix` (the "Don't Stop The Music" mixer: seed tracks in, similar
//! tracks out) and `POST /api/list` (tracks similar to one). Both take a JSON body and answer the
//! track paths one per line. A music server names tracks relative to its music folder: a
//! relative path is looked up under the library roots, and when the seeds were relative the
//! answer's paths are relative to their root too. Honoured: `count` (1..50), `tracks`/`track`,
//! `previous` (never returned), `min`/`max` (seconds), `maxbpmdiff`, `byartist`; genre filters,
//! `shuffle`, `forest`, `norepart` and `norepalb` are accepted and not applied (a mix never
//! repeats an artist back to back nor an album more than twice anyway).

use super::routes::{on_library, resolve, ApiError};
use super::Shared;
use crate::query::{self, Answer, Filter};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAX_COUNT: usize = 50;

#[derive(Deserialize)]
struct MixRequest {
    count: Option<Value>,
    tracks: Vec<String>,
    #[serde(default)]
    previous: Vec<String>,
    #[serde(flatten)]
    limits: Limits,
}

#[derive(Deserialize)]
struct ListRequest {
    count: Option<Value>,
    track: String,
    byartist: Option<Value>,
    #[serde(flatten)]
    limits: Limits,
}

/// The filters both requests share (0 or absent: off).
#[derive(Deserialize)]
struct Limits {
    min: Option<Value>,
    max: Option<Value>,
    #[serde(alias = "maxbmpdiff")]
    maxbpmdiff: Option<Value>,
}

/// A number given as a JSON number or a numeric string; 0 reads as absent.
fn number(v: &Option<Value>) -> Option<f64> {
    let n = match v.as_ref()? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }?;
    (n.is_finite() && n > 0.0).then_some(n)
}

fn count(v: &Option<Value>) -> Result<usize, ApiError> {
    match number(v) {
        None if v.is_none() => Ok(5),
        Some(n) if (1.0..=MAX_COUNT as f64).contains(&n) => Ok(n as usize),
        _ => Err(ApiError::bad(format!(
            "count must lie between 1 and {MAX_COUNT}"
        ))),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))
}

impl Limits {
    fn filter(&self) -> Filter {
        Filter {
            min_s: number(&self.min),
            max_s: number(&self.max),
            max_bpm_diff: number(&self.maxbpmdiff).map(|b| b as f32),
            ..Filter::default()
        }
    }
}

/// The answer's tracks, one path per line: relative to the library root they lie under when
/// `relative`.
fn lines(shared: &Shared, a: &Answer, relative: bool) -> Response {
    let mut out = Vec::new();
    for l in &a.tracks {
        let p = Path::new(std::ffi::OsStr::from_bytes(&l.meta.path));
        let shown = relative
            .then(|| shared.roots.iter().find_map(|r| p.strip_prefix(r).ok()))
            .flatten()
            .unwrap_or(p);
        out.extend_from_slice(shown.as_os_str().as_bytes());
        out.push(b'\n');
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response()
}

pub async fn mix(State(s): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let req: MixRequest = parse(&body)?;
    if req.tracks.is_empty() {
        return Err(ApiError::bad("tracks is empty"));
    }
    let n = count(&req.count)?;
    let relative = !Path::new(&req.tracks[0]).is_absolute();
    let seeds: Vec<PathBuf> = req.tracks.iter().map(|t| resolve(&s, t)).collect();
    let mut filter = req.limits.filter();
    filter.exclude = req
        .previous
        .iter()
        .map(|p| resolve(&s, p).into_os_string().into_vec())
        .collect();
    let a = on_library(&s, move |lib| {
        Ok(query::mix(lib, &seeds, n, false, &filter)?)
    })
    .await?;
    Ok(lines(&s, &a, relative))
}

pub async fn list(State(s): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ListRequest = parse(&body)?;
    let n = count(&req.count)?;
    let relative = !Path::new(&req.track).is_absolute();
    let seed = resolve(&s, &req.track);
    let mut filter = req.limits.filter();
    filter.seed_artist_only = number(&req.byartist).is_some();
    let a = on_library(&s, move |lib| {
        Ok(query::similar(lib, &seed, n, 0, &filter)?)
    })
    .await?;
    Ok(lines(&s, &a, relative))
}
