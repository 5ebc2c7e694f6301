//! `DbError`: every way the DB writer can fail, with messages that never carry a password, and
//! which database errors a retry may cure, which belong to one record, and which end the writer.

use trackmill_types::frame::FrameError;

/// What a database error means for the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlKind {
    /// Connection lost, server restarting, lock contention, serialization failure, deadlock, disk
    /// full: reconnect and run the transaction again, for as long as it takes.
    Transient,
    /// The data of one statement was refused (a data exception, a constraint, a program limit such
    /// as an index row too large): the writer isolates the record that caused it.
    Record,
    /// Anything else (a missing table, no privilege, a read-only database): final.
    Fatal,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("bad database URL: {0}")]
    Url(String),
    /// A database error, with what it means for the writer.
    #[error("database error: {message}")]
    Sql { message: String, kind: SqlKind },
    #[error("database schema: {0}")]
    Schema(String),
    #[error("channel to the supervisor: {0}")]
    Channel(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl DbError {
    pub fn is_transient(&self) -> bool {
        self.kind() == Some(SqlKind::Transient)
    }

    /// True for an error caused by the data of a record (see [`SqlKind::Record`]).
    pub fn is_record(&self) -> bool {
        self.kind() == Some(SqlKind::Record)
    }

    fn kind(&self) -> Option<SqlKind> {
        match self {
            DbError::Sql { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The database's own message (without the "database error: " prefix).
    pub(crate) fn message(&self) -> String {
        match self {
            DbError::Sql { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn sql(message: impl Into<String>, kind: SqlKind) -> Self {
        DbError::Sql {
            message: message.into(),
            kind,
        }
    }
}

/// SQLite result codes: busy, locked and disk full pass; constraints, too big and type mismatch
/// belong to the record; a value Rust could not bind belongs to it too.
impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let kind = match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::DiskFull) => SqlKind::Transient,
            Some(C::ConstraintViolation | C::TooBig | C::TypeMismatch) => SqlKind::Record,
            None if matches!(e, rusqlite::Error::ToSqlConversionFailure(_)) => SqlKind::Record,
            _ => SqlKind::Fatal,
        };
        DbError::sql(e.to_string(), kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_are_sorted_by_what_a_retry_can_do() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (k TEXT UNIQUE, n INTEGER NOT NULL)")
            .unwrap();
        c.execute("INSERT INTO t VALUES ('a', 1)", []).unwrap();
        let kind = |e: rusqlite::Error| match DbError::from(e) {
            DbError::Sql { kind, .. } => kind,
            other => panic!("{other}"),
        };
        let dup = c.execute("INSERT INTO t VALUES ('a', 2)", []).unwrap_err();
        assert_eq!(kind(dup), SqlKind::Record);
        let null = c
            .execute("INSERT INTO t VALUES ('b', NULL)", [])
            .unwrap_err();
        assert_eq!(kind(null), SqlKind::Record);
        let missing = c.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
        assert_eq!(kind(missing), SqlKind::Fatal);
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(kind(busy), SqlKind::Transient);
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert_eq!(kind(full), SqlKind::Transient);
    }
}
