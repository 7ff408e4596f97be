//! `run_agent`: start the program in its own process group (in the sandbox when asked),
//! then one loop that reads both pipes, forwards lines and progress with backpressure,
//! samples memory, and ends the run on exit, timeout or cancel.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use super::group::{GroupGuard, cpu_seconds, group_resident_bytes, kill_group, reap, wait_exited};
use super::output::{LineSplitter, parse_progress_line, read_some};
use super::structured::StructuredParser;
use super::{
    AgentError, AgentEvent, AgentOutcome, AgentSpec, LogStream, MEMORY_SAMPLE_INTERVAL,
    STREAM_JSON_LINE_BYTES_MAX,
};
use crate::messages::ComputeUsage;
use crate::sandbox;

/// Read buffer per stream, in bytes (large, so draining a flood costs few reads).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// After the leader exits (and the group is killed), how long the pipes may take to close:
/// a process that left the group (`setsid`) could hold them open forever. The same bound
/// applies to delivering the last lines to a slow consumer.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// A longer timeout (e.g. `u64::MAX` seconds from a config) is this one: far enough.
const TIMEOUT_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

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
    // With a structured output (stream-json, codex-json, gemini-json), stdout lines are
    // events (read whole up to a larger limit) and go through its parser instead of the
    // `APN_PROGRESS` scanner.
    let mut stream_json = StructuredParser::for_output(spec.output, Some(&spec.workspace));
    let mut stdout_lines = if stream_json.is_some() {
        LineSplitter::with_limit(LogStream::Stdout, STREAM_JSON_LINE_BYTES_MAX)
    } else {
        LineSplitter::new(LogStream::Stdout)
    };
    let mut stderr_lines = LineSplitter::new(LogStream::Stderr);
    let mut stdout_buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut stderr_buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut sample = tokio::time::interval(MEMORY_SAMPLE_INTERVAL);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory_byte_seconds = 0.0f64;
    let mut last_sample = Instant::now();
    let mut lines: Vec<(LogStream, String)> = Vec::new();
    // Stream-json stdout lines read past the output cap: parsed, their logs not forwarded.
    let mut past_cap_lines: Vec<(LogStream, String)> = Vec::new();

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
                if stream_json.is_some() && run.outcome.output_capped {
                    stdout_lines.finish(&mut past_cap_lines);
                } else {
                    stdout_lines.finish(&mut lines);
                }
                stdout = None;
            }
            Wake::Stderr(Ok(0)) | Wake::Stderr(Err(_)) => {
                stderr_lines.finish(&mut lines);
                stderr = None;
            }
            Wake::Stdout(Ok(read)) => {
                let bytes = &stdout_buffer[..read];
                let room = run
                    .output_bytes_max
                    .saturating_sub(run.outcome.output_bytes);
                capped = run.take_bytes(&mut stdout_lines, bytes, &mut lines);
                if stream_json.is_some() && run.outcome.output_capped {
                    // Past the cap, stream-json lines are still read for progress and the
                    // summary (small, bounded events); their logs are dropped.
                    let kept = usize::try_from(room).unwrap_or(usize::MAX).min(read);
                    stdout_lines.push(&bytes[kept..], &mut past_cap_lines);
                }
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
            if let (LogStream::Stdout, Some(parser)) = (stream, stream_json.as_mut()) {
                for event in parser.parse_line(&line) {
                    if let AgentEvent::Summary(summary) = &event {
                        run.outcome.summary = Some(summary.clone());
                    }
                    run.forward(event).await;
                }
                continue;
            }
            let progress = match stream {
                LogStream::Stdout => parse_progress_line(&line),
                LogStream::Stderr | LogStream::Agent => None,
            };
            run.forward(AgentEvent::Log { stream, line }).await;
            if let Some((stage, percent, action)) = progress {
                run.forward(AgentEvent::Progress {
                    stage,
                    percent,
                    action,
                    files_modified: Vec::new(),
                })
                .await;
            }
        }
        if let Some(event) = capped {
            run.forward(event).await;
        }
        if let Some(parser) = stream_json.as_mut() {
            for (_, line) in past_cap_lines.drain(..) {
                for event in parser.parse_line(&line) {
                    match &event {
                        AgentEvent::Log { .. } => continue,
                        AgentEvent::Summary(summary) => {
                            run.outcome.summary = Some(summary.clone());
                        }
                        _ => {}
                    }
                    run.forward(event).await;
                }
            }
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
