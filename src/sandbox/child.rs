//! The part of the sandbox that runs between `fork` and `exec` (a `pre_exec` hook).
//!
//! Everything here runs in a forked copy of a multi-threaded process, so it may only make
//! system calls: no allocation, no locks, no formatting. Every buffer it uses was prepared
//! by the parent in a [`ChildPlan`].
//!
//! The hook runs in the child std forked (the *keeper*). It enters a new user, PID and
//! mount namespace (and network namespace when the run has no network), maps its own uid
//! and gid, then forks again: the grandchild is PID 1 of the new PID namespace and goes on
//! to set up the mounts, limits, capabilities and Landlock, and returns so that std execs
//! the program in it. The keeper closes every descriptor it inherited (so std's
//! exec-error pipe sees the grandchild's exec), waits for PID 1 and exits the way it did.
//! When PID 1 exits the kernel kills everything left in its namespace; when the keeper is
//! killed (timeout, cancel) PID 1 gets `SIGKILL` through `PR_SET_PDEATHSIG`, and a
//! "lifeline" pipe closes the race where the keeper dies before that is set.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Landlock's `landlock_path_beneath_attr`, packed as the kernel reads it.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// `LANDLOCK_RULE_PATH_BENEATH`.
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Highest capability number tried when emptying the bounding set (the kernel's is lower;
/// the rest answer `EINVAL`).
const CAPABILITY_NUMBER_MAX: libc::c_ulong = 63;

/// Everything the child needs, prepared before `fork`.
pub(super) struct ChildPlan {
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub private_network: bool,
    /// Written to the new namespace's `/proc/sys/kernel/pid_max` (decimal, no newline).
    pub pid_max: Vec<u8>,
    /// Bind-mounted read-only onto themselves (inside a writable tree).
    pub read_only_binds: Vec<CString>,
    /// Covered with an empty tmpfs (directories that hold other programs' sockets).
    pub masked_dirs: Vec<CString>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    /// The Landlock ruleset, complete except for the fresh `/proc`.
    pub ruleset: OwnedFd,
    /// Access rights granted on the fresh `/proc`.
    pub proc_access: u64,
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Write `bytes` to the file at `path` (NUL-terminated).
fn write_file(path: &[u8], bytes: &[u8]) -> io::Result<()> {
    // SAFETY: path is NUL-terminated (callers pass literals ending in \0).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: bytes is a valid buffer; fd is ours and closed right after.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let error = io::Error::last_os_error();
    // SAFETY: fd is open and ours.
    unsafe { libc::close(fd) };
    if written < 0 || written as usize != bytes.len() {
        return Err(error);
    }
    Ok(())
}

/// The `pre_exec` hook. Returns in PID 1 of the new namespaces, ready to exec; the keeper
/// never returns.
pub(super) fn enter(plan: &ChildPlan) -> io::Result<()> {
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS;
    if plan.private_network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: plain system calls on this (single-threaded, forked) process.
    check(unsafe { libc::unshare(flags) })?;
    write_file(b"/proc/self/setgroups\0", b"deny")?;
    write_file(b"/proc/self/uid_map\0", &plan.uid_map)?;
    write_file(b"/proc/self/gid_map\0", &plan.gid_map)?;

    let mut lifeline = [0 as RawFd; 2];
    // SAFETY: lifeline has room for the two descriptors.
    check(unsafe { libc::pipe2(lifeline.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fork in a single-threaded process; both sides only make system calls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        keep(pid, lifeline[1]);
    }
    // PID 1 of the run from here on.
    // SAFETY: closing our copy of the keeper's end; prctl and poll on our own state.
    unsafe {
        libc::close(lifeline[1]);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        let mut poll = libc::pollfd {
            fd: lifeline[0],
            events: libc::POLLIN,
            revents: 0,
        };
        // The keeper died before PDEATHSIG was set: nobody would kill this run.
        if libc::poll(&mut poll, 1, 0) != 0 {
            libc::_exit(127);
        }
    }
    set_up_pid_one(plan)
}

/// The keeper: wait for PID 1 and leave with its status. Never returns.
fn keep(pid: libc::pid_t, lifeline: RawFd) -> ! {
    // SAFETY: close_range, waitpid, signal, kill and _exit are plain system calls.
    unsafe {
        if lifeline > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (lifeline - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (lifeline + 1) as u32, u32::MAX, 0u32);
        let mut status: libc::c_int = 0;
        loop {
            if libc::waitpid(pid, &mut status, 0) == pid {
                break;
            }
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(125);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(125)
    }
}

fn set_up_pid_one(plan: &ChildPlan) -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: mount with NUL-terminated literals or CStrings prepared by the parent.
    unsafe {
        // Nothing mounted here propagates back to the host.
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // A /proc of this PID namespace: the node and every other process are not in it.
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
    }
    // Kernels before 6.14 have one global pid_max; there the rlimit alone bounds processes.
    let _ = write_file(b"/proc/sys/kernel/pid_max\0", &plan.pid_max);
    for path in &plan.read_only_binds {
        bind_read_only(path)?;
    }
    for path in &plan.masked_dirs {
        // SAFETY: NUL-terminated strings; a failure leaves the directory as it was.
        unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                path.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=64k,mode=755".as_ptr().cast(),
            );
        }
    }
    if plan.private_network {
        loopback_up();
    }
    for (resource, value) in &plan.rlimits {
        let limit = libc::rlimit {
            rlim_cur: *value,
            rlim_max: *value,
        };
        // SAFETY: limit is a valid rlimit.
        check(unsafe { libc::setrlimit(*resource, &limit) })?;
    }
    drop_capabilities()?;
    // SAFETY: prctl on this process.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: opening /proc (the fresh mount) as a path-only descriptor.
    let proc_fd = unsafe { libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if proc_fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let rule = PathBeneathAttr {
        allowed_access: plan.proc_access,
        parent_fd: proc_fd,
    };
    // SAFETY: the ruleset descriptor is open; rule is a valid packed attribute.
    let added = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            plan.ruleset.as_raw_fd(),
            LANDLOCK_RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0u32,
        )
    };
    let add_error = io::Error::last_os_error();
    // SAFETY: proc_fd is ours.
    unsafe { libc::close(proc_fd) };
    if added < 0 {
        return Err(add_error);
    }
    // SAFETY: the ruleset descriptor is open; no_new_privs is set.
    let restricted = unsafe {
        libc::syscall(
            libc::SYS_landlock_restrict_self,
            plan.ruleset.as_raw_fd(),
            0u32,
        )
    };
    if restricted < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bind `path` onto itself read-only, keeping the flags the kernel locks on the mount it
/// came from (a user namespace may not clear them).
fn bind_read_only(path: &CString) -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: statvfs fills plain data; mount gets NUL-terminated strings.
    unsafe {
        check(libc::mount(
            path.as_ptr(),
            path.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        let mut stat: libc::statvfs = std::mem::zeroed();
        check(libc::statvfs(path.as_ptr(), &mut stat))?;
        let locked = stat.f_flag
            & (libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | libc::MS_NOATIME
                | libc::MS_NODIRATIME);
        check(libc::mount(
            none,
            path.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked,
            std::ptr::null(),
        ))
    }
}

/// Bring up `lo` in the run's private network namespace (best effort: a run that needs no
/// network works without it).
fn loopback_up() {
    // SAFETY: a datagram socket and two interface ioctls on plain data.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return;
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(socket, libc::SIOCSIFFLAGS, &mut request);
        }
        libc::close(socket);
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empty the bounding, ambient, effective, permitted and inheritable sets: the program
/// starts with no capability even when it runs as uid 0 inside the namespace.
fn drop_capabilities() -> io::Result<()> {
    // SAFETY: prctl and capset on this process with valid plain-data arguments.
    unsafe {
        for capability in 0..=CAPABILITY_NUMBER_MAX {
            libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
