//! The checkpoint and the leases: which files are done, which this run now holds, and taking
//! over files whose holder died. PostgreSQL skips rows other transactions lock (`SKIP LOCKED`);
//! SQLite gets the same outcome from serialized write transactions. Rows are found by the
//! digest of their path (`path_sha`), never by the path itself.

use crate::conn::Conn;
use crate::val::{sha256, u64v, Val};
use crate::DbError;
use trackmill_types::{CheckPolicy, CleanText, FileKey, PathBytes, Verdict};

/// `path_sha`, `path`, `size`, `mtime_ns` of a file.
fn key_vals(f: &FileKey) -> [Val; 4] {
    [
        sha256(f.path.as_bytes()),
        Val::Bytes(f.path.as_bytes().to_vec()),
        u64v(f.size),
        Val::I64(f.mtime_ns),
    ]
}

/// What the stored row of a file says: no work needed under the policy (`done`), and whether a
/// pass marked its file gone (`missing`).
struct Stored {
    done: bool,
    missing: bool,
}

/// The columns of a track row that [`Stored::of`] reads, in its order (a macro, so that the
/// statements that read them are constant text).
macro_rules! stored_cols {
    () => {
        "t.size, t.mtime_ns, t.status, t.analyzer_version, t.models, t.missing_since"
    };
}

fn lookup(conn: &mut dyn Conn, f: &FileKey, policy: &CheckPolicy) -> Result<Stored, DbError> {
    let row = conn.query_one(
        concat!(
            "SELECT ",
            stored_cols!(),
            " FROM tracks t WHERE t.path_sha = $1"
        ),
        &[sha256(f.path.as_bytes())],
    )?;
    Ok(Stored::of(row.as_deref().unwrap_or(&[]), f, policy))
}

impl Stored {
    /// From the `stored_cols!` columns of `f`'s row; no row (or all of them NULL) is neither
    /// done nor missing.
    fn of(row: &[Val], f: &FileKey, policy: &CheckPolicy) -> Stored {
        let col = |i: usize| row.get(i).unwrap_or(&Val::Null);
        let same = col(0).i64() == u64v(f.size).i64() && col(1).i64() == Some(f.mtime_ns);
        let done = same
            && match col(2).str() {
                // A row written by a newer analyser also counts: an older binary must not
                // overwrite it.
                Some("analyzed") => {
                    col(3).i64().unwrap_or(0) >= i64::from(policy.analyzer_version)
                        && has_models(col(4), &policy.models)
                }
                Some(_) => !policy.retry_failed,
                None => false,
            };
        Stored {
            done,
            missing: col(5).i64().is_some(),
        }
    }
}

/// True when a stored row makes this file need no work under `policy`.
fn is_done(conn: &mut dyn Conn, f: &FileKey, policy: &CheckPolicy) -> Result<bool, DbError> {
    Ok(lookup(conn, f, policy)?.done)
}

/// True when the stored list of models that ran (`tracks.models`) names every model in `wanted`.
fn has_models(stored: &Val, wanted: &[CleanText]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let stored = stored.json();
    let ran: Vec<&str> = stored
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    wanted.iter().all(|m| ran.contains(&m.as_str()))
}

/// Takes the lease on `f` for `run_id` unless another live run holds it.
fn acquire(
    conn: &mut dyn Conn,
    run_id: i64,
    f: &FileKey,
    now: i64,
    ttl_ms: i64,
) -> Result<Verdict, DbError> {
    let [sha, path, size, mtime] = key_vals(f);
    let expires = Val::I64(now.saturating_add(ttl_ms));
    let lock = conn.dialect().lock_leases();
    for _ in 0..2 {
        let inserted = conn.query(
            "INSERT INTO leases (path_sha, path, size, mtime_ns, run_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (path_sha) DO NOTHING RETURNING run_id",
            &[
                sha.clone(),
                path.clone(),
                size.clone(),
                mtime.clone(),
                Val::I64(run_id),
                expires.clone(),
            ],
        )?;
        if !inserted.is_empty() {
            return Ok(Verdict::Todo);
        }
        let held = conn.query_one(
            &format!(
                "SELECT l.run_id, l.expires_at, r.status FROM leases l \
                 LEFT JOIN runs r ON r.id = l.run_id WHERE l.path_sha = $1{lock}"
            ),
            std::slice::from_ref(&sha),
        )?;
        // No row: released in between (try again) or locked by another transaction (busy).
        let Some(held) = held else { continue };
        let holder = held[0].i64();
        let live = held[1].i64().unwrap_or(0) >= now && held[2].str() == Some("running");
        if holder == Some(run_id) || !live {
            conn.exec(
                "UPDATE leases SET size = $2, mtime_ns = $3, run_id = $4, expires_at = $5 \
                 WHERE path_sha = $1",
                &[sha, size, mtime, Val::I64(run_id), expires],
            )?;
            return Ok(Verdict::Todo);
        }
        return Ok(Verdict::Busy);
    }
    Ok(Verdict::Busy)
}

/// The stored row of `f` and the lease on it, in one query (a checkpoint without leasing asks
/// both of every file): the `stored_cols!` columns, then the lease's run, expiry and run status,
/// all NULL where there is no such row.
fn lookup_with_lease(
    conn: &mut dyn Conn,
    f: &FileKey,
    policy: &CheckPolicy,
    run_id: i64,
    now: i64,
) -> Result<(Stored, bool), DbError> {
    let row = conn
        .query_one(
            concat!(
                "SELECT ",
                stored_cols!(),
                ", l.run_id, l.expires_at, r.status FROM (SELECT 1) AS one \
                 LEFT JOIN tracks t ON t.path_sha = $1 LEFT JOIN leases l ON l.path_sha = $1 \
                 LEFT JOIN runs r ON r.id = l.run_id"
            ),
            &[sha256(f.path.as_bytes())],
        )?
        .unwrap_or_default();
    let col = |i: usize| row.get(i).unwrap_or(&Val::Null);
    // Another live run holds it.
    let held_elsewhere = col(6).i64().is_some_and(|holder| holder != run_id)
        && col(7).i64().unwrap_or(0) >= now
        && col(8).str() == Some("running");
    Ok((Stored::of(&row, f, policy), held_elsewhere))
}

/// The checkpoint for `files`: `Done`, `Busy` (another live run holds it) or `Todo`. With
/// `lease`, every `Todo` file is leased to `run_id` (taken over when its lease expired or its run
/// ended); without, no lease is written. Either way a file found here that was marked missing is
/// unmarked: the scanner just saw it.
pub(crate) fn check(
    conn: &mut dyn Conn,
    run_id: i64,
    policy: &CheckPolicy,
    files: &[FileKey],
    ttl_ms: i64,
    lease: bool,
) -> Result<Vec<Verdict>, DbError> {
    let now = conn.now_ms()?;
    // Lease rows are taken in path order so two writers never wait on each other in a cycle.
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[a].path.cmp(&files[b].path));
    let mut verdicts = vec![Verdict::Busy; files.len()];
    for i in order {
        let f = &files[i];
        let (stored, held_elsewhere) = if lease {
            (lookup(conn, f, policy)?, false)
        } else {
            lookup_with_lease(conn, f, policy, run_id, now)?
        };
        if stored.missing {
            // The scanner found it: the file is back (a disk remounted, a folder restored).
            crate::missing::mark_present(conn, f)?;
        }
        verdicts[i] = if stored.done {
            Verdict::Done
        } else if !lease {
            if held_elsewhere {
                Verdict::Busy
            } else {
                Verdict::Todo
            }
        } else {
            match acquire(conn, run_id, f, now, ttl_ms)? {
                // The holder may have stored the file and released its lease between the first
                // look and the lease insert (which waited for its commit): look again, now that
                // the lease is ours, or both runs would analyse the file.
                Verdict::Todo if is_done(conn, f, policy)? => {
                    conn.exec(
                        "DELETE FROM leases WHERE path_sha = $1 AND run_id = $2",
                        &[sha256(f.path.as_bytes()), Val::I64(run_id)],
                    )?;
                    Verdict::Done
                }
                v => v,
            }
        };
    }
    Ok(verdicts)
}

/// Byte ranges `[root/, root0)`, one per root of `run_id`: a path lies under a root exactly when
/// it falls in its range ('0' follows '/'). `None` when a root is not plain text (a lossy rendering
/// of a non-UTF-8 name cannot be matched byte for byte) or none is stored: then every lease counts.
fn root_ranges(conn: &mut dyn Conn, run_id: i64) -> Result<Option<Vec<Val>>, DbError> {
    let Some(row) = conn.query_one("SELECT roots FROM runs WHERE id = $1", &[Val::I64(run_id)])?
    else {
        return Ok(None);
    };
    let roots = row[0].json();
    let mut bounds = Vec::new();
    for r in roots.as_array().into_iter().flatten() {
        let Some(s) = r
            .as_str()
            .filter(|s| !s.is_empty() && !s.contains('\u{fffd}'))
        else {
            return Ok(None);
        };
        let mut lo = s.as_bytes().to_vec();
        if lo.last() != Some(&b'/') {
            lo.push(b'/');
        }
        let mut hi = lo.clone();
        if let Some(last) = hi.last_mut() {
            *last += 1;
        }
        bounds.push(Val::Bytes(lo));
        bounds.push(Val::Bytes(hi));
    }
    Ok((!bounds.is_empty()).then_some(bounds))
}

/// ` AND (l.path in one of the ranges)` with placeholders from `$first`; empty without ranges.
fn under_roots(ranges: Option<&[Val]>, first: usize) -> String {
    let Some(ranges) = ranges else {
        return String::new();
    };
    let conds: Vec<String> = (0..ranges.len() / 2)
        .map(|i| {
            let n = first + 2 * i;
            format!("(l.path >= ${n} AND l.path < ${})", n + 1)
        })
        .collect();
    format!(" AND {}", any_of(&conds))
}

/// `conds` joined by OR as a balanced tree of parentheses: a flat chain is an expression as deep
/// as it is long, and SQLite refuses one over 1,000 deep (a scan may have that many roots).
fn any_of(conds: &[String]) -> String {
    match conds {
        [] => "FALSE".into(),
        [one] => format!("({one})"),
        _ => {
            let (a, b) = conds.split_at(conds.len() / 2);
            format!("({} OR {})", any_of(a), any_of(b))
        }
    }
}

/// Files under this run's roots whose lease expired (or whose run ended) and that are not done,
/// now leased to `run_id`; and the number of files under its roots that other live runs still
/// hold. Leases elsewhere (another library or host layout sharing the database) are left alone:
/// the files may not exist here, and waiting for them would tie this run to the other's.
pub(crate) fn claim_expired(
    conn: &mut dyn Conn,
    run_id: i64,
    policy: &CheckPolicy,
    limit: u32,
    ttl_ms: i64,
) -> Result<(Vec<FileKey>, u64), DbError> {
    let now = conn.now_ms()?;
    let lock = conn.dialect().lock_leases();
    let ranges = root_ranges(conn, run_id)?;
    let mut claimed = Vec::new();
    while claimed.len() < limit as usize {
        let want = limit as usize - claimed.len();
        let mut params = vec![Val::I64(run_id), Val::I64(now), u64v(want as u64)];
        params.extend(ranges.iter().flatten().cloned());
        let rows = conn.query(
            &format!(
                "SELECT l.path, l.size, l.mtime_ns, l.path_sha FROM leases l \
                 LEFT JOIN runs r ON r.id = l.run_id \
                 WHERE l.run_id <> $1 \
                   AND (l.expires_at < $2 OR r.status IS NULL OR r.status <> 'running'){} \
                 ORDER BY l.expires_at, l.path LIMIT $3{lock}",
                under_roots(ranges.as_deref(), 4)
            ),
            &params,
        )?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let key = FileKey {
                path: PathBytes(row[0].bytes().unwrap_or_default().to_vec()),
                size: u64::try_from(row[1].i64().unwrap_or(0)).unwrap_or(0),
                mtime_ns: row[2].i64().unwrap_or(0),
            };
            let sha = row[3].clone();
            if is_done(conn, &key, policy)? {
                conn.exec("DELETE FROM leases WHERE path_sha = $1", &[sha])?;
            } else {
                conn.exec(
                    "UPDATE leases SET run_id = $2, expires_at = $3 WHERE path_sha = $1",
                    &[sha, Val::I64(run_id), Val::I64(now.saturating_add(ttl_ms))],
                )?;
                claimed.push(key);
            }
        }
    }
    let mut params = vec![Val::I64(run_id), Val::I64(now)];
    params.extend(ranges.iter().flatten().cloned());
    let still = conn
        .query_one(
            &format!(
                "SELECT COUNT(*) FROM leases l JOIN runs r ON r.id = l.run_id \
                 WHERE l.run_id <> $1 AND l.expires_at >= $2 AND r.status = 'running'{}",
                under_roots(ranges.as_deref(), 3)
            ),
            &params,
        )?
        .and_then(|r| r.first().and_then(Val::i64))
        .unwrap_or(0);
    Ok((claimed, u64::try_from(still).unwrap_or(0)))
}

/// Pushes the expiry of every lease `run_id` holds.
pub(crate) fn renew(conn: &mut dyn Conn, run_id: i64, ttl_ms: i64) -> Result<u64, DbError> {
    let now = conn.now_ms()?;
    conn.exec(
        "UPDATE leases SET expires_at = $1 WHERE run_id = $2",
        &[Val::I64(now.saturating_add(ttl_ms)), Val::I64(run_id)],
    )
}
