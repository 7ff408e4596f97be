//! Typed node configuration.
//!
//! Sources, later wins: the TOML file (`config/apn.toml` documents every key), then command
//! line flags, then `APN_<SECTION>_<KEY>` environment variables (for example
//! `APN_RELAY_URL=nats://10.0.0.2:4222`, `APN_NODE_MDNS=false`). All three are merged as TOML
//! values and deserialised once, so an error always names the key (`economics.min_task_reward:
//! amount must not be negative`). Unknown keys are errors too: a typo must not be ignored.
//!
//! Here: the whole `Config`, its error and the section list. The sections' types and
//! defaults are in `sections` and `executor`, reading and overriding in `load`, the rules
//! that types do not express in `validate`.

mod executor;
mod load;
mod sections;
mod settlement;
mod validate;

pub use executor::{
    AgentOutputFormat, ExecutorConfig, ProfileConfig, RESULT_BYTES_MAX_DEFAULT,
    RESULT_BYTES_MAX_LIMIT, RESULT_BYTES_MAX_MIN, RESULT_ROOM_BYTES, WATCH_INTERVAL_MS_MAX,
    WATCH_INTERVAL_MS_MIN,
};
pub use load::Override;
pub use sections::{
    AcceptConfig, AcceptPolicy, BYTES_PER_GB, EconomicsConfig, HttpConfig, MarketConfig,
    NodeConfig, ROLES, RelayConfig, ResourcesConfig, STORAGE_GB_MAX,
};
pub use settlement::{SettlementConfig, SettlementMode};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::sandbox::SandboxMode;

/// Sections of the config file, in the order the file documents them.
pub const SECTIONS: [&str; 9] = [
    "node",
    "resources",
    "economics",
    "relay",
    "http",
    "market",
    "executor",
    "accept",
    "settlement",
];

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read (missing, no permission).
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file's path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML at all; no key could be judged.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The config file's path.
        path: PathBuf,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// A key is unknown, has the wrong type, or a value fails validation.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `economics.min_task_reward`.
        key: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
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
    /// `[node]`: data dir, ports, listen addresses, bootstrap peers, discovery.
    pub node: NodeConfig,
    /// `[resources]`: run slots, bandwidth, memory and process limits offered.
    pub resources: ResourcesConfig,
    /// `[economics]`: prices, minimum reward, starting balance, bandwidth settlement.
    pub economics: EconomicsConfig,
    /// `[relay]`: the NATS relay URL, credentials and reconnect policy.
    pub relay: RelayConfig,
    /// `[http]`: the panel and API's bind address, allowed hosts and limits.
    pub http: HttpConfig,
    /// `[market]`: bid windows, deadlines and reassignment.
    pub market: MarketConfig,
    /// `[executor]`: agent profiles, sandbox mode, workspaces and run limits.
    pub executor: ExecutorConfig,
    /// `[accept]`: which peers' tasks this node bids for.
    pub accept: AcceptConfig,
    /// `[settlement]`: local ledger or the network ledger on JetStream.
    pub settlement: SettlementConfig,
}

impl Config {
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
