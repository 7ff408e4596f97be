//! The plain sections of the config file (`[node]`, `[resources]`, `[economics]`, `[relay]`,
//! `[http]`, `[market]`, `[accept]`): their fields, documented, and their defaults. The
//! executor section and its profiles live in `executor.rs`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::messages::Vibe;

/// `[node]`: identity, transport and discovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// TCP port for libp2p when `listen` is empty (0 picks a free one).
    pub port: u16,
    /// The roles this node plays for the mesh: `compute` (runs peers' agent tasks), `relay`
    /// (forwards traffic), `storage` (keeps workspaces, bundles and caches; see
    /// `resources.storage_gb`). Announced to the mesh (a task can require one); a node that
    /// names its roles without `compute` does not bid for peers' tasks. Older files listed language tags here: a value that is not a
    /// role is taken as a language tag when the file loads (see [`NodeConfig::languages`]).
    pub capabilities: Vec<String>,
    /// Language (and tool) tags this node's agents work in, e.g. `rust`, `python`. Announced to
    /// the mesh with the roles; a task requiring a tag is bid for only by nodes that have it.
    pub languages: Vec<String>,
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
            capabilities: vec!["compute".into()],
            languages: vec!["rust".into(), "python".into(), "typescript".into()],
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

/// The roles `node.capabilities` may name; any other value there is a language tag.
pub const ROLES: [&str; 3] = ["compute", "relay", "storage"];

/// Longest capability or language tag, in bytes.
const TAG_BYTES_MAX: usize = 64;

/// Why `tag` cannot be a capability or language tag, if it cannot.
fn tag_problem(tag: &str) -> Option<String> {
    if tag.is_empty() {
        return Some("a tag must not be empty".into());
    }
    if tag.len() > TAG_BYTES_MAX {
        return Some(format!("{tag:?} is longer than {TAG_BYTES_MAX} bytes"));
    }
    if tag
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Some(format!(
            "{tag:?} must not contain whitespace, control characters or commas"
        ));
    }
    None
}

impl NodeConfig {
    /// Sorts `capabilities` into roles and language tags: a value of `capabilities` that is
    /// not one of [`ROLES`] moves to `languages` (how files written before `languages`
    /// existed keep working), duplicates are dropped, order is kept. When the file did not
    /// set `languages` (`languages_set` false) and `capabilities` held language tags, those
    /// tags replace the default languages, so such a file announces exactly what it did
    /// before. Every tag is checked first, the error naming its key as written.
    pub fn split_capabilities(&mut self, languages_set: bool) -> Result<(), ConfigError> {
        for (index, tag) in self.capabilities.iter().enumerate() {
            if let Some(problem) = tag_problem(tag) {
                return Err(invalid(&format!("node.capabilities[{index}]"), problem));
            }
        }
        for (index, tag) in self.languages.iter().enumerate() {
            if let Some(problem) = tag_problem(tag) {
                return Err(invalid(&format!("node.languages[{index}]"), problem));
            }
        }
        let legacy_tags = self
            .capabilities
            .iter()
            .any(|tag| !ROLES.contains(&tag.as_str()));
        if legacy_tags && !languages_set {
            self.languages.clear();
        }
        let mut roles: Vec<String> = Vec::new();
        let mut languages: Vec<String> = Vec::new();
        for tag in self.languages.drain(..) {
            if !languages.contains(&tag) {
                languages.push(tag);
            }
        }
        for tag in self.capabilities.drain(..) {
            if ROLES.contains(&tag.as_str()) {
                if !roles.contains(&tag) {
                    roles.push(tag);
                }
            } else {
                tracing::debug!(
                    tag = %tag,
                    "node.capabilities: not a role (compute, relay, storage); taken as a language tag"
                );
                if !languages.contains(&tag) {
                    languages.push(tag);
                }
            }
        }
        self.capabilities = roles;
        self.languages = languages;
        Ok(())
    }

    /// Whether this node runs peers' tasks (bids for them): it takes the `compute` role, or
    /// names no role at all (a config built in code with language tags alone, as before
    /// roles existed). A node that names its roles and leaves out `compute` never bids.
    pub fn runs_peer_tasks(&self) -> bool {
        let mut roles = self
            .capabilities
            .iter()
            .filter(|tag| ROLES.contains(&tag.as_str()))
            .peekable();
        roles.peek().is_none() || self.capabilities.iter().any(|tag| tag == "compute")
    }

    /// The tags announced to the mesh and matched against a task's required capabilities:
    /// the roles, then the language tags (one list on the wire, as before the split).
    pub fn announced_capabilities(&self) -> Vec<String> {
        let mut tags = self.capabilities.clone();
        for tag in &self.languages {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        tags
    }
}

/// Bytes in a gigabyte as `resources.storage_gb` counts them (decimal, as bandwidth is).
pub const BYTES_PER_GB: u64 = 1_000_000_000;

/// Largest `resources.storage_gb` accepted (a petabyte), so the cap in bytes cannot overflow.
pub const STORAGE_GB_MAX: u64 = 1_000_000;

/// `[resources]`: what this node gives the mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesConfig {
    /// Agent runs at once (local and peers'); a node with no free slot does not bid.
    pub max_concurrent_tasks: u32,
    /// Bandwidth this node offers for relaying, in megabits per second.
    pub max_bandwidth_mbps: u32,
    /// Memory an agent run may use, in megabytes (the sandbox's data-segment limit per
    /// process).
    pub max_memory_mb: u64,
    /// Processes a sandboxed run may have at once.
    pub max_processes: u32,
    /// CPU cores the operator means to offer; informational, nothing enforces it yet.
    pub cpu_cores: u32,
    /// Disk, in gigabytes (10^9 bytes), that workspaces, repository bundles and caches in the
    /// data dir may take; a peer's task whose bundle would take them past it is refused at
    /// admission. 0 (the default): no cap.
    pub storage_gb: u64,
}

impl ResourcesConfig {
    /// The storage cap in bytes, or `None` when `storage_gb` is 0 (no cap).
    pub fn storage_cap_bytes(&self) -> Option<u64> {
        match self.storage_gb {
            0 => None,
            gb => Some(gb.saturating_mul(BYTES_PER_GB)),
        }
    }
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        ResourcesConfig {
            max_concurrent_tasks: 2,
            max_bandwidth_mbps: 100,
            max_memory_mb: 4096,
            max_processes: 512,
            cpu_cores: 2,
            storage_gb: 0,
        }
    }
}

/// `[economics]`: prices and the starting balance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EconomicsConfig {
    /// This node's price for compute, in VIBE per CPU hour; bids are priced from it.
    pub compute_rate_per_cpu_hour: Vibe,
    /// This node's price for relayed bandwidth, in VIBE per gigabyte.
    pub bandwidth_rate_per_gb: Vibe,
    /// Floor of this node's bid prices, and the lowest bid it accepts as originator.
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
    /// Reconnect after the relay drops, with backoff; false gives up after one attempt.
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
    /// Good bids from this many distinct executors close a bid window early (so does an
    /// answer, a bid or a refusal, from every eligible executor: announced, with the profile
    /// and a free slot); the window never runs past `bid_window_ms`.
    pub bids_enough: usize,
    /// How long an executor's announcement counts as a live offer, in milliseconds: an
    /// originator holding one that matches a task asks that executor alone first, with no
    /// bid window to wait out (`market::offers`); 0 turns the fast path off.
    pub offer_ttl_ms: u64,
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
            bids_enough: 3,
            offer_ttl_ms: 60_000,
            bid_rounds_max: 3,
            reassignments_max: 2,
            heartbeat_timeout_s: 30,
            requests_per_peer_per_minute: 120,
            reservations_per_peer: 1,
            run_deadline_s: 3600,
        }
    }
}

/// `[accept]`: whose tasks this node runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcceptConfig {
    /// `any`, `none`, or `list` (only the peer ids in `peers`).
    pub policy: AcceptPolicy,
    /// libp2p peer ids (text form) allowed when `policy` is `list`; ignored otherwise.
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
    /// Bid for every peer's task (still only with a free slot and a matching profile).
    Any,
    /// Run no peer's task: this node only originates.
    None,
    /// Only peers listed in `accept.peers`.
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
