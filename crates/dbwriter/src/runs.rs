//! Runs: opening one (and marking dead runs of this host interrupted), resuming, closing.

use crate::conn::Conn;
use crate::val::{text, u64v, Val};
use crate::{DbError, SqlKind};
use trackmill_types::{CleanText, RunCounts, RunStatus};

/// True when a process with this pid exists on this host (EPERM still means it exists).
fn pid_alive(pid: i64) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

pub(crate) fn start(
    conn: &mut dyn Conn,
    host: &CleanText,
    pid: u32,
    roots: &[CleanText],
) -> Result<i64, DbError> {
    let now = conn.now_ms()?;
    let stale = conn.query(
        "SELECT id, pid FROM runs WHERE host = $1 AND status = 'running'",
        &[text(host.as_str())],
    )?;
    for row in stale {
        if let (Some(id), Some(p)) = (row[0].i64(), row[1].i64()) {
            if !pid_alive(p) {
                conn.exec(
                    "UPDATE runs SET status = 'interrupted', ended_at = $2 WHERE id = $1",
                    &[Val::I64(id), Val::I64(now)],
                )?;
            }
        }
    }
    let roots = serde_json::Value::from(
        roots
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect::<Vec<_>>(),
    );
    conn.query_one(
        "INSERT INTO runs (host, pid, roots, started_at, status) \
         VALUES ($1, $2, $3, $4, 'running') RETURNING id",
        &[
            text(host.as_str()),
            Val::I64(pid.into()),
            Val::Json(roots),
            Val::I64(now),
        ],
    )?
    .and_then(|r| r.first().and_then(Val::i64))
    .ok_or_else(|| DbError::sql("run insert returned no id", SqlKind::Fatal))
}

/// Re-opens `run_id` after a writer restart. Errors when the run is unknown.
pub(crate) fn resume(conn: &mut dyn Conn, run_id: i64) -> Result<(), DbError> {
    let n = conn.exec(
        "UPDATE runs SET status = 'running', ended_at = NULL WHERE id = $1",
        &[Val::I64(run_id)],
    )?;
    if n == 0 {
        return Err(DbError::Protocol(format!("ResumeRun: no run {run_id}")));
    }
    Ok(())
}

pub(crate) fn end(
    conn: &mut dyn Conn,
    run_id: i64,
    status: RunStatus,
    c: &RunCounts,
) -> Result<(), DbError> {
    let now = conn.now_ms()?;
    conn.exec(
        "UPDATE runs SET ended_at = $2, status = $3, files_seen = $4, analyzed = $5, \
         failed = $6, quarantined = $7, skipped_unchanged = $8 WHERE id = $1",
        &[
            Val::I64(run_id),
            Val::I64(now),
            text(status.as_str()),
            u64v(c.files_seen),
            u64v(c.analyzed),
            u64v(c.failed),
            u64v(c.quarantined),
            u64v(c.skipped_unchanged),
        ],
    )?;
    // Whatever this run still holds is free for others at once.
    conn.exec("DELETE FROM leases WHERE run_id = $1", &[Val::I64(run_id)])?;
    Ok(())
}
