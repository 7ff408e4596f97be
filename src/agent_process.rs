//! Running an agent command for a task: argv built from the profile with the prompt as one
//! argument (never through a shell unless the profile itself is a shell), a cleared
//! environment, its own process group killed on timeout, cancel and exit, stdout and stderr
//! streamed line by line under an output cap, `APN_PROGRESS` lines turned into progress,
//! and CPU and memory measured from the child (`wait4` rusage; RSS sampled from /proc).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ProfileConfig;
use crate::messages::{ComputeUsage, ExecutionStage};

/// The argument replaced by the prompt.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";
/// Longest line forwarded; the rest of a longer line is cut.
pub const LINE_BYTES_MAX: usize = 8 * 1024;
/// How often resident memory is sampled.
const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// Read buffer per stream.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// What a run reports while it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    Log {
        stream: LogStream,
        line: String,
    },
    Progress {
        stage: ExecutionStage,
        percent: u8,
        action: String,
    },
    OutputCapped {
        dropped_bytes: u64,
    },
}

/// What to run and under which limits.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub argv: Vec<String>,
    pub workspace: PathBuf,
    /// Variables copied from the node's environment; everything else is cleared.
    pub pass_env: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    pub timeout: Duration,
    pub output_bytes_max: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub usage: ComputeUsage,
    pub output_bytes: u64,
    pub output_capped: bool,
}

/// The run could not start or be watched.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("empty command")]
    EmptyCommand,
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the agent: {0}")]
    Wait(String),
}

/// Program then arguments, each argument equal to `{prompt}` replaced by the prompt as one
/// element.
pub fn build_argv(profile: &ProfileConfig, prompt: &str) -> Vec<String> {
    std::iter::once(profile.program.clone())
        .chain(profile.args.iter().map(|arg| {
            if arg == PROMPT_PLACEHOLDER {
                prompt.to_string()
            } else {
                arg.clone()
            }
        }))
        .collect()
}

/// `APN_PROGRESS <stage> <percent> <action…>`; percent above 100 is refused.
pub fn parse_progress_line(line: &str) -> Option<(ExecutionStage, u8, String)> {
    let rest = line.trim().strip_prefix("APN_PROGRESS ")?;
    let mut parts = rest.splitn(3, ' ');
    let stage = match parts.next()? {
        "setup" => ExecutionStage::Setup,
        "coding" => ExecutionStage::Coding,
        "testing" => ExecutionStage::Testing,
        "done" => ExecutionStage::Done,
        _ => return None,
    };
    let percent: u8 = parts.next()?.parse().ok().filter(|p| *p <= 100)?;
    Some((
        stage,
        percent,
        parts.next().unwrap_or("").trim().to_string(),
    ))
}

fn kill_group(pgid: i32) {
    // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH, ignored.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

fn resident_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Wait for `pid` with wait4, returning its status and rusage.
fn wait_with_rusage(pid: i32) -> Result<(i32, libc::rusage), String> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, fully written by wait4 on success.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child; status and usage point to valid memory.
        let result = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if result == pid {
            return Ok((status, usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error.to_string());
        }
    }
}

struct LineSplitter {
    stream: LogStream,
    buffer: Vec<u8>,
    skipping: bool,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(LogStream, String)) {
        for &byte in bytes {
            if byte == b'\n' {
                if !self.skipping {
                    emit(
                        self.stream,
                        String::from_utf8_lossy(&self.buffer).to_string(),
                    );
                }
                self.buffer.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.buffer.push(byte);
                if self.buffer.len() >= LINE_BYTES_MAX {
                    emit(
                        self.stream,
                        String::from_utf8_lossy(&self.buffer).to_string(),
                    );
                    self.buffer.clear();
                    self.skipping = true;
                }
            }
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(LogStream, String)) {
        if !self.buffer.is_empty() && !self.skipping {
            emit(
                self.stream,
                String::from_utf8_lossy(&self.buffer).to_string(),
            );
        }
        self.buffer.clear();
    }
}

/// Run the agent to its end (exit, timeout or cancel). Events go to `events` with
/// backpressure; past `output_bytes_max` output is read and discarded (memory stays
/// bounded) and one `OutputCapped` is sent.
pub async fn run_agent(
    spec: AgentSpec,
    events: mpsc::Sender<AgentEvent>,
    cancel: CancellationToken,
) -> Result<AgentOutcome, AgentError> {
    let program = spec.argv.first().ok_or(AgentError::EmptyCommand)?.clone();
    let mut command = Command::new(&program);
    command
        .args(&spec.argv[1..])
        .current_dir(&spec.workspace)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for name in &spec.pass_env {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    for (name, value) in &spec.extra_env {
        command.env(name, value);
    }
    let mut child = command.spawn().map_err(|source| AgentError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id() as i32;
    let started = Instant::now();
    let stdout = child
        .stdout
        .take()
        .and_then(|s| tokio::process::ChildStdout::from_std(s).ok());
    let stderr = child
        .stderr
        .take()
        .and_then(|s| tokio::process::ChildStderr::from_std(s).ok());
    // The child is reaped by wait4 below, not by std: forget the handle.
    std::mem::forget(child);
    let waiter = tokio::task::spawn_blocking(move || wait_with_rusage(pid));

    let mut outcome = AgentOutcome::default();
    let mut stdout_split = LineSplitter {
        stream: LogStream::Stdout,
        buffer: Vec::new(),
        skipping: false,
    };
    let mut stderr_split = LineSplitter {
        stream: LogStream::Stderr,
        buffer: Vec::new(),
        skipping: false,
    };
    let (mut stdout, mut stderr) = (stdout, stderr);
    let mut out_buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut err_buffer = vec![0u8; READ_CHUNK_BYTES];
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut sample = tokio::time::interval(MEMORY_SAMPLE_INTERVAL);
    let mut memory_byte_seconds = 0.0f64;
    let mut capped_dropped = 0u64;
    let mut waiter = waiter;
    let wait_result = loop {
        let mut lines: Vec<(LogStream, String)> = Vec::new();
        tokio::select! {
            read = async { match stdout.as_mut() { Some(s) => s.read(&mut out_buffer).await, None => std::future::pending().await } } => {
                match read {
                    Ok(0) | Err(_) => { stdout_split.finish(|s, l| lines.push((s, l))); stdout = None; }
                    Ok(n) => { outcome.output_bytes += n as u64; if outcome.output_bytes <= spec.output_bytes_max { stdout_split.push(&out_buffer[..n], |s, l| lines.push((s, l))); } else { capped_dropped += n as u64; } }
                }
            }
            read = async { match stderr.as_mut() { Some(s) => s.read(&mut err_buffer).await, None => std::future::pending().await } } => {
                match read {
                    Ok(0) | Err(_) => { stderr_split.finish(|s, l| lines.push((s, l))); stderr = None; }
                    Ok(n) => { outcome.output_bytes += n as u64; if outcome.output_bytes <= spec.output_bytes_max { stderr_split.push(&err_buffer[..n], |s, l| lines.push((s, l))); } else { capped_dropped += n as u64; } }
                }
            }
            _ = sample.tick() => {
                if let Some(bytes) = resident_bytes(pid) {
                    memory_byte_seconds += bytes as f64 * MEMORY_SAMPLE_INTERVAL.as_secs_f64();
                }
            }
            _ = tokio::time::sleep_until(deadline), if !outcome.timed_out && !outcome.cancelled => {
                outcome.timed_out = true;
                kill_group(pid);
            }
            _ = cancel.cancelled(), if !outcome.timed_out && !outcome.cancelled => {
                outcome.cancelled = true;
                kill_group(pid);
            }
            waited = &mut waiter, if stdout.is_none() && stderr.is_none() => break waited,
        }
        if capped_dropped > 0 && !outcome.output_capped {
            outcome.output_capped = true;
            let _ = events
                .send(AgentEvent::OutputCapped {
                    dropped_bytes: capped_dropped,
                })
                .await;
        }
        for (stream, line) in lines {
            if stream == LogStream::Stdout
                && let Some((stage, percent, action)) = parse_progress_line(&line)
            {
                let _ = events
                    .send(AgentEvent::Progress {
                        stage,
                        percent,
                        action,
                    })
                    .await;
            }
            let _ = events.send(AgentEvent::Log { stream, line }).await;
        }
    };
    // Stray background processes of the run must not outlive it.
    kill_group(pid);
    let (status, usage) = wait_result
        .map_err(|e| AgentError::Wait(e.to_string()))?
        .map_err(AgentError::Wait)?;
    let exit = std::process::ExitStatus::from_raw(status);
    outcome.exit_code = exit.code();
    outcome.signal = exit.signal();
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    outcome.usage = ComputeUsage {
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        memory_gb_seconds: memory_byte_seconds / 1e9,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_one_argument() {
        let profile = ProfileConfig {
            program: "claude".into(),
            args: vec!["-p".into(), "{prompt}".into()],
            enabled: true,
        };
        let prompt = "$(touch /tmp/pwned); rm -rf ~";
        assert_eq!(build_argv(&profile, prompt), vec!["claude", "-p", prompt]);
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            parse_progress_line("APN_PROGRESS coding 40 editing files"),
            Some((ExecutionStage::Coding, 40, "editing files".into()))
        );
        assert_eq!(
            parse_progress_line("APN_PROGRESS done 100"),
            Some((ExecutionStage::Done, 100, String::new()))
        );
        assert_eq!(parse_progress_line("APN_PROGRESS coding 140 x"), None);
        assert_eq!(parse_progress_line("APN_PROGRESS flying 40 x"), None);
        assert_eq!(parse_progress_line("progress coding 40"), None);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut splitter = LineSplitter {
            stream: LogStream::Stdout,
            buffer: Vec::new(),
            skipping: false,
        };
        let mut lines = Vec::new();
        splitter.push(&vec![b'x'; LINE_BYTES_MAX * 3], |_, l| lines.push(l));
        splitter.push(b"\nnext\n", |_, l| lines.push(l));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), LINE_BYTES_MAX);
        assert_eq!(lines[1], "next");
    }
}
