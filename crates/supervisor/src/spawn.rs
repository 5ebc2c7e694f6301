//! Spawning child processes (workers and the DB writer): a private socketpair on fd 3, its own
//! process group, a parent-death signal, and for workers RLIMIT_AS set before exec. Children are
//! killed and reaped when their handle drops.
//!
//! A child starts from a cleared environment: it keeps only the variables named in
//! [`ENV_ALLOWLIST`] (and those starting with [`ENV_ALLOWED_PREFIXES`]) plus what its
//! [`ChildSpec`] passes, so a secret in the supervisor's environment (a database password) never
//! reaches a worker. A secret the child needs (the DB writer's database URL) travels through a
//! pipe on fd 4 instead ([`SECRET_ENV`], [`read_secret`]): never in argv nor in the environment,
//! which other processes of the same user can read in /proc.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use tokio::process::{Child, Command};

/// The fd on which a child finds its channel to the supervisor.
pub const CHANNEL_FD: i32 = 3;

/// The fd on which a child finds its secret, when its spec has one: the read end of a pipe that
/// holds the secret and then end-of-file.
pub const SECRET_FD: i32 = 4;

/// The fd on which the API server finds its listening TCP socket, bound by the supervisor (so a
/// bad address is a start-up error of the service, and the port survives the server's restarts).
pub const LISTEN_FD: i32 = 5;

/// An entry of [`ChildSpec::env`] under this name is not put in the child's environment: its
/// value is written into a pipe that the child reads once at start on [`SECRET_FD`] (see
/// [`read_secret`]). No environment variable can have this name (names cannot contain `=`).
pub const SECRET_ENV: &str = "=secret";

/// The longest secret a child can be given (it must fit the pipe's buffer: the supervisor writes
/// it before the child runs).
pub const MAX_SECRET: usize = 4096;

/// Variables every child keeps from the supervisor's environment; all others are cleared.
/// Locale and time zone (messages, timestamps), where to find programs and temporary files,
/// logging and backtraces, and for GPU workers which devices and libraries CUDA uses.
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TRACKMILL_LOG",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "LD_LIBRARY_PATH",
];

/// Prefixes of variables every child keeps: the locale categories and CUDA's settings.
pub const ENV_ALLOWED_PREFIXES: &[&str] = &["LC_", "CUDA_"];

fn allowed_env(name: &OsStr) -> bool {
    let b = name.as_bytes();
    ENV_ALLOWLIST.iter().any(|k| k.as_bytes() == b)
        || ENV_ALLOWED_PREFIXES
            .iter()
            .any(|p| b.starts_with(p.as_bytes()))
}

/// The environment a child of ours starts with, before its spec's own variables: the allowed
/// variables of this process.
pub fn inherited_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| allowed_env(k))
        .collect()
}

/// The worker argument naming one library root its sandbox may read (repeated per root).
pub const LIBRARY_ROOT_ARG: &str = "--library-root";

/// `args` with every `--library-root DIR` pair replaced by one per root of `roots`. A worker's
/// sandbox reads files only under the roots it was started with, so after the roots change (a
/// reload) the workers' arguments are rebuilt with this before the next worker starts.
pub fn with_library_roots(args: &[OsString], roots: &[PathBuf]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 2 * roots.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == LIBRARY_ROOT_ARG {
            it.next();
        } else {
            out.push(a.clone());
        }
    }
    for r in roots {
        out.push(LIBRARY_ROOT_ARG.into());
        out.push(r.clone().into());
    }
    out
}

/// Reads the secret the supervisor put on [`SECRET_FD`] and closes that fd; `None` when this
/// process was not given one (fd 4 is not a pipe). Call it once, early, before any other file is
/// opened.
pub fn read_secret() -> Option<Vec<u8>> {
    // SAFETY: fstat on a possibly closed fd only fills `st` or fails with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(SECRET_FD, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO
    {
        return None;
    }
    // SAFETY: fd 4 is open and a pipe, placed there by the supervisor for us alone; it is owned
    // from here on and closed when `pipe` drops.
    let pipe = unsafe { std::fs::File::from_raw_fd(SECRET_FD) };
    let mut out = Vec::new();
    pipe.take(MAX_SECRET as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= MAX_SECRET).then_some(out)
}

/// How to start one kind of child.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// Variables set in the child on top of the allowed ones ([`ENV_ALLOWLIST`]); an entry named
    /// [`SECRET_ENV`] goes through a pipe instead.
    pub env: Vec<(OsString, OsString)>,
    /// RLIMIT_AS in bytes (0: none).
    pub address_space_limit: u64,
    /// RLIMIT_DATA in bytes (0: none), for GPU workers where RLIMIT_AS breaks CUDA.
    pub data_limit: u64,
}

impl ChildSpec {
    /// `exe ARGS…` with no extra variables and no cap (tests of what handles a child).
    #[cfg(test)]
    pub(crate) fn plain(exe: &str, args: &[&str]) -> ChildSpec {
        ChildSpec {
            exe: exe.into(),
            args: args.iter().map(|a| (*a).into()).collect(),
            env: Vec::new(),
            address_space_limit: 0,
            data_limit: 0,
        }
    }

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

/// A pipe holding `secret` then end-of-file: the read end (close-on-exec, numbered above 9 so
/// that placing fds 3 and 4 in the child cannot overwrite it).
fn secret_pipe(secret: &[u8]) -> std::io::Result<OwnedFd> {
    if secret.len() > MAX_SECRET {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a child's secret is longer than 4096 bytes",
        ));
    }
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut w = std::fs::File::from(write);
    std::io::Write::write_all(&mut w, secret)?;
    drop(w);
    high_copy(read.as_raw_fd())
}

/// A close-on-exec copy of `fd` numbered above 9.
fn high_copy(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates an open fd into a new one that we then own.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if high < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `high` was just created and belongs to nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// Starts a child. Its stderr is piped (the caller reads it), stdin and stdout are null. Its
/// environment is the allowed part of ours ([`inherited_env`]) plus `spec.env`.
pub fn spawn_child(spec: &ChildSpec) -> std::io::Result<Spawned> {
    spawn_child_with(spec, None)
}

/// [`spawn_child`], also giving the child `listener` on [`LISTEN_FD`] (ours stays close-on-exec,
/// so no other child inherits it).
pub fn spawn_child_with(
    spec: &ChildSpec,
    listener: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<Spawned> {
    // A copy above 9, so that placing fds 3 to 5 in the child cannot overwrite it.
    let listen_copy = listener.map(|l| high_copy(l.as_raw_fd())).transpose()?;
    let listen_fd = listen_copy.as_ref().map_or(-1, |l| l.as_raw_fd());
    let (ours, theirs) = UnixStream::pair()?;
    let theirs: OwnedFd = theirs.into();
    let fd = theirs.as_raw_fd();
    let parent = std::process::id() as i32;
    let as_limit = spec.address_space_limit;
    let data_limit = spec.data_limit;
    let secret = spec
        .env
        .iter()
        .find(|(k, _)| k == SECRET_ENV)
        .map(|(_, v)| secret_pipe(v.as_bytes()))
        .transpose()?;
    let secret_fd = secret.as_ref().map_or(-1, |s| s.as_raw_fd());

    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args)
        .env_clear()
        .envs(inherited_env())
        .envs(
            spec.env
                .iter()
                .filter(|(k, _)| k != SECRET_ENV)
                .map(|(k, v)| (k, v)),
        )
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
            // dup2 clears close-on-exec on the copy; `secret_fd` is above 9, never fd 3.
            if secret_fd >= 0 && libc::dup2(secret_fd, SECRET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if listen_fd >= 0 && libc::dup2(listen_fd, LISTEN_FD) < 0 {
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
    drop(secret);
    drop(listen_copy);
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
    use std::io::Read;

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

    /// Runs `sh -c SCRIPT` as a child with `env` and returns what it wrote to the channel.
    async fn child_output(script: &str, env: Vec<(OsString, OsString)>) -> String {
        let spec = ChildSpec {
            exe: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env,
            address_space_limit: 0,
            data_limit: 0,
        };
        let mut s = spawn_child(&spec).unwrap();
        let status = s.child.wait().await.unwrap();
        assert!(status.success(), "{status}");
        s.channel
            .set_nonblocking(false)
            .expect("blocking channel for the test");
        let mut out = String::new();
        s.channel.read_to_string(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn children_get_a_cleared_environment_and_their_secret_through_a_pipe() {
        // The test process has variables that are not allowed (cargo's own, for one).
        assert!(std::env::vars_os().any(|(k, _)| !allowed_env(&k)));
        let secret = "postgres://u:pw-4f9c1b@db/x";
        let env = vec![
            (OsString::from("EXTRA"), OsString::from("given")),
            (OsString::from(SECRET_ENV), OsString::from(secret)),
        ];
        let out = child_output("env >&3; echo ---- >&3; cat <&4 >&3", env).await;
        let (vars, piped) = out.split_once("----\n").unwrap();
        assert_eq!(piped, secret);
        assert!(!vars.contains("pw-4f9c1b"), "{vars}");
        assert!(vars.lines().any(|l| l == "EXTRA=given"), "{vars}");
        for line in vars.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                name == "EXTRA"
                    || name == "PWD"
                    || name == "SHLVL"
                    || name == "_"
                    || allowed_env(OsStr::new(name)),
                "{name} was inherited: {vars}"
            );
        }
        // Without a secret there is no fd 4.
        let out = child_output(
            "if [ -e /proc/self/fd/4 ]; then echo open; fi >&3",
            Vec::new(),
        )
        .await;
        assert_eq!(out, "");
    }

    #[test]
    fn library_roots_are_replaced_in_worker_arguments() {
        let args: Vec<OsString> = ["--model", "m", "--library-root", "/old", "--gpu"]
            .map(OsString::from)
            .to_vec();
        let new = with_library_roots(&args, &["/a".into(), "/b".into()]);
        let want: Vec<OsString> = [
            "--model",
            "m",
            "--gpu",
            "--library-root",
            "/a",
            "--library-root",
            "/b",
        ]
        .map(OsString::from)
        .to_vec();
        assert_eq!(new, want);
        assert_eq!(with_library_roots(&new, &["/a".into(), "/b".into()]), want);
    }

    #[test]
    fn an_oversized_secret_is_refused() {
        assert!(secret_pipe(&vec![b'k'; MAX_SECRET + 1]).is_err());
        assert!(secret_pipe(&vec![b'k'; MAX_SECRET]).is_ok());
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
