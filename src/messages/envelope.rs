//! The signed envelope around every message, and the checks every inbound frame passes
//! before any actor sees it.
//!
//! The signature covers a domain tag, the version, `msg_id`, `sent_at_ms` and the exact
//! encoded body bytes. The design asks for "the body bytes"; the header fields are signed
//! too because otherwise a relay could rewrite `msg_id` or `sent_at_ms` and defeat the
//! replay and clock-skew checks.
//!
//! Checks, cheapest first: size, decode, version, key, signature, clock skew, replay,
//! body decode. A frame failing any is dropped with a [`DropReason`].

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use uuid::Uuid;

use super::codec::{self, CodecError, FRAME_BYTES_MAX};
use super::{APNMessage, PROTOCOL_VERSION};
use crate::identity::{self, Identity, NodeId, PUBLIC_KEY_BYTES};

const SIGNING_CONTEXT: &[u8] = b"apn-envelope-v1";
/// Default tolerated difference between a sender's clock and ours.
pub const CLOCK_SKEW_MS_MAX: i64 = 120_000;
/// Most message ids remembered for replay detection. Entries expire after twice the skew
/// window (older envelopes fail the skew check anyway); when full, the oldest is forgotten.
pub const REPLAY_CACHE_ENTRIES_MAX: usize = 200_000;

/// A signed message as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub msg_id: Uuid,
    /// The sender's Ed25519 public key (its PeerId is derived from it).
    pub from: ByteBuf,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
    /// The encoded [`APNMessage`].
    pub body: ByteBuf,
    pub signature: ByteBuf,
}

/// Why an inbound frame was dropped. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    Oversized,
    Malformed,
    UnknownVersion,
    BadSignature,
    ClockSkew,
    Replayed,
    /// Decrypting an end-to-end sealed payload failed.
    DecryptFailed,
    /// The sender is not allowed to send this (wrong peer for the task, policy, rate limit).
    Unauthorized,
    /// A per-peer or global limit was hit.
    RateLimited,
    /// A `TaskAssigned` for which this node holds no live bid of its own (no bid, another
    /// originator, another price, or the reservation ran out).
    UnsolicitedAssignment,
    /// A peer's task named a repository on this node's disk (`RepoDelivery::LocalPath`).
    LocalPathFromPeer,
    /// A repository bundle over the size limit or whose chunk count is not the one its size
    /// implies.
    BadChunkCount,
    /// A payment from a peer with no task or bandwidth relationship with this node.
    UnsolicitedPayment,
    /// A payment that would overflow a balance.
    PaymentOverflow,
    /// A bid at zero or below the originator's `economics.min_task_reward`.
    BidBelowMinimum,
    /// A request for a bid past the per-peer slot reservation limit.
    ReservationLimit,
}

impl DropReason {
    /// Every reason, for exporting zero counters too.
    pub const ALL: [DropReason; 16] = [
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::UnknownVersion,
        DropReason::BadSignature,
        DropReason::ClockSkew,
        DropReason::Replayed,
        DropReason::DecryptFailed,
        DropReason::Unauthorized,
        DropReason::RateLimited,
        DropReason::UnsolicitedAssignment,
        DropReason::LocalPathFromPeer,
        DropReason::BadChunkCount,
        DropReason::UnsolicitedPayment,
        DropReason::PaymentOverflow,
        DropReason::BidBelowMinimum,
        DropReason::ReservationLimit,
    ];

    /// The reason's label in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::BadSignature => "bad_signature",
            DropReason::ClockSkew => "clock_skew",
            DropReason::Replayed => "replayed",
            DropReason::DecryptFailed => "decrypt_failed",
            DropReason::Unauthorized => "unauthorized",
            DropReason::RateLimited => "rate_limited",
            DropReason::UnsolicitedAssignment => "unsolicited_assignment",
            DropReason::LocalPathFromPeer => "local_path_from_peer",
            DropReason::BadChunkCount => "bad_chunk_count",
            DropReason::UnsolicitedPayment => "unsolicited_payment",
            DropReason::PaymentOverflow => "payment_overflow",
            DropReason::BidBelowMinimum => "bid_below_minimum",
            DropReason::ReservationLimit => "reservation_limit",
        }
    }
}

/// Limits an inbound frame is checked against.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeLimits {
    pub frame_bytes_max: usize,
    pub clock_skew_ms_max: i64,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        EnvelopeLimits {
            frame_bytes_max: FRAME_BYTES_MAX,
            clock_skew_ms_max: CLOCK_SKEW_MS_MAX,
        }
    }
}

/// An envelope that passed every check, with its decoded message.
#[derive(Debug, Clone)]
pub struct VerifiedEnvelope {
    pub msg_id: Uuid,
    pub from_key: [u8; PUBLIC_KEY_BYTES],
    pub from_peer: PeerId,
    pub from_node: NodeId,
    pub sent_at_ms: i64,
    pub message: APNMessage,
    /// Size of the frame on the wire, for bandwidth accounting.
    pub frame_bytes: usize,
}

fn signing_input(version: u16, msg_id: &Uuid, sent_at_ms: i64, body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + 2 + 16 + 8 + body.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(&version.to_be_bytes());
    input.extend_from_slice(msg_id.as_bytes());
    input.extend_from_slice(&sent_at_ms.to_be_bytes());
    input.extend_from_slice(body);
    input
}

impl Envelope {
    /// Sign `message` as `identity` and return the envelope.
    pub fn sign(
        identity: &Identity,
        message: &APNMessage,
        sent_at_ms: i64,
    ) -> Result<Envelope, CodecError> {
        let body = codec::encode_message(message)?;
        Ok(Envelope::sign_body(identity, body, sent_at_ms))
    }

    /// Sign body bytes as they are, whether or not they decode to a message. A hostile peer
    /// can sign garbage too; tests and the fuzz target use this to reach the checks after
    /// the signature.
    pub fn sign_body(identity: &Identity, body: Vec<u8>, sent_at_ms: i64) -> Envelope {
        let msg_id = Uuid::new_v4();
        let signature = identity.sign(&signing_input(PROTOCOL_VERSION, &msg_id, sent_at_ms, &body));
        Envelope {
            version: PROTOCOL_VERSION,
            msg_id,
            from: ByteBuf::from(identity.public_key().to_vec()),
            sent_at_ms,
            body: ByteBuf::from(body),
            signature: ByteBuf::from(signature),
        }
    }

    /// Sign and encode into a frame ready to send; a frame over the limit is an error here,
    /// on the sending side, rather than a silent drop at the receiver.
    pub fn seal(
        identity: &Identity,
        message: &APNMessage,
        sent_at_ms: i64,
    ) -> Result<Vec<u8>, CodecError> {
        let frame = Envelope::sign(identity, message, sent_at_ms)?.encode()?;
        if frame.len() > FRAME_BYTES_MAX {
            return Err(CodecError::TooLarge {
                size: frame.len(),
                limit: FRAME_BYTES_MAX,
            });
        }
        Ok(frame)
    }

    /// Encode as a frame.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

/// Check one inbound frame. Pure apart from the replay cache, which remembers the id of every
/// envelope that passes.
pub fn verify_frame(
    frame: &[u8],
    now_ms: i64,
    limits: &EnvelopeLimits,
    replay_cache: &mut ReplayCache,
) -> Result<VerifiedEnvelope, DropReason> {
    if frame.len() > limits.frame_bytes_max {
        return Err(DropReason::Oversized);
    }
    let envelope: Envelope =
        codec::decode(frame, limits.frame_bytes_max).map_err(|_| DropReason::Malformed)?;
    if envelope.version != PROTOCOL_VERSION {
        return Err(DropReason::UnknownVersion);
    }
    let from_key: [u8; PUBLIC_KEY_BYTES] = envelope
        .from
        .as_slice()
        .try_into()
        .map_err(|_| DropReason::BadSignature)?;
    let from_peer = identity::peer_id_of(&from_key).ok_or(DropReason::BadSignature)?;
    let input = signing_input(
        envelope.version,
        &envelope.msg_id,
        envelope.sent_at_ms,
        &envelope.body,
    );
    if !identity::verify_signature(&from_key, &input, &envelope.signature) {
        return Err(DropReason::BadSignature);
    }
    if now_ms.abs_diff(envelope.sent_at_ms) > limits.clock_skew_ms_max.unsigned_abs() {
        return Err(DropReason::ClockSkew);
    }
    // A signed body that does not decode is malformed, but it is still remembered below so a
    // replay of it is not decoded again.
    let message = codec::decode_message(&envelope.body);
    if !replay_cache.insert(envelope.msg_id, now_ms, limits.clock_skew_ms_max) {
        return Err(DropReason::Replayed);
    }
    let message = message.map_err(|_| DropReason::Malformed)?;
    Ok(VerifiedEnvelope {
        msg_id: envelope.msg_id,
        from_node: NodeId::from_public_key(&from_key),
        from_key,
        from_peer,
        sent_at_ms: envelope.sent_at_ms,
        message,
        frame_bytes: frame.len(),
    })
}

/// Remembers message ids seen within the replay window. Bounded.
#[derive(Debug, Default)]
pub struct ReplayCache {
    expiry_by_id: HashMap<Uuid, i64>,
    order: VecDeque<(i64, Uuid)>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            expiry_by_id: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Record `msg_id`; false if it was already there (a replay or a duplicate delivery).
    pub fn insert(&mut self, msg_id: Uuid, now_ms: i64, skew_ms_max: i64) -> bool {
        self.expire(now_ms);
        if self.expiry_by_id.contains_key(&msg_id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.expiry_by_id.remove(&oldest);
        }
        let expires_at = now_ms.saturating_add(skew_ms_max.saturating_mul(2));
        self.expiry_by_id.insert(msg_id, expires_at);
        self.order.push_back((expires_at, msg_id));
        true
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some(&(expires_at, id)) = self.order.front() {
            if expires_at > now_ms {
                break;
            }
            self.order.pop_front();
            self.expiry_by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{PingRequest, Vibe};

    fn ping() -> APNMessage {
        APNMessage::PingRequest(PingRequest { nonce: 7 })
    }

    fn check(
        frame: &[u8],
        now_ms: i64,
        cache: &mut ReplayCache,
    ) -> Result<VerifiedEnvelope, DropReason> {
        verify_frame(frame, now_ms, &EnvelopeLimits::default(), cache)
    }

    #[test]
    fn good_envelope_verifies_once() {
        let identity = Identity::ephemeral();
        let frame = Envelope::seal(&identity, &ping(), 1_000_000).unwrap();
        let mut cache = ReplayCache::new(16);
        let verified = check(&frame, 1_000_000, &mut cache).unwrap();
        assert_eq!(verified.message, ping());
        assert_eq!(verified.from_peer, identity.peer_id());
        assert_eq!(&verified.from_node, identity.node_id());
        assert_eq!(
            check(&frame, 1_000_001, &mut cache).unwrap_err(),
            DropReason::Replayed
        );
    }

    #[test]
    fn every_bad_frame_has_its_reason() {
        let identity = Identity::ephemeral();
        let now = 5_000_000;
        let mut cache = ReplayCache::new(16);
        let mut envelope = Envelope::sign(&identity, &ping(), now).unwrap();

        let mut flipped = envelope.clone();
        flipped.signature[3] ^= 0x01;
        assert_eq!(
            check(&flipped.encode().unwrap(), now, &mut cache).unwrap_err(),
            DropReason::BadSignature
        );

        let mut rewritten_id = envelope.clone();
        rewritten_id.msg_id = Uuid::new_v4();
        assert_eq!(
            check(&rewritten_id.encode().unwrap(), now, &mut cache).unwrap_err(),
            DropReason::BadSignature
        );

        let future = Envelope::sign(&identity, &ping(), now + CLOCK_SKEW_MS_MAX + 1).unwrap();
        assert_eq!(
            check(&future.encode().unwrap(), now, &mut cache).unwrap_err(),
            DropReason::ClockSkew
        );

        envelope.version = PROTOCOL_VERSION + 1;
        assert_eq!(
            check(&envelope.encode().unwrap(), now, &mut cache).unwrap_err(),
            DropReason::UnknownVersion
        );

        assert_eq!(
            check(b"\xff\x00garbage", now, &mut cache).unwrap_err(),
            DropReason::Malformed
        );
        let oversized = vec![0u8; FRAME_BYTES_MAX + 1];
        assert_eq!(
            check(&oversized, now, &mut cache).unwrap_err(),
            DropReason::Oversized
        );

        let mut wrong_key = Envelope::sign(&identity, &ping(), now).unwrap();
        wrong_key.from = ByteBuf::from(Identity::ephemeral().public_key().to_vec());
        assert_eq!(
            check(&wrong_key.encode().unwrap(), now, &mut cache).unwrap_err(),
            DropReason::BadSignature
        );
        // None of the bad frames poisoned the cache for a good one.
        let good = Envelope::seal(&identity, &ping(), now).unwrap();
        assert!(check(&good, now, &mut cache).is_ok());
    }

    #[test]
    fn sealing_refuses_an_oversized_frame() {
        let identity = Identity::ephemeral();
        let huge = APNMessage::TaskDistributionRequest(crate::messages::TaskDistributionRequest {
            task_id: Uuid::new_v4(),
            executor_profile: "x".repeat(FRAME_BYTES_MAX),
            requirements: Default::default(),
            reward: Vibe::from_whole(1),
            content_hash: String::new(),
            bid_deadline: chrono::Utc::now(),
        });
        assert!(matches!(
            Envelope::seal(&identity, &huge, 0),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn replay_cache_is_bounded_and_expires() {
        let mut cache = ReplayCache::new(2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(cache.insert(a, 0, 10));
        assert!(cache.insert(b, 0, 10));
        assert!(cache.insert(c, 0, 10));
        assert_eq!(cache.len(), 2);
        assert!(!cache.insert(c, 1, 10));
        // After twice the window every id has expired.
        assert!(cache.insert(c, 100, 10));
        assert_eq!(cache.len(), 1);
    }
}
