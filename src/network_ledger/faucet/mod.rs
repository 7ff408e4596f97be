//! The faucet: an optional service, off by default, that mints a fixed amount of VIBE once to
//! every node identity that asks, at most `grants_per_hour` times an hour.
//!
//! A node asks by sending a [`SignedRequest`] on [`FAUCET_SUBJECT`]: its account key and the
//! time, signed by that key under a domain tag of its own, so only the holder of a key can
//! spend that key's one grant (a request naming another account fails the signature). A
//! request more than [`MAX_CLOCK_SKEW_MS`] from the faucet's clock is refused; a captured
//! request replayed within that window asks for a grant into the signer's own account, which
//! it already has or gets once.
//!
//! The faucet remembers nothing of its own: before every decision it catches up an in-memory
//! projection of the stream (with its treasury key as the only treasury) and derives from the
//! applied `Mint` entries of that treasury whose memo is [`FAUCET_MEMO`] both who was granted
//! and when (the rate window), so a restarted faucet, or a second one sharing the treasury,
//! decides the same. A grant is published with the treasury subject's last sequence it decided
//! on as the expected one: if another grant landed meanwhile the server refuses the publish
//! and the faucet decides again, so two faucets never grant one identity twice.
//!
//! - [`FaucetPolicy`], [`FaucetBook`], [`open_request`], [`decide`]: the pure policy, no I/O.
//! - [`serve`]: the service answering on [`FAUCET_SUBJECT`].
//! - [`request_grant`]: what a node calls to ask.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entry::{self, AccountKey, EntryBody, EntryError};
use super::projection::{Projection, ProjectionError};
use super::stream::{LedgerStream, StoredMessage, StreamError, next_entry};
use crate::identity::{Identity, verify_signature};
use crate::messages::Vibe;
use crate::messages::codec::{self, CodecError};

/// The NATS subject the faucet answers requests on.
pub const FAUCET_SUBJECT: &str = "apn.v1.faucet";
/// Queue group of the faucet's subscription: several faucets share the requests.
pub const FAUCET_QUEUE_GROUP: &str = "apn-faucet";
/// Memo of the faucet's `Mint` entries: what marks a mint as a faucet grant.
pub const FAUCET_MEMO: &str = "faucet";
/// Largest request the faucet reads; anything longer is refused unread.
pub const MAX_REQUEST_BYTES: usize = 512;
/// Largest answer a node reads.
pub const MAX_ANSWER_BYTES: usize = 1024;
/// How far a request's time may be from the faucet's clock, either way.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;
/// The rate window.
pub const HOUR_MS: i64 = 3_600_000;
/// Most grants an hour a policy may allow (bounds the rate window's memory).
pub const MAX_GRANTS_PER_HOUR: u32 = 100_000;
/// How long [`request_grant`] waits for the faucet's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Decisions taken again, at most, when another grant lands on the treasury subject between
/// a decision and its publish.
pub const MAX_GRANT_ATTEMPTS: usize = 8;
/// Longest detail a `BadRequest` refusal carries, in bytes.
const MAX_DETAIL_BYTES: usize = 200;
/// Prepended to a request's bytes before signing (domain separation from other signatures).
const SIGNING_CONTEXT: &[u8] = b"apn.v1.faucet-request\0";

/// How much the faucet gives and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaucetPolicy {
    /// What one grant mints into the asking account.
    pub amount: Vibe,
    /// Most grants in any hour (a sliding window over the grants' stream times).
    pub grants_per_hour: u32,
}

impl FaucetPolicy {
    /// Refuse a policy that cannot grant or would need unbounded memory.
    pub fn validate(&self) -> Result<(), FaucetError> {
        if self.amount.micros() == 0 {
            return Err(FaucetError::Policy("the amount must be more than zero"));
        }
        if self.grants_per_hour == 0 {
            return Err(FaucetError::Policy(
                "grants_per_hour must be at least 1 (leave the faucet off instead)",
            ));
        }
        if self.grants_per_hour > MAX_GRANTS_PER_HOUR {
            return Err(FaucetError::Policy(
                "grants_per_hour is over the limit of 100000",
            ));
        }
        Ok(())
    }
}

/// The signed content of a request: the account asking and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaucetRequest {
    /// The account to credit; it must have signed the request.
    pub account: AccountKey,
    /// The asker's clock, milliseconds since the epoch.
    pub time_ms: i64,
}

/// A request as sent: its exact CBOR bytes and the account's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// CBOR of a [`FaucetRequest`].
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
    /// Ed25519 signature of `SIGNING_CONTEXT ‖ request` by `FaucetRequest::account`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why the faucet did not grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The account already had its grant.
    #[error("this identity already received its faucet grant")]
    AlreadyGranted,
    /// The hour's grants are spent; ask again after `retry_after_ms`.
    #[error("the faucet is rate limited: retry in {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds until a grant frees up.
        retry_after_ms: u64,
    },
    /// The request is unreadable, too large, not signed by its account, or out of time.
    #[error("bad request: {detail}")]
    BadRequest {
        /// What was wrong (short, for the asker's operator).
        detail: String,
    },
    /// The faucet could not read or write the ledger just now.
    #[error("the faucet cannot reach the ledger; try again later")]
    Unavailable,
}

impl Refusal {
    fn bad(detail: impl std::fmt::Display) -> Self {
        let mut detail = detail.to_string();
        if detail.len() > MAX_DETAIL_BYTES {
            let mut end = MAX_DETAIL_BYTES;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        Refusal::BadRequest { detail }
    }

    /// A short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::AlreadyGranted => "already_granted",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::BadRequest { .. } => "bad_request",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// The faucet's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FaucetAnswer {
    /// The grant was minted.
    Granted {
        /// The `Mint` entry's stream sequence.
        sequence: u64,
        /// The amount minted.
        amount: Vibe,
    },
    /// No grant.
    Refused {
        /// Why.
        #[serde(flatten)]
        reason: Refusal,
    },
}

/// The faucet could not run, or a node could not ask it.
#[derive(Debug, thiserror::Error)]
pub enum FaucetError {
    /// The policy cannot be served.
    #[error("faucet policy: {0}")]
    Policy(&'static str),
    /// The ledger stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The faucet's projection failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// A grant entry could not be signed.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// A request or answer could not be encoded or decoded.
    #[error("faucet message: {0}")]
    Codec(#[from] CodecError),
    /// Subscribing to or talking over NATS failed.
    #[error("faucet NATS: {0}")]
    Nats(String),
    /// Nobody answers on [`FAUCET_SUBJECT`]: no faucet runs on this ledger.
    #[error("no faucet answers on {FAUCET_SUBJECT}")]
    NoFaucet,
    /// The faucet did not answer within [`REQUEST_TIMEOUT`].
    #[error("the faucet did not answer within {REQUEST_TIMEOUT:?}")]
    TimedOut,
    /// The faucet's answer was unreadable.
    #[error("unreadable faucet answer: {0}")]
    Answer(String),
    /// The subscription ended (the connection was closed).
    #[error("the faucet's subscription ended")]
    Closed,
}

/// Sign a request for `identity`'s account at `time_ms`.
pub fn sign_request(identity: &Identity, time_ms: i64) -> Result<Vec<u8>, CodecError> {
    let request = codec::encode(&FaucetRequest {
        account: identity.public_key(),
        time_ms,
    })?;
    let signature = identity.sign(&signing_input(&request));
    codec::encode(&SignedRequest { request, signature })
}

/// Read and verify a request at the faucet's time `now_ms`: size, shape, signature by the
/// account it names, time within [`MAX_CLOCK_SKEW_MS`]. Returns the account to credit.
pub fn open_request(bytes: &[u8], now_ms: i64) -> Result<AccountKey, Refusal> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(Refusal::bad(format!(
            "request of {} bytes is over the {MAX_REQUEST_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let signed: SignedRequest = codec::decode(bytes, MAX_REQUEST_BYTES).map_err(Refusal::bad)?;
    let request: FaucetRequest =
        codec::decode(&signed.request, MAX_REQUEST_BYTES).map_err(Refusal::bad)?;
    if !verify_signature(
        &request.account,
        &signing_input(&signed.request),
        &signed.signature,
    ) {
        return Err(Refusal::bad("the signature is not the account's"));
    }
    if request.time_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS.unsigned_abs() {
        return Err(Refusal::bad(format!(
            "the request's time is more than {} s from the faucet's clock",
            MAX_CLOCK_SKEW_MS / 1000
        )));
    }
    Ok(request.account)
}

fn signing_input(request: &[u8]) -> Vec<u8> {
    let mut input = SIGNING_CONTEXT.to_vec();
    input.extend_from_slice(request);
    input
}

/// What the faucet knows of its past grants: who got one, and when the latest ones were
/// (at most `grants_per_hour` times are kept: only they can rate limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaucetBook {
    granted: HashSet<AccountKey>,
    recent: VecDeque<i64>,
    window: usize,
}

impl FaucetBook {
    /// An empty book for `policy`.
    pub fn new(policy: &FaucetPolicy) -> Self {
        let window =
            usize::try_from(policy.grants_per_hour.min(MAX_GRANTS_PER_HOUR)).unwrap_or(usize::MAX);
        FaucetBook {
            granted: HashSet::new(),
            recent: VecDeque::with_capacity(window),
            window,
        }
    }

    /// Record a grant to `to` at (stream) time `time_ms`.
    pub fn record(&mut self, to: AccountKey, time_ms: i64) {
        self.granted.insert(to);
        if self.window == 0 {
            return;
        }
        // Keep the times sorted (stream times only go forward, but a clock may step back).
        let at = self.recent.partition_point(|t| *t <= time_ms);
        self.recent.insert(at, time_ms);
        while self.recent.len() > self.window {
            self.recent.pop_front();
        }
    }

    /// Whether `account` had its grant.
    pub fn was_granted(&self, account: &AccountKey) -> bool {
        self.granted.contains(account)
    }

    /// How many accounts had their grant.
    pub fn granted(&self) -> usize {
        self.granted.len()
    }

    /// Whether `account` may have a grant now (`now_ms`, the faucet's clock).
    pub fn decide(&self, account: &AccountKey, now_ms: i64) -> Result<(), Refusal> {
        if self.granted.contains(account) {
            return Err(Refusal::AlreadyGranted);
        }
        if self.window == 0 {
            return Err(Refusal::RateLimited {
                retry_after_ms: HOUR_MS.unsigned_abs(),
            });
        }
        if self.recent.len() >= self.window
            && let Some(oldest) = self.recent.front()
        {
            // The window's oldest kept grant frees its slot an hour after it was made.
            let frees_at = oldest.saturating_add(HOUR_MS);
            if frees_at > now_ms {
                return Err(Refusal::RateLimited {
                    retry_after_ms: frees_at.abs_diff(now_ms),
                });
            }
        }
        Ok(())
    }
}

/// The whole decision on request `bytes` at `now_ms`: the account to credit, or why not.
pub fn decide(book: &FaucetBook, bytes: &[u8], now_ms: i64) -> Result<AccountKey, Refusal> {
    let account = open_request(bytes, now_ms)?;
    book.decide(&account, now_ms)?;
    Ok(account)
}

/// The faucet's view of the ledger: a projection of the stream and the book it derives.
struct Ledger {
    stream: LedgerStream,
    jetstream: jetstream::Context,
    treasury: Identity,
    treasury_subject: String,
    projection: Projection,
    book: FaucetBook,
    policy: FaucetPolicy,
}

impl Ledger {
    /// Read every message after the projection's position up to the stream's last sequence,
    /// apply them, and record the faucet grants among the applied ones.
    async fn catch_up(&mut self) -> Result<(), FaucetError> {
        const BATCH: usize = 256;
        let target = self.stream.last_stream_sequence().await?;
        if self.projection.position() >= target {
            return Ok(());
        }
        let messages = self
            .stream
            .read_from(self.projection.position() + 1)
            .await?;
        futures::pin_mut!(messages);
        let mut batch = Vec::with_capacity(BATCH);
        let mut reached = self.projection.position();
        while reached < target {
            let message = next_entry(&mut messages).await?;
            reached = message.sequence;
            batch.push(message);
            if batch.len() == BATCH || reached >= target {
                self.projection.apply(&batch)?;
                for message in &batch {
                    self.observe(message)?;
                }
                batch.clear();
            }
        }
        Ok(())
    }

    /// Record `message` in the book if it is an applied faucet grant of this treasury.
    fn observe(&mut self, message: &StoredMessage) -> Result<(), FaucetError> {
        if message.subject != self.treasury_subject {
            return Ok(());
        }
        if self.projection.verdict(message.sequence)?.is_some() {
            return Ok(());
        }
        if let Ok(entry) = entry::open(&message.payload)
            && let EntryBody::Mint { to, memo, .. } = entry.body
            && memo == FAUCET_MEMO
        {
            self.book.record(to, message.time_ms);
        }
        Ok(())
    }

    /// Answer one request.
    async fn answer(&mut self, bytes: &[u8]) -> FaucetAnswer {
        let refused = |reason| FaucetAnswer::Refused { reason };
        let account = match open_request(bytes, now_ms()) {
            Ok(account) => account,
            Err(reason) => return refused(reason),
        };
        for attempt in 1..=MAX_GRANT_ATTEMPTS {
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "faucet cannot catch up with the ledger");
                return refused(Refusal::Unavailable);
            }
            if let Err(reason) = self.book.decide(&account, now_ms()) {
                return refused(reason);
            }
            match self.publish_grant(account).await {
                Ok(Some(sequence)) => {
                    // The book learns of it from the stream at the next catch-up.
                    return FaucetAnswer::Granted {
                        sequence,
                        amount: self.policy.amount,
                    };
                }
                Ok(None) => {
                    tracing::debug!(attempt, "treasury subject moved; deciding again");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "faucet grant not published");
                    return refused(Refusal::Unavailable);
                }
            }
        }
        tracing::warn!("faucet gave up: the treasury subject keeps moving");
        refused(Refusal::Unavailable)
    }

    /// Publish a grant to `to` after the treasury subject's last message as projected.
    /// `Ok(None)`: the subject moved since (another grant or mint): decide again.
    async fn publish_grant(&mut self, to: AccountKey) -> Result<Option<u64>, FaucetError> {
        let prev = self
            .projection
            .state()
            .last_sequence(&self.treasury.public_key());
        let id = Uuid::new_v4();
        let body = EntryBody::Mint {
            to,
            amount: self.policy.amount,
            memo: FAUCET_MEMO.to_string(),
        };
        let bytes = entry::sign(&self.treasury, id, prev, body)?;
        let publish = PublishMessage::build()
            .payload(bytes.into())
            .message_id(id.to_string())
            .expected_last_subject_sequence(prev);
        let acked = match self
            .jetstream
            .send_publish(self.treasury_subject.clone(), publish)
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(StreamError::Publish(e.to_string()).into()),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Run the faucet: answer requests on [`FAUCET_SUBJECT`] (queue group
/// [`FAUCET_QUEUE_GROUP`]) by minting `policy.amount` as `treasury` into each new asking
/// identity, within `policy.grants_per_hour`. Past grants are read from `stream` at start and
/// before every decision. Returns only when the policy is invalid, the first catch-up or the
/// subscription fails, or the subscription ends; a failure while answering is the answer
/// `Unavailable` and the faucet goes on.
pub async fn serve(
    client: async_nats::Client,
    stream: LedgerStream,
    treasury: Identity,
    policy: FaucetPolicy,
) -> Result<(), FaucetError> {
    policy.validate()?;
    let treasury_key = treasury.public_key();
    let mut ledger = Ledger {
        stream,
        jetstream: jetstream::new(client.clone()),
        treasury_subject: entry::subject_of(&treasury_key),
        projection: Projection::open_in_memory(&[treasury_key])?,
        treasury,
        book: FaucetBook::new(&policy),
        policy,
    };
    ledger.catch_up().await?;
    let mut requests = client
        .queue_subscribe(FAUCET_SUBJECT, FAUCET_QUEUE_GROUP.to_string())
        .await
        .map_err(|e| FaucetError::Nats(e.to_string()))?;
    tracing::info!(
        treasury = %hex::encode(treasury_key),
        amount = %policy.amount,
        grants_per_hour = policy.grants_per_hour,
        granted_so_far = ledger.book.granted(),
        subject = FAUCET_SUBJECT,
        "faucet serving"
    );
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply.clone() else {
            tracing::debug!("faucet request without a reply subject ignored");
            continue;
        };
        let answer = ledger.answer(&message.payload).await;
        match &answer {
            FaucetAnswer::Granted { sequence, amount } => {
                tracing::info!(sequence, %amount, "faucet granted");
            }
            FaucetAnswer::Refused { reason } => {
                tracing::info!(reason = reason.label(), "faucet refused: {reason}");
            }
        }
        let bytes = match serde_json::to_vec(&answer) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "faucet answer not encoded");
                continue;
            }
        };
        if let Err(e) = client.publish(reply, bytes.into()).await {
            tracing::warn!(error = %e, "faucet answer not sent");
        }
    }
    Err(FaucetError::Closed)
}

/// Ask the faucet for `identity`'s grant and wait (at most [`REQUEST_TIMEOUT`]) for the answer.
pub async fn request_grant(
    client: &async_nats::Client,
    identity: &Identity,
) -> Result<FaucetAnswer, FaucetError> {
    let request = sign_request(identity, now_ms())?;
    let reply = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.request(FAUCET_SUBJECT, request.into()),
    )
    .await
    .map_err(|_| FaucetError::TimedOut)?
    .map_err(|e| match e.kind() {
        async_nats::RequestErrorKind::NoResponders => FaucetError::NoFaucet,
        async_nats::RequestErrorKind::TimedOut => FaucetError::TimedOut,
        _ => FaucetError::Nats(e.to_string()),
    })?;
    if reply.payload.len() > MAX_ANSWER_BYTES {
        return Err(FaucetError::Answer(format!(
            "{} bytes is over the {MAX_ANSWER_BYTES}-byte limit",
            reply.payload.len()
        )));
    }
    serde_json::from_slice(&reply.payload).map_err(|e| FaucetError::Answer(e.to_string()))
}

#[cfg(test)]
mod tests;
