//! The worker's sandbox, entered right after exec and before any file is read: `no_new_privs`,
//! a Landlock ruleset (read-only access to the library roots, the models, the runtime library
//! and the system's libraries and configuration; writing only to `/proc/self/clear_refs`; no TCP
//! bind or connect; no signals or abstract sockets outside the worker) and a seccomp filter that
//! refuses new sockets and `connect`. A worker decodes untrusted files with native libraries:
//! whatever a file makes it do, it cannot write, reach the database or the control socket, or
//! talk to the network. Each layer is applied as far as the kernel supports it (best effort),
//! and [`Report`] says what was granted; [`probe`] says the same without applying anything.

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, LandlockStatus, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The newest Landlock ABI this code asks for; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V7;

/// System locations a worker reads: shared libraries, their configuration, the runtime's view
/// of the machine (CPU count, memory), and the few devices it needs.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// What the sandbox lets a worker touch.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Read-only: the library roots, the models directory, the runtime library's directory.
    /// Empty: the file system is not restricted (a worker of `inspect`, which reads files
    /// wherever they are); the network and the other layers still are.
    pub read: Vec<PathBuf>,
    /// GPU workers may use /dev (the NVIDIA devices) and unix sockets.
    pub gpu: bool,
    /// Test-only (the fault engine): directories where files may be created and written, never
    /// read.
    pub write: Vec<PathBuf>,
}

/// What the kernel granted, as logged and shown by `doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The kernel's Landlock ABI (`None`: not available).
    pub landlock_abi: Option<i32>,
    /// "fully enforced", "partially enforced", "not enforced", or why not.
    pub landlock: String,
    /// The file system is restricted (read-only, as in [`Policy::read`]).
    pub filesystem: bool,
    /// TCP bind and connect are refused by Landlock (ABI 4 and later).
    pub network: bool,
    /// The seccomp filter refusing sockets and `connect` is installed.
    pub seccomp: bool,
    pub no_new_privs: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.landlock_abi {
            Some(abi) => write!(f, "landlock ABI {abi} {}", self.landlock)?,
            None => write!(f, "landlock {}", self.landlock)?,
        }
        if self.landlock_abi.is_some() {
            f.write_str(if self.filesystem {
                ", file system read-only"
            } else {
                ", file system not restricted"
            })?;
            f.write_str(if self.network {
                ", net restricted"
            } else {
                ", net not restricted"
            })?;
        }
        f.write_str(if self.seccomp {
            "; seccomp: sockets refused"
        } else {
            "; seccomp: not available"
        })?;
        if !self.no_new_privs {
            f.write_str("; no_new_privs not set")?;
        }
        Ok(())
    }
}

/// The kernel's Landlock ABI version, `None` when Landlock is not built in or not enabled.
pub fn landlock_abi() -> Option<i32> {
    // SAFETY: with a null attribute and size 0, LANDLOCK_CREATE_RULESET_VERSION only returns
    // the ABI version (or fails); it creates nothing.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    (v > 0).then_some(v as i32)
}

/// What a worker would be granted on this kernel, without restricting this process.
pub fn probe() -> Report {
    let abi = landlock_abi();
    // SAFETY: reading the calling thread's seccomp mode has no side effect.
    let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
    Report {
        landlock_abi: abi,
        landlock: match abi {
            Some(v) if v >= ABI_WANTED as i32 => "fully enforced".into(),
            Some(_) => "partially enforced (older ABI)".into(),
            None => "not available on this kernel".into(),
        },
        filesystem: abi.is_some(),
        network: abi.is_some_and(|v| v >= 4),
        seccomp,
        no_new_privs: true,
    }
}

/// Enters the sandbox for the rest of this process's life. Call it first, while the process has
/// one thread (each layer applies to the calling thread and what it starts later).
pub fn enter(policy: &Policy) -> Report {
    let abi = landlock_abi();
    let (landlock, filesystem, network) = match restrict(policy) {
        Ok(status) => {
            let state = match status.ruleset {
                RulesetStatus::FullyEnforced => "fully enforced",
                RulesetStatus::PartiallyEnforced => "partially enforced",
                RulesetStatus::NotEnforced => "not enforced",
            };
            let on = status.ruleset != RulesetStatus::NotEnforced;
            let net = on
                && matches!(status.landlock, LandlockStatus::Available { effective_abi, .. } if effective_abi >= ABI::V4);
            (state.to_string(), on && !policy.read.is_empty(), net)
        }
        Err(e) => (format!("failed: {e}"), false, false),
    };
    // Landlock sets no_new_privs itself; set it again for the seccomp filter in any case.
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and only restricts this process.
    let no_new_privs = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0;
    let seccomp = no_new_privs
        && socket_filter(policy.gpu).is_ok_and(|bpf| seccompiler::apply_filter(&bpf).is_ok());
    Report {
        landlock_abi: abi,
        landlock,
        filesystem,
        network,
        seccomp,
        no_new_privs,
    }
}

fn restrict(policy: &Policy) -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
    let mut ruleset = Ruleset::default().handle_access(AccessNet::from_all(ABI_WANTED))?;
    if !policy.read.is_empty() {
        ruleset = ruleset.handle_access(AccessFs::from_all(ABI_WANTED))?;
    }
    let mut created = ruleset.scope(Scope::from_all(ABI_WANTED))?.create()?;
    if !policy.read.is_empty() {
        let read = AccessFs::from_read(ABI_WANTED);
        let system = SYSTEM_READ.iter().map(Path::new).filter(|p| p.exists());
        let own = policy
            .read
            .iter()
            .map(PathBuf::as_path)
            .filter(|p| p.exists());
        created = created
            .add_rules(path_beneath_rules(system.chain(own), read))?
            .add_rules(path_beneath_rules(
                ["/proc/self/clear_refs"],
                AccessFs::WriteFile,
            ))?
            .add_rules(path_beneath_rules(["/dev/null"], AccessFs::WriteFile))?;
        if policy.gpu {
            created =
                created.add_rules(path_beneath_rules(["/dev"], AccessFs::from_all(ABI_WANTED)))?;
        }
        let write = AccessFs::MakeReg | AccessFs::WriteFile | AccessFs::Truncate;
        created = created.add_rules(path_beneath_rules(&policy.write, write))?;
    }
    created.restrict_self()
}

/// A filter that makes `socket(AF_INET, …)`, `socket(AF_INET6, …)` and (CPU workers)
/// `socket(AF_UNIX, …)`, `connect` and `io_uring_setup` fail with EACCES. The worker's channel
/// is the socketpair it inherited on fd 3; it never needs another socket.
fn socket_filter(gpu: bool) -> Result<BpfProgram, seccompiler::BackendError> {
    let domain = |d: i32| {
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, d as u64)
            .and_then(|c| SeccompRule::new(vec![c]))
    };
    let mut domains = vec![domain(libc::AF_INET)?, domain(libc::AF_INET6)?];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    if !gpu {
        domains.push(domain(libc::AF_UNIX)?);
        // An empty rule list matches every call.
        rules.insert(libc::SYS_connect, Vec::new());
    }
    rules.insert(libc::SYS_socket, domains);
    rules.insert(libc::SYS_io_uring_setup, Vec::new());
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| seccompiler::BackendError::InvalidTargetArch(std::env::consts::ARCH.into()))?;
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )?
    .try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_as_logged() {
        let r = Report {
            landlock_abi: Some(7),
            landlock: "fully enforced".into(),
            filesystem: true,
            network: true,
            seccomp: true,
            no_new_privs: true,
        };
        assert_eq!(
            r.to_string(),
            "landlock ABI 7 fully enforced, file system read-only, net restricted; seccomp: sockets refused"
        );
        let none = Report {
            landlock_abi: None,
            landlock: "not available on this kernel".into(),
            filesystem: false,
            network: false,
            seccomp: false,
            no_new_privs: true,
        };
        assert_eq!(
            none.to_string(),
            "landlock not available on this kernel; seccomp: not available"
        );
    }

    #[test]
    fn the_filter_compiles_for_this_machine() {
        assert!(socket_filter(false).is_ok());
        assert!(socket_filter(true).is_ok());
    }
}
