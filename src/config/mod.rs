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
mod validate;

pub use executor::{DIFF_BYTES_LIMIT, ExecutorConfig, ProfileConfig};
pub use load::Override;
pub use sections::{
    AcceptConfig, AcceptPolicy, EconomicsConfig, HttpConfig, MarketConfig, NodeConfig, RelayConfig,
    ResourcesConfig,
};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
