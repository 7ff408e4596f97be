//! `Config::validate`: the rules that the types alone do not express (ranges, multiaddrs,
//! relay URLs, host names, peer ids), each error naming its key.

use super::{
    AcceptPolicy, Config, ConfigError, RESULT_BYTES_MAX_LIMIT, RESULT_BYTES_MAX_MIN,
    WATCH_INTERVAL_MS_MAX, WATCH_INTERVAL_MS_MIN, invalid,
};

/// Longest `market.offer_ttl_ms`: an announcement older than ten minutes says nothing
/// about an executor's free slots.
pub(super) const OFFER_TTL_MAX_MS: u64 = 600_000;

/// Why `name` cannot be an environment variable's name, if it cannot.
fn variable_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an environment variable name must not be empty".into());
    }
    if name.contains('=') || name.contains('\0') {
        return Some(format!(
            "{name:?} is not an environment variable name (no `=` or NUL)"
        ));
    }
    None
}

impl Config {
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
        if self.resources.storage_gb > super::STORAGE_GB_MAX {
            return Err(invalid(
                "resources.storage_gb",
                format!(
                    "must be at most {} (a petabyte); 0 means no cap",
                    super::STORAGE_GB_MAX
                ),
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
            for (index, variable) in profile.pass_env.iter().enumerate() {
                if let Some(problem) = variable_name_problem(variable) {
                    return Err(invalid(
                        &format!("executor.profiles.{name}.pass_env[{index}]"),
                        problem,
                    ));
                }
            }
            for (variable, value) in &profile.env {
                if let Some(problem) = variable_name_problem(variable) {
                    return Err(invalid(
                        &format!("executor.profiles.{name}.env.{variable}"),
                        problem,
                    ));
                }
                if value.contains('\0') {
                    return Err(invalid(
                        &format!("executor.profiles.{name}.env.{variable}"),
                        "the value must not contain a NUL byte",
                    ));
                }
            }
        }
        for (index, variable) in self.executor.pass_env.iter().enumerate() {
            if let Some(problem) = variable_name_problem(variable) {
                return Err(invalid(&format!("executor.pass_env[{index}]"), problem));
            }
        }
        if !(RESULT_BYTES_MAX_MIN..=RESULT_BYTES_MAX_LIMIT)
            .contains(&self.executor.result_bytes_max)
        {
            return Err(invalid(
                "executor.result_bytes_max",
                format!("must be between {RESULT_BYTES_MAX_MIN} and {RESULT_BYTES_MAX_LIMIT}"),
            ));
        }
        if self.executor.diff_bytes_max == 0 {
            return Err(invalid(
                "executor.diff_bytes_max",
                "must be at least 1 (it is capped by executor.result_bytes_max)",
            ));
        }
        let watch = self.executor.watch_interval_ms;
        if watch != 0 && !(WATCH_INTERVAL_MS_MIN..=WATCH_INTERVAL_MS_MAX).contains(&watch) {
            return Err(invalid(
                "executor.watch_interval_ms",
                format!(
                    "must be 0 (off) or between {WATCH_INTERVAL_MS_MIN} and {WATCH_INTERVAL_MS_MAX}"
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
        if self.market.bids_enough == 0 || self.market.bids_enough > self.market.bids_per_task_max {
            return Err(invalid(
                "market.bids_enough",
                "must be between 1 and market.bids_per_task_max",
            ));
        }
        if self.market.offer_ttl_ms > OFFER_TTL_MAX_MS {
            return Err(invalid(
                "market.offer_ttl_ms",
                format!("must be at most {OFFER_TTL_MAX_MS} (0 turns offers off)"),
            ));
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
        self.settlement.validate(&self.relay.url)?;
        Ok(())
    }
}
