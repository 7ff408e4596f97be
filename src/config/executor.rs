//! `[executor]`: how agent runs are limited and which programs (profiles) they start, with
//! the default profiles and the largest diff a result may carry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SandboxMode;

/// One executor profile: the program an agent CLI is started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Program name (looked up on PATH) or path.
    pub program: String,
    /// Arguments; the one equal to `{prompt}` is replaced by the prompt, as one argument.
    #[serde(default)]
    pub args: Vec<String>,
    /// Off profiles are neither advertised nor run.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// TCP ports a sandboxed run may connect to (an agent CLI talks to its model over
    /// HTTPS: 443 by default). Empty: the run gets a private network namespace, no network.
    #[serde(default = "default_network_ports")]
    pub network_ports: Vec<u16>,
    /// Extra paths a sandboxed run may read and execute (e.g. the agent's login directory
    /// or a toolchain under a home directory). None by default.
    #[serde(default)]
    pub read_only_paths: Vec<PathBuf>,
    /// Variables copied from the node's environment for this profile's runs only, on top of
    /// `executor.pass_env` (e.g. `ANTHROPIC_API_KEY` for `claude`). None by default.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Variables set to fixed values for this profile's runs (e.g. `IS_SANDBOX = "1"`), set
    /// after every passed variable. None by default.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How the program's stdout is read: `text` (lines, `APN_PROGRESS` progress lines),
    /// `stream-json` (Claude Code's `--output-format stream-json` events, Amp's
    /// `--stream-json`), `codex-json` (`codex exec --json`) or `gemini-json` (`gemini
    /// --output-format stream-json`).
    #[serde(default)]
    pub output: AgentOutputFormat,
}

/// How an agent's stdout is read (`executor.profiles.<NAME>.output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentOutputFormat {
    /// Plain lines; a line `APN_PROGRESS <stage> <percent> <action>` is progress.
    #[default]
    Text,
    /// One JSON event a line, as `claude -p … --output-format stream-json --verbose`
    /// prints them: assistant text, tool uses, tool results, the final result. Amp's
    /// `amp -x … --stream-json` prints the same shape.
    StreamJson,
    /// One JSON event a line, as `codex exec --json` prints them: thread and turn events,
    /// items (agent messages, commands, file changes, …), the turn's token usage.
    CodexJson,
    /// One JSON event a line, as `gemini -p … --output-format stream-json` prints them:
    /// init, messages, tool uses and results, errors, the final result.
    GeminiJson,
}

impl ProfileConfig {
    /// An enabled profile with the default network (TCP 443) and no extra paths.
    pub fn new(program: &str, args: &[&str]) -> Self {
        ProfileConfig {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            enabled: true,
            network_ports: default_network_ports(),
            read_only_paths: Vec::new(),
            pass_env: Vec::new(),
            env: BTreeMap::new(),
            output: AgentOutputFormat::Text,
        }
    }

    /// The same profile, also passing these variables from the node's environment.
    pub fn with_pass_env(mut self, names: &[&str]) -> Self {
        self.pass_env.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// The same profile, with this fixed variable set for its runs.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The same profile, its stdout read as `output`.
    pub fn with_output(mut self, output: AgentOutputFormat) -> Self {
        self.output = output;
        self
    }

    /// The default CLAUDE_CODE profile: `claude -p {prompt} --output-format stream-json
    /// --verbose --dangerously-skip-permissions`, read as stream-json, with
    /// `ANTHROPIC_API_KEY` passed and `IS_SANDBOX=1` (peers' runs are sandboxed, and
    /// `claude` refuses to skip permissions as root without it).
    pub fn claude_code() -> Self {
        ProfileConfig::new(
            "claude",
            &[
                "-p",
                PROMPT_ARGUMENT,
                "--output-format",
                "stream-json",
                "--verbose",
                "--dangerously-skip-permissions",
            ],
        )
        .with_pass_env(&["ANTHROPIC_API_KEY"])
        .with_env("IS_SANDBOX", "1")
        .with_output(AgentOutputFormat::StreamJson)
    }

    /// The default AMP profile: `amp --dangerously-allow-all -x {prompt} --stream-json`,
    /// read as stream-json (Amp prints Claude Code's shape), with `AMP_API_KEY` passed.
    pub fn amp() -> Self {
        ProfileConfig::new(
            "amp",
            &[
                "--dangerously-allow-all",
                "-x",
                PROMPT_ARGUMENT,
                "--stream-json",
            ],
        )
        .with_pass_env(&["AMP_API_KEY"])
        .with_output(AgentOutputFormat::StreamJson)
    }

    /// The default CODEX profile: `codex exec --json --dangerously-bypass-approvals-and-sandbox
    /// {prompt}` (peers' runs are already in the node's own sandbox), read as codex-json,
    /// with `OPENAI_API_KEY` passed.
    pub fn codex() -> Self {
        ProfileConfig::new(
            "codex",
            &[
                "exec",
                "--json",
                "--dangerously-bypass-approvals-and-sandbox",
                PROMPT_ARGUMENT,
            ],
        )
        .with_pass_env(&["OPENAI_API_KEY"])
        .with_output(AgentOutputFormat::CodexJson)
    }

    /// The default GEMINI profile: `gemini -p {prompt} --output-format stream-json --yolo`,
    /// read as gemini-json, with `GEMINI_API_KEY` passed.
    pub fn gemini() -> Self {
        ProfileConfig::new(
            "gemini",
            &[
                "-p",
                PROMPT_ARGUMENT,
                "--output-format",
                "stream-json",
                "--yolo",
            ],
        )
        .with_pass_env(&["GEMINI_API_KEY"])
        .with_output(AgentOutputFormat::GeminiJson)
    }

    /// The SHELL profile (`sh -c <prompt>`, no network), for tests and the demo.
    pub fn shell(enabled: bool) -> Self {
        ProfileConfig {
            enabled,
            network_ports: Vec::new(),
            ..ProfileConfig::new("sh", &["-c", PROMPT_ARGUMENT])
        }
    }
}

/// The argument of a profile replaced by the prompt.
const PROMPT_ARGUMENT: &str = "{prompt}";

fn default_true() -> bool {
    true
}

fn default_network_ports() -> Vec<u16> {
    vec![443]
}

/// Default `executor.result_bytes_max`: 64 MiB. A result larger than one frame travels in
/// `ResultChunk`s, so this is a choice of memory and bandwidth, not of the frame size.
pub const RESULT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest `executor.result_bytes_max`: room for the summary and file list plus a diff.
pub const RESULT_BYTES_MAX_MIN: u64 = 2 * 1024 * 1024;
/// Largest `executor.result_bytes_max` (1 GiB): an originator holds a whole result in
/// memory while it verifies it.
pub const RESULT_BYTES_MAX_LIMIT: u64 = 1024 * 1024 * 1024;
/// What a result holds besides its diff (the summary, the list of files, the encoding):
/// the diff may use `result_bytes_max` minus this.
pub const RESULT_ROOM_BYTES: u64 = 1024 * 1024;

/// Shortest `executor.watch_interval_ms` other than 0: each look runs git over the whole
/// work tree, which on a large repository takes a while itself.
pub const WATCH_INTERVAL_MS_MIN: u64 = 100;
/// Longest `executor.watch_interval_ms` (an hour: past it the watcher tells nobody anything).
pub const WATCH_INTERVAL_MS_MAX: u64 = 3_600_000;

/// `[executor]`: running agents for peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Default wall-clock limit of a run, in seconds.
    pub timeout_s: u64,
    /// Most stdout+stderr bytes kept from a run; the rest is cut and counted.
    pub output_bytes_max: u64,
    /// Largest diff returned, in bytes; in effect at most `result_bytes_max` minus
    /// [`RESULT_ROOM_BYTES`] (see [`ExecutorConfig::diff_limit`]).
    pub diff_bytes_max: u64,
    /// Largest result (encoded summary, file list and diff), in bytes: what this node sends
    /// as an executor and accepts, reassembled from its chunks, as an originator. Between
    /// [`RESULT_BYTES_MAX_MIN`] and [`RESULT_BYTES_MAX_LIMIT`].
    pub result_bytes_max: u64,
    /// Keep workspaces after a run (for debugging).
    pub keep_workspaces: bool,
    /// How often, in milliseconds, the executor looks at a running agent's workspace
    /// (`git status`) and reports the files changed so far to the originator; 0 = never
    /// (the agent's own reports and the final result still say). Between
    /// [`WATCH_INTERVAL_MS_MIN`] and [`WATCH_INTERVAL_MS_MAX`] otherwise.
    pub watch_interval_ms: u64,
    /// Environment variables passed to agents (everything else is cleared; `HOME`,
    /// `TMPDIR` and `PATH` are always set).
    pub pass_env: Vec<String>,
    /// `required`: every peer's run and every verify command runs in the sandbox, and a
    /// node whose kernel cannot sandbox refuses peers' tasks. `off`: no sandbox (dangerous).
    pub sandbox: SandboxMode,
    /// `[executor.profiles.<NAME>]`: profiles by name (`CLAUDE_CODE`, `SHELL`, …); only
    /// those whose program exists are advertised.
    pub profiles: BTreeMap<String, ProfileConfig>,
}

impl ExecutorConfig {
    /// The largest diff a run returns: `diff_bytes_max`, but never more than fits a result
    /// of `result_bytes_max` with its summary and file list.
    pub fn diff_limit(&self) -> u64 {
        self.diff_bytes_max
            .min(self.result_bytes_max.saturating_sub(RESULT_ROOM_BYTES))
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert("CLAUDE_CODE".into(), ProfileConfig::claude_code());
        profiles.insert("AMP".into(), ProfileConfig::amp());
        profiles.insert("CODEX".into(), ProfileConfig::codex());
        profiles.insert("GEMINI".into(), ProfileConfig::gemini());
        profiles.insert("SHELL".into(), ProfileConfig::shell(false));
        ExecutorConfig {
            timeout_s: 1800,
            output_bytes_max: 8 * 1024 * 1024,
            diff_bytes_max: RESULT_BYTES_MAX_DEFAULT - RESULT_ROOM_BYTES,
            result_bytes_max: RESULT_BYTES_MAX_DEFAULT,
            keep_workspaces: false,
            watch_interval_ms: 2000,
            pass_env: vec!["LANG".into()],
            sandbox: SandboxMode::Required,
            profiles,
        }
    }
}
