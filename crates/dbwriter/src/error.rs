//! `DbError`: every way the DB writer can fail, with messages that never carry a password.

use trackmill_types::frame::FrameError;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("bad database URL: {0}")]
    Url(String),
    /// A database error. `transient` errors (connection lost, server restarting, lock
    /// contention) are retried after a reconnect; others are final.
    #[error("database error: {message}")]
    Sql { message: String, transient: bool },
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
        matches!(
            self,
            DbError::Sql {
                transient: true,
                ..
            }
        )
    }

    pub(crate) fn sql(message: impl Into<String>, transient: bool) -> Self {
        DbError::Sql {
            message: message.into(),
            transient,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        let transient = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        DbError::sql(e.to_string(), transient)
    }
}
