//! Spawning child processes (workers and the DB writer): a private socketpair on fd 3, its own
//! process group, a parent-death signal, and for workers RLIMIT_AS set before exec. Children are
//! killed and reaped when their handle drops.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use tokio::process::{Child, Command};

/// The fd on which a child finds its channel to the supervisor.
pub const CHANNEL_FD: i32 = 3;

/// How to start one kind of child.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// RLIMIT_AS in bytes (0: none).
    pub address_space_limit: u64,
    /// RLIMIT_DATA in bytes (0: none), for GPU workers where RLIMIT_AS breaks CUDA.
    pub data_limit: u64,
}

pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub channel: UnixStream,
}

/// Starts a child. Its stderr is piped (the caller reads it), stdin and stdout are null.
pub fn spawn_child(spec: &ChildSpec) -> std::io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let theirs: OwnedFd = theirs.into();
    let fd = theirs.as_raw_fd();
    let parent = std::process::id() as i32;
    let as_limit = spec.address_space_limit;
    let data_limit = spec.data_limit;

    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (dup2, fcntl, setpgid, prctl, getppid, setrlimit, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if fd == CHANNEL_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CHANNEL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            for (resource, limit) in [(libc::RLIMIT_AS, as_limit), (libc::RLIMIT_DATA, data_limit)]
            {
                if limit > 0 {
                    let rl = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(resource, &rl) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    Ok(Spawned {
        child,
        pid,
        channel: ours,
    })
}

/// Sends `sig` to the process group led by `pid` (children run in their own group).
pub fn signal_group(pid: u32, sig: nix::sys::signal::Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}
