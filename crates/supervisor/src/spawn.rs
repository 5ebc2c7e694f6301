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

impl ChildSpec {
    /// A worker: capped with RLIMIT_AS, or in GPU mode with RLIMIT_DATA (CUDA maps tens of GB of
    /// address space at init, which RLIMIT_AS would refuse). The one place that decides the cap.
    pub fn worker(
        exe: PathBuf,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        memory_limit: u64,
        gpu: bool,
    ) -> ChildSpec {
        ChildSpec {
            exe,
            args,
            env,
            address_space_limit: if gpu { 0 } else { memory_limit },
            data_limit: if gpu { memory_limit } else { 0 },
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The "Max …" line of /proc/PID/limits: (soft, hard) as written there.
    fn limit_line(pid: u32, name: &str) -> String {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_string()
    }

    fn spawn_sleeper(gpu: bool) -> (Spawned, String, String) {
        let spec = ChildSpec::worker(
            "/bin/sleep".into(),
            vec!["30".into()],
            Vec::new(),
            256 << 20,
            gpu,
        );
        let s = spawn_child(&spec).unwrap();
        let as_line = limit_line(s.pid, "Max address space");
        let data_line = limit_line(s.pid, "Max data size");
        (s, as_line, data_line)
    }

    #[tokio::test]
    async fn cpu_workers_get_rlimit_as_and_gpu_workers_rlimit_data() {
        let cap = (256u64 << 20).to_string();
        let (mut cpu, as_line, data_line) = spawn_sleeper(false);
        assert!(as_line.contains(&cap), "{as_line}");
        assert!(data_line.contains("unlimited"), "{data_line}");
        cpu.child.kill().await.unwrap();

        let (mut gpu, as_line, data_line) = spawn_sleeper(true);
        assert!(as_line.contains("unlimited"), "{as_line}");
        assert!(data_line.contains(&cap), "{data_line}");
        gpu.child.kill().await.unwrap();
    }
}
