//! End-to-end encryption between a task's originator and its assigned executor.
//!
//! Noise `KK` (X25519, ChaChaPoly, BLAKE2s): both sides know each other's static key from
//! the signed node announcements. The originator's first handshake message travels in
//! `TaskAssigned` and carries the task (prompt, base commit, how to get the repository) as
//! its encrypted payload; the executor's answer travels in `ExecutionStarted`. After that
//! both sides hold transport keys and every sealed payload (logs, progress actions,
//! repository chunks, the result) is encrypted with an explicit nonce (snow's stateless
//! transport), so messages that arrive out of order over gossip or the relay still decrypt.
//!
//! The executor's answer carries a payload too ([`respond_with`]): what it already has of
//! the task's repository, so the originator sends only the missing commits.
//!
//! A Noise message carries at most 65535 bytes, so a payload is cut into segments of
//! [`SEGMENT_PLAINTEXT_MAX`] bytes, segment `i` encrypted with nonce `first + i`. The relay
//! and other peers only ever see ciphertext. A [`NonceSealer`] holds a range of nonces
//! reserved from the session, so a long transfer (a repository's chunks) is sealed off the
//! session owner's thread without ever reusing a nonce.

use std::sync::Arc;

use serde_bytes::ByteBuf;

use crate::identity::{Identity, parse_noise_params};
use crate::messages::Sealed;

/// Largest Noise message.
const NOISE_MESSAGE_MAX: usize = 65_535;
/// ChaChaPoly tag.
const TAG_BYTES: usize = 16;
/// Plaintext bytes per Noise transport message.
pub const SEGMENT_PLAINTEXT_MAX: usize = NOISE_MESSAGE_MAX - TAG_BYTES;
/// Largest handshake payload (the task description): one Noise message minus the
/// handshake's own keys and tags.
pub const HANDSHAKE_PAYLOAD_MAX: usize = NOISE_MESSAGE_MAX - 256;
/// Largest sealed payload accepted for decryption (bounded by the frame limit anyway).
pub const SEALED_PLAINTEXT_MAX: usize = crate::messages::codec::FRAME_BYTES_MAX;

/// Why encryption or decryption failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// snow refused a key, a handshake step, or a message (e.g. one that fails to decrypt).
    #[error("noise: {0}")]
    Noise(String),
    /// A handshake payload, plaintext or ciphertext is over its limit.
    #[error("payload of {size} bytes is over the {limit} byte limit")]
    TooLarge {
        /// Bytes given.
        size: usize,
        /// The limit that applies, in bytes.
        limit: usize,
    },
    /// The handshake has not completed; nothing in this module returns it at present.
    #[error("the session is not established yet")]
    NotEstablished,
    /// A nonce would overflow `u64`; the session can seal or open no more.
    #[error("the nonce space is exhausted")]
    NoncesExhausted,
}

fn noise(e: snow::Error) -> E2eError {
    E2eError::Noise(e.to_string())
}

/// An established session: transport keys and the next nonce to send with.
pub struct E2eSession {
    transport: Arc<snow::StatelessTransportState>,
    next_nonce: u64,
}

impl std::fmt::Debug for E2eSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eSession")
            .field("next_nonce", &self.next_nonce)
            .finish_non_exhaustive()
    }
}

/// The originator's side between sending `TaskAssigned` and receiving `ExecutionStarted`.
pub struct PendingInitiator {
    handshake: snow::HandshakeState,
}

impl std::fmt::Debug for PendingInitiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingInitiator")
    }
}

/// Originator: start a session to `executor_static_key`, returning the first handshake
/// message (with `payload` encrypted inside it).
pub fn initiate(
    identity: &Identity,
    executor_static_key: &[u8],
    payload: &[u8],
) -> Result<(PendingInitiator, Vec<u8>), E2eError> {
    if payload.len() > HANDSHAKE_PAYLOAD_MAX {
        return Err(E2eError::TooLarge {
            size: payload.len(),
            limit: HANDSHAKE_PAYLOAD_MAX,
        });
    }
    let mut handshake = snow::Builder::new(parse_noise_params())
        .local_private_key(identity.noise_private())
        .and_then(|b| b.remote_public_key(executor_static_key))
        .and_then(|b| b.build_initiator())
        .map_err(noise)?;
    let mut message = vec![0u8; NOISE_MESSAGE_MAX];
    let length = handshake
        .write_message(payload, &mut message)
        .map_err(noise)?;
    message.truncate(length);
    Ok((PendingInitiator { handshake }, message))
}

impl PendingInitiator {
    /// Read the executor's answer and switch to transport mode. Returns the session and the
    /// answer's payload (empty when the executor sent none).
    pub fn complete(mut self, answer: &[u8]) -> Result<(E2eSession, Vec<u8>), E2eError> {
        let mut payload = vec![0u8; NOISE_MESSAGE_MAX];
        let length = self
            .handshake
            .read_message(answer, &mut payload)
            .map_err(noise)?;
        payload.truncate(length);
        let transport = self
            .handshake
            .into_stateless_transport_mode()
            .map_err(noise)?;
        Ok((E2eSession::new(transport), payload))
    }
}

/// The executor's side between reading the originator's first message and answering it.
pub struct PendingResponder {
    handshake: snow::HandshakeState,
}

impl std::fmt::Debug for PendingResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingResponder")
    }
}

/// Executor: read the originator's first message. Returns the decrypted task payload and
/// the handshake, to be answered with [`PendingResponder::answer`] once the executor knows
/// what to say (what it has of the repository).
pub fn respond_with(
    identity: &Identity,
    originator_static_key: &[u8],
    first_message: &[u8],
) -> Result<(Vec<u8>, PendingResponder), E2eError> {
    let mut handshake = snow::Builder::new(parse_noise_params())
        .local_private_key(identity.noise_private())
        .and_then(|b| b.remote_public_key(originator_static_key))
        .and_then(|b| b.build_responder())
        .map_err(noise)?;
    let mut payload = vec![0u8; NOISE_MESSAGE_MAX];
    let length = handshake
        .read_message(first_message, &mut payload)
        .map_err(noise)?;
    payload.truncate(length);
    Ok((payload, PendingResponder { handshake }))
}

impl PendingResponder {
    /// Answer with `payload` encrypted inside, and switch to transport mode.
    pub fn answer(mut self, payload: &[u8]) -> Result<(Vec<u8>, E2eSession), E2eError> {
        if payload.len() > HANDSHAKE_PAYLOAD_MAX {
            return Err(E2eError::TooLarge {
                size: payload.len(),
                limit: HANDSHAKE_PAYLOAD_MAX,
            });
        }
        let mut answer = vec![0u8; NOISE_MESSAGE_MAX];
        let length = self
            .handshake
            .write_message(payload, &mut answer)
            .map_err(noise)?;
        answer.truncate(length);
        let transport = self
            .handshake
            .into_stateless_transport_mode()
            .map_err(noise)?;
        Ok((answer, E2eSession::new(transport)))
    }
}

/// Executor: answer the originator's first message with an empty payload. Returns the
/// decrypted task payload, the answer to send back, and the established session.
pub fn respond(
    identity: &Identity,
    originator_static_key: &[u8],
    first_message: &[u8],
) -> Result<(Vec<u8>, Vec<u8>, E2eSession), E2eError> {
    let (payload, pending) = respond_with(identity, originator_static_key, first_message)?;
    let (answer, session) = pending.answer(&[])?;
    Ok((payload, answer, session))
}

/// Noise transport messages a sealed payload of `plaintext_bytes` takes (one at least).
pub fn segments_for(plaintext_bytes: usize) -> u64 {
    plaintext_bytes.div_ceil(SEGMENT_PLAINTEXT_MAX).max(1) as u64
}

/// Encrypt `plaintext` with nonces from `*next` on, never reaching `end`.
fn seal_in_range(
    transport: &snow::StatelessTransportState,
    next: &mut u64,
    end: u64,
    plaintext: &[u8],
) -> Result<Sealed, E2eError> {
    if plaintext.len() > SEALED_PLAINTEXT_MAX {
        return Err(E2eError::TooLarge {
            size: plaintext.len(),
            limit: SEALED_PLAINTEXT_MAX,
        });
    }
    let segments = segments_for(plaintext.len());
    let first = *next;
    let after = first
        .checked_add(segments)
        .filter(|after| *after <= end)
        .ok_or(E2eError::NoncesExhausted)?;
    let mut ciphertext = Vec::with_capacity(plaintext.len() + segments as usize * TAG_BYTES);
    let mut buffer = vec![0u8; NOISE_MESSAGE_MAX];
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[][..]]
    } else {
        plaintext.chunks(SEGMENT_PLAINTEXT_MAX).collect()
    };
    for (index, chunk) in chunks.into_iter().enumerate() {
        let length = transport
            .write_message(first + index as u64, chunk, &mut buffer)
            .map_err(noise)?;
        ciphertext.extend_from_slice(&buffer[..length]);
    }
    *next = after;
    Ok(Sealed {
        nonce: first,
        ciphertext: ByteBuf::from(ciphertext),
    })
}

/// Seals with a range of nonces reserved from an [`E2eSession`]: usable on another thread
/// while the session goes on sealing with the nonces after the range.
pub struct NonceSealer {
    transport: Arc<snow::StatelessTransportState>,
    next: u64,
    end: u64,
}

impl std::fmt::Debug for NonceSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceSealer")
            .field("next", &self.next)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl NonceSealer {
    /// Encrypt `plaintext` under the next nonces of the range; `NoncesExhausted` once the
    /// range cannot hold it.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, E2eError> {
        seal_in_range(&self.transport, &mut self.next, self.end, plaintext)
    }
}

impl E2eSession {
    fn new(transport: snow::StatelessTransportState) -> Self {
        E2eSession {
            transport: Arc::new(transport),
            next_nonce: 0,
        }
    }

    /// Encrypt `plaintext` (any size up to the frame limit) under fresh nonces.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, E2eError> {
        seal_in_range(&self.transport, &mut self.next_nonce, u64::MAX, plaintext)
    }

    /// Reserve the next `segments` nonces for a [`NonceSealer`]; this session seals with
    /// the nonces after them.
    pub fn reserve(&mut self, segments: u64) -> Result<NonceSealer, E2eError> {
        let first = self.next_nonce;
        let end = first
            .checked_add(segments)
            .ok_or(E2eError::NoncesExhausted)?;
        self.next_nonce = end;
        Ok(NonceSealer {
            transport: self.transport.clone(),
            next: first,
            end,
        })
    }

    /// Decrypt a sealed payload from the other side.
    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, E2eError> {
        open_with(&self.transport, sealed)
    }

    /// An opener of this session's payloads, for another thread (a repository's chunks
    /// are decrypted on the blocking pool).
    pub fn opener(&self) -> Opener {
        Opener {
            transport: self.transport.clone(),
        }
    }
}

/// Decrypts what the other side of a session sealed; cheap to clone, usable on any thread.
#[derive(Clone)]
pub struct Opener {
    transport: Arc<snow::StatelessTransportState>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener")
    }
}

impl Opener {
    /// Decrypt a sealed payload from the other side.
    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, E2eError> {
        open_with(&self.transport, sealed)
    }
}

fn open_with(
    transport: &snow::StatelessTransportState,
    sealed: &Sealed,
) -> Result<Vec<u8>, E2eError> {
    if sealed.ciphertext.len() > SEALED_PLAINTEXT_MAX + 64 * TAG_BYTES {
        return Err(E2eError::TooLarge {
            size: sealed.ciphertext.len(),
            limit: SEALED_PLAINTEXT_MAX,
        });
    }
    let mut plaintext = Vec::with_capacity(sealed.ciphertext.len());
    let mut buffer = vec![0u8; NOISE_MESSAGE_MAX];
    for (index, segment) in sealed.ciphertext.chunks(NOISE_MESSAGE_MAX).enumerate() {
        let nonce = sealed
            .nonce
            .checked_add(index as u64)
            .ok_or(E2eError::NoncesExhausted)?;
        let length = transport
            .read_message(nonce, segment, &mut buffer)
            .map_err(noise)?;
        plaintext.extend_from_slice(&buffer[..length]);
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (E2eSession, E2eSession, Vec<u8>) {
        let originator = Identity::ephemeral();
        let executor = Identity::ephemeral();
        let (pending, first) =
            initiate(&originator, &executor.noise_public(), b"the prompt").unwrap();
        let (payload, answer, executor_session) =
            respond(&executor, &originator.noise_public(), &first).unwrap();
        let (originator_session, answered) = pending.complete(&answer).unwrap();
        assert!(answered.is_empty());
        (originator_session, executor_session, payload)
    }

    #[test]
    fn the_answer_carries_a_payload_and_a_reserved_range_never_reuses_a_nonce() {
        let originator = Identity::ephemeral();
        let executor = Identity::ephemeral();
        let (pending, first) = initiate(&originator, &executor.noise_public(), b"task").unwrap();
        let (task, responder) =
            respond_with(&executor, &originator.noise_public(), &first).unwrap();
        assert_eq!(task, b"task");
        let (answer, executor_session) = responder.answer(b"have: abc").unwrap();
        let (mut session, said) = pending.complete(&answer).unwrap();
        assert_eq!(said, b"have: abc");
        let big = vec![7u8; SEGMENT_PLAINTEXT_MAX + 1];
        let mut sealer = session.reserve(segments_for(big.len()) + 1).unwrap();
        let after = session.seal(b"after the range").unwrap();
        let in_range = sealer.seal(&big).unwrap();
        let last = sealer.seal(b"").unwrap();
        assert!(sealer.seal(b"").is_err(), "the range is used up");
        assert_eq!(in_range.nonce, 0);
        assert_eq!(last.nonce, 2);
        assert_eq!(after.nonce, 3);
        assert_eq!(executor_session.open(&in_range).unwrap(), big);
        assert_eq!(executor_session.open(&last).unwrap(), b"");
        assert_eq!(executor_session.open(&after).unwrap(), b"after the range");
    }

    #[test]
    fn handshake_carries_the_task_and_both_directions_decrypt_out_of_order() {
        let (mut originator, mut executor, payload) = pair();
        assert_eq!(payload, b"the prompt");
        let first = executor.seal(b"log line 1").unwrap();
        let second = executor.seal(b"log line 2").unwrap();
        assert_eq!(originator.open(&second).unwrap(), b"log line 2");
        assert_eq!(originator.open(&first).unwrap(), b"log line 1");
        let reply = originator.seal(b"chunk").unwrap();
        assert_eq!(executor.open(&reply).unwrap(), b"chunk");
    }

    #[test]
    fn large_payloads_span_several_noise_messages() {
        let (mut originator, executor, _) = pair();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = originator.seal(&big).unwrap();
        assert!(
            !sealed
                .ciphertext
                .windows(64)
                .any(|w| big.windows(64).next() == Some(w))
        );
        assert_eq!(executor.open(&sealed).unwrap(), big);
        let empty = originator.seal(b"").unwrap();
        assert_eq!(executor.open(&empty).unwrap(), b"");
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let (mut originator, executor, _) = pair();
        let mut sealed = originator.seal(b"secret diff").unwrap();
        sealed.ciphertext[0] ^= 1;
        assert!(executor.open(&sealed).is_err());
        let mut moved = originator.seal(b"secret diff").unwrap();
        moved.nonce += 1;
        assert!(executor.open(&moved).is_err());
        // A third party with its own session cannot read it.
        let (_, other_executor, _) = pair();
        let sealed = originator.seal(b"secret diff").unwrap();
        assert!(other_executor.open(&sealed).is_err());
        // An executor that is not the intended one cannot answer the handshake.
        let originator_identity = Identity::ephemeral();
        let intended = Identity::ephemeral();
        let impostor = Identity::ephemeral();
        let (_, first) = initiate(&originator_identity, &intended.noise_public(), b"task").unwrap();
        assert!(respond(&impostor, &originator_identity.noise_public(), &first).is_err());
    }
}
