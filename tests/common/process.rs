//! Processes a test started through a script: the pid it wrote, and whether it still runs.

use std::path::Path;
use std::time::{Duration, Instant};

use super::wait_until;

/// Alive by `kill(pid, 0)`, and not a zombie (a killed child whose parent is gone may wait
/// a moment for init to reap it; it runs nothing).
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// The pid a script wrote to `file` (panics when it wrote none).
pub fn read_pid(file: &Path) -> i32 {
    let text = std::fs::read_to_string(file).expect("the script wrote its background pid");
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("not a pid in {}: {text:?} ({e})", file.display()))
}

/// True once `file` holds a whole line (a pid written by `echo $! > file`), within `timeout`.
pub async fn pid_written(file: &Path, timeout: Duration) -> bool {
    wait_until(timeout, || async {
        std::fs::read_to_string(file).is_ok_and(|text| text.ends_with('\n'))
    })
    .await
}

/// Wait for `pid` to be gone; false if it still runs after `timeout`.
pub async fn gone(pid: i32, timeout: Duration) -> bool {
    wait_until(timeout, || async { !alive(pid) }).await
}

/// `gone` for tests without an async runtime.
pub fn gone_blocking(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
