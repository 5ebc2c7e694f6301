//! The trackmill DB writer: the process that alone talks to the database. It stores sanitized
//! results in SQLite (default) or PostgreSQL with one schema and versioned migrations, answers the
//! scanner's checkpoint questions with leases, and acknowledges each record only after commit.

mod conn;
mod error;
mod leases;
mod missing;
mod pg;
mod query;
mod runs;
mod schema;
mod similar;
mod simstore;
mod sqlite;
mod store;
mod tls;
mod url;
mod val;
mod writer;

pub use error::{DbError, SqlKind};
pub use schema::SCHEMA_VERSION;
pub use similar::{SimilarityRow, TrackMeta, TrackReader};
pub use url::{default_url, DbUrl, PgUrl};
pub use writer::run;

use conn::Conn;

/// `application_name` of every connection the writer opens (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "trackmill-dbwriter";

/// Batching and lease settings of the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Commit after this many pending records/events…
    pub batch_max: usize,
    /// …or this many milliseconds after the first pending one, whichever comes first.
    pub batch_ms: u64,
    /// Lease lifetime; the writer renews its leases every third of it.
    pub lease_ttl_s: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_max: 256,
            batch_ms: 200,
            lease_ttl_s: 60,
        }
    }
}

/// Opens a connection and applies migrations.
fn open(url: &DbUrl) -> Result<Box<dyn Conn>, DbError> {
    let mut c: Box<dyn Conn> = match url {
        DbUrl::Sqlite(p) => Box::new(sqlite::SqliteConn::open(p)?),
        DbUrl::Postgres(pg) => Box::new(pg::PgConn::open(pg)?),
    };
    schema::migrate(c.as_mut())?;
    Ok(c)
}

/// Opens a connection that only reads, for the API server: no migrations (the DB writer applies
/// them), SQLite opened read-only, PostgreSQL sessions whose transactions default to read-only
/// (so a fault in a query path cannot change the library).
fn open_read_only(url: &DbUrl) -> Result<Box<dyn Conn>, DbError> {
    Ok(match url {
        DbUrl::Sqlite(p) => Box::new(sqlite::SqliteConn::open_read_only(p)?),
        DbUrl::Postgres(pg) => {
            let mut ro = pg.clone();
            let given = ro.config.get_options().map(|o| format!("{o} "));
            let options = format!(
                "{}-c default_transaction_read_only=on",
                given.unwrap_or_default()
            );
            ro.config.options(&options);
            Box::new(pg::PgConn::open(&ro)?)
        }
    })
}

/// Builds the database as a trackmill of schema `version` left it (the migrations up to that one
/// only), for tests of the migrations that follow.
#[doc(hidden)]
pub fn migrate_to(url: &DbUrl, version: i64) -> Result<(), DbError> {
    let mut c: Box<dyn Conn> = match url {
        DbUrl::Sqlite(p) => Box::new(sqlite::SqliteConn::open(p)?),
        DbUrl::Postgres(pg) => Box::new(pg::PgConn::open(pg)?),
    };
    schema::migrate_to(c.as_mut(), version)
}

/// Opens the database and applies migrations; fails early with a clear message on a bad URL.
pub fn check(url: &DbUrl) -> Result<(), DbError> {
    open(url).map(|_| ()).map_err(|e| annotate(url, e))
}

fn annotate(url: &DbUrl, e: DbError) -> DbError {
    match e {
        DbError::Sql { message, kind } => DbError::Sql {
            message: format!("{}: {message}", url.redacted()),
            kind,
        },
        other => other,
    }
}

/// The stored row for one path (analysis with features, tags and embeddings, or the failure with
/// every attempt); `None` when the path is unknown.
pub fn show(url: &DbUrl, path: &[u8]) -> Result<Option<serde_json::Value>, DbError> {
    let mut c = open(url).map_err(|e| annotate(url, e))?;
    query::show(c.as_mut(), path)
}

/// Failed and quarantined files, newest first, with every attempt's cause.
pub fn failures(url: &DbUrl, limit: usize) -> Result<Vec<serde_json::Value>, DbError> {
    let mut c = open(url).map_err(|e| annotate(url, e))?;
    query::failures(c.as_mut(), limit)
}

/// Counts by status (`analyzed`, `failed`, `quarantined`) and `total`.
pub fn counts(url: &DbUrl) -> Result<serde_json::Value, DbError> {
    let mut c = open(url).map_err(|e| annotate(url, e))?;
    query::counts(c.as_mut())
}

/// Deletes the tracks marked missing (with `dry_run`, only counts them); returns how many.
pub fn prune(url: &DbUrl, dry_run: bool) -> Result<u64, DbError> {
    let mut c = open(url).map_err(|e| annotate(url, e))?;
    conn::transaction(c.as_mut(), &mut |c| missing::prune(c, dry_run))
}

/// Drops the PostgreSQL schema named by the URL's `schema` parameter, with everything in it (for
/// tests and benchmarks that each use their own schema). Does nothing for SQLite or without one.
pub fn drop_schema(url: &DbUrl) -> Result<(), DbError> {
    let DbUrl::Postgres(pg) = url else {
        return Ok(());
    };
    let Some(schema) = &pg.schema else {
        return Ok(());
    };
    let mut c = pg::PgConn::open(pg).map_err(|e| annotate(url, e))?;
    c.batch(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
}
