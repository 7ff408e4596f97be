//! The NATS relay client, for peers with no direct path.
//!
//! Subjects: `apn.v1.broadcast.<topic>` for broadcasts and `apn.v1.node.<peer id>` for
//! messages to one node. The relay is untrusted: it carries the same signed envelopes as
//! libp2p, and the peer manager verifies every frame.
//!
//! Start-up never waits for the relay: the client connects in the background and retries
//! with a capped backoff; subscriptions survive reconnects (async-nats re-subscribes). The
//! state (connecting / connected) is reported as `MeshEvent::Relay`. While disconnected,
//! publishes fail fast instead of piling up in the client's buffer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use libp2p::PeerId;

use super::events::{EventReceiver, EventRefused, EventSender, mesh_event_queue};
use super::{FrameVia, MeshError, MeshEvent};
use crate::messages::Topic;
use crate::protocol::mesh::RelayState;

/// Subject prefix for broadcasts.
const BROADCAST_PREFIX: &str = "apn.v1.broadcast.";
/// Subject prefix for messages to one node.
const NODE_PREFIX: &str = "apn.v1.node.";
/// A publish that the client has not accepted within this time fails.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages buffered per subscription inside the client.
const SUBSCRIPTION_CAPACITY: usize = 4096;
/// First reconnect delay; doubles per attempt up to the configured cap.
const RECONNECT_DELAY_INITIAL: Duration = Duration::from_millis(100);

/// Settings for the relay client.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The NATS server's URL (`nats://…`).
    pub url: String,
    /// Reconnect without limit; when false, async-nats makes one reconnect attempt only.
    pub auto_reconnect: bool,
    /// Cap on the reconnect delay, which doubles per attempt from 100 ms.
    pub reconnect_backoff_max: Duration,
    /// What the relay requires to let this node in, if anything.
    pub credentials: Option<RelayCredentials>,
}

/// How this node authenticates to a relay that requires it.
#[derive(Clone)]
pub enum RelayCredentials {
    /// The text of a NATS `.creds` file: a user JWT and its nkey seed.
    CredsFile(String),
    /// An nkey user seed (`SU…`).
    NkeySeed(String),
}

impl std::fmt::Debug for RelayCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(match self {
            RelayCredentials::CredsFile(_) => "RelayCredentials::CredsFile(…)",
            RelayCredentials::NkeySeed(_) => "RelayCredentials::NkeySeed(…)",
        })
    }
}

/// The credentials in a file's text: a `.creds` file (it holds a user JWT block) or a file
/// whose first non-empty, non-comment line is an nkey user seed.
pub fn parse_credentials(text: &str) -> Result<RelayCredentials, String> {
    if text.contains("-----BEGIN NATS USER JWT-----") {
        if !text.contains("-----BEGIN USER NKEY SEED-----") {
            return Err("a .creds file without its USER NKEY SEED block".into());
        }
        return Ok(RelayCredentials::CredsFile(text.to_string()));
    }
    let seed = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with("//"))
        .ok_or("the file is empty")?;
    if seed.starts_with("SU") && seed.len() == 58 && seed.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        Ok(RelayCredentials::NkeySeed(seed.to_string()))
    } else {
        Err("neither a NATS .creds file nor an nkey user seed (SU…, 58 characters)".into())
    }
}

/// The peer manager's handle on the relay. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RelayClient {
    client: Arc<OnceLock<async_nats::Client>>,
}

/// The subject a node receives direct messages on.
pub fn node_subject(peer: &PeerId) -> String {
    format!("{NODE_PREFIX}{peer}")
}

/// The subject of a broadcast topic.
pub fn broadcast_subject(topic: Topic) -> String {
    format!("{BROADCAST_PREFIX}{}", topic.name())
}

/// Reconnect delay after `attempts` failures: exponential, capped.
pub fn reconnect_delay(attempts: usize, cap: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16) as u32;
    RECONNECT_DELAY_INITIAL
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(cap)
}

impl RelayClient {
    fn connected_client(&self) -> Result<&async_nats::Client, MeshError> {
        let client = self
            .client
            .get()
            .ok_or_else(|| MeshError::Relay("not connected yet".into()))?;
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(MeshError::Relay("not connected".into()));
        }
        Ok(client)
    }

    async fn publish(&self, subject: String, frame: Vec<u8>) -> Result<(), MeshError> {
        let client = self.connected_client()?;
        tokio::time::timeout(PUBLISH_TIMEOUT, client.publish(subject, frame.into()))
            .await
            .map_err(|_| MeshError::Timeout(PUBLISH_TIMEOUT))?
            .map_err(|e| MeshError::Relay(e.to_string()))
    }

    /// Publish a frame to every node on the relay.
    pub async fn broadcast(&self, topic: Topic, frame: Vec<u8>) -> Result<(), MeshError> {
        self.publish(broadcast_subject(topic), frame).await
    }

    /// Publish a frame to one node's subject.
    pub async fn send_to(&self, peer: &PeerId, frame: Vec<u8>) -> Result<(), MeshError> {
        self.publish(node_subject(peer), frame).await
    }

    /// True when a publish can go out now.
    pub fn is_connected(&self) -> bool {
        self.connected_client().is_ok()
    }

    /// Flush and close the connection, waiting at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Some(client) = self.client.get() {
            let _ = tokio::time::timeout(timeout, client.drain()).await;
        }
    }
}

/// Start the relay client in the background. Returns at once; the state arrives as events.
pub fn spawn_relay(settings: RelaySettings, own_peer: PeerId) -> (RelayClient, EventReceiver) {
    let (events, event_receiver) = mesh_event_queue();
    let client_cell = Arc::new(OnceLock::new());
    let relay = RelayClient {
        client: client_cell.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = run_relay(settings, own_peer, client_cell, events.clone()).await {
            tracing::warn!(error = %e, "relay client stopped");
            let _ = events.send(MeshEvent::Relay(RelayState::Disabled)).await;
        }
    });
    (relay, event_receiver)
}

async fn run_relay(
    settings: RelaySettings,
    own_peer: PeerId,
    client_cell: Arc<OnceLock<async_nats::Client>>,
    events: EventSender,
) -> Result<(), MeshError> {
    let _ = events.send(MeshEvent::Relay(RelayState::Connecting)).await;
    let state_events = events.clone();
    let cap = settings.reconnect_backoff_max;
    let options = async_nats::ConnectOptions::new()
        .name(format!("apn-{own_peer}"))
        .retry_on_initial_connect()
        .max_reconnects(if settings.auto_reconnect {
            None
        } else {
            Some(1)
        })
        .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, cap))
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let events = state_events.clone();
            async move {
                let state = match event {
                    async_nats::Event::Connected => Some(RelayState::Connected),
                    async_nats::Event::Disconnected => Some(RelayState::Connecting),
                    async_nats::Event::Closed => Some(RelayState::Disabled),
                    other => {
                        tracing::debug!(event = %other, "relay event");
                        None
                    }
                };
                if let Some(state) = state {
                    tracing::info!(?state, "relay state");
                    let _ = events.send(MeshEvent::Relay(state)).await;
                }
            }
        });
    let options = match &settings.credentials {
        None => options,
        Some(RelayCredentials::NkeySeed(seed)) => options.nkey(seed.clone()),
        Some(RelayCredentials::CredsFile(text)) => options
            .credentials(text)
            .map_err(|e| MeshError::Relay(format!("relay credentials: {e}")))?,
    };
    let client = options
        .connect(settings.url.as_str())
        .await
        .map_err(|e| MeshError::Relay(format!("{}: {e}", settings.url)))?;
    let broadcasts = client
        .subscribe(format!("{BROADCAST_PREFIX}*"))
        .await
        .map_err(|e| MeshError::Relay(e.to_string()))?;
    let direct = client
        .subscribe(node_subject(&own_peer))
        .await
        .map_err(|e| MeshError::Relay(e.to_string()))?;
    // The client may have connected before the callback could report it.
    if client.connection_state() == async_nats::connection::State::Connected {
        let _ = events.send(MeshEvent::Relay(RelayState::Connected)).await;
    }
    let _ = client_cell.set(client);
    let mut inbound = futures::stream::select(broadcasts, direct);
    while let Some(message) = inbound.next().await {
        let via = match message.subject.strip_prefix(BROADCAST_PREFIX) {
            Some(name) => match Topic::from_name(name) {
                Some(topic) => FrameVia::RelayBroadcast(topic),
                None => continue,
            },
            None => FrameVia::RelayDirect,
        };
        let event = MeshEvent::Frame {
            frame: message.payload.to_vec(),
            via,
            transport_peer: None,
            gossip: None,
        };
        match events.try_send(event) {
            Ok(()) => {}
            Err(EventRefused::Closed) => break,
            Err(full) => tracing::warn!(error = %full, "relay frame dropped"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_are_recognised_and_never_printed() {
        let seed = format!("SU{}", "A".repeat(56));
        let parsed = parse_credentials(&format!("# relay user\n\n{seed}\n")).unwrap();
        assert!(matches!(&parsed, RelayCredentials::NkeySeed(s) if *s == seed));
        assert!(!format!("{parsed:?}").contains(&seed));
        let creds = "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\
                     -----BEGIN USER NKEY SEED-----\nSUAB\n------END USER NKEY SEED------\n";
        assert!(matches!(
            parse_credentials(creds),
            Ok(RelayCredentials::CredsFile(_))
        ));
        assert!(parse_credentials("-----BEGIN NATS USER JWT-----\nx").is_err());
        assert!(parse_credentials("").is_err());
        assert!(parse_credentials("password123").is_err());
        assert!(parse_credentials(&format!("SO{}", "A".repeat(56))).is_err());
    }

    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        let cap = Duration::from_secs(5);
        assert_eq!(reconnect_delay(1, cap), Duration::from_millis(100));
        assert_eq!(reconnect_delay(2, cap), Duration::from_millis(200));
        assert_eq!(reconnect_delay(4, cap), Duration::from_millis(800));
        assert_eq!(reconnect_delay(50, cap), cap);
    }

    #[test]
    fn subjects_follow_the_design() {
        assert_eq!(broadcast_subject(Topic::Tasks), "apn.v1.broadcast.tasks");
        let peer = PeerId::random();
        assert_eq!(node_subject(&peer), format!("apn.v1.node.{peer}"));
    }
}
