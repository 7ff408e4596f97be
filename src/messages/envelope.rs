//! The signed envelope around every message, and the checks every inbound frame passes
//! before any actor sees it.
//!
//! The signature covers a domain tag, the version, `msg_id`, `sent_at_ms` and the exact
//! encoded body bytes. The design asks for "the body bytes"; the header fields are signed
//! too because otherwise a relay could rewrite `msg_id` or `sent_at_ms` and defeat the
//! replay and clock-skew checks.
//!
//! Every envelope names its [`Audience`]: the one node a direct message is for, or the
//! broadcast topic. It is signed with the rest, and a receiver accepts a direct message only
//! when it is the named node and a broadcast only on the named topic, so a message signed
//! for one node cannot be replayed to another (by the relay, or by the node it was for).
//!
//! Checks, cheapest first: size, decode, version, audience, key, signature, clock skew,
//! replay, body decode. A frame failing any is dropped with a [`DropReason`]. The replay
//! cache is keyed by sender and id, with a quota per sender: a flood from one key is
//! refused once it fills its quota and never evicts another sender's live entries.
//!
//! [`verify_frame`] is [`check_frame`] (every stateless check, the signature above all: safe
//! on any thread) followed by [`CheckedEnvelope::admit`] (the replay cache, which has one
//! owner). The peer manager runs the first on its verification workers, the second itself.

use libp2p::PeerId;
use libp2p::identity::ed25519;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use uuid::Uuid;

use super::codec::{self, CodecError, FRAME_BYTES_MAX};
use super::{APNMessage, PROTOCOL_VERSION};
use crate::identity::{Identity, NodeId, PUBLIC_KEY_BYTES};

const SIGNING_CONTEXT: &[u8] = b"apn-envelope-v1";
/// Default tolerated difference between a sender's clock and ours.
pub const CLOCK_SKEW_MS_MAX: i64 = 120_000;
/// Most message ids remembered for replay detection. Entries expire after twice the skew
/// window (older envelopes fail the skew check anyway); a live entry is never forgotten
/// early: when the cache is full, new envelopes are refused (rate limited) until entries
/// expire.
pub const REPLAY_CACHE_ENTRIES_MAX: usize = 262_144;
/// Most ids remembered for one sender: about 136 messages per second sustained over the
/// four-minute window. A sender past it is refused (rate limited), not remembered, so one
/// key cannot fill the cache that protects everyone else.
pub const REPLAY_ENTRIES_PER_SENDER_MAX: usize = 32_768;

/// Who an envelope is for. Signed with the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    /// A direct message for the node with this peer id (its bytes).
    Peer(ByteBuf),
    /// A broadcast on this topic.
    Topic(super::Topic),
}

impl Audience {
    /// A direct message for `peer`.
    pub fn peer(peer: &PeerId) -> Audience {
        Audience::Peer(ByteBuf::from(peer.to_bytes()))
    }

    /// The bytes the signature covers.
    fn signing_bytes(&self) -> Vec<u8> {
        match self {
            Audience::Peer(peer) => [b"peer:".as_slice(), peer.as_slice()].concat(),
            Audience::Topic(topic) => [b"topic:".as_slice(), topic.name().as_bytes()].concat(),
        }
    }
}

/// A signed message as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wire protocol version ([`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)); others are dropped.
    pub version: u16,
    /// Random per message, chosen by the sender; the replay cache refuses a repeat from one key.
    pub msg_id: Uuid,
    /// The sender's Ed25519 public key (its PeerId is derived from it).
    pub from: ByteBuf,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
    /// Who the envelope is for.
    pub to: Audience,
    /// The encoded [`APNMessage`].
    pub body: ByteBuf,
    /// Ed25519 by `from` over a domain tag, version, `msg_id`, `sent_at_ms`, audience and body.
    pub signature: ByteBuf,
}

/// Why an inbound frame was dropped. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The frame is larger than `frame_bytes_max`; refused before decoding.
    Oversized,
    /// The frame or its body is not valid CBOR of the expected type.
    Malformed,
    /// `version` is not this node's [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
    UnknownVersion,
    /// The signature does not verify against the `from` key (or the key is invalid).
    BadSignature,
    /// `sent_at_ms` differs from this node's clock by more than `clock_skew_ms_max`.
    ClockSkew,
    /// The same sender already sent this `msg_id` within the replay window.
    Replayed,
    /// Decrypting an end-to-end sealed payload failed.
    DecryptFailed,
    /// The sender is not allowed to send this (wrong peer for the task, policy, rate limit).
    Unauthorized,
    /// A per-peer or global limit was hit.
    RateLimited,
    /// A direct message signed for another node, or a broadcast for another topic (or sent
    /// direct): a replay to someone it was not meant for.
    WrongRecipient,
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
    /// The queue from a transport to the peer manager, or from the peer manager to a
    /// signature verification worker, was full (in frames or bytes).
    QueueFull,
    /// An assignment whose sealed task is not the one the request (and the bid) described.
    ContentMismatch,
    /// An assignment whose escrow is not on the network ledger as agreed (settlement mode
    /// `jetstream`): missing, for another payee, too small, too short or already settled.
    NoEscrow,
    /// An assignment whose repository bundle would take this node's workspaces and bundles
    /// past `resources.storage_gb`.
    StorageFull,
    /// A `BandwidthContribution` or `ComputeContribution` record that is not the sender's
    /// to make, names no payment or task between the two nodes in this node's ledger, or
    /// whose amounts are out of bounds.
    BadContribution,
    /// A `ResultChunk` that does not fit its run's result: for a task with no assignment
    /// from its sender, out of range, oversized, disagreeing on the count, past the
    /// originator's `executor.result_bytes_max`, or not decrypting.
    BadResultChunk,
}

impl DropReason {
    /// Every reason, for exporting zero counters too.
    pub const ALL: [DropReason; 23] = [
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::UnknownVersion,
        DropReason::BadSignature,
        DropReason::ClockSkew,
        DropReason::Replayed,
        DropReason::DecryptFailed,
        DropReason::Unauthorized,
        DropReason::RateLimited,
        DropReason::WrongRecipient,
        DropReason::UnsolicitedAssignment,
        DropReason::LocalPathFromPeer,
        DropReason::BadChunkCount,
        DropReason::UnsolicitedPayment,
        DropReason::PaymentOverflow,
        DropReason::BidBelowMinimum,
        DropReason::ReservationLimit,
        DropReason::QueueFull,
        DropReason::ContentMismatch,
        DropReason::NoEscrow,
        DropReason::StorageFull,
        DropReason::BadContribution,
        DropReason::BadResultChunk,
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
            DropReason::WrongRecipient => "wrong_recipient",
            DropReason::UnsolicitedAssignment => "unsolicited_assignment",
            DropReason::LocalPathFromPeer => "local_path_from_peer",
            DropReason::BadChunkCount => "bad_chunk_count",
            DropReason::UnsolicitedPayment => "unsolicited_payment",
            DropReason::PaymentOverflow => "payment_overflow",
            DropReason::BidBelowMinimum => "bid_below_minimum",
            DropReason::ReservationLimit => "reservation_limit",
            DropReason::QueueFull => "queue_full",
            DropReason::ContentMismatch => "content_mismatch",
            DropReason::NoEscrow => "no_escrow",
            DropReason::StorageFull => "storage_full",
            DropReason::BadContribution => "bad_contribution",
            DropReason::BadResultChunk => "bad_result_chunk",
        }
    }
}

/// Limits an inbound frame is checked against.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeLimits {
    /// Largest whole encoded envelope accepted, in bytes (default [`FRAME_BYTES_MAX`]).
    pub frame_bytes_max: usize,
    /// Largest accepted difference between `sent_at_ms` and the local clock, in milliseconds.
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
    /// The sender's `msg_id`, already recorded in the replay cache.
    pub msg_id: Uuid,
    /// The sender's Ed25519 public key; the signature was checked against it.
    pub from_key: [u8; PUBLIC_KEY_BYTES],
    /// The sender's libp2p peer id, derived from `from_key`.
    pub from_peer: PeerId,
    /// The sender's display name, derived from `from_key`; never use it for authorisation.
    pub from_node: NodeId,
    /// The sender's clock at sending, milliseconds since the Unix epoch (within the skew window).
    pub sent_at_ms: i64,
    /// The decoded body.
    pub message: APNMessage,
    /// Size of the frame on the wire, for bandwidth accounting.
    pub frame_bytes: usize,
}

fn signing_input(
    version: u16,
    msg_id: &Uuid,
    sent_at_ms: i64,
    to: &Audience,
    body: &[u8],
) -> Vec<u8> {
    let audience = to.signing_bytes();
    let mut input =
        Vec::with_capacity(SIGNING_CONTEXT.len() + 2 + 16 + 8 + 8 + audience.len() + body.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(&version.to_be_bytes());
    input.extend_from_slice(msg_id.as_bytes());
    input.extend_from_slice(&sent_at_ms.to_be_bytes());
    // Length-prefixed, so the audience and the body can never be shifted into each other.
    input.extend_from_slice(&(audience.len() as u64).to_be_bytes());
    input.extend_from_slice(&audience);
    input.extend_from_slice(body);
    input
}

impl Envelope {
    /// Sign `message` for `to` as `identity` and return the envelope.
    pub fn sign(
        identity: &Identity,
        to: &Audience,
        message: &APNMessage,
        sent_at_ms: i64,
    ) -> Result<Envelope, CodecError> {
        let body = codec::encode_message(message)?;
        Ok(Envelope::sign_body(identity, to, body, sent_at_ms))
    }

    /// Sign body bytes as they are, whether or not they decode to a message. A hostile peer
    /// can sign garbage too; tests and the fuzz target use this to reach the checks after
    /// the signature.
    pub fn sign_body(
        identity: &Identity,
        to: &Audience,
        body: Vec<u8>,
        sent_at_ms: i64,
    ) -> Envelope {
        let msg_id = Uuid::new_v4();
        let signature = identity.sign(&signing_input(
            PROTOCOL_VERSION,
            &msg_id,
            sent_at_ms,
            to,
            &body,
        ));
        Envelope {
            version: PROTOCOL_VERSION,
            msg_id,
            from: ByteBuf::from(identity.public_key().to_vec()),
            sent_at_ms,
            to: to.clone(),
            body: ByteBuf::from(body),
            signature: ByteBuf::from(signature),
        }
    }

    /// Sign and encode into a frame ready to send; a frame over the limit is an error here,
    /// on the sending side, rather than a silent drop at the receiver.
    pub fn seal(
        identity: &Identity,
        to: &Audience,
        message: &APNMessage,
        sent_at_ms: i64,
    ) -> Result<Vec<u8>, CodecError> {
        let frame = Envelope::sign(identity, to, message, sent_at_ms)?.encode()?;
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

/// An envelope that passed every check that needs no state: size, decode, version,
/// audience, key, signature and clock skew, with its body decoded (or the reason it did not
/// decode). Made only by [`check_frame`], so holding one means the signature was checked; it
/// becomes a [`VerifiedEnvelope`] once [`CheckedEnvelope::admit`] has recorded it in the
/// replay cache.
///
/// The split lets the expensive, stateless part (the signature above all) run on any thread
/// while the replay cache, which is state, stays with its one owner.
#[derive(Debug)]
pub struct CheckedEnvelope {
    msg_id: Uuid,
    from_key: [u8; PUBLIC_KEY_BYTES],
    from_peer: PeerId,
    from_node: NodeId,
    sent_at_ms: i64,
    /// The decoded body, or `Malformed`: reported only after the replay check, so a replay of
    /// a signed body that does not decode is still caught as a replay.
    message: Result<APNMessage, DropReason>,
    frame_bytes: usize,
}

impl CheckedEnvelope {
    /// The signer's key (checked against the signature).
    pub fn from_key(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.from_key
    }

    /// The stateful rest of [`verify_frame`]: record the sender and id in `replay_cache`
    /// (`Replayed` or `RateLimited` if it refuses them), then the body's decode result.
    pub fn admit(
        self,
        now_ms: i64,
        limits: &EnvelopeLimits,
        replay_cache: &mut ReplayCache,
    ) -> Result<VerifiedEnvelope, DropReason> {
        replay_cache.insert(self.from_key, self.msg_id, now_ms, limits.clock_skew_ms_max)?;
        let message = self.message?;
        Ok(VerifiedEnvelope {
            msg_id: self.msg_id,
            from_node: self.from_node,
            from_key: self.from_key,
            from_peer: self.from_peer,
            sent_at_ms: self.sent_at_ms,
            message,
            frame_bytes: self.frame_bytes,
        })
    }
}

/// The stateless checks of one inbound frame that arrived for `expected` (this node for a
/// direct path, the topic for a broadcast path), in the order [`verify_frame`] makes them:
/// size, decode, version, audience, key, signature, clock skew; then the body is decoded.
/// Pure: safe to run on any thread.
pub fn check_frame(
    frame: &[u8],
    now_ms: i64,
    limits: &EnvelopeLimits,
    expected: &Audience,
) -> Result<CheckedEnvelope, DropReason> {
    if frame.len() > limits.frame_bytes_max {
        return Err(DropReason::Oversized);
    }
    let envelope: Envelope =
        codec::decode(frame, limits.frame_bytes_max).map_err(|_| DropReason::Malformed)?;
    if envelope.version != PROTOCOL_VERSION {
        return Err(DropReason::UnknownVersion);
    }
    if &envelope.to != expected {
        return Err(DropReason::WrongRecipient);
    }
    let from_key: [u8; PUBLIC_KEY_BYTES] = envelope
        .from
        .as_slice()
        .try_into()
        .map_err(|_| DropReason::BadSignature)?;
    // Decompressing the key costs a good part of a verification: done once here, for the
    // signature and the peer id both (`identity::verify_signature` and `peer_id_of` would
    // each do it again).
    let key =
        ed25519::PublicKey::try_from_bytes(&from_key).map_err(|_| DropReason::BadSignature)?;
    let input = signing_input(
        envelope.version,
        &envelope.msg_id,
        envelope.sent_at_ms,
        &envelope.to,
        &envelope.body,
    );
    if !key.verify(&input, &envelope.signature) {
        return Err(DropReason::BadSignature);
    }
    let from_peer = libp2p::identity::PublicKey::from(key).to_peer_id();
    if now_ms.abs_diff(envelope.sent_at_ms) > limits.clock_skew_ms_max.unsigned_abs() {
        return Err(DropReason::ClockSkew);
    }
    let message = codec::decode_message(&envelope.body).map_err(|_| DropReason::Malformed);
    Ok(CheckedEnvelope {
        msg_id: envelope.msg_id,
        from_node: NodeId::from_public_key(&from_key),
        from_key,
        from_peer,
        sent_at_ms: envelope.sent_at_ms,
        message,
        frame_bytes: frame.len(),
    })
}

/// Check one inbound frame that arrived for `expected` (this node for a direct path, the
/// topic for a broadcast path): [`check_frame`], then [`CheckedEnvelope::admit`]. Pure apart
/// from the replay cache, which remembers the sender and id of every envelope that passes
/// the signature and skew checks (a signed body that does not decode is remembered too, so a
/// replay of it is not decoded again).
pub fn verify_frame(
    frame: &[u8],
    now_ms: i64,
    limits: &EnvelopeLimits,
    replay_cache: &mut ReplayCache,
    expected: &Audience,
) -> Result<VerifiedEnvelope, DropReason> {
    check_frame(frame, now_ms, limits, expected)?.admit(now_ms, limits, replay_cache)
}

/// CBOR of the `from` field's name (a 4-byte text string) and the header of a 32-byte byte
/// string: where a well-formed frame holds its signer's key.
const FROM_KEY_MARKER: &[u8] = b"\x64from\x58\x20";
/// How far into a frame the signer's key is looked for: it follows only the version and the
/// 16-byte id, so a well-formed frame has it well within this.
const FROM_KEY_SEARCH_BYTES: usize = 128;

/// The signer key a frame claims, found without decoding it: for choosing a verification
/// shard by sender only. Unverified (a frame may claim any key, and a junk frame none);
/// `None` when the frame's head does not hold one.
pub fn claimed_signer_key(frame: &[u8]) -> Option<[u8; PUBLIC_KEY_BYTES]> {
    let head = &frame[..frame.len().min(FROM_KEY_SEARCH_BYTES)];
    let at = head
        .windows(FROM_KEY_MARKER.len())
        .position(|window| window == FROM_KEY_MARKER)?;
    let start = at + FROM_KEY_MARKER.len();
    frame.get(start..start + PUBLIC_KEY_BYTES)?.try_into().ok()
}

pub use super::replay::ReplayCache;

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
        verify_frame(frame, now_ms, &EnvelopeLimits::default(), cache, &me())
    }

    /// The receiving node of these tests.
    fn me() -> Audience {
        Audience::Peer(ByteBuf::from(b"the receiving node".to_vec()))
    }

    #[test]
    fn a_message_signed_for_one_node_is_refused_by_another_and_off_its_topic() {
        let identity = Identity::ephemeral();
        let other = Audience::Peer(ByteBuf::from(b"another node".to_vec()));
        let mut cache = ReplayCache::new(16);
        let for_other = Envelope::seal(&identity, &other, &ping(), 1_000).unwrap();
        assert_eq!(
            check(&for_other, 1_000, &mut cache).unwrap_err(),
            DropReason::WrongRecipient
        );
        // Rewriting the audience breaks the signature.
        let mut rewritten = Envelope::sign(&identity, &other, &ping(), 1_000).unwrap();
        rewritten.to = me();
        assert_eq!(
            check(&rewritten.encode().unwrap(), 1_000, &mut cache).unwrap_err(),
            DropReason::BadSignature
        );
        // A broadcast is accepted on its topic only, never as a direct message.
        let broadcast = Envelope::seal(
            &identity,
            &Audience::Topic(super::super::Topic::Tasks),
            &ping(),
            1_000,
        )
        .unwrap();
        assert_eq!(
            check(&broadcast, 1_000, &mut cache).unwrap_err(),
            DropReason::WrongRecipient
        );
        let on_announce = Audience::Topic(super::super::Topic::Announce);
        assert_eq!(
            verify_frame(
                &broadcast,
                1_000,
                &EnvelopeLimits::default(),
                &mut cache,
                &on_announce
            )
            .unwrap_err(),
            DropReason::WrongRecipient
        );
        let on_tasks = Audience::Topic(super::super::Topic::Tasks);
        assert!(
            verify_frame(
                &broadcast,
                1_000,
                &EnvelopeLimits::default(),
                &mut cache,
                &on_tasks
            )
            .is_ok()
        );
    }

    #[test]
    fn a_flood_from_one_sender_cannot_evict_another_senders_entries() {
        let flooder = [1u8; PUBLIC_KEY_BYTES];
        let honest = [2u8; PUBLIC_KEY_BYTES];
        let mut cache = ReplayCache::new(REPLAY_ENTRIES_PER_SENDER_MAX * 2);
        let honest_id = Uuid::new_v4();
        cache
            .insert(honest, honest_id, 0, CLOCK_SKEW_MS_MAX)
            .unwrap();
        let mut refused = 0;
        for _ in 0..REPLAY_ENTRIES_PER_SENDER_MAX + 100 {
            if cache.insert(flooder, Uuid::new_v4(), 1, CLOCK_SKEW_MS_MAX)
                == Err(DropReason::RateLimited)
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 100);
        // The honest sender's entry is still live: its replay is caught.
        assert_eq!(
            cache.insert(honest, honest_id, 2, CLOCK_SKEW_MS_MAX),
            Err(DropReason::Replayed)
        );
        // The same id from another sender is not a replay.
        assert!(
            cache
                .insert([3u8; PUBLIC_KEY_BYTES], honest_id, 2, CLOCK_SKEW_MS_MAX)
                .is_ok()
        );
        // A full cache refuses, then takes new entries once the old ones expire.
        let mut small = ReplayCache::new(2);
        small.insert(honest, Uuid::new_v4(), 0, 10).unwrap();
        small.insert(flooder, Uuid::new_v4(), 0, 10).unwrap();
        assert_eq!(
            small.insert(honest, Uuid::new_v4(), 1, 10),
            Err(DropReason::RateLimited)
        );
        assert!(small.insert(honest, Uuid::new_v4(), 21, 10).is_ok());
    }

    #[test]
    fn good_envelope_verifies_once() {
        let identity = Identity::ephemeral();
        let frame = Envelope::seal(&identity, &me(), &ping(), 1_000_000).unwrap();
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
        let mut envelope = Envelope::sign(&identity, &me(), &ping(), now).unwrap();

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

        let future =
            Envelope::sign(&identity, &me(), &ping(), now + CLOCK_SKEW_MS_MAX + 1).unwrap();
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

        let mut wrong_key = Envelope::sign(&identity, &me(), &ping(), now).unwrap();
        wrong_key.from = ByteBuf::from(Identity::ephemeral().public_key().to_vec());
        assert_eq!(
            check(&wrong_key.encode().unwrap(), now, &mut cache).unwrap_err(),
            DropReason::BadSignature
        );
        // None of the bad frames poisoned the cache for a good one.
        let good = Envelope::seal(&identity, &me(), &ping(), now).unwrap();
        assert!(check(&good, now, &mut cache).is_ok());
    }

    #[test]
    fn checking_then_admitting_judges_every_frame_as_verify_frame_does() {
        let identity = Identity::ephemeral();
        let now = 5_000_000;
        let envelope = Envelope::sign(&identity, &me(), &ping(), now).unwrap();
        let mut flipped = envelope.clone();
        flipped.signature[3] ^= 0x01;
        let mut rewritten_id = envelope.clone();
        rewritten_id.msg_id = Uuid::new_v4();
        let mut unknown_version = envelope.clone();
        unknown_version.version = PROTOCOL_VERSION + 1;
        let mut wrong_key = envelope.clone();
        wrong_key.from = ByteBuf::from(Identity::ephemeral().public_key().to_vec());
        let mut short_key = envelope.clone();
        short_key.from = ByteBuf::from(vec![1u8; 5]);
        let other = Audience::Peer(ByteBuf::from(b"another node".to_vec()));
        let frames: Vec<Vec<u8>> = vec![
            envelope.encode().unwrap(),
            flipped.encode().unwrap(),
            rewritten_id.encode().unwrap(),
            unknown_version.encode().unwrap(),
            wrong_key.encode().unwrap(),
            short_key.encode().unwrap(),
            Envelope::seal(&identity, &other, &ping(), now).unwrap(),
            Envelope::seal(&identity, &me(), &ping(), now + CLOCK_SKEW_MS_MAX + 1).unwrap(),
            Envelope::sign_body(&identity, &me(), b"\xff not a message".to_vec(), now)
                .encode()
                .unwrap(),
            b"\xff\x00garbage".to_vec(),
            vec![0u8; FRAME_BYTES_MAX + 1],
        ];
        let limits = EnvelopeLimits::default();
        let mut whole_cache = ReplayCache::new(64);
        let mut split_cache = ReplayCache::new(64);
        // Twice each: the second time a frame that passed the signature is a replay.
        for frame in frames.iter().chain(frames.iter()) {
            let whole =
                verify_frame(frame, now, &limits, &mut whole_cache, &me()).map(|v| v.msg_id);
            let split = check_frame(frame, now, &limits, &me())
                .and_then(|checked| checked.admit(now, &limits, &mut split_cache))
                .map(|v| v.msg_id);
            assert_eq!(whole, split);
        }
        assert_eq!(whole_cache.len(), split_cache.len());
        // A signed body that does not decode is malformed once, then a replay.
        let junk = Envelope::sign_body(&identity, &me(), b"\xff".to_vec(), now)
            .encode()
            .unwrap();
        let mut cache = ReplayCache::new(16);
        let first = check_frame(&junk, now, &limits, &me()).unwrap();
        assert_eq!(first.from_key(), &identity.public_key());
        assert_eq!(
            first.admit(now, &limits, &mut cache).unwrap_err(),
            DropReason::Malformed
        );
        let again = check_frame(&junk, now, &limits, &me()).unwrap();
        assert_eq!(
            again.admit(now, &limits, &mut cache).unwrap_err(),
            DropReason::Replayed
        );
    }

    #[test]
    fn checking_needs_no_state_and_admitting_catches_the_replay() {
        let identity = Identity::ephemeral();
        let now = 1_000_000;
        let limits = EnvelopeLimits::default();
        let frame = Envelope::seal(&identity, &me(), &ping(), now).unwrap();
        // Checked twice (two workers, or a duplicate delivery): both pass the stateless part.
        let first = check_frame(&frame, now, &limits, &me()).unwrap();
        let second = check_frame(&frame, now, &limits, &me()).unwrap();
        let mut cache = ReplayCache::new(16);
        // Admitted later than checked: the replay cache takes the admitting clock.
        let verified = first.admit(now + 5, &limits, &mut cache).unwrap();
        assert_eq!(verified.message, ping());
        assert_eq!(verified.from_peer, identity.peer_id());
        assert_eq!(verified.frame_bytes, frame.len());
        assert_eq!(
            second.admit(now + 6, &limits, &mut cache).unwrap_err(),
            DropReason::Replayed
        );
    }

    #[test]
    fn the_claimed_signer_key_is_found_without_decoding() {
        let identity = Identity::ephemeral();
        for audience in [me(), Audience::Topic(super::super::Topic::Announce)] {
            let frame = Envelope::seal(&identity, &audience, &ping(), i64::MAX).unwrap();
            assert_eq!(claimed_signer_key(&frame), Some(identity.public_key()));
            // Cut inside the key: no key.
            let at = frame
                .windows(PUBLIC_KEY_BYTES)
                .position(|w| w == identity.public_key())
                .unwrap();
            assert_eq!(claimed_signer_key(&frame[..at + 10]), None);
        }
        assert_eq!(claimed_signer_key(b""), None);
        assert_eq!(claimed_signer_key(b"\xff\x00garbage"), None);
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
            Envelope::seal(&identity, &me(), &huge, 0),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn replay_cache_is_bounded_and_expires() {
        let mut cache = ReplayCache::new(2);
        let sender = [9u8; PUBLIC_KEY_BYTES];
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(cache.insert(sender, a, 0, 10).is_ok());
        assert!(cache.insert(sender, b, 0, 10).is_ok());
        // Full: refused, and the live entries stay.
        assert_eq!(cache.insert(sender, c, 0, 10), Err(DropReason::RateLimited));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.insert(sender, a, 1, 10), Err(DropReason::Replayed));
        // After twice the window every id has expired.
        assert!(cache.insert(sender, c, 100, 10).is_ok());
        assert_eq!(cache.len(), 1);
    }
}
