//! The `Conn` trait: the few operations the writer needs from a database connection, implemented
//! by the SQLite and PostgreSQL sinks; and the one transaction helper both use.

use crate::val::Val;
use crate::DbError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Row locks for lease rows: PostgreSQL skips rows another transaction holds; SQLite
    /// serializes writers with `BEGIN IMMEDIATE` instead.
    pub fn lock_leases(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE OF l SKIP LOCKED",
        }
    }
}

/// A statement and its parameters.
pub(crate) type Stmt = (String, Vec<Val>);

/// Statements use `$1…$n` placeholders in both dialects.
pub(crate) trait Conn {
    fn dialect(&self) -> Dialect;
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, DbError>;
    /// Several statements without parameters.
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    fn begin(&mut self) -> Result<(), DbError>;
    fn commit(&mut self) -> Result<(), DbError>;
    fn rollback(&mut self) -> Result<(), DbError>;
    /// Current time in Unix ms, from the database server where there is one (leases compare
    /// times written by several hosts).
    fn now_ms(&mut self) -> Result<i64, DbError>;
    /// Drops the connection and opens a new one.
    fn reconnect(&mut self) -> Result<(), DbError>;

    /// Runs independent statements in order; PostgreSQL sends them all before reading any reply.
    fn query_many(&mut self, stmts: &[Stmt]) -> Result<Vec<Vec<Vec<Val>>>, DbError> {
        stmts.iter().map(|(sql, p)| self.query(sql, p)).collect()
    }

    fn query_one(&mut self, sql: &str, params: &[Val]) -> Result<Option<Vec<Val>>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// Runs `f` in one transaction: commit on success, rollback on error.
pub(crate) fn transaction<T>(
    conn: &mut dyn Conn,
    f: &mut dyn FnMut(&mut dyn Conn) -> Result<T, DbError>,
) -> Result<T, DbError> {
    conn.begin()?;
    match f(conn) {
        Ok(v) => {
            conn.commit()?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}

/// Smallest and largest `col` of `table` (a key), `None` for an empty table. Two subqueries, not
/// `SELECT MIN(col), MAX(col)`: SQLite answers a lone MIN or MAX from the index, but scans the
/// whole table for the pair.
pub(crate) fn key_range(
    conn: &mut dyn Conn,
    table: &str,
    col: &str,
) -> Result<Option<(i64, i64)>, DbError> {
    let row = conn.query_one(
        &format!("SELECT (SELECT MIN({col}) FROM {table}), (SELECT MAX({col}) FROM {table})"),
        &[],
    )?;
    Ok(row.and_then(|r| Some((r[0].i64()?, r[1].i64()?))))
}

/// The answers of `N` statements sent together ([`Conn::query_many`]), one per statement.
pub(crate) fn query_each<const N: usize>(
    conn: &mut dyn Conn,
    stmts: [Stmt; N],
) -> Result<[Vec<Vec<Val>>; N], DbError> {
    conn.query_many(&stmts)?
        .try_into()
        .map_err(|got: Vec<_>| DbError::Schema(format!("{N} answers expected, got {}", got.len())))
}

/// The number a `SELECT COUNT(*) …` without parameters answers.
pub(crate) fn count(conn: &mut dyn Conn, sql: &str) -> Result<u64, DbError> {
    Ok(conn
        .query_one(sql, &[])?
        .and_then(|r| r.first().and_then(Val::i64))
        .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

pub(crate) fn local_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
