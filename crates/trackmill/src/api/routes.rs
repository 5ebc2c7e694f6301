//! The routes: the similarity queries (`/api/similar`, `/api/path`, `/api/mix`: JSON, or the
//! extended M3U8 text with `format=m3u`) answered by the same code as the `similar`, `path` and
//! `mix` commands ([`crate::query`]), `/api/health`, `/metrics` (the text the supervisor pushed
//! last), and the Bliss Mixer routes. Every error is JSON `{"error": …}` with its status.

use super::params::Params;
use super::Shared;
use crate::query::{self, Answer, Filter, Library, QueryError};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// Largest `n`, `length` and `steps` a request may ask for (the answer stays O(k) in memory).
const MAX_TRACKS: usize = 1000;

/// An answer other than 200: its status and message (and fields beside the message).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status,
            body: json!({"error": message.to_string()}),
        }
    }

    pub fn bad(message: impl std::fmt::Display) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match &e {
            QueryError::NotFound(p) => ApiError {
                status: StatusCode::NOT_FOUND,
                body: json!({"error": e.to_string(), "path": p.to_string_lossy()}),
            },
            QueryError::Db(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type Shr = State<Arc<Shared>>;

/// The router with its state; the limits are layered on in [`super::http`].
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/similar", get(similar))
        .route("/api/path", get(path))
        .route("/api/mix", get(mix).post(super::bliss::mix))
        .route("/api/list", axum::routing::post(super::bliss::list))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|m: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route {m} {}", uri.path()),
            )
        })
        .with_state(shared)
}

/// Runs `f` on a read-only library on a blocking thread (see [`on_db`]).
pub async fn on_library<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&mut Library) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let space = shared.space.clone();
    on_db(shared, move |url| {
        f(&mut Library::open_read_only(url, space)?)
    })
    .await
}

/// Runs `f` with the database URL on a blocking thread, holding one of the `max_concurrent`
/// query slots until it ends (also when the request timed out meanwhile); 503 when none is free.
async fn on_db<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&trackmill_dbwriter::DbUrl) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let Ok(permit) = shared.queries.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many queries at once; try again",
        ));
    };
    let url = shared.url.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = permit;
        f(&url)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
}

/// A track path as a client gives it: absolute, or relative to one of the library roots (the
/// first under which the file exists; else the first root, so a 404 names a real place).
pub fn resolve(shared: &Shared, raw: &str) -> PathBuf {
    let p = PathBuf::from(raw);
    if p.is_absolute() || shared.roots.is_empty() {
        return p;
    }
    shared
        .roots
        .iter()
        .map(|r| r.join(&p))
        .find(|abs| abs.exists())
        .unwrap_or_else(|| shared.roots[0].join(&p))
}

/// The answer as JSON, or as the M3U8 text.
fn answered(a: &Answer, m3u: bool) -> Result<Response, ApiError> {
    if !m3u {
        return Ok(Json(a.json()).into_response());
    }
    let (bytes, _) = trackmill_similarity::m3u::render(&a.entries(), None)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(([(header::CONTENT_TYPE, "audio/x-mpegurl")], bytes).into_response())
}

async fn similar(State(s): Shr, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["path", "n", "per_artist", "format"])?;
    let file = resolve(&s, p.required("path")?);
    let n = p.count("n", 20, 1, MAX_TRACKS)?;
    let per_artist = p.count("per_artist", 2, 0, MAX_TRACKS)?;
    let m3u = p.m3u()?;
    let a = on_library(&s, move |lib| {
        Ok(query::similar(
            lib,
            &file,
            n,
            per_artist,
            &Filter::default(),
        )?)
    })
    .await?;
    answered(&a, m3u)
}

async fn path(State(s): Shr, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["from", "to", "steps", "format"])?;
    let from = resolve(&s, p.required("from")?);
    let to = resolve(&s, p.required("to")?);
    let steps = p.count("steps", 12, 1, MAX_TRACKS)?;
    let m3u = p.m3u()?;
    let a = on_library(&s, move |lib| Ok(query::path(lib, &from, &to, steps)?)).await?;
    answered(&a, m3u)
}

async fn mix(State(s): Shr, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["seed", "length", "harmonic", "format"])?;
    let seeds: Vec<PathBuf> = p.all("seed").iter().map(|v| resolve(&s, v)).collect();
    if seeds.is_empty() {
        return Err(ApiError::bad("seed is required (repeat it for several)"));
    }
    if seeds.len() > MAX_TRACKS {
        return Err(ApiError::bad(format!("more than {MAX_TRACKS} seeds")));
    }
    let length = p.count("length", 50, 1, MAX_TRACKS)?;
    let harmonic = p.flag("harmonic")?;
    let m3u = p.m3u()?;
    let a = on_library(&s, move |lib| {
        Ok(query::mix(
            lib,
            &seeds,
            length,
            harmonic,
            &Filter::default(),
        )?)
    })
    .await?;
    answered(&a, m3u)
}

async fn health(State(s): Shr) -> Result<Json<Value>, ApiError> {
    let tracks = on_db(&s, |url| {
        let mut reader = trackmill_dbwriter::TrackReader::open_read_only(url)
            .map_err(|e| ApiError::from(QueryError::Db(e.to_string())))?;
        reader
            .count()
            .map_err(|e| ApiError::from(QueryError::Db(e.to_string())))
    })
    .await?;
    Ok(Json(json!({
        "status": "ok",
        "tracks": tracks,
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

async fn metrics(State(s): Shr) -> Response {
    let text = s.metrics.read().ok().and_then(|m| m.clone());
    match text {
        Some(t) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            t,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics from the service yet",
        )
        .into_response(),
    }
}
