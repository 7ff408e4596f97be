//! The run's process group: killing it, waiting for its leader without reaping it, reaping
//! it for its rusage, sampling the group's resident memory, and the guard that kills the
//! group when a run is dropped before it finished.

/// Send `SIGKILL` to the whole process group `group`.
pub(super) fn kill_group(group: i32) {
    // SAFETY: killpg only sends a signal. The group id is the leader's pid, which stays
    // reserved while the leader is unreaped (a zombie) or any member lives; a group that
    // is gone gives ESRCH, which is fine.
    unsafe {
        libc::killpg(group, libc::SIGKILL);
    }
}

/// Block until `pid` has exited, without reaping it (`waitid` with `WNOWAIT`).
pub(super) fn wait_exited(pid: i32) -> std::io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own unreaped child; info points to valid memory.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if result == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Reap `pid` with `wait4`, returning its raw status and resource usage.
pub(super) fn reap(pid: i32) -> std::io::Result<(i32, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, written by wait4 on success.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child; status and usage point to valid memory.
        let result = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if result == pid {
            return Ok((status, usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// CPU seconds (user + system) of a rusage.
pub(super) fn cpu_seconds(usage: &libc::rusage) -> f64 {
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Resident bytes of every process in group `group`, from `/proc/<pid>/stat`; the leader
/// (whose pid is the group id) only if `with_leader`.
pub(super) fn group_resident_bytes(group: i32, with_leader: bool) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page_bytes = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        bytes if bytes > 0 => bytes as u64,
        _ => 4096,
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut pages = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !with_leader && pid.parse::<i32>() == Ok(group) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the `(comm)` field: state ppid pgrp … with rss the 22nd field from there.
        let Some((_, fields)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(group)
            && let Some(rss) = fields.get(21).and_then(|r| r.parse::<u64>().ok())
        {
            pages += rss;
        }
    }
    pages * page_bytes
}

/// Kills the group and reaps the leader if the run is dropped before it finished.
pub(super) struct GroupGuard {
    pub(super) pid: i32,
    pub(super) armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pid);
            let pid = self.pid;
            std::thread::spawn(move || {
                if let Err(e) = reap(pid) {
                    tracing::warn!(pid, error = %e, "cannot reap an abandoned agent");
                }
            });
        }
    }
}
