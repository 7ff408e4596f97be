//! Running an agent command for a task.
//!
//! - **argv**: [`build_argv`] puts the prompt in as one argument (the profile's argument equal
//!   to `{prompt}`); nothing goes through a shell unless the profile's program is one.
//! - **environment**: cleared; only the variables named in [`AgentSpec::pass_env`] are copied
//!   from the node, plus [`AgentSpec::extra_env`]. stdin is `/dev/null`, the cwd is the
//!   workspace.
//! - **sandbox**: with [`AgentSpec::sandbox`] the program runs in [`crate::sandbox`]; the
//!   group's leader is then the sandbox's keeper, and killing the group (below) kills the
//!   run's whole PID namespace, processes that left the group included.
//! - **process group**: the agent leads its own group. On timeout or cancel the whole group
//!   gets `SIGKILL`; when the leader exits normally the group is killed too, so stray
//!   background children never outlive the run. The leader is waited for without being
//!   reaped (`waitid(WNOWAIT)`) until the group is killed: its id cannot be reused by then.
//! - **output**: stdout and stderr are read concurrently, split into lines (a line longer
//!   than [`LINE_BYTES_MAX`] is cut, the rest of it dropped) and sent as
//!   [`AgentEvent::Log`]. `send().await` gives backpressure (a slow consumer slows the agent
//!   through its pipes), but never past the run's deadline or a cancel: both are watched
//!   while sending too. Past [`AgentSpec::output_bytes_max`] bytes nothing more is forwarded
//!   and one [`AgentEvent::OutputCapped`] is sent; the pipes are still drained (the agent is
//!   not killed for talking: a verbose test run may still produce a good diff), so memory
//!   stays bounded and the deadline still ends a flood.
//! - **progress**: a stdout line `APN_PROGRESS <stage> <percent> <action…>` is forwarded
//!   as its `Log` and then an [`AgentEvent::Progress`] ([`parse_progress_line`]).
//! - **metering**: CPU seconds from the leader's `wait4` rusage (user + system, including
//!   the descendants it waited for), memory GB-seconds from the resident memory of every
//!   process in the group sampled every [`MEMORY_SAMPLE_INTERVAL`], wall seconds.
//!
//! Cancellation is a [`CancellationToken`]: the caller keeps a clone and cancels it; the run
//! then kills the group and returns with `cancelled` set. Dropping the `run_agent` future
//! before it returns also kills the group (and reaps the leader on a background thread).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use crate::config::ProfileConfig;
use crate::messages::{ComputeUsage, ExecutionStage};
use crate::sandbox::{self, SandboxError, SandboxPolicy};

/// The argument replaced by the prompt.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";
/// Longest line forwarded, in bytes; the rest of a longer line is dropped.
pub const LINE_BYTES_MAX: usize = 8 * 1024;
/// How often the group's resident memory is sampled.
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Read buffer per stream, in bytes (large, so draining a flood costs few reads).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// After the leader exits (and the group is killed), how long the pipes may take to close:
/// a process that left the group (`setsid`) could hold them open forever. The same bound
/// applies to delivering the last lines to a slow consumer.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// A longer timeout (e.g. `u64::MAX` seconds from a config) is this one: far enough.
const TIMEOUT_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The line prefix that reports progress.
const PROGRESS_PREFIX: &str = "APN_PROGRESS";

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// What a run reports while it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// One line of output (without its newline; cut at [`LINE_BYTES_MAX`]).
    Log { stream: LogStream, line: String },
    /// A progress line from the agent.
    Progress {
        stage: ExecutionStage,
        percent: u8,
        action: String,
    },
    /// The output cap was reached; sent once. `dropped_bytes` is what was dropped by then;
    /// the run's total output is [`AgentOutcome::output_bytes`].
    OutputCapped { dropped_bytes: u64 },
}

/// What to run and under which limits.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Program then arguments (see [`build_argv`]); run without a shell.
    pub argv: Vec<String>,
    /// The working directory (the fresh checkout).
    pub workspace: PathBuf,
    /// Variables copied from the node's environment; everything else is cleared.
    pub pass_env: Vec<String>,
    /// Variables set for the agent (after `pass_env`).
    pub extra_env: Vec<(String, String)>,
    /// Wall-clock limit; past it the group is killed and the outcome is `timed_out`.
    pub timeout: Duration,
    /// Most stdout + stderr bytes forwarded as events.
    pub output_bytes_max: u64,
    /// Run inside this sandbox ([`crate::sandbox`]); `None` runs the program directly.
    pub sandbox: Option<SandboxPolicy>,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    /// The leader's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the leader, if one did (9 after a timeout or cancel).
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub usage: ComputeUsage,
    /// Every byte the agent wrote to stdout and stderr, forwarded or not.
    pub output_bytes: u64,
    /// The output cap was reached.
    pub output_capped: bool,
}

/// The run could not start or be watched.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("empty command: the profile has no program")]
    EmptyCommand,
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the agent's output: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("cannot sandbox the agent: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("cannot wait for the agent (pid {pid}): {source}")]
    Wait {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

/// Program then arguments, each argument exactly equal to `{prompt}` replaced by the prompt
/// as one element (never split, never interpreted).
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

/// `APN_PROGRESS <stage> <percent> <action…>` with stage `setup|coding|testing|done` and
/// percent `0..=100`; a percent above 100 makes the line not a progress line (a buggy
/// reporter is ignored, not clamped into a false "done"). The action may be empty.
pub fn parse_progress_line(line: &str) -> Option<(ExecutionStage, u8, String)> {
    let rest = line.trim().strip_prefix(PROGRESS_PREFIX)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let mut parts = rest.trim_start().splitn(3, char::is_whitespace);
    let stage = match parts.next()? {
        "setup" => ExecutionStage::Setup,
        "coding" => ExecutionStage::Coding,
        "testing" => ExecutionStage::Testing,
        "done" => ExecutionStage::Done,
        _ => return None,
    };
    let percent: u8 = parts.next()?.parse().ok().filter(|p| *p <= 100)?;
    let action = parts.next().unwrap_or("").trim().to_string();
    Some((stage, percent, action))
}

/// Splits a byte stream into lines of at most [`LINE_BYTES_MAX`] bytes.
struct LineSplitter {
    stream: LogStream,
    buffer: Vec<u8>,
    /// Inside a line that was already cut: drop until its newline.
    skipping: bool,
}

impl LineSplitter {
    fn new(stream: LogStream) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            skipping: false,
        }
    }

    fn line(&self) -> (LogStream, String) {
        let bytes = self.buffer.strip_suffix(b"\r").unwrap_or(&self.buffer);
        (self.stream, String::from_utf8_lossy(bytes).into_owned())
    }

    fn push(&mut self, bytes: &[u8], lines: &mut Vec<(LogStream, String)>) {
        for &byte in bytes {
            if byte == b'\n' {
                if !self.skipping {
                    lines.push(self.line());
                }
                self.buffer.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.buffer.push(byte);
                if self.buffer.len() >= LINE_BYTES_MAX {
                    lines.push(self.line());
                    self.buffer.clear();
                    self.skipping = true;
                }
            }
        }
    }

    /// The stream ended: a last line without a newline still counts.
    fn finish(&mut self, lines: &mut Vec<(LogStream, String)>) {
        if !self.buffer.is_empty() && !self.skipping {
            lines.push(self.line());
        }
        self.buffer.clear();
    }

    /// The cap was reached: a partial line is dropped.
    fn discard(&mut self) {
        self.buffer.clear();
    }
}

/// Send `SIGKILL` to the whole process group `group`.
fn kill_group(group: i32) {
    // SAFETY: killpg only sends a signal. The group id is the leader's pid, which stays
    // reserved while the leader is unreaped (a zombie) or any member lives; a group that
    // is gone gives ESRCH, which is fine.
    unsafe {
        libc::killpg(group, libc::SIGKILL);
    }
}

/// Block until `pid` has exited, without reaping it (`waitid` with `WNOWAIT`).
fn wait_exited(pid: i32) -> std::io::Result<()> {
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
fn reap(pid: i32) -> std::io::Result<(i32, libc::rusage)> {
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
fn cpu_seconds(usage: &libc::rusage) -> f64 {
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Resident bytes of every process in group `group`, from `/proc/<pid>/stat`; the leader
/// (whose pid is the group id) only if `with_leader`.
fn group_resident_bytes(group: i32, with_leader: bool) -> u64 {
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
struct GroupGuard {
    pid: i32,
    armed: bool,
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

/// Why a send stopped waiting.
enum SendEnd {
    Sent,
    ReceiverGone,
    Cancelled,
    Deadline,
}

/// The state of one run while it goes.
struct Run {
    pid: i32,
    events: mpsc::Sender<AgentEvent>,
    cancel: CancellationToken,
    deadline: TokioInstant,
    output_bytes_max: u64,
    outcome: AgentOutcome,
    /// The group was killed (timeout, cancel) or we gave up waiting on the consumer.
    stopping: bool,
    /// The leader exited; the pipes are being drained until `drain_deadline`.
    exited: bool,
    drain_deadline: TokioInstant,
    receiver_gone: bool,
    dropped_bytes: u64,
}

impl Run {
    /// Kill the group for a timeout or cancel.
    fn stop(&mut self, cancelled: bool) {
        if self.stopping && (self.outcome.timed_out || self.outcome.cancelled) {
            return;
        }
        if !self.exited {
            if cancelled {
                self.outcome.cancelled = true;
            } else {
                self.outcome.timed_out = true;
            }
        }
        self.stopping = true;
        kill_group(self.pid);
    }

    /// Deliver one event: waiting for room while the run is live, never past the deadline
    /// (or the drain grace) or a cancel; without waiting once the run is being stopped.
    async fn forward(&mut self, event: AgentEvent) {
        if self.receiver_gone {
            return;
        }
        if self.stopping {
            if let Err(mpsc::error::TrySendError::Closed(_)) = self.events.try_send(event) {
                self.receiver_gone = true;
            }
            return;
        }
        let wait_until = if self.exited {
            self.drain_deadline
        } else {
            self.deadline
        };
        let end = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => SendEnd::Cancelled,
            _ = tokio::time::sleep_until(wait_until) => SendEnd::Deadline,
            sent = self.events.send(event) => match sent {
                Ok(()) => SendEnd::Sent,
                Err(_) => SendEnd::ReceiverGone,
            },
        };
        match end {
            SendEnd::Sent => {}
            SendEnd::ReceiverGone => self.receiver_gone = true,
            SendEnd::Cancelled => self.stop(true),
            SendEnd::Deadline if self.exited => self.stopping = true,
            SendEnd::Deadline => self.stop(false),
        }
    }

    /// Account for `bytes` read from a stream: split them into lines up to the cap.
    fn take_bytes(
        &mut self,
        splitter: &mut LineSplitter,
        bytes: &[u8],
        lines: &mut Vec<(LogStream, String)>,
    ) -> Option<AgentEvent> {
        let before = self.outcome.output_bytes;
        self.outcome.output_bytes += bytes.len() as u64;
        if self.outcome.output_capped {
            self.dropped_bytes += bytes.len() as u64;
            return None;
        }
        let room = self.output_bytes_max.saturating_sub(before);
        if (bytes.len() as u64) <= room {
            splitter.push(bytes, lines);
            return None;
        }
        let kept = room as usize;
        splitter.push(&bytes[..kept], lines);
        splitter.discard();
        self.outcome.output_capped = true;
        self.dropped_bytes += (bytes.len() - kept) as u64;
        tracing::info!(
            pid = self.pid,
            output_bytes_max = self.output_bytes_max,
            "agent output capped"
        );
        Some(AgentEvent::OutputCapped {
            dropped_bytes: self.dropped_bytes,
        })
    }
}

/// Read into `buffer` from `pipe`, or never finish when the pipe is closed.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    match pipe.as_mut() {
        Some(pipe) => pipe.read(buffer).await,
        None => std::future::pending().await,
    }
}

/// What woke the run loop.
enum Wake {
    Cancelled,
    Deadline,
    LeaderExited(std::io::Result<()>),
    DrainOver,
    Stdout(std::io::Result<usize>),
    Stderr(std::io::Result<usize>),
    Sample,
}

/// Run the agent to its end: exit, timeout or cancel (see the module docs for the rules).
/// `Err` only when it cannot start or be waited for; a failing agent is an `Ok` outcome.
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
    if let Some(policy) = &spec.sandbox {
        sandbox::apply(&mut command, policy)?;
    }
    // In a sandbox the leader is the keeper, a forked copy of this node whose resident
    // pages are the node's, not the run's: only the processes below it are metered.
    let metered_leader = spec.sandbox.is_none();
    let mut child = command.spawn().map_err(|source| AgentError::Spawn {
        program: program.clone(),
        source,
    })?;
    let started = Instant::now();
    let pid = child.id() as i32;
    // From here on the group is killed whatever happens, even if this future is dropped.
    let mut guard = GroupGuard { pid, armed: true };
    let pipes = (
        child
            .stdout
            .take()
            .map(tokio::process::ChildStdout::from_std),
        child
            .stderr
            .take()
            .map(tokio::process::ChildStderr::from_std),
    );
    // The leader is reaped by `reap` (for its rusage), never by std: dropping the handle
    // only closes our ends of its pipes, which were taken above.
    drop(child);
    let (mut stdout, mut stderr) = match pipes {
        (Some(Ok(out)), Some(Ok(err))) => (Some(out), Some(err)),
        (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(AgentError::Pipe(e)),
        _ => {
            return Err(AgentError::Pipe(std::io::Error::other(
                "the agent's pipes are missing",
            )));
        }
    };
    tracing::debug!(pid, %program, workspace = %spec.workspace.display(), "agent started");

    let mut leader_exit = tokio::task::spawn_blocking(move || wait_exited(pid));
    let now = TokioInstant::now();
    let mut run = Run {
        pid,
        events,
        cancel,
        deadline: now.checked_add(spec.timeout).unwrap_or(now + TIMEOUT_MAX),
        output_bytes_max: spec.output_bytes_max,
        outcome: AgentOutcome::default(),
        stopping: false,
        exited: false,
        drain_deadline: now,
        receiver_gone: false,
        dropped_bytes: 0,
    };
    let mut stdout_lines = LineSplitter::new(LogStream::Stdout);
    let mut stderr_lines = LineSplitter::new(LogStream::Stderr);
    let mut stdout_buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut stderr_buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut sample = tokio::time::interval(MEMORY_SAMPLE_INTERVAL);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory_byte_seconds = 0.0f64;
    let mut last_sample = Instant::now();
    let mut lines: Vec<(LogStream, String)> = Vec::new();

    loop {
        if run.exited && stdout.is_none() && stderr.is_none() {
            break;
        }
        let wake = tokio::select! {
            biased;
            _ = run.cancel.cancelled(), if !run.stopping => Wake::Cancelled,
            _ = tokio::time::sleep_until(run.deadline), if !run.stopping && !run.exited => Wake::Deadline,
            _ = tokio::time::sleep_until(run.drain_deadline), if run.exited => Wake::DrainOver,
            exit = &mut leader_exit, if !run.exited => Wake::LeaderExited(
                exit.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            ),
            read = read_some(&mut stdout, &mut stdout_buffer) => Wake::Stdout(read),
            read = read_some(&mut stderr, &mut stderr_buffer) => Wake::Stderr(read),
            _ = sample.tick() => Wake::Sample,
        };
        let mut capped = None;
        match wake {
            Wake::Cancelled => run.stop(true),
            Wake::Deadline => run.stop(false),
            Wake::LeaderExited(result) => {
                if let Err(source) = result {
                    kill_group(pid);
                    return Err(AgentError::Wait { pid, source });
                }
                run.exited = true;
                run.drain_deadline = TokioInstant::now() + DRAIN_GRACE;
                // Stray background processes of the run must not outlive it.
                kill_group(pid);
            }
            Wake::DrainOver => {
                tracing::warn!(
                    pid,
                    "agent output pipes still open after the group was killed"
                );
                break;
            }
            Wake::Stdout(Ok(0)) | Wake::Stdout(Err(_)) => {
                stdout_lines.finish(&mut lines);
                stdout = None;
            }
            Wake::Stderr(Ok(0)) | Wake::Stderr(Err(_)) => {
                stderr_lines.finish(&mut lines);
                stderr = None;
            }
            Wake::Stdout(Ok(read)) => {
                capped = run.take_bytes(&mut stdout_lines, &stdout_buffer[..read], &mut lines);
            }
            Wake::Stderr(Ok(read)) => {
                capped = run.take_bytes(&mut stderr_lines, &stderr_buffer[..read], &mut lines);
            }
            Wake::Sample => {
                if !run.exited {
                    let now = Instant::now();
                    let bytes = group_resident_bytes(pid, metered_leader);
                    memory_byte_seconds +=
                        bytes as f64 * now.duration_since(last_sample).as_secs_f64();
                    last_sample = now;
                }
            }
        }
        for (stream, line) in lines.drain(..) {
            let progress = match stream {
                LogStream::Stdout => parse_progress_line(&line),
                LogStream::Stderr => None,
            };
            run.forward(AgentEvent::Log { stream, line }).await;
            if let Some((stage, percent, action)) = progress {
                run.forward(AgentEvent::Progress {
                    stage,
                    percent,
                    action,
                })
                .await;
            }
        }
        if let Some(event) = capped {
            run.forward(event).await;
        }
    }

    // The leader has exited (every way out of the loop goes through that) and its pipes are
    // closed or outlived the grace; make sure the group is gone, then reap the leader for its
    // status and rusage.
    kill_group(pid);
    guard.armed = false;
    let (status, usage) = tokio::task::spawn_blocking(move || reap(pid))
        .await
        .map_err(|e| AgentError::Wait {
            pid,
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| AgentError::Wait { pid, source })?;
    let status = std::process::ExitStatus::from_raw(status);
    let mut outcome = run.outcome;
    outcome.exit_code = status.code();
    outcome.signal = status.signal();
    outcome.usage = ComputeUsage {
        cpu_seconds: cpu_seconds(&usage),
        memory_gb_seconds: memory_byte_seconds / 1e9,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    tracing::debug!(
        pid,
        exit_code = ?outcome.exit_code,
        signal = ?outcome.signal,
        timed_out = outcome.timed_out,
        cancelled = outcome.cancelled,
        output_bytes = outcome.output_bytes,
        "agent finished"
    );
    Ok(outcome)
}

/// Profiles this node can run: enabled in the config and with a program that exists (an
/// absolute or relative path that is a file, or a name found on `PATH`).
pub fn available_profiles(config: &crate::config::ExecutorConfig) -> Vec<String> {
    config
        .profiles
        .iter()
        .filter(|(_, profile)| profile.enabled && program_exists(&profile.program))
        .map(|(name, _)| name.clone())
        .collect()
}

/// True when `program` can be started.
pub fn program_exists(program: &str) -> bool {
    let path = std::path::Path::new(program);
    if path.components().count() > 1 {
        return path.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_one_argument_never_split() {
        let profile = ProfileConfig::new("claude", &["-p", "{prompt}", "--flag={prompt}", "--yes"]);
        let prompt = "$(touch /tmp/pwned); rm -rf ~ `id` \"quoted\" 'single'\nnext line";
        assert_eq!(
            build_argv(&profile, prompt),
            vec!["claude", "-p", prompt, "--flag={prompt}", "--yes"]
        );
        let empty = ProfileConfig::new("agent", &["{prompt}"]);
        assert_eq!(build_argv(&empty, ""), vec!["agent", ""]);
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            parse_progress_line("APN_PROGRESS coding 40 editing files"),
            Some((ExecutionStage::Coding, 40, "editing files".into()))
        );
        assert_eq!(
            parse_progress_line("  APN_PROGRESS done 100"),
            Some((ExecutionStage::Done, 100, String::new()))
        );
        assert_eq!(
            parse_progress_line("APN_PROGRESS setup 0 cloning  the repo "),
            Some((ExecutionStage::Setup, 0, "cloning  the repo".into()))
        );
        assert_eq!(
            parse_progress_line("APN_PROGRESS\ttesting 7 cargo test"),
            Some((ExecutionStage::Testing, 7, "cargo test".into()))
        );
        for not_progress in [
            "APN_PROGRESS coding 140 x",
            "APN_PROGRESS coding -1 x",
            "APN_PROGRESS coding forty x",
            "APN_PROGRESS flying 40 x",
            "APN_PROGRESS coding",
            "APN_PROGRESSIVE coding 40 x",
            "progress coding 40",
            "",
        ] {
            assert_eq!(parse_progress_line(not_progress), None, "{not_progress}");
        }
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_dropped() {
        let mut splitter = LineSplitter::new(LogStream::Stdout);
        let mut lines = Vec::new();
        splitter.push(&vec![b'x'; LINE_BYTES_MAX * 3], &mut lines);
        splitter.push(b"\nnext\r\nlast", &mut lines);
        splitter.finish(&mut lines);
        let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(texts.len(), 3);
        assert_eq!(texts[0].len(), LINE_BYTES_MAX);
        assert_eq!(texts[1..], ["next", "last"]);
    }
}
