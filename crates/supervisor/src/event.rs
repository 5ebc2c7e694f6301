//! The closed set of events the supervisor loop reacts to, and the per-child tasks that turn a
//! child's frames, stderr and exit into events (in that order: a child's exit event comes only
//! after every frame it sent).

use crate::spawn::Spawned;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use trackmill_types::frame::{read_frame_async, write_frame_async, FrameError, MAX_FRAME};
use trackmill_types::{ControlCommand, ControlResponse, FromDb, FromWorker};

/// Which child an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// A worker slot and the generation of the process in it.
    Worker {
        slot: usize,
        gen: u64,
    },
    DbWriter {
        gen: u64,
    },
}

#[derive(Debug)]
pub enum ChildMsg {
    Worker(FromWorker),
    Db(FromDb),
    /// The channel broke: garbage frame, oversized frame or I/O error (not a clean close).
    BadChannel(FrameError),
}

#[derive(Debug)]
pub enum Event {
    Child {
        who: Who,
        msg: ChildMsg,
    },
    /// The child was reaped. `oom_message` is true when its stderr showed an allocation failure.
    Exited {
        who: Who,
        status: ExitStatus,
        oom_message: bool,
        last_stderr: String,
    },
    /// `serve`: an operator's command from the control socket, answered through `reply`.
    Control {
        command: ControlCommand,
        reply: oneshot::Sender<ControlResponse>,
    },
    /// `serve`: paths were created, written or moved under a library root; they wait in the
    /// service's `watch::ChangeSet` (at most one such event is queued at a time).
    FsChanged,
}

/// Marker Rust's allocation-error handler prints before aborting.
const OOM_MARKERS: [&str; 3] = [
    "memory allocation of",
    "Failed to allocate memory",
    "BFCArena",
];

/// Starts the reader, stderr and reaper tasks of a child; returns the sender for frames to it.
pub fn attach<In, Out>(
    spawned: Spawned,
    who: Who,
    events: mpsc::UnboundedSender<Event>,
    wrap: fn(In) -> ChildMsg,
) -> std::io::Result<mpsc::UnboundedSender<Out>>
where
    In: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + Sync + 'static,
{
    let Spawned {
        mut child,
        pid,
        channel,
    } = spawned;
    channel.set_nonblocking(true)?;
    let stream = UnixStream::from_std(channel)?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();

    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if write_frame_async(&mut wr, &msg).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let ev = events.clone();
    let reader = tokio::spawn(async move {
        loop {
            match read_frame_async::<_, In>(&mut rd, MAX_FRAME).await {
                Ok(m) => {
                    if ev.send(Event::Child { who, msg: wrap(m) }).is_err() {
                        break;
                    }
                }
                Err(FrameError::Closed) => break,
                Err(e) => {
                    let _ = ev.send(Event::Child {
                        who,
                        msg: ChildMsg::BadChannel(e),
                    });
                    break;
                }
            }
        }
    });

    let stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut oom = false;
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
                    oom |= OOM_MARKERS.iter().any(|m| text.contains(m));
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
            oom |= OOM_MARKERS.iter().any(|m| text.contains(m));
            tail = text;
        }
        (oom, tail)
    });

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
        let (oom_message, last_stderr) = tokio::time::timeout(Duration::from_secs(2), stderr_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let _ = events.send(Event::Exited {
            who,
            status,
            oom_message,
            last_stderr,
        });
    });
    Ok(tx)
}
