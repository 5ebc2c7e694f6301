//! Database URLs: `postgres://…` (with `sslmode` and an optional `schema` parameter) or a SQLite
//! file path (`sqlite:PATH`, `sqlite://PATH` or a bare path); redacted rendering for logs.

use crate::DbError;
use std::path::PathBuf;
use std::str::FromStr;
use tokio_postgres::config::{Host, SslMode};

/// PostgreSQL connection settings: the driver's config plus the schema trackmill uses.
#[derive(Clone, Debug)]
pub struct PgUrl {
    pub config: tokio_postgres::Config,
    /// Schema to create (if missing) and put first on the search path.
    pub schema: Option<String>,
}

/// Where results are stored.
#[derive(Clone, Debug)]
pub enum DbUrl {
    Sqlite(PathBuf),
    Postgres(Box<PgUrl>),
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

impl DbUrl {
    pub fn parse(s: &str) -> Result<DbUrl, DbError> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return parse_pg(s);
        }
        let path = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .unwrap_or(s);
        if path.is_empty() {
            return Err(DbError::Url("empty SQLite path".into()));
        }
        if path.contains("://") {
            return Err(DbError::Url(
                "unknown scheme (use postgres://… or a SQLite file path)".into(),
            ));
        }
        Ok(DbUrl::Sqlite(PathBuf::from(path)))
    }

    /// The URL without any password, for logs and error messages.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            DbUrl::Postgres(pg) => {
                let c = &pg.config;
                let user = c.get_user().unwrap_or("");
                let host = match c.get_hosts().first() {
                    Some(Host::Tcp(h)) => h.clone(),
                    Some(Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".into(),
                };
                let port = c.get_ports().first().copied().unwrap_or(5432);
                let db = c.get_dbname().unwrap_or("");
                let pw = if c.get_password().is_some() {
                    ":***"
                } else {
                    ""
                };
                let ssl = match c.get_ssl_mode() {
                    SslMode::Disable => "disable",
                    SslMode::Require => "require",
                    _ => "prefer",
                };
                let mut out = format!("postgres://{user}{pw}@{host}:{port}/{db}?sslmode={ssl}");
                if let Some(s) = &pg.schema {
                    out.push_str("&schema=");
                    out.push_str(s);
                }
                out
            }
        }
    }
}

fn parse_pg(s: &str) -> Result<DbUrl, DbError> {
    let (base, query) = s.split_once('?').unwrap_or((s, ""));
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", v)) => {
                if !valid_schema(v) {
                    return Err(DbError::Url(format!(
                        "schema {v:?} must be a plain identifier (letters, digits, _)"
                    )));
                }
                schema = Some(v.to_owned());
            }
            Some(("sslmode", v)) if !matches!(v, "disable" | "prefer" | "require") => {
                return Err(DbError::Url(format!(
                    "sslmode={v} is not supported (disable, prefer, require)"
                )));
            }
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
        // The driver's parse errors name the offending option, never the password's value.
        DbError::Url(e.to_string())
    })?;
    if config.get_application_name().is_none() {
        config.application_name(crate::APPLICATION_NAME);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    Ok(DbUrl::Postgres(Box::new(PgUrl { config, schema })))
}

/// Default: `$XDG_DATA_HOME/trackmill/trackmill.db` (or `~/.local/share/trackmill/trackmill.db`).
pub fn default_url() -> String {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("trackmill/trackmill.db").display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_redacts_postgres() {
        let u = DbUrl::parse(
            "postgresql://bob:s3cret@db.example:6543/music?sslmode=require&schema=t_1",
        )
        .unwrap();
        let r = u.redacted();
        assert!(!r.contains("s3cret"), "{r}");
        assert_eq!(
            r,
            "postgres://bob:***@db.example:6543/music?sslmode=require&schema=t_1"
        );
    }

    #[test]
    fn refuses_bad_schema_and_scheme() {
        assert!(DbUrl::parse("postgres://u@h/db?schema=a;drop").is_err());
        assert!(DbUrl::parse("mysql://u@h/db").is_err());
        assert!(DbUrl::parse("postgres://u@h/db?sslmode=verify-full").is_err());
    }

    #[test]
    fn sqlite_forms() {
        for s in ["sqlite:/tmp/x.db", "sqlite:///tmp/x.db", "/tmp/x.db"] {
            match DbUrl::parse(s).unwrap() {
                DbUrl::Sqlite(p) => assert!(p.ends_with("x.db")),
                other => panic!("{other:?}"),
            }
        }
    }
}
