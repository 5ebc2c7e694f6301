//! The DB-writer process loop: frames in, batched transactions, acknowledgements after commit,
//! lease renewal, reconnect-and-reapply when the database goes away, and a record the database
//! refuses for good isolated to its own file.

use crate::conn::{local_now_ms, transaction, Conn};
use crate::store::{self, BatchItem};
use crate::{leases, missing, open, runs, DbError, DbUrl, SqlKind, WriterOptions};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use trackmill_types::frame::{read_frame, write_frame, FrameError, MAX_FRAME};
use trackmill_types::{CleanText, FromDb, Hello, Record, Role, ToDb, Verdict};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

struct Writer {
    url: DbUrl,
    conn: Option<Box<dyn Conn>>,
    out: UnixStream,
    opts: WriterOptions,
    run_id: Option<i64>,
    pending: Vec<BatchItem>,
    deadline: Option<Instant>,
    next_renew: Instant,
    peer_gone: bool,
}

type Op<'a, T> = &'a mut dyn FnMut(&mut dyn Conn) -> Result<T, DbError>;

impl Writer {
    /// Sends one frame. Once the supervisor has closed its end, replies are dropped: the loop
    /// still commits what it holds and ends at the end of the channel.
    fn send(&mut self, msg: &FromDb) -> Result<(), DbError> {
        if self.peer_gone {
            return Ok(());
        }
        match write_frame(&mut self.out, msg) {
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!("supervisor closed the channel; replies dropped");
                self.peer_gone = true;
                Ok(())
            }
            r => Ok(r?),
        }
    }

    /// Tells the supervisor the error that ends this writer (it logs it; the writer then exits
    /// non-zero).
    fn report(&mut self, e: &DbError) {
        let _ = self.send(&FromDb::Error {
            message: CleanText::new(&e.to_string()),
            retrying: false,
        });
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.opts.lease_ttl_s.max(1) * 1000).unwrap_or(i64::MAX)
    }

    fn renew_every(&self) -> Duration {
        Duration::from_millis((self.opts.lease_ttl_s.max(1) * 1000 / 3).max(1))
    }

    /// Runs `op` in a transaction until it commits. Transient failures send one `Error
    /// {retrying: true}`, then reconnect with capped exponential backoff and run `op` again.
    /// Other errors are returned as they are (rolled back).
    fn retry<T>(&mut self, op: Op<'_, T>) -> Result<T, DbError> {
        let mut delay = BACKOFF_START;
        let mut reported = false;
        loop {
            let result = match self.conn.as_mut() {
                Some(c) => transaction(c.as_mut(), op),
                None => match open(&self.url) {
                    Ok(c) => {
                        self.conn = Some(c);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(v) => {
                    if reported {
                        tracing::info!("database {} is back", self.url.redacted());
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!("database {}: {e}; retrying", self.url.redacted());
                    if !reported {
                        reported = true;
                        self.send(&FromDb::Error {
                            message: CleanText::new(&e.to_string()),
                            retrying: true,
                        })?;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                    if let Some(c) = self.conn.as_mut() {
                        if let Err(e) = c.reconnect() {
                            tracing::debug!("reconnect failed: {e}");
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits everything pending, then acknowledges it: first a `StoreFailed` for each record
    /// the database refused (stored as a `store` failure instead), then one `Acked` for all.
    fn commit(&mut self) -> Result<(), DbError> {
        self.deadline = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut refused = Vec::new();
        self.write_isolating(&pending, &mut refused)?;
        for (seq, message) in refused {
            self.send(&FromDb::StoreFailed { seq, message })?;
        }
        let seqs = pending.iter().map(BatchItem::seq).collect();
        self.send(&FromDb::Acked { seqs })
    }

    /// Writes `items` in one transaction. When the database refuses it because of a record's data
    /// ([`SqlKind::Record`]), each half is written on its own, down to the item that causes it
    /// (a batch of n with one such item: about 2·log2(n) transactions): a record is replaced by
    /// its store failure and named in `refused`; an event is dropped with an error in the log.
    fn write_isolating(
        &mut self,
        items: &[BatchItem],
        refused: &mut Vec<(u64, CleanText)>,
    ) -> Result<(), DbError> {
        let e = match self.retry(&mut |c| store::write_batch(c, items, local_now_ms())) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_record() => e,
            Err(e) => return Err(e),
        };
        if items.len() > 1 {
            let (a, b) = items.split_at(items.len() / 2);
            self.write_isolating(a, refused)?;
            return self.write_isolating(b, refused);
        }
        let message = e.message();
        match &items[0] {
            BatchItem::Store(seq, r) => {
                tracing::warn!(
                    "{}: the database refused the record; stored as failed (store): {message}",
                    r.key.path.display()
                );
                self.store_refused(r, &message)?;
                refused.push((*seq, CleanText::new(&message)));
            }
            BatchItem::Event(seq, _) => {
                tracing::error!("worker event {seq} dropped: the database refused it: {message}");
            }
        }
        Ok(())
    }

    /// Stores the `store` failure that stands in for `r`; if the database refuses that too, a
    /// minimal one. When not even that goes in, the database takes nothing from this writer:
    /// the error is final.
    fn store_refused(&mut self, r: &Record, message: &str) -> Result<(), DbError> {
        let mut last = String::new();
        for minimal in [false, true] {
            let stand_in = [BatchItem::Store(
                0,
                Box::new(store::store_failure(r, message, minimal)),
            )];
            match self.retry(&mut |c| store::write_batch(c, &stand_in, local_now_ms())) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_record() => last = e.message(),
                Err(e) => return Err(e),
            }
        }
        Err(DbError::sql(
            format!(
                "not even a failure row for {} could be stored: {last} (first refusal: {message})",
                r.key.path.display()
            ),
            SqlKind::Fatal,
        ))
    }

    /// Runs the checkpoint for `files` (see [`leases::check`]); without an open run nothing can
    /// be leased, so every file is `Todo`.
    fn check(
        &mut self,
        policy: &trackmill_types::CheckPolicy,
        files: &[trackmill_types::FileKey],
        lease: bool,
    ) -> Result<Vec<Verdict>, DbError> {
        match self.run_id {
            Some(run) => {
                let ttl = self.ttl_ms();
                self.retry(&mut |c| leases::check(c, run, policy, files, ttl, lease))
            }
            None => {
                self.send(&FromDb::Error {
                    message: CleanText::new("Check or Lease before StartRun: nothing leased"),
                    retrying: false,
                })?;
                Ok(vec![Verdict::Todo; files.len()])
            }
        }
    }

    /// Marks the gone files under `roots` (see [`missing::Gone`]), one window of row ids at a
    /// time: the window is read in one short transaction, its files are looked at outside any,
    /// and the gone ones are marked in another, so no lock is held while the file system
    /// answers; returns (newly marked, missing in all).
    fn sweep(&mut self, roots: &[trackmill_types::PathBytes]) -> Result<(u64, u64), DbError> {
        let prefixes = missing::prefixes(roots);
        let mut marked = 0;
        if let (false, Some((first, last))) =
            (prefixes.is_empty(), self.retry(&mut missing::id_range)?)
        {
            let now = local_now_ms();
            let mut gone = missing::Gone::default();
            let mut start = first - 1;
            while start < last {
                let end = start.saturating_add(missing::WINDOW);
                let rows = self.retry(&mut |c| missing::window(c, start, end, false))?;
                let ids: Vec<i64> = rows
                    .iter()
                    .filter(|(_, p)| prefixes.iter().any(|pre| p.starts_with(pre)))
                    .filter(|(_, p)| gone.check(p))
                    .map(|(id, _)| *id)
                    .collect();
                if !ids.is_empty() {
                    marked += self.retry(&mut |c| missing::mark(c, &ids, now))?;
                }
                start = end;
            }
        }
        let total = self.retry(&mut missing::count)?;
        if marked > 0 {
            tracing::info!("{marked} tracks marked missing (files gone); {total} missing in all");
        }
        Ok((marked, total))
    }

    fn handle(&mut self, msg: ToDb) -> Result<(), DbError> {
        match msg {
            ToDb::StartRun { host, pid, roots } => {
                let id = self.retry(&mut |c| runs::start(c, &host, pid, &roots))?;
                self.run_id = Some(id);
                self.next_renew = Instant::now() + self.renew_every();
                self.send(&FromDb::RunStarted { run_id: id })
            }
            ToDb::ResumeRun { run_id } => {
                self.retry(&mut |c| runs::resume(c, run_id))?;
                self.run_id = Some(run_id);
                self.send(&FromDb::RunStarted { run_id })
            }
            ToDb::Check {
                query,
                policy,
                files,
                lease,
            } => {
                let verdicts = self.check(&policy, &files, lease)?;
                self.send(&FromDb::CheckResult { query, verdicts })
            }
            ToDb::Lease {
                query,
                policy,
                files,
            } => {
                let verdicts = self.check(&policy, &files, true)?;
                self.send(&FromDb::Leased { query, verdicts })
            }
            ToDb::ClaimExpired {
                query,
                policy,
                limit,
            } => {
                let (files, still_leased) = match self.run_id {
                    Some(run) => {
                        let ttl = self.ttl_ms();
                        self.retry(&mut |c| leases::claim_expired(c, run, &policy, limit, ttl))?
                    }
                    None => (Vec::new(), 0),
                };
                self.send(&FromDb::Claimed {
                    query,
                    files,
                    still_leased,
                })
            }
            ToDb::SweepMissing { query, roots } => {
                self.commit()?;
                // Best effort: a sweep the database refuses must not end the writer (it would be
                // restarted and sent the same sweep, forever).
                let (marked, missing) = self.sweep(&roots).unwrap_or_else(|e| {
                    tracing::error!("sweep for missing files failed, nothing marked: {e}");
                    (0, 0)
                });
                self.send(&FromDb::Swept {
                    query,
                    marked,
                    missing,
                })
            }
            ToDb::Store { seq, record } => self.push(BatchItem::Store(seq, record)),
            ToDb::Event { seq, event } => self.push(BatchItem::Event(seq, event)),
            ToDb::Flush { token } => {
                self.commit()?;
                self.send(&FromDb::Flushed { token })
            }
            ToDb::EndRun {
                run_id,
                status,
                counts,
            } => {
                self.commit()?;
                self.retry(&mut |c| runs::end(c, run_id, status, &counts))?;
                if self.run_id == Some(run_id) {
                    self.run_id = None;
                }
                self.send(&FromDb::RunEnded { run_id })
            }
        }
    }

    fn push(&mut self, p: BatchItem) -> Result<(), DbError> {
        self.pending.push(p);
        if self.pending.len() >= self.opts.batch_max.max(1) {
            return self.commit();
        }
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + Duration::from_millis(self.opts.batch_ms));
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), DbError> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| d <= now) {
            self.commit()?;
        }
        if now >= self.next_renew {
            self.next_renew = now + self.renew_every();
            if let Some(run) = self.run_id {
                let ttl = self.ttl_ms();
                self.retry(&mut |c| leases::renew(c, run, ttl))?;
            }
        }
        Ok(())
    }

    fn wait(&self) -> Duration {
        let now = Instant::now();
        let mut until = self.next_renew;
        if let Some(d) = self.deadline {
            until = until.min(d);
        }
        until.saturating_duration_since(now)
    }
}

/// The db-writer process body: serves the supervisor on `chan` until it closes the channel.
pub fn run(url: &DbUrl, chan: UnixStream, opts: WriterOptions) -> Result<(), DbError> {
    let reader = chan.try_clone()?;
    let mut w = Writer {
        url: url.clone(),
        conn: None,
        out: chan,
        opts,
        run_id: None,
        pending: Vec::new(),
        deadline: None,
        next_renew: Instant::now(),
        peer_gone: false,
    };
    w.send(&FromDb::Hello(Hello::new(Role::DbWriter)))?;
    // Connect (and migrate) now, retrying like any other outage.
    if let Err(e) = w.retry(&mut |_| Ok(())) {
        w.report(&e);
        return Err(e);
    }
    tracing::info!("db writer on {}", url.redacted());

    let (tx, rx) = mpsc::channel::<Result<ToDb, FrameError>>();
    // Buffered: the records the supervisor sent in one write come in with one read.
    let mut reader = std::io::BufReader::with_capacity(64 << 10, reader);
    let reader_thread = std::thread::Builder::new()
        .name("db-writer-reader".into())
        .spawn(move || loop {
            let msg = read_frame::<_, ToDb>(&mut reader, MAX_FRAME);
            let stop = msg.is_err();
            if tx.send(msg).is_err() || stop {
                break;
            }
        })?;

    let result = loop {
        match rx.recv_timeout(w.wait()) {
            Ok(Ok(msg)) => {
                if let Err(e) = w.handle(msg) {
                    break Err(e);
                }
            }
            Ok(Err(FrameError::Closed)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                break w.commit();
            }
            Ok(Err(e)) => {
                let commit = w.commit();
                break commit.and(Err(DbError::Channel(e)));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Err(e) = w.tick() {
            break Err(e);
        }
    };
    if let Err(e) = &result {
        w.report(e);
    }
    // On an error the reader may still block on the channel; shutting it down ends the thread.
    let _ = w.out.shutdown(std::net::Shutdown::Both);
    let _ = reader_thread.join();
    result
}
