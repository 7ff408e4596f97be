//! Typed node configuration.
//!
//! Sources, later wins: the TOML file (`config/apn.toml` documents every key), then command
//! line flags, then `APN_<SECTION>_<KEY>` environment variables (for example
//! `APN_RELAY_URL=nats://10.0.0.2:4222`, `APN_NODE_MDNS=false`). All three are merged as TOML
//! values and deserialised once, so an error always names the key (`economics.min_task_reward:
//! amount must not be negative`). Unknown keys are errors too: a typo must not be ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::messages::Vibe;
pub use crate::sandbox::SandboxMode;

/// Sections of the config file, in the order the file documents them.
pub const SECTIONS: [&str; 8] = [
    "node",
    "resources",
    "economics",
    "relay",
    "http",
    "market",
    "executor",
    "accept",
];

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub resources: ResourcesConfig,
    pub economics: EconomicsConfig,
    pub relay: RelayConfig,
    pub http: HttpConfig,
    pub market: MarketConfig,
    pub executor: ExecutorConfig,
    pub accept: AcceptConfig,
}

/// `[node]`: identity, transport and discovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// TCP port for libp2p when `listen` is empty (0 picks a free one).
    pub port: u16,
    /// Capability tags announced to the mesh.
    pub capabilities: Vec<String>,
    /// Where keys, the API token, the ledger and workspaces live.
    pub data_dir: PathBuf,
    /// libp2p listen multiaddrs; empty means `/ip4/0.0.0.0/tcp/<port>`.
    pub listen: Vec<String>,
    /// Multiaddrs (with `/p2p/<peer id>`) dialled at start.
    pub bootstrap: Vec<String>,
    /// LAN discovery.
    pub mdns: bool,
    /// Talk only through the NATS relay: no libp2p listening or dialling.
    pub relay_only: bool,
    /// Seconds between node announcements.
    pub announce_interval_s: u64,
    /// Tolerated clock difference to a sender, in seconds.
    pub clock_skew_s: u64,
    /// A peer not heard from for this long is removed from the peer table.
    pub peer_timeout_s: u64,
    /// Frames one connected peer may send per second (bursts of two seconds' worth); the
    /// excess is dropped before its signature is checked.
    pub frames_per_peer_per_second: u32,
    /// Most peers in the peer table. When it is full, an entry that never announced itself
    /// and is not connected makes room; known peers are never dropped for newcomers.
    pub peers_max: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            port: 4001,
            capabilities: vec!["rust".into(), "python".into(), "typescript".into()],
            data_dir: PathBuf::from("data/apn"),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            relay_only: false,
            announce_interval_s: 30,
            clock_skew_s: 120,
            peer_timeout_s: 120,
            frames_per_peer_per_second: 500,
            peers_max: 4096,
        }
    }
}

/// `[resources]`: what this node gives the mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesConfig {
    pub max_concurrent_tasks: u32,
    /// Bandwidth this node offers for relaying, in megabits per second.
    pub max_bandwidth_mbps: u32,
    /// Memory an agent run may use, in megabytes (the sandbox's data-segment limit per
    /// process).
    pub max_memory_mb: u64,
    /// Processes a sandboxed run may have at once.
    pub max_processes: u32,
    pub cpu_cores: u32,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        ResourcesConfig {
            max_concurrent_tasks: 2,
            max_bandwidth_mbps: 100,
            max_memory_mb: 4096,
            max_processes: 512,
            cpu_cores: 2,
        }
    }
}

/// `[economics]`: prices and the starting balance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EconomicsConfig {
    pub compute_rate_per_cpu_hour: Vibe,
    pub bandwidth_rate_per_gb: Vibe,
    pub min_task_reward: Vibe,
    /// Minted into this node's account when its ledger is created.
    pub initial_balance: Vibe,
    /// Settle bandwidth owed once this many bytes are unsettled…
    pub bandwidth_settle_bytes: u64,
    /// …or this many seconds passed since the last settlement.
    pub bandwidth_settle_interval_s: u64,
}

impl Default for EconomicsConfig {
    fn default() -> Self {
        EconomicsConfig {
            compute_rate_per_cpu_hour: Vibe::from_whole(10),
            bandwidth_rate_per_gb: Vibe::from_whole(1),
            min_task_reward: Vibe::from_whole(1),
            initial_balance: Vibe::from_whole(1000),
            bandwidth_settle_bytes: 64 * 1024 * 1024,
            bandwidth_settle_interval_s: 300,
        }
    }
}

/// `[relay]`: the NATS relay for peers without a direct path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// `nats://host:port`, or empty for no relay.
    pub url: String,
    /// A NATS credentials file (`.creds`: user JWT and nkey seed) or an nkey seed file the
    /// relay requires; empty for a relay without authorization. Read at start-up.
    pub credentials: PathBuf,
    pub auto_reconnect: bool,
    /// Cap on the reconnect backoff, in milliseconds.
    pub reconnect_backoff_max_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            url: String::new(),
            credentials: PathBuf::new(),
            auto_reconnect: true,
            reconnect_backoff_max_ms: 5_000,
        }
    }
}

/// `[http]`: the Mesh Panel and API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port`, or `none` to disable.
    pub bind: String,
    /// Serve read-only endpoints to non-loopback clients without the token (off by default;
    /// with the token, other hosts may always read).
    pub allow_remote_reads: bool,
    /// Largest request body accepted, in bytes.
    pub body_bytes_max: usize,
    /// Most websocket clients at once.
    pub websocket_clients_max: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed: the header is read only when the
    /// TCP peer is one of these, and the client is the rightmost address in it that is not
    /// one of these. Empty by default: anyone can write the header.
    pub trusted_proxies: Vec<IpAddr>,
    /// Extra `Host` names the node answers to (`name` for any port, `name:port` for one),
    /// besides `127.0.0.1`, `localhost`, `[::1]` and the bind address. Anything else is
    /// refused with 421, which is what stops DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1:8080".into(),
            allow_remote_reads: false,
            body_bytes_max: 256 * 1024,
            websocket_clients_max: 256,
            trusted_proxies: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// The address to bind, or `None` when HTTP is disabled.
    pub fn bind_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.bind.eq_ignore_ascii_case("none") || self.bind.is_empty() {
            return Ok(None);
        }
        self.bind.parse().map(Some).map_err(|e| {
            invalid(
                "http.bind",
                format!("{:?} is not host:port or none: {e}", self.bind),
            )
        })
    }
}

/// `[market]`: bidding and assignment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketConfig {
    /// How long an originator collects bids, in milliseconds.
    pub bid_window_ms: u64,
    /// Bids accepted per task; later ones are dropped.
    pub bids_per_task_max: usize,
    /// Bid windows held for a task that got no bid before it fails.
    pub bid_rounds_max: u32,
    /// How often a task moves to the next bidder before it fails.
    pub reassignments_max: u32,
    /// No progress heartbeat for this long and the executor is presumed gone, in seconds.
    pub heartbeat_timeout_s: u64,
    /// Task requests accepted per peer per minute.
    pub requests_per_peer_per_minute: u32,
    /// Slots one requesting peer may hold reserved for this node's bids at a time: beyond it
    /// its requests get no bid, so one key cannot hold every slot with a stream of requests.
    pub reservations_per_peer: u32,
    /// Longest an executor may hold an assignment (and its escrow) when the task names no
    /// timeout, in seconds; with a timeout, the timeout plus `heartbeat_timeout_s`. Past it
    /// the task moves on however many heartbeats arrive.
    pub run_deadline_s: u64,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            bid_window_ms: 300,
            bids_per_task_max: 64,
            bid_rounds_max: 3,
            reassignments_max: 2,
            heartbeat_timeout_s: 30,
            requests_per_peer_per_minute: 120,
            reservations_per_peer: 1,
            run_deadline_s: 3600,
        }
    }
}

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

/// `[accept]`: whose tasks this node runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcceptConfig {
    /// `any`, `none`, or `list` (only the peer ids in `peers`).
    pub policy: AcceptPolicy,
    pub peers: Vec<String>,
}

impl Default for AcceptConfig {
    fn default() -> Self {
        AcceptConfig {
            policy: AcceptPolicy::Any,
            peers: Vec::new(),
        }
    }
}

/// Whose tasks a node accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptPolicy {
    Any,
    None,
    List,
}

impl AcceptConfig {
    /// True when tasks from `peer_id` (text form) may run here.
    pub fn allows(&self, peer_id: &str) -> bool {
        match self.policy {
            AcceptPolicy::Any => true,
            AcceptPolicy::None => false,
            AcceptPolicy::List => self.peers.iter().any(|p| p == peer_id),
        }
    }
}

/// One override: a dotted key (`relay.url`) and its value.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: toml::Value,
}

impl Override {
    /// An override from a flag.
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        Override {
            key: key.to_string(),
            value: value.into(),
        }
    }
}

impl Config {
    /// Read the file (if given and present: a missing *default* file is fine, a missing
    /// *named* file is an error), apply flag overrides, then `APN_*` environment overrides.
    pub fn load(
        path: Option<&Path>,
        path_is_explicit: bool,
        flags: &[Override],
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => (text, path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path_is_explicit => {
                    (String::new(), path)
                }
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            },
            None => (String::new(), Path::new("<none>")),
        };
        Config::from_text_with_overrides(&text, origin, flags, environment)
    }

    /// `load` without the file system: `text` is the file's contents and `origin` names it
    /// in errors. The config fuzz target drives this.
    pub fn from_text_with_overrides(
        text: &str,
        origin: &Path,
        flags: &[Override],
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: origin.to_path_buf(),
                message: e.to_string(),
            })?;
        for flag in flags {
            set_key(&mut root, &flag.key, flag.value.clone())?;
        }
        for (name, value) in environment {
            if let Some((key, value)) = environment_override(&name, &value) {
                set_key(&mut root, &key, value)?;
            }
        }
        Config::from_table(root)
    }

    /// Parse a complete TOML text (tests, the demo).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: PathBuf::from("<inline>"),
                message: e.to_string(),
            })?;
        Config::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                invalid(&key, e.into_inner().to_string())
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Rules that types alone do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.resources.max_concurrent_tasks == 0 {
            return Err(invalid(
                "resources.max_concurrent_tasks",
                "must be at least 1",
            ));
        }
        if self.resources.max_concurrent_tasks > 1024 {
            return Err(invalid(
                "resources.max_concurrent_tasks",
                "must be at most 1024",
            ));
        }
        if self.market.reservations_per_peer == 0 {
            return Err(invalid(
                "market.reservations_per_peer",
                "must be at least 1",
            ));
        }
        if self.node.peers_max == 0 {
            return Err(invalid("node.peers_max", "must be at least 1"));
        }
        if self.node.clock_skew_s == 0 {
            return Err(invalid("node.clock_skew_s", "must be at least 1"));
        }
        if self.node.announce_interval_s == 0 {
            return Err(invalid("node.announce_interval_s", "must be at least 1"));
        }
        for (index, address) in self.node.listen.iter().enumerate() {
            address.parse::<libp2p::Multiaddr>().map_err(|e| {
                invalid(
                    &format!("node.listen[{index}]"),
                    format!("{address:?}: {e}"),
                )
            })?;
        }
        for (index, address) in self.node.bootstrap.iter().enumerate() {
            let parsed = address.parse::<libp2p::Multiaddr>().map_err(|e| {
                invalid(
                    &format!("node.bootstrap[{index}]"),
                    format!("{address:?}: {e}"),
                )
            })?;
            if !parsed
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            {
                return Err(invalid(
                    &format!("node.bootstrap[{index}]"),
                    format!("{address:?} must end in /p2p/<peer id>"),
                ));
            }
        }
        if !self.relay.url.is_empty()
            && !self.relay.url.starts_with("nats://")
            && !self.relay.url.starts_with("tls://")
        {
            return Err(invalid(
                "relay.url",
                format!("{:?} must start with nats:// (or be empty)", self.relay.url),
            ));
        }
        if self.node.relay_only && self.relay.url.is_empty() {
            return Err(invalid(
                "node.relay_only",
                "needs relay.url: a relay-only node without a relay cannot reach anyone",
            ));
        }
        self.http.bind_addr()?;
        if self.http.body_bytes_max == 0 {
            return Err(invalid("http.body_bytes_max", "must be at least 1"));
        }
        for (index, host) in self.http.allowed_hosts.iter().enumerate() {
            if crate::web::parse_host(host).is_none() {
                return Err(invalid(
                    &format!("http.allowed_hosts[{index}]"),
                    format!("{host:?} is not a host name or host:port (IPv6 in brackets)"),
                ));
            }
        }
        for (name, profile) in &self.executor.profiles {
            if profile.program.trim().is_empty() {
                return Err(invalid(
                    &format!("executor.profiles.{name}.program"),
                    "must not be empty",
                ));
            }
        }
        if self.executor.diff_bytes_max == 0 || self.executor.diff_bytes_max > DIFF_BYTES_LIMIT {
            return Err(invalid(
                "executor.diff_bytes_max",
                format!(
                    "must be between 1 and {DIFF_BYTES_LIMIT} (a result travels in one 512 KiB frame)"
                ),
            ));
        }
        if self.market.bid_window_ms == 0 || self.market.bid_window_ms > 60_000 {
            return Err(invalid(
                "market.bid_window_ms",
                "must be between 1 and 60000",
            ));
        }
        if self.market.bid_rounds_max == 0 || self.market.bid_rounds_max > 100 {
            return Err(invalid(
                "market.bid_rounds_max",
                "must be between 1 and 100",
            ));
        }
        if self.market.bids_per_task_max == 0 {
            return Err(invalid("market.bids_per_task_max", "must be at least 1"));
        }
        if self.accept.policy == AcceptPolicy::List {
            for (index, peer) in self.accept.peers.iter().enumerate() {
                peer.parse::<libp2p::PeerId>().map_err(|e| {
                    invalid(
                        &format!("accept.peers[{index}]"),
                        format!("{peer:?} is not a peer id: {e}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The listen multiaddrs to use.
    pub fn listen_addrs(&self) -> Vec<libp2p::Multiaddr> {
        if self.node.listen.is_empty() {
            let default = format!("/ip4/0.0.0.0/tcp/{}", self.node.port);
            default.parse().into_iter().collect()
        } else {
            self.node
                .listen
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        }
    }
}

/// `APN_RELAY_URL=x` → (`relay.url`, x). Variables that name no section (such as `APN_TOKEN`,
/// read by the CLI) are not config and are skipped.
fn environment_override(name: &str, value: &str) -> Option<(String, toml::Value)> {
    let rest = name.strip_prefix("APN_")?.to_ascii_lowercase();
    let (section, key) = SECTIONS.iter().find_map(|section| {
        rest.strip_prefix(section)
            .and_then(|r| r.strip_prefix('_'))
            .map(|key| (*section, key))
    })?;
    if key.is_empty() {
        return None;
    }
    Some((format!("{section}.{key}"), parse_environment_value(value)))
}

/// Environment values are TOML when they parse as TOML (`42`, `true`, `["a", "b"]`), text
/// otherwise; the typed deserialisation then judges them with the key's name.
fn parse_environment_value(value: &str) -> toml::Value {
    let probe = format!("value = {value}");
    match probe.parse::<toml::Table>() {
        Ok(mut table) => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn set_key(root: &mut toml::Table, dotted: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut parts = dotted.split('.').peekable();
    let mut table = root;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| invalid(dotted, format!("`{part}` is not a table")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, flags: &[Override], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apn.toml");
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), true, flags, env)
    }

    #[test]
    fn shipped_config_file_parses_and_matches_defaults_where_it_should() {
        let text = include_str!("../config/apn.toml");
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.resources.max_concurrent_tasks, 2);
        assert!(config.executor.profiles.contains_key("SHELL"));
        assert!(!config.executor.profiles["SHELL"].enabled);
        assert!(!config.http.allow_remote_reads);
        assert!(config.http.trusted_proxies.is_empty() && config.http.allowed_hosts.is_empty());
    }

    #[test]
    fn flags_override_file_and_environment_overrides_both() {
        let config = load(
            "[node]\nport = 1000\n[relay]\nurl = \"nats://a:1\"\n",
            &[
                Override::new("node.port", 2000i64),
                Override::new("relay.url", "nats://b:2"),
            ],
            &[
                ("APN_RELAY_URL", "nats://c:3"),
                ("APN_TOKEN", "ignored"),
                ("APN_NODE_MDNS", "false"),
            ],
        )
        .unwrap();
        assert_eq!(config.node.port, 2000);
        assert_eq!(config.relay.url, "nats://c:3");
        assert!(!config.node.mdns);
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = load("[economics]\nmin_task_reward = \"-1\"\n", &[], &[]).unwrap_err();
        assert!(
            error.to_string().contains("economics.min_task_reward"),
            "{error}"
        );
        let error = load("[node]\nport = \"x\"\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("node.port"), "{error}");
        let error = load("[node]\nprot = 1\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("prot"), "{error}");
        let error = load("", &[], &[("APN_RESOURCES_MAX_CONCURRENT_TASKS", "0")]).unwrap_err();
        assert!(
            error.to_string().contains("resources.max_concurrent_tasks"),
            "{error}"
        );
        let error = load("[http]\nbind = \"nowhere\"\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("http.bind"), "{error}");
        let error = load(
            "[http]\nallowed_hosts = [\"ok.lan\", \"http://x/\"]\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("http.allowed_hosts[1]"),
            "{error}"
        );
        let error = load("[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n", &[], &[]).unwrap_err();
        assert!(
            error.to_string().contains("http.trusted_proxies"),
            "{error}"
        );
        let error = load("[http]\ntrust_forwarded_for = true\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("trust_forwarded_for"), "{error}");
        let error = load("[node]\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("node.bootstrap[0]"), "{error}");
    }

    #[test]
    fn a_missing_named_file_is_an_error_but_a_missing_default_is_not() {
        let missing = Path::new("/nonexistent/apn.toml");
        assert!(Config::load(Some(missing), true, &[], Vec::new()).is_err());
        assert!(Config::load(Some(missing), false, &[], Vec::new()).is_ok());
    }
}
