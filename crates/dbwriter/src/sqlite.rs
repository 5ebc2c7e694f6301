//! The SQLite sink: one file in WAL mode, writers serialized by `BEGIN IMMEDIATE`.

use crate::conn::{local_now_ms, Conn, Dialect};
use crate::val::Val;
use crate::DbError;
use rusqlite::types::ValueRef;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(crate) struct SqliteConn {
    path: PathBuf,
    conn: rusqlite::Connection,
    read_only: bool,
    /// Statement texts already given SQLite's placeholders, keyed by the `$N` text both sinks
    /// share: the same statements run for every batch, and rewriting a many-row insert each
    /// time cost more than SQLite's own work for it.
    rewritten: HashMap<String, String>,
}

/// Bytes of statement text kept rewritten (key and value); past this the cache starts again.
/// Texts are few (one per statement and batch shape), but a many-row insert's is long.
const REWRITTEN_MAX_BYTES: usize = 4 << 20;

/// A connection that cannot write: the file must exist (its schema is the DB writer's to make).
fn open_read_only(path: &Path) -> Result<rusqlite::Connection, DbError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn open(path: &Path) -> Result<rusqlite::Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// `$N` → `?N`, so one statement text serves both dialects.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

impl SqliteConn {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        Ok(SqliteConn {
            path: path.to_path_buf(),
            conn: open(path)?,
            read_only: false,
            rewritten: HashMap::new(),
        })
    }

    pub fn open_read_only(path: &Path) -> Result<Self, DbError> {
        Ok(SqliteConn {
            path: path.to_path_buf(),
            conn: open_read_only(path)?,
            read_only: true,
            rewritten: HashMap::new(),
        })
    }

    /// A prepared statement for `sql` (written with `$N` placeholders).
    fn prepare(&mut self, sql: &str) -> Result<rusqlite::CachedStatement<'_>, DbError> {
        if !self.rewritten.contains_key(sql) {
            let held: usize = self.rewritten.keys().map(|k| 2 * k.len()).sum();
            if held + 2 * sql.len() > REWRITTEN_MAX_BYTES {
                self.rewritten.clear();
            }
            self.rewritten.insert(sql.to_owned(), placeholders(sql));
        }
        Ok(self.conn.prepare_cached(&self.rewritten[sql])?)
    }
}

fn read(v: ValueRef<'_>) -> Val {
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::I64(i),
        ValueRef::Real(f) => Val::F64(f),
        // Valid UTF-8 (all text trackmill writes) is checked at full speed and copied; only
        // text written by something else pays for the lossy conversion.
        ValueRef::Text(t) => Val::Text(match std::str::from_utf8(t) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(t).into_owned(),
        }),
        ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
    }
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        let mut st = self.prepare(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, DbError> {
        let mut st = self.prepare(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut r = Vec::with_capacity(n);
            for i in 0..n {
                r.push(read(row.get_ref(i)?));
            }
            out.push(r);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn begin(&mut self) -> Result<(), DbError> {
        self.batch("BEGIN IMMEDIATE")
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.batch("COMMIT")
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.batch("ROLLBACK")
    }

    fn now_ms(&mut self) -> Result<i64, DbError> {
        Ok(local_now_ms())
    }

    fn reconnect(&mut self) -> Result<(), DbError> {
        self.conn = if self.read_only {
            open_read_only(&self.path)?
        } else {
            open(&self.path)?
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn numbered_placeholders_become_sqlite_ones() {
        assert_eq!(
            placeholders("SELECT $1, $12 WHERE a = '$' || $2"),
            "SELECT ?1, ?12 WHERE a = '$' || ?2"
        );
    }
}
