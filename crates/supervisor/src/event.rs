//! The closed set of events the supervisor loop reacts to, and the per-child tasks that turn a
//! child's frames, stderr and exit into events (in that order: a child's exit event comes only
//! after every frame it sent).

use crate::spawn::Spawned;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use trackmill_types::frame::{encode, read_frame_within, FrameError, MAX_FRAME};
use trackmill_types::{ControlCommand, ControlResponse, FromApi, FromDb, FromWorker};

/// What a child's tasks report: a frame, a broken channel, or its end (always the last).
#[derive(Debug)]
pub enum ChildMsg<M> {
    Frame(M),
    /// The channel broke: garbage frame, oversized frame or I/O error (not a clean close).
    BadChannel(FrameError),
    /// The child was reaped; every frame it sent was delivered before.
    Exited(ChildExit),
}

/// How a child ended.
#[derive(Debug)]
pub struct ChildExit {
    pub status: ExitStatus,
    /// Its stderr showed an allocation failure after the last frame it sent.
    pub oom_message: bool,
    /// The last line it wrote to stderr.
    pub last_stderr: String,
}

/// The closed set of events; one variant per source, each with its own payload.
#[derive(Debug)]
pub enum Event {
    /// From the worker process of generation `gen` in slot `slot`.
    Worker {
        slot: usize,
        gen: u64,
        msg: ChildMsg<FromWorker>,
    },
    /// From the DB writer process of generation `gen`.
    Db { gen: u64, msg: ChildMsg<FromDb> },
    /// `serve`: from the API server process of generation `gen`.
    Api { gen: u64, msg: ChildMsg<FromApi> },
    /// `serve`: an operator's command from the control socket, answered through `reply`.
    Control {
        command: ControlCommand,
        reply: oneshot::Sender<ControlResponse>,
    },
    /// `serve`: paths were created, written or moved under a library root; they wait in the
    /// service's `watch::ChangeSet` (at most one such event is queued at a time).
    FsChanged,
}

/// How long a child has to finish a frame it has begun (8 MiB over a Unix socket takes
/// milliseconds): part of a frame and then silence breaks the channel as a protocol error,
/// instead of holding the file until its job deadline.
pub const FRAME_STALL: Duration = Duration::from_secs(10);
/// Queued frames sent to a child in one write, up to about this many bytes.
const COALESCE_BYTES: usize = 256 << 10;
/// The read buffer of a child's channel.
const READ_BUFFER: usize = 64 << 10;

/// Marker Rust's allocation-error handler prints before aborting.
const OOM_MARKERS: [&str; 3] = [
    "memory allocation of",
    "Failed to allocate memory",
    "BFCArena",
];

/// Starts the reader, stderr and reaper tasks of a child; returns the sender for frames to it.
/// `wrap` turns what the child's tasks report into the loop's event for that child.
pub fn attach<In, Out, W>(
    spawned: Spawned,
    events: mpsc::UnboundedSender<Event>,
    wrap: W,
) -> std::io::Result<mpsc::UnboundedSender<Out>>
where
    In: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + Sync + 'static,
    W: Fn(ChildMsg<In>) -> Event + Clone + Send + 'static,
{
    let Spawned {
        mut child,
        pid,
        channel,
    } = spawned;
    channel.set_nonblocking(true)?;
    let stream = UnixStream::from_std(channel)?;
    let (rd, mut wr) = stream.into_split();
    // Buffered: the frames a child has already sent come in with one read, not two per frame.
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();

    tokio::spawn(async move {
        // Frames queued behind the first go out in the same write: one system call and one
        // wake-up of the child for a burst of records, not one per frame.
        let mut buf = Vec::new();
        let mut unencodable = false;
        while let Some(msg) = rx.recv().await {
            buf.clear();
            let mut next = Some(msg);
            while let Some(msg) = next.take() {
                match encode(&msg) {
                    Ok(frame) => buf.extend_from_slice(&frame),
                    // As a failed write: the frames before it go out, then the channel closes.
                    Err(_) => unencodable = true,
                }
                if !unencodable && buf.len() < COALESCE_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() || unencodable {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    // Frames received so far: an allocation failure on stderr counts only when no frame came
    // after it (a worker that reported the failure of one file and went on, or exited as
    // planned, did not die of it).
    let frames = Arc::new(AtomicU64::new(0));
    let ev = events.clone();
    let wrap_frames = wrap.clone();
    let frames_read = frames.clone();
    let reader = tokio::spawn(async move {
        loop {
            match read_frame_within::<_, In>(&mut rd, MAX_FRAME, Some(FRAME_STALL)).await {
                Ok(m) => {
                    frames_read.fetch_add(1, Ordering::SeqCst);
                    if ev.send(wrap_frames(ChildMsg::Frame(m))).is_err() {
                        break;
                    }
                }
                Err(FrameError::Closed) => break,
                Err(e) => {
                    let _ = ev.send(wrap_frames(ChildMsg::BadChannel(e)));
                    break;
                }
            }
        }
    });

    let stderr_task = read_stderr(child.stderr.take(), pid, frames.clone());

    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("could not reap child {pid}: {e}");
                return;
            }
        };
        // Every frame the child sent is delivered before its exit.
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        let (oom_at, last_stderr) = tokio::time::timeout(Duration::from_secs(2), stderr_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let oom_message = oom_at.is_some_and(|at| at >= frames.load(Ordering::SeqCst));
        let _ = events.send(wrap(ChildMsg::Exited(ChildExit {
            status,
            oom_message,
            last_stderr,
        })));
    });
    Ok(tx)
}

/// Relays a child's stderr to the log line by line and keeps its last line, and the number of
/// frames received (`frames`) when the newest allocation-failure line arrived.
fn read_stderr(
    stderr: Option<tokio::process::ChildStderr>,
    pid: u32,
    frames_seen: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<(Option<u64>, String)> {
    tokio::spawn(async move {
        // The number of frames received when the newest allocation-failure line arrived.
        let mut oom: Option<u64> = None;
        let mut tail = String::new();
        let Some(mut err) = stderr else {
            return (oom, tail);
        };
        let mut buf = vec![0u8; 8192];
        let mut line: Vec<u8> = Vec::new();
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if OOM_MARKERS.iter().any(|m| text.contains(m)) {
                        oom = Some(frames_seen.load(Ordering::SeqCst));
                    }
                    tracing::warn!(target: "trackmill::child", pid, "{text}");
                    tail = text;
                    line.clear();
                } else if line.len() < 4096 {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            let text = String::from_utf8_lossy(&line).into_owned();
            if OOM_MARKERS.iter().any(|m| text.contains(m)) {
                oom = Some(frames_seen.load(Ordering::SeqCst));
            }
            tail = text;
        }
        (oom, tail)
    })
}
