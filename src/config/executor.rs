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
        }
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

/// Largest diff a result can carry: the sealed result travels in one frame
/// (`messages::codec::FRAME_BYTES_MAX`, 512 KiB) with the summary and file list.
pub const DIFF_BYTES_LIMIT: u64 = 384 * 1024;

/// `[executor]`: running agents for peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Default wall-clock limit of a run, in seconds.
    pub timeout_s: u64,
    /// Most stdout+stderr bytes kept from a run; the rest is cut and counted.
    pub output_bytes_max: u64,
    /// Largest diff returned, in bytes.
    pub diff_bytes_max: u64,
    /// Keep workspaces after a run (for debugging).
    pub keep_workspaces: bool,
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

impl Default for ExecutorConfig {
    fn default() -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert(
            "CLAUDE_CODE".into(),
            ProfileConfig::new(
                "claude",
                &["-p", PROMPT_ARGUMENT, "--dangerously-skip-permissions"],
            ),
        );
        profiles.insert(
            "AMP".into(),
            ProfileConfig::new("amp", &["-x", PROMPT_ARGUMENT]),
        );
        profiles.insert(
            "CODEX".into(),
            ProfileConfig::new("codex", &["exec", "--full-auto", PROMPT_ARGUMENT]),
        );
        profiles.insert(
            "GEMINI".into(),
            ProfileConfig::new("gemini", &["--yolo", "-p", PROMPT_ARGUMENT]),
        );
        profiles.insert("SHELL".into(), ProfileConfig::shell(false));
        ExecutorConfig {
            timeout_s: 1800,
            output_bytes_max: 8 * 1024 * 1024,
            diff_bytes_max: DIFF_BYTES_LIMIT,
            keep_workspaces: false,
            pass_env: vec!["LANG".into()],
            sandbox: SandboxMode::Required,
            profiles,
        }
    }
}
