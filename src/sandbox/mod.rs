//! The sandbox every run of a peer's task and every verify command runs in (Linux, no root,
//! no daemon).
//!
//! [`apply`] turns a [`SandboxPolicy`] into a `pre_exec` hook on a `std::process::Command`
//! (the hook itself is in `child.rs`). A sandboxed program gets:
//! - **processes**: a new user, PID and mount namespace. The program is PID 1 of its own
//!   PID namespace, so when it exits every process it started dies with it (`setsid` and
//!   double forks included), and the node and every other process are invisible (a fresh
//!   `/proc` is mounted). A *keeper* process outside the namespace stands in for it as the
//!   leader of the caller's process group: killing that group kills the namespace.
//! - **file system** ([Landlock](https://docs.kernel.org/userspace-api/landlock.html)):
//!   read-write only in [`SandboxPolicy::writable_dirs`] (the workspace, a private `HOME`
//!   and temp dir); read and execute in the system directories
//!   ([`paths::SYSTEM_READ_ONLY_DIRS`]), a few devices, the run's `/proc`, the profile
//!   program's install tree and the profile's configured extras; nothing else (never the
//!   node's data dir, never the operator's home). Directories in
//!   [`SandboxPolicy::read_only_binds`] (a workspace's `.git`) are bind-mounted read-only,
//!   so code the agent wrote cannot plant git configuration that the node's own git would
//!   obey later. `/run`, `/var/run`, `/dev/shm` and `/tmp` (when no granted path is below
//!   them) are covered by empty tmpfs mounts, which hides other programs' unix sockets.
//! - **network**: [`SandboxNetwork::None`] is a private network namespace (only its own
//!   loopback); [`SandboxNetwork::TcpPorts`] keeps the host's network but Landlock allows
//!   TCP `connect` only to the listed ports, so the node's API, NATS and every other local
//!   service stay unreachable. Signals and abstract unix sockets are scoped to the sandbox
//!   (Landlock ABI 6).
//! - **limits** ([`SandboxLimits`]): data segment (memory), processes (rlimit, and the PID
//!   namespace's own `pid_max` on kernels ≥ 6.14, which also binds a node running as root),
//!   open files, file size, CPU seconds, no core dumps.
//! - **capabilities**: none, even as uid 0 inside the namespace; `no_new_privs` set.
//!
//! [`probe`] tries all of it once on this kernel; a node whose kernel cannot sandbox
//! refuses peers' tasks unless `executor.sandbox = "off"`.
//!
//! Not covered: UDP and other non-TCP traffic in [`SandboxNetwork::TcpPorts`] mode;
//! pathname unix sockets in directories a run may read, until Landlock ABI 9
//! (`LANDLOCK_ACCESS_FS_RESOLVE_UNIX`, used when the kernel has it); reading world-readable
//! files in the system directories (`/etc` included); memory summed over many processes
//! (the limit is per process, times the process limit) unless a cgroup is delegated.

mod child;
pub mod paths;

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use landlock::{
    ABI, Access, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use serde::{Deserialize, Serialize};

/// Oldest Landlock ABI the sandbox accepts: 4 is the first that restricts TCP.
pub const LANDLOCK_ABI_MIN: i32 = 4;
/// The kernel's smallest `pid_max` (`RESERVED_PIDS + 1`): below it a write is refused.
const PID_MAX_MIN: u32 = 301;
/// Open files per process.
pub const OPEN_FILES_MAX: u64 = 4096;
/// Largest file a run may write, in bytes.
pub const FILE_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Directories covered with an empty tmpfs, unless a granted path is below one.
const MASKED_DIRS: &[&str] = &["/run", "/var/run", "/dev/shm", "/tmp", "/var/tmp"];
/// The newest Landlock ABI whose rights are asked for (best effort: an older kernel
/// enforces what it has, never less than [`LANDLOCK_ABI_MIN`]).
const LANDLOCK_ABI_WANTED: ABI = ABI::V9;

/// `executor.sandbox`: whether runs are sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Sandbox every run; refuse peers' tasks when the kernel cannot.
    #[default]
    Required,
    /// Run without a sandbox. Dangerous: a peer's prompt can read this machine.
    Off,
}

/// How a run reaches the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxNetwork {
    /// A private network namespace: nothing outside the run is reachable.
    None,
    /// The host's network, with TCP `connect` allowed only to these ports.
    TcpPorts(Vec<u16>),
}

/// Resource limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Data segment (heap and private writable mappings) per process, in bytes.
    pub memory_bytes_max: u64,
    /// Processes the run may have at once.
    pub processes_max: u32,
    /// CPU seconds per process (at least the run's timeout).
    pub cpu_seconds_max: u64,
}

/// What one sandboxed run may do.
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    /// Read, write, create and delete below these (they must exist).
    pub writable_dirs: Vec<PathBuf>,
    /// Read and execute below these, beyond the system set (missing ones are skipped).
    pub read_only_paths: Vec<PathBuf>,
    /// Directories inside a writable one that are mounted read-only (missing ones skipped).
    pub read_only_binds: Vec<PathBuf>,
    /// What the run may reach on the network: nothing, or TCP to the profile's ports.
    pub network: SandboxNetwork,
    /// Memory, process and CPU limits, from `[resources]` and the run's timeout.
    pub limits: SandboxLimits,
}

/// The sandbox could not be set up for a run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Building or enforcing the Landlock ruleset failed; the run does not start.
    #[error("Landlock: {0}")]
    Landlock(String),
    /// The kernel has no Landlock (ABI 0), so file access cannot be restricted.
    #[error("this kernel does not support Landlock")]
    LandlockUnsupported,
    /// A path in the policy cannot be passed to the kernel.
    #[error("path {0} cannot be used in the sandbox (it contains a NUL byte)")]
    Path(PathBuf),
}

/// What this kernel supports, from [`probe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxSupport {
    /// The kernel's Landlock ABI version (0 without Landlock).
    pub landlock_abi: i32,
    /// TCP connect rules (ABI ≥ 4).
    pub tcp_rules: bool,
    /// Signal and abstract unix socket scoping (ABI ≥ 6).
    pub scopes: bool,
    /// Pathname unix socket rules (ABI ≥ 9).
    pub unix_socket_rules: bool,
    /// A sandboxed trial run (namespaces, mounts, limits, Landlock) exited cleanly.
    pub trial_run: bool,
    /// Why runs cannot be sandboxed here, if they cannot.
    pub problem: Option<String>,
}

impl SandboxSupport {
    /// True when runs can be sandboxed on this kernel.
    pub fn available(&self) -> bool {
        self.problem.is_none()
    }
}

/// Whether this node may run a peer's task: always with the sandbox off (the operator's
/// explicit choice), else only when the kernel can sandbox. `Err` holds the reason.
pub fn peer_runs_allowed(mode: SandboxMode, support: &SandboxSupport) -> Result<(), String> {
    match (mode, &support.problem) {
        (SandboxMode::Off, _) | (SandboxMode::Required, None) => Ok(()),
        (SandboxMode::Required, Some(problem)) => Err(format!(
            "this node cannot sandbox runs ({problem}) and executor.sandbox is \"required\""
        )),
    }
}

/// Whether runs are sandboxed: the mode asks for it and the kernel can.
pub fn sandboxes_runs(mode: SandboxMode, support: &SandboxSupport) -> bool {
    mode == SandboxMode::Required && support.available()
}

/// The kernel's Landlock ABI version, 0 without Landlock.
pub fn landlock_abi() -> i32 {
    /// `LANDLOCK_CREATE_RULESET_VERSION`.
    const VERSION_FLAG: u32 = 1;
    // SAFETY: the documented version query: no attribute, size 0.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            VERSION_FLAG,
        )
    };
    version.max(0) as i32
}

/// What this kernel supports, probed once per process (kernel features do not change while
/// a node runs).
pub fn support() -> &'static SandboxSupport {
    static SUPPORT: std::sync::OnceLock<SandboxSupport> = std::sync::OnceLock::new();
    SUPPORT.get_or_init(probe)
}

/// Try the sandbox on this kernel: the Landlock ABI, then a real sandboxed run of `true`.
pub fn probe() -> SandboxSupport {
    let abi = landlock_abi();
    let mut support = SandboxSupport {
        landlock_abi: abi,
        tcp_rules: abi >= 4,
        scopes: abi >= 6,
        unix_socket_rules: abi >= 9,
        trial_run: false,
        problem: None,
    };
    if abi < LANDLOCK_ABI_MIN {
        support.problem = Some(if abi == 0 {
            "the kernel has no Landlock (needs Linux ≥ 6.7 with Landlock enabled)".into()
        } else {
            format!(
                "Landlock ABI {abi} cannot restrict TCP (needs ABI ≥ {LANDLOCK_ABI_MIN}, Linux ≥ 6.7)"
            )
        });
        return support;
    }
    match trial_run() {
        Ok(()) => support.trial_run = true,
        Err(problem) => support.problem = Some(problem),
    }
    support
}

/// Run `true` in a sandbox with no network and a temporary writable directory.
fn trial_run() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let policy = SandboxPolicy {
        writable_dirs: vec![dir.path().to_path_buf()],
        read_only_paths: Vec::new(),
        read_only_binds: Vec::new(),
        network: SandboxNetwork::None,
        limits: SandboxLimits {
            memory_bytes_max: 256 * 1024 * 1024,
            processes_max: 64,
            cpu_seconds_max: 10,
        },
    };
    let mut command = Command::new("true");
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    apply(&mut command, &policy).map_err(|e| e.to_string())?;
    let status = command
        .status()
        .map_err(|e| format!("a sandboxed trial run could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("a sandboxed trial run of `true` failed ({status})"))
    }
}

/// Directories of [`MASKED_DIRS`] that exist as real directories (not symbolic links) and
/// hold none of `granted`.
fn dirs_to_mask(granted: &[PathBuf]) -> Vec<PathBuf> {
    MASKED_DIRS
        .iter()
        .map(PathBuf::from)
        .filter(|dir| {
            std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
                && !granted.iter().any(|g| g.starts_with(dir))
        })
        .collect()
}

fn c_path(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::Path(path.to_path_buf()))
}

fn landlock_error(error: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock(error.to_string())
}

/// The Landlock ruleset for `policy`, complete except for the run's own `/proc` (added in
/// the child, after it is mounted).
fn build_ruleset(policy: &SandboxPolicy) -> Result<OwnedFd, SandboxError> {
    let all = AccessFs::from_all(LANDLOCK_ABI_WANTED);
    let read = AccessFs::from_read(LANDLOCK_ABI_WANTED);
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(landlock_error)?;
    if matches!(policy.network, SandboxNetwork::TcpPorts(_)) {
        ruleset = ruleset
            .handle_access(AccessNet::ConnectTcp)
            .map_err(landlock_error)?;
    }
    let mut created = ruleset
        .scope(Scope::from_all(LANDLOCK_ABI_WANTED))
        .map_err(landlock_error)?
        .create()
        .map_err(landlock_error)?;
    let mut grant = |path: &Path, access| -> Result<(), SandboxError> {
        let Ok(fd) = PathFd::new(path) else {
            // A path that does not exist grants nothing.
            return Ok(());
        };
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        let access = if is_dir {
            access
        } else {
            access & AccessFs::from_file(LANDLOCK_ABI_WANTED)
        };
        created
            .as_mut()
            .add_rule(PathBeneath::new(fd, access))
            .map_err(landlock_error)?;
        Ok(())
    };
    for dir in &policy.writable_dirs {
        if !dir.is_dir() {
            return Err(SandboxError::Landlock(format!(
                "writable directory {} does not exist",
                dir.display()
            )));
        }
        grant(dir, all)?;
    }
    for dir in paths::SYSTEM_READ_ONLY_DIRS {
        grant(Path::new(dir), read)?;
    }
    for path in &policy.read_only_paths {
        grant(path, read)?;
    }
    for device in paths::READABLE_DEVICES {
        grant(Path::new(device), read)?;
    }
    for device in paths::WRITABLE_DEVICES {
        grant(Path::new(device), all)?;
    }
    if let SandboxNetwork::TcpPorts(ports) = &policy.network {
        for port in ports {
            created
                .as_mut()
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(landlock_error)?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or(SandboxError::LandlockUnsupported)
}

/// Install the sandbox on `command` (see the module docs). The caller sets the program,
/// arguments, working directory, environment and stdio as usual; the sandbox starts when
/// the command is spawned. Spawning then fails with the reason if the sandbox cannot be
/// entered.
pub fn apply(command: &mut Command, policy: &SandboxPolicy) -> Result<(), SandboxError> {
    let ruleset = build_ruleset(policy)?;
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let granted: Vec<PathBuf> = policy
        .writable_dirs
        .iter()
        .chain(&policy.read_only_paths)
        .cloned()
        .collect();
    let read_only_binds = policy
        .read_only_binds
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| c_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let masked_dirs = dirs_to_mask(&granted)
        .iter()
        .map(|p| c_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let limits = policy.limits;
    let plan = child::ChildPlan {
        uid_map: format!("{uid} {uid} 1").into_bytes(),
        gid_map: format!("{gid} {gid} 1").into_bytes(),
        private_network: policy.network == SandboxNetwork::None,
        pid_max: limits
            .processes_max
            .saturating_add(1)
            .max(PID_MAX_MIN)
            .to_string()
            .into_bytes(),
        read_only_binds,
        masked_dirs,
        rlimits: vec![
            (libc::RLIMIT_DATA, limits.memory_bytes_max),
            (libc::RLIMIT_NPROC, u64::from(limits.processes_max)),
            (libc::RLIMIT_NOFILE, OPEN_FILES_MAX),
            (libc::RLIMIT_FSIZE, FILE_BYTES_MAX),
            (libc::RLIMIT_CPU, limits.cpu_seconds_max),
            (libc::RLIMIT_CORE, 0),
        ],
        ruleset,
        proc_access: AccessFs::from_read(LANDLOCK_ABI_WANTED).bits(),
    };
    // SAFETY: the hook only makes system calls on data prepared above (see child.rs).
    unsafe {
        command.pre_exec(move || child::enter(&plan));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support(problem: Option<&str>) -> SandboxSupport {
        SandboxSupport {
            landlock_abi: 7,
            tcp_rules: true,
            scopes: true,
            unix_socket_rules: false,
            trial_run: problem.is_none(),
            problem: problem.map(String::from),
        }
    }

    #[test]
    fn peer_runs_need_the_sandbox_unless_it_is_off() {
        assert!(peer_runs_allowed(SandboxMode::Required, &support(None)).is_ok());
        let refused = peer_runs_allowed(SandboxMode::Required, &support(Some("no Landlock")));
        assert!(refused.unwrap_err().contains("no Landlock"));
        assert!(peer_runs_allowed(SandboxMode::Off, &support(Some("no Landlock"))).is_ok());
        assert!(sandboxes_runs(SandboxMode::Required, &support(None)));
        assert!(!sandboxes_runs(SandboxMode::Off, &support(None)));
        assert!(!sandboxes_runs(SandboxMode::Required, &support(Some("x"))));
    }

    #[test]
    fn masking_spares_directories_that_hold_granted_paths() {
        let masked = dirs_to_mask(&[PathBuf::from("/tmp/run-1/workspace")]);
        assert!(!masked.contains(&PathBuf::from("/tmp")));
        let masked = dirs_to_mask(&[PathBuf::from("/srv/apn/workspace")]);
        if Path::new("/tmp").is_dir() {
            assert!(masked.contains(&PathBuf::from("/tmp")));
        }
    }
}
