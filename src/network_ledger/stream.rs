//! The JetStream side of the network ledger: the stream, appending an account's entries in
//! order, and reading every entry back from a sequence on.
//!
//! The stream is created by the first node that finds it missing: file storage, no delete, no
//! purge, no rollup, so history is only ever appended. An existing stream that allows any of
//! those is refused rather than trusted. An append reads the account's last subject sequence,
//! signs the entry after it, and publishes with `Nats-Expected-Last-Subject-Sequence` and
//! `Nats-Msg-Id`: a concurrent debit or someone's junk on the subject makes the server refuse
//! the publish, and the append signs again after the new last sequence (a retry, never a
//! doubled debit: the id stays the same and JetStream de-duplicates it).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{Config, DiscardPolicy, LastRawMessageErrorKind, StorageType},
};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::entry::{self, AccountKey, EntryBody, EntryError, SUBJECT_PREFIX};
use super::rules::StreamSlot;
use crate::identity::Identity;

/// How often an append signs again after losing its subject sequence to another publish.
pub const MAX_APPEND_ATTEMPTS: usize = 16;
/// Pause before publishing again after a transient failure, times the attempt number.
const TRANSIENT_RETRY: Duration = Duration::from_millis(100);
/// Tries to open the stream before giving up (a fresh cluster elects its leaders first).
pub const OPEN_ATTEMPTS: u32 = 60;
/// Pause between those tries.
pub const OPEN_RETRY: Duration = Duration::from_millis(250);
/// How long the server remembers `Nats-Msg-Id`s for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Connect to the ledger's NATS server, or to any of a cluster's given as a comma-separated
/// list (the client also learns the other members from the server and fails over to them).
pub async fn connect(urls: &str) -> Result<async_nats::Client, StreamError> {
    connect_with(urls, async_nats::ConnectOptions::new()).await
}

/// [`connect`] logged in as the nkey user that is `identity`'s own key (see
/// [`super::permissions`]): a server with per-account permissions lets it publish on its own
/// account subject only.
pub async fn connect_as(
    urls: &str,
    identity: &crate::identity::Identity,
) -> Result<async_nats::Client, StreamError> {
    let seed = super::permissions::nkey_user_seed(identity);
    connect_with(urls, async_nats::ConnectOptions::new().nkey(seed)).await
}

async fn connect_with(
    urls: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, StreamError> {
    let servers = urls
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StreamError::Connect(format!("{urls}: {e}")))?;
    options
        .connect(servers)
        .await
        .map_err(|e| StreamError::Connect(format!("{urls}: {e}")))
}

/// Which stream holds the ledger and how it is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream name (no spaces or dots).
    pub name: String,
    /// Servers holding a copy: 1 for one server, 3 in a cluster.
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name: "APN_LEDGER".into(),
            replicas: 1,
        }
    }
}

/// A JetStream operation on the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The NATS server could not be reached or its URL is malformed.
    #[error("cannot reach the ledger's NATS server {0}")]
    Connect(String),
    /// Creating or looking up the stream failed.
    #[error("ledger stream {name}: {reason}")]
    Stream {
        /// The stream's name.
        name: String,
        /// What the server or client said.
        reason: String,
    },
    /// The stream exists but could lose history: it allows delete, purge or rollup.
    #[error("ledger stream {0} allows delete, purge or rollup: refusing to use it")]
    Mutable(String),
    /// The entry could not be signed (too large).
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The server refused the publish for another reason than a lost sequence.
    #[error("publish refused: {0}")]
    Publish(String),
    /// Every attempt lost its sequence to another publish on the subject.
    #[error("gave up after {MAX_APPEND_ATTEMPTS} attempts: the subject keeps moving")]
    Contended,
    /// Reading the stream failed.
    #[error("reading the ledger stream: {0}")]
    Read(String),
}

/// Where an appended entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The entry's stream sequence.
    pub sequence: u64,
    /// The server had the id already (an earlier attempt got through): stored once.
    pub duplicate: bool,
    /// Publishes it took (more than one when the subject moved under it).
    pub attempts: usize,
}

/// One message read from the stream: where it sits and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The subject it was published on.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// The stream's timestamp, milliseconds since the epoch.
    pub time_ms: i64,
    /// The payload as stored.
    pub payload: Vec<u8>,
}

impl StoredMessage {
    /// The slot the rules judge the message by; `None` when the subject is not an account's.
    pub fn slot(&self) -> Option<StreamSlot> {
        Some(StreamSlot {
            account: entry::account_of_subject(&self.subject)?,
            sequence: self.sequence,
            time_ms: self.time_ms,
        })
    }
}

/// The ledger stream on a NATS server or cluster.
#[derive(Clone)]
pub struct LedgerStream {
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
}

impl std::fmt::Debug for LedgerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerStream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LedgerStream {
    /// Open the ledger stream on `client`'s server, creating it if missing.
    pub async fn open(
        client: async_nats::Client,
        settings: &StreamSettings,
    ) -> Result<Self, StreamError> {
        let jetstream = jetstream::new(client);
        let stream_error = |reason: String| StreamError::Stream {
            name: settings.name.clone(),
            reason,
        };
        let config = Config {
            name: settings.name.clone(),
            subjects: vec![format!("{SUBJECT_PREFIX}>")],
            storage: StorageType::File,
            num_replicas: settings.replicas,
            discard: DiscardPolicy::New,
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size: i32::try_from(entry::MAX_ENTRY_BYTES).unwrap_or(i32::MAX),
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            ..Default::default()
        };
        // A cluster that just started elects its JetStream leaders moments after it accepts
        // clients: retry for a while before calling the server unusable.
        let mut attempt = 0;
        let mut stream = loop {
            attempt += 1;
            match jetstream.get_or_create_stream(config.clone()).await {
                Ok(stream) => break stream,
                Err(e) if attempt < OPEN_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "ledger stream not available yet");
                    tokio::time::sleep(OPEN_RETRY).await;
                }
                Err(e) => return Err(stream_error(e.to_string())),
            }
        };
        let config = &stream
            .info()
            .await
            .map_err(|e| stream_error(e.to_string()))?
            .config;
        if !config.deny_delete || !config.deny_purge || config.allow_rollup {
            return Err(StreamError::Mutable(settings.name.clone()));
        }
        tracing::info!(stream = %settings.name, replicas = settings.replicas, "ledger stream open");
        Ok(LedgerStream {
            jetstream,
            stream,
            name: settings.name.clone(),
        })
    }

    /// The stream sequence of the last message on `account`'s subject (0: none yet).
    pub async fn last_sequence_of(&self, account: &AccountKey) -> Result<u64, StreamError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&entry::subject_of(account))
            .await
        {
            Ok(message) => Ok(message.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(StreamError::Read(e.to_string())),
        }
    }

    /// The sequence of the stream's last message (0: empty).
    pub async fn last_stream_sequence(&self) -> Result<u64, StreamError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| StreamError::Read(e.to_string()))?;
        Ok(info.state.last_sequence)
    }

    /// Append `body` as `signer`'s entry `id`, after the account's last entry. `known_prev`
    /// is the account's last subject sequence if the caller knows it (from its projection),
    /// saving a round trip; when it is stale the server refuses the publish and the append
    /// asks the stream and signs again.
    pub async fn append(
        &self,
        signer: &Identity,
        id: Uuid,
        body: EntryBody,
        known_prev: Option<u64>,
    ) -> Result<Appended, StreamError> {
        let account = signer.public_key();
        let subject = entry::subject_of(&account);
        let mut known_prev = known_prev;
        for attempt in 1..=MAX_APPEND_ATTEMPTS {
            let prev = match known_prev.take() {
                Some(prev) => prev,
                None => self.last_sequence_of(&account).await?,
            };
            let bytes = entry::sign(signer, id, prev, body.clone())?;
            let publish = PublishMessage::build()
                .payload(bytes.into())
                .message_id(id.to_string())
                .expected_last_subject_sequence(prev);
            let acked = match self.jetstream.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => {
                    return Ok(Appended {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                        attempts: attempt,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    tracing::debug!(%id, attempt, "ledger subject moved; signing again");
                }
                // No stream leader for a moment (a cluster electing after a server died), or
                // no answer: publish the same entry again. If the first one was stored, the
                // server recognises its id and answers with the stored sequence.
                Err(e) if is_transient(e.kind()) && attempt < MAX_APPEND_ATTEMPTS => {
                    tracing::debug!(%id, attempt, error = %e, "ledger publish not answered; retrying");
                    known_prev = Some(prev);
                    tokio::time::sleep(TRANSIENT_RETRY.saturating_mul(attempt as u32)).await;
                }
                Err(e) => return Err(StreamError::Publish(e.to_string())),
            }
        }
        Err(StreamError::Contended)
    }

    /// Publish raw bytes on a subject with no expectations: what anyone holding the server's
    /// credentials can do (tests use it to play the hostile account).
    pub async fn publish_unchecked(
        &self,
        subject: &str,
        payload: Vec<u8>,
    ) -> Result<u64, StreamError> {
        let ack = self
            .jetstream
            .publish(subject.to_string(), payload.into())
            .await
            .map_err(|e| StreamError::Publish(e.to_string()))?
            .await
            .map_err(|e| StreamError::Publish(e.to_string()))?;
        Ok(ack.sequence)
    }

    /// The messages from stream sequence `start` to the stream's last one now, at most
    /// `limit` of them, read with a consumer of their own: what a projection whose follower
    /// has stalled (its server died) reads to catch up at once.
    pub async fn read_range(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StreamError> {
        let target = self.last_stream_sequence().await?;
        let mut messages = Vec::new();
        if start > target {
            return Ok(messages);
        }
        let stream = self.read_from(start).await?;
        futures::pin_mut!(stream);
        while messages.len() < limit {
            let message = next_entry(&mut stream).await?;
            let sequence = message.sequence;
            messages.push(message);
            if sequence >= target {
                break;
            }
        }
        Ok(messages)
    }

    /// Every message from stream sequence `start` (1 for all) on, in order, then each new one
    /// as it is stored.
    pub async fn read_from(
        &self,
        start: u64,
    ) -> Result<impl Stream<Item = Result<StoredMessage, StreamError>> + use<>, StreamError> {
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{SUBJECT_PREFIX}>"),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| StreamError::Read(e.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| StreamError::Read(e.to_string()))?;
        Ok(messages.map(|message| {
            let message = message.map_err(|e| StreamError::Read(e.to_string()))?;
            let info = message
                .info()
                .map_err(|e| StreamError::Read(e.to_string()))?;
            let time_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000)
                .map_err(|_| StreamError::Read("timestamp out of range".into()))?;
            Ok(StoredMessage {
                subject: message.subject.to_string(),
                sequence: info.stream_sequence,
                time_ms,
                payload: message.payload.to_vec(),
            })
        }))
    }
}

/// The next message of a read that must go on (the stream's end is known to be ahead), or
/// an error when none comes within [`READ_TIMEOUT`] or the read ends.
pub async fn next_entry<S>(messages: &mut S) -> Result<StoredMessage, StreamError>
where
    S: Stream<Item = Result<StoredMessage, StreamError>> + Unpin,
{
    tokio::time::timeout(READ_TIMEOUT, messages.next())
        .await
        .map_err(|_| StreamError::Read("timed out waiting for the next entry".into()))?
        .ok_or_else(|| StreamError::Read("the stream ended early".into()))?
}

/// A publish that may succeed if simply sent again.
fn is_transient(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::StreamNotFound
            | PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
    )
}

/// How long a catch-up waits for the next message before giving up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Read every message after `projection`'s position up to the stream's last sequence at the
/// time of the call, and apply them in batches.
pub async fn catch_up(
    stream: &LedgerStream,
    projection: &mut super::projection::Projection,
) -> Result<super::projection::BatchOutcome, super::projection::ProjectionError> {
    const BATCH: usize = 256;
    let target = stream.last_stream_sequence().await?;
    let mut total = super::projection::BatchOutcome::default();
    if projection.position() >= target {
        return Ok(total);
    }
    let messages = stream.read_from(projection.position() + 1).await?;
    futures::pin_mut!(messages);
    let mut batch = Vec::with_capacity(BATCH);
    let mut reached = projection.position();
    while reached < target {
        let message = next_entry(&mut messages).await?;
        reached = message.sequence;
        batch.push(message);
        if batch.len() == BATCH || reached >= target {
            let outcome = projection.apply(&batch)?;
            total.holds.extend(outcome.holds);
            total.applied += outcome.applied;
            total.skipped += outcome.skipped;
            total.already_projected += outcome.already_projected;
            total.credits.extend(outcome.credits);
            batch.clear();
        }
    }
    Ok(total)
}
