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
//! - **progress**: with [`AgentOutputFormat::Text`] a stdout line
//!   `APN_PROGRESS <stage> <percent> <action…>` is forwarded as its `Log` and then an
//!   [`AgentEvent::Progress`] ([`parse_progress_line`]). With
//!   [`AgentOutputFormat::StreamJson`] (Claude Code, Amp), [`AgentOutputFormat::CodexJson`]
//!   or [`AgentOutputFormat::GeminiJson`] every stdout line goes through that format's
//!   parser ([`StreamJsonParser`], [`CodexJsonParser`], [`GeminiJsonParser`]) instead (lines up to [`STREAM_JSON_LINE_BYTES_MAX`]): the agent's
//!   text, tool uses and tool results become `Log`s and `Progress`, its final result an
//!   [`AgentEvent::Summary`] (also kept in [`AgentOutcome::summary`]). Past the output
//!   cap its lines are still parsed (they are read anyway), and only their progress and
//!   summary are forwarded: a long, verbose session still reports how it ended.
//! - **metering**: CPU seconds from the leader's `wait4` rusage (user + system, including
//!   the descendants it waited for), memory GB-seconds from the resident memory of every
//!   process in the group sampled every [`MEMORY_SAMPLE_INTERVAL`], wall seconds.
//!
//! Cancellation is a [`CancellationToken`](tokio_util::sync::CancellationToken): the caller
//! keeps a clone and cancels it; the run then kills the group and returns with `cancelled`
//! set. Dropping the `run_agent` future before it returns also kills the group (and reaps
//! the leader on a background thread).
//!
//! Here: the spec, events, outcome and errors. The run loop is in `run`, the process group
//! in `group`, line splitting and progress lines in `output`, Claude Code's stream-json in
//! `stream_json`, Codex's JSON in `codex_json`, Gemini's in `gemini_json`, what they share in
//! `structured`, argv and profile lookup in `profiles`.

pub mod codex_json;
pub mod gemini_json;
mod group;
mod output;
mod profiles;
mod run;
pub mod stream_json;
pub mod structured;

pub use crate::config::AgentOutputFormat;
pub use codex_json::CodexJsonParser;
pub use gemini_json::GeminiJsonParser;
pub use output::parse_progress_line;
pub use profiles::{available_profiles, build_argv, program_exists};
pub use run::run_agent;
pub use stream_json::StreamJsonParser;
pub use structured::StructuredParser;

use std::path::PathBuf;
use std::time::Duration;

use crate::messages::{ComputeUsage, ExecutionStage};
use crate::sandbox::{SandboxError, SandboxPolicy};

/// The argument replaced by the prompt.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";
/// Longest line forwarded, in bytes; the rest of a longer line is dropped.
pub const LINE_BYTES_MAX: usize = 8 * 1024;
/// Longest stdout line read with [`AgentOutputFormat::StreamJson`], in bytes: one event
/// carries a whole tool input or result (a file written, a test log), so lines are longer;
/// a longer one is cut, fails to parse and is kept as a plain (bounded) log line.
pub const STREAM_JSON_LINE_BYTES_MAX: usize = 1024 * 1024;
/// How often the group's resident memory is sampled.
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The agent's standard output (where `APN_PROGRESS` lines are looked for), or a tool's
    /// output in a stream-json transcript.
    Stdout,
    /// The agent's standard error.
    Stderr,
    /// What the agent said, as its structured output tells it apart (stream-json text).
    Agent,
}

/// What a run reports while it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// One line of output (without its newline; cut at [`LINE_BYTES_MAX`]).
    Log {
        /// The pipe the line was read from.
        stream: LogStream,
        /// The text, lossily decoded as UTF-8.
        line: String,
    },
    /// A progress line from the agent.
    Progress {
        /// Phase the agent says it is in (`setup`, `coding`, `testing`, `done`).
        stage: ExecutionStage,
        /// Completion the agent claims, 0..=100 (lines above 100 are not progress).
        percent: u8,
        /// Free text after the percent, e.g. `running tests`; may be empty.
        action: String,
        /// Files the agent edited so far, as its structured output tells (relative to the
        /// workspace when under it); empty for `APN_PROGRESS` lines.
        files_modified: Vec<String>,
    },
    /// The agent's own account of the run (a stream-json `result` event); sent once, at the
    /// end.
    Summary(AgentSummary),
    /// The output cap was reached; sent once. `dropped_bytes` is what was dropped by then;
    /// the run's total output is [`AgentOutcome::output_bytes`].
    OutputCapped {
        /// Bytes of output discarded when this event was sent.
        dropped_bytes: u64,
    },
}

/// The agent's final report (Claude Code's stream-json `result` event).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentSummary {
    /// The result's subtype is `success` and it is not marked as an error.
    pub success: bool,
    /// `success`, `error_max_turns`, `error_during_execution`, … (bounded).
    pub subtype: String,
    /// Turns the agent took.
    pub num_turns: Option<u64>,
    /// What the model calls cost, in US dollars, as the agent reports it.
    pub total_cost_usd: Option<f64>,
    /// Input tokens, as the agent reports them.
    pub input_tokens: Option<u64>,
    /// Output tokens, as the agent reports them.
    pub output_tokens: Option<u64>,
    /// The agent's closing text (bounded to [`stream_json::LOG_LINE_BYTES_MAX`] bytes).
    pub text: String,
}

impl std::fmt::Display for AgentSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "agent {}", self.subtype)?;
        if let Some(turns) = self.num_turns {
            write!(f, ", {turns} turn(s)")?;
        }
        if let Some(cost) = self.total_cost_usd {
            write!(f, ", ${cost:.4}")?;
        }
        if let (Some(input), Some(output)) = (self.input_tokens, self.output_tokens) {
            write!(f, ", {input} in / {output} out tokens")?;
        }
        if !self.text.is_empty() {
            write!(f, ": {}", self.text)?;
        }
        Ok(())
    }
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
    /// How stdout is read: plain lines or an agent's structured output (the profile's
    /// `output`).
    pub output: AgentOutputFormat,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct AgentOutcome {
    /// The leader's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the leader, if one did (9 after a timeout or cancel).
    pub signal: Option<i32>,
    /// The wall-clock [`AgentSpec::timeout`] passed and the group was killed.
    pub timed_out: bool,
    /// The caller's cancellation token fired and the group was killed.
    pub cancelled: bool,
    /// CPU seconds, memory GB-seconds and wall seconds the run used (see module docs).
    pub usage: ComputeUsage,
    /// Every byte the agent wrote to stdout and stderr, forwarded or not.
    pub output_bytes: u64,
    /// The output cap was reached.
    pub output_capped: bool,
    /// The agent's own summary, when its structured output gave one (the last one given).
    pub summary: Option<AgentSummary>,
}

/// The run could not start or be watched.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// [`AgentSpec::argv`] is empty: a misconfigured executor profile.
    #[error("empty command: the profile has no program")]
    EmptyCommand,
    /// The program could not be started (not found, not executable, no resources).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program (`argv[0]`) that failed to start.
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the agent's stdout or stderr pipe failed.
    #[error("cannot read the agent's output: {0}")]
    Pipe(#[source] std::io::Error),
    /// The sandbox could not be set up; the agent was not run unsandboxed instead.
    #[error("cannot sandbox the agent: {0}")]
    Sandbox(#[from] SandboxError),
    /// Waiting for the group leader failed; the group is still killed.
    #[error("cannot wait for the agent (pid {pid}): {source}")]
    Wait {
        /// Process id of the group leader.
        pid: i32,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}
