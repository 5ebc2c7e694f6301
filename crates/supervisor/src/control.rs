//! The control socket of `trackmill serve`: a Unix socket in a private directory (0700, socket
//! 0600) whose peers must have the service's uid (checked with SO_PEERCRED) and must not be one of
//! the service's own descendants (a worker has the same uid); one request frame in,
//! one response frame out. Also the blocking client used by `trackmill status`, `kill`, ….

use crate::event::Event;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use trackmill_types::frame::{read_frame, read_frame_async, write_frame, write_frame_async};
use trackmill_types::{ControlCommand, ControlRequest, ControlResponse, PROTOCOL_VERSION};

/// Requests are small; anything larger is refused before allocating.
const MAX_REQUEST: usize = 1 << 20;
/// Replies (a status with many workers) stay far below the general frame limit.
const MAX_REPLY: usize = trackmill_types::frame::MAX_FRAME;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create the runtime directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("runtime directory {path} must be owned by uid {uid} and closed to others (it is uid {owner}, mode {mode:o})")]
    DirNotPrivate {
        path: PathBuf,
        uid: u32,
        owner: u32,
        mode: u32,
    },
    #[error("another trackmill service answers on {0}")]
    InUse(PathBuf),
    #[error("another trackmill service{} holds the lock {path}", pid_note(*holder))]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists and is not a socket")]
    NotSocket(PathBuf),
    #[error("cannot bind the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// " (pid N)" when the holder of the lock is known.
fn pid_note(holder: Option<u32>) -> String {
    holder.map_or(String::new(), |p| format!(" (pid {p})"))
}

/// `$XDG_RUNTIME_DIR/trackmill/control.sock`, or `/run/trackmill/control.sock` for root (and
/// when `XDG_RUNTIME_DIR` is unset).
pub fn default_socket_path() -> PathBuf {
    let root = nix::unistd::geteuid().is_root();
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty() && !root) {
        Some(dir) => PathBuf::from(dir).join("trackmill/control.sock"),
        None => PathBuf::from("/run/trackmill/control.sock"),
    }
}

/// The configured socket path, or the default one.
pub fn socket_path(configured: &Path) -> PathBuf {
    if configured.as_os_str().is_empty() {
        default_socket_path()
    } else {
        configured.to_path_buf()
    }
}

/// The control socket's path, claimed by this service: its private directory exists and the lock
/// beside it is held. Held from before the database is opened, so a second service started at the
/// same moment stops here and touches nothing.
pub struct Claim {
    path: PathBuf,
    /// `<socket>.lock`, locked exclusively; the lock goes with the process (kept open until exit,
    /// released by the kernel even after a crash). The file itself stays: removing it would let a
    /// later service lock a fresh file while an older one still holds the removed one.
    lock: std::fs::File,
}

/// The bound control socket and the lock that makes it this service's alone (keep it until exit).
pub struct Bound {
    pub listener: UnixListener,
    pub lock: std::fs::File,
}

/// The lock file beside the socket.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates the private directory and takes the lock beside the socket.
pub fn claim(path: &Path) -> Result<Claim, ControlError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ControlError::Dir {
            path: dir.into(),
            source,
        })?;
    let meta = std::fs::metadata(dir).map_err(|source| ControlError::Dir {
        path: dir.into(),
        source,
    })?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(ControlError::DirNotPrivate {
            path: dir.into(),
            uid,
            owner: meta.uid(),
            mode: meta.mode() & 0o7777,
        });
    }
    let lock = lock(&lock_path(path))?;
    Ok(Claim {
        path: path.into(),
        lock,
    })
}

impl Claim {
    /// Binds the socket, reclaiming one left by a crash: it is removed only if nobody answers on
    /// it. Only the lock holder looks at the old socket, so two services started at once cannot
    /// both reclaim it.
    pub fn bind(self) -> Result<Bound, ControlError> {
        let Claim { path, lock } = self;
        let listener = bind_socket(&path)?;
        Ok(Bound { listener, lock })
    }
}

fn bind_socket(path: &Path) -> Result<UnixListener, ControlError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(ControlError::NotSocket(path.into())),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(ControlError::InUse(path.into())),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tracing::info!("removing the stale control socket {}", path.display());
                let _ = std::fs::remove_file(path);
            }
            Err(source) => {
                return Err(ControlError::Bind {
                    path: path.into(),
                    source,
                })
            }
        },
        Err(_) => {}
    }
    let bind_err = |source| ControlError::Bind {
        path: path.into(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Locks `path` exclusively without waiting and writes this process's id into it, so that a
/// second service can name the holder.
fn lock(path: &Path) -> Result<std::fs::File, ControlError> {
    use std::io::{Read, Seek, Write};
    let err = |source| ControlError::Lock {
        path: path.into(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(ControlError::Locked {
                path: path.into(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(err)?;
    Ok(file)
}

/// Accepts connections for the life of the runtime; each request becomes an `Event::Control`.
pub fn spawn_server(listener: UnixListener, events: mpsc::UnboundedSender<Event>) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("control socket unusable: {e}");
            return;
        }
    };
    crate::clients::spawn("control socket", listener, events, serve_one);
}

async fn serve_one(mut stream: tokio::net::UnixStream, events: mpsc::UnboundedSender<Event>) {
    let me = nix::unistd::geteuid().as_raw();
    let reply = match stream.peer_cred() {
        Ok(cred)
            if cred.uid() == me
                && cred
                    .pid()
                    .is_some_and(|p| is_descendant(p, std::process::id())) =>
        {
            tracing::warn!(
                "control socket: refused pid {:?}, a process this service started",
                cred.pid()
            );
            Some(ControlResponse::Refused(
                "a process started by this service (a worker or the DB writer) may not control it"
                    .into(),
            ))
        }
        Ok(cred) if cred.uid() == me => None,
        Ok(cred) => {
            tracing::warn!(
                "control socket: refused a client with uid {} (pid {:?})",
                cred.uid(),
                cred.pid()
            );
            Some(ControlResponse::Refused(format!(
                "uid {} may not control this service (only uid {me})",
                cred.uid()
            )))
        }
        Err(e) => Some(ControlResponse::Refused(format!(
            "cannot identify the client: {e}"
        ))),
    };
    let reply = match reply {
        Some(r) => r,
        None => {
            let req = tokio::time::timeout(
                CLIENT_TIMEOUT,
                read_frame_async::<_, ControlRequest>(&mut stream, MAX_REQUEST),
            )
            .await;
            match req {
                Ok(Ok(req)) if req.protocol == PROTOCOL_VERSION => {
                    let (tx, rx) = oneshot::channel();
                    let _ = events.send(Event::Control {
                        command: req.command,
                        reply: tx,
                    });
                    rx.await.unwrap_or_else(|_| {
                        ControlResponse::Refused("the service is shutting down".into())
                    })
                }
                Ok(Ok(req)) => ControlResponse::Refused(format!(
                    "client speaks protocol {} but the service speaks {PROTOCOL_VERSION}",
                    req.protocol
                )),
                Ok(Err(e)) => ControlResponse::Refused(format!("bad request: {e}")),
                Err(_) => return,
            }
        }
    };
    let _ = write_frame_async(&mut stream, &reply).await;
}

/// The parent pid in `/proc/PID/stat` (the field after the parenthesised command name, which
/// may itself contain spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// True when `pid` is a child, grandchild… of `ancestor` (not `ancestor` itself): its chain of
/// parents in /proc reaches `ancestor` before pid 1. A worker runs with this service's uid, so
/// the uid check alone would let it resize, drain or kill the pool.
pub fn is_descendant(pid: i32, ancestor: u32) -> bool {
    let Ok(mut p) = u32::try_from(pid) else {
        return false;
    };
    // Process trees are shallow; the bound only guards against a cycle read mid-reparenting.
    for _ in 0..256 {
        match parent_of(p) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 && parent != p => p = parent,
            _ => return false,
        }
    }
    false
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the service at {path}: {source} (is `trackmill serve` running?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Frame {
        path: PathBuf,
        source: trackmill_types::frame::FrameError,
    },
}

/// Sends one command to the service and waits for its answer.
pub fn request(path: &Path, command: ControlCommand) -> Result<ControlResponse, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.into(),
        source,
    })?;
    let _ = s.set_read_timeout(Some(CLIENT_TIMEOUT));
    let frame_err = |source| ClientError::Frame {
        path: path.into(),
        source,
    };
    // A refused peer is answered before it writes; a failed write still lets us read that answer.
    let _ = write_frame(
        &mut s,
        &ControlRequest {
            protocol: PROTOCOL_VERSION,
            command,
        },
    );
    read_frame(&mut s, MAX_REPLY).map_err(frame_err)
}

/// Removes the socket at shutdown if it is still the one this service bound.
pub fn remove_socket(path: &Path, ino: u64) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == ino) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_are_recognised_through_the_process_tree() {
        let me = std::process::id();
        // A grandchild: sh starts sleep and waits for it.
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        assert!(is_descendant(sh.id() as i32, me));
        assert!(is_descendant(grandchild, me));
        assert!(
            !is_descendant(me as i32, me),
            "a process is not its own descendant"
        );
        assert!(!is_descendant(parent_of(me).unwrap() as i32, me));
        assert!(!is_descendant(1, me));
        assert!(!is_descendant(-1, me));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::Signal::SIGKILL,
        );
        sh.wait().unwrap();
    }
}
