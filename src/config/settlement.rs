//! `[settlement]`: where VIBE lives. `local` keeps each node's own SQLite ledger (a LAN mesh
//! of peers that trust each other); `jetstream` puts every payment and escrow on the network
//! ledger, a replicated NATS JetStream stream only the treasury mints on.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::identity::PUBLIC_KEY_BYTES;

/// How payments are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettlementMode {
    /// Each node's own ledger; every node grants itself `economics.initial_balance`.
    /// Trust-your-peers: a peer's payment is its word.
    #[default]
    Local,
    /// The network ledger on JetStream: only the treasury mints, escrow is on the stream.
    Jetstream,
}

impl SettlementMode {
    /// The mode as shown in `/api/status` and the panel.
    pub fn label(self) -> &'static str {
        match self {
            SettlementMode::Local => "local (trust your peers)",
            SettlementMode::Jetstream => "jetstream",
        }
    }
}

/// `[settlement]`: the settlement mode and, for `jetstream`, the stream and the treasury.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// `local` or `jetstream`.
    pub mode: SettlementMode,
    /// The NATS server (or one of the cluster's) holding the ledger stream; empty: `relay.url`.
    pub url: String,
    /// The ledger stream's name.
    pub stream: String,
    /// Copies of the stream: 1 for one server, 3 in a cluster.
    pub replicas: usize,
    /// Hex Ed25519 public keys whose mints count (`apn treasury init` prints one).
    pub treasury: Vec<String>,
    /// Seconds an escrow outlives the task's deadline, so a late commit can still be claimed.
    pub hold_grace_s: u64,
    /// How long an executor waits for the originator's hold to reach its projection.
    pub hold_wait_ms: u64,
    /// Log in to the ledger's server as the nkey user that is this node's own key, so a
    /// server with per-account permissions (`apn treasury nats-authorization`) lets it
    /// publish on its own account subject only.
    pub identity_nkey: bool,
    /// Ask the treasury's faucet (`apn treasury faucet`) for this identity's one grant at
    /// start. Off by default: most networks fund nodes by hand.
    pub faucet: bool,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            mode: SettlementMode::Local,
            url: String::new(),
            stream: "APN_LEDGER".into(),
            replicas: 1,
            treasury: Vec::new(),
            hold_grace_s: 300,
            hold_wait_ms: 5_000,
            identity_nkey: false,
            faucet: false,
        }
    }
}

impl SettlementConfig {
    /// The treasury keys, parsed.
    pub fn treasury_keys(&self) -> Result<Vec<[u8; PUBLIC_KEY_BYTES]>, ConfigError> {
        self.treasury
            .iter()
            .enumerate()
            .map(|(index, key)| {
                hex::decode(key)
                    .ok()
                    .and_then(|bytes| <[u8; PUBLIC_KEY_BYTES]>::try_from(bytes).ok())
                    .ok_or_else(|| {
                        invalid(
                            &format!("settlement.treasury[{index}]"),
                            format!("{key:?} is not a 64-digit hex Ed25519 public key"),
                        )
                    })
            })
            .collect()
    }

    /// The NATS URL of the ledger: `url`, else the relay's.
    pub fn url_or<'a>(&'a self, relay_url: &'a str) -> &'a str {
        if self.url.is_empty() {
            relay_url
        } else {
            &self.url
        }
    }

    /// The rules the types do not express; `relay_url` is the fallback server.
    pub fn validate(&self, relay_url: &str) -> Result<(), ConfigError> {
        if self.mode == SettlementMode::Local {
            return Ok(());
        }
        let url = self.url_or(relay_url);
        if url.is_empty() {
            return Err(invalid(
                "settlement.url",
                "jetstream settlement needs a NATS server: set settlement.url or relay.url",
            ));
        }
        if !url.starts_with("nats://") && !url.starts_with("tls://") {
            return Err(invalid(
                "settlement.url",
                format!("{url:?} must start with nats://"),
            ));
        }
        if self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        {
            return Err(invalid(
                "settlement.stream",
                format!(
                    "{:?} must be non-empty, without spaces, dots, * or >",
                    self.stream
                ),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(invalid("settlement.replicas", "must be between 1 and 5"));
        }
        if self.treasury.is_empty() {
            return Err(invalid(
                "settlement.treasury",
                "jetstream settlement needs at least one treasury key (apn treasury init)",
            ));
        }
        self.treasury_keys()?;
        if self.hold_wait_ms == 0 {
            return Err(invalid("settlement.hold_wait_ms", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jetstream() -> SettlementConfig {
        SettlementConfig {
            mode: SettlementMode::Jetstream,
            url: "nats://127.0.0.1:4222".into(),
            treasury: vec!["ab".repeat(32)],
            ..SettlementConfig::default()
        }
    }

    #[test]
    fn local_needs_nothing_and_jetstream_needs_a_server_and_a_treasury() {
        assert!(SettlementConfig::default().validate("").is_ok());
        assert!(jetstream().validate("").is_ok());
        let no_server = SettlementConfig {
            url: String::new(),
            ..jetstream()
        };
        assert!(no_server.validate("nats://relay:4222").is_ok());
        let error = no_server.validate("").unwrap_err().to_string();
        assert!(error.contains("settlement.url"), "{error}");
        let no_treasury = SettlementConfig {
            treasury: vec![],
            ..jetstream()
        };
        let error = no_treasury.validate("").unwrap_err().to_string();
        assert!(error.contains("settlement.treasury"), "{error}");
    }

    #[test]
    fn a_bad_treasury_key_or_stream_name_is_named() {
        let bad_key = SettlementConfig {
            treasury: vec!["ab".repeat(32), "not-hex".into()],
            ..jetstream()
        };
        let error = bad_key.validate("").unwrap_err().to_string();
        assert!(error.contains("settlement.treasury[1]"), "{error}");
        let bad_stream = SettlementConfig {
            stream: "a.b".into(),
            ..jetstream()
        };
        let error = bad_stream.validate("").unwrap_err().to_string();
        assert!(error.contains("settlement.stream"), "{error}");
    }
}
