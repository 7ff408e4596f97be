//! `ledger` on JetStream: settlements per second through the network ledger, on one
//! nats-server (stream R1) and on a three-server cluster (stream R3), each against bare
//! JetStream publishes awaited for their ack on the same servers.
//!
//! One settlement is a `Hold` entry appended by a payer account, then a `Release` of it by
//! the same payer, both judged by a SQLite [`Projection`] in a temporary file (what a node
//! keeps) that follows the stream with `read_from` on a thread of its own (as a node's
//! settler does: its writes block on fsync) and applies whatever has arrived, up to
//! [`PROJECT_BATCH`] messages per transaction. [`PAYERS`] accounts, funded first by a
//! treasury's `Mint`s, run concurrently; each one appends its entries one after the other
//! (JetStream orders an account's entries with `Nats-Expected-Last-Subject-Sequence`, and the
//! payer knows its last sequence from the previous ack, as a node knows it from its
//! projection). The clock starts once the projection has applied the mints and is
//! subscribed, and stops when it has applied the last settlement entry. Only escrows the
//! projection shows released count; a skipped entry fails the bench.
//!
//! The baseline, per server set, is `PAYERS` tasks each publishing one payload the size of a
//! signed entry at a time and awaiting its ack, as many publishes as the settlements make
//! (two per settlement; at least `BASELINE_PER_TASK_MIN` each), on a stream with the ledger stream's settings (file storage, same
//! replicas, limits and duplicate window), without the ledger's headers (`Nats-Msg-Id`, the
//! expected subject sequence). A settlement is two publishes, so half the baseline is the
//! ceiling of the ratio.
//!
//! Figures: `jetstream_publish_ack_per_s` (against bare SQLite one-row inserts, the local
//! ledger's durable write), `jetstream_publish_ack_per_s_r3` (against R1: what replication
//! costs), `settlements_per_s_jetstream_r1` and `settlements_per_s_jetstream_r3` (each
//! against the publish-ack rate of its own server set). How long the payers took to publish
//! alone, the projection's batches, the time spent applying them, and the time the same
//! batches take applied again to an in-memory projection (no file, no fsync) go to stderr.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::harness::{NatsCluster, NatsServer};
use apn::identity::Identity;
use apn::messages::Vibe;
use apn::network_ledger::entry::{self, AccountKey, EntryBody};
use apn::network_ledger::projection::{PROJECTION_FILE, Projection};
use apn::network_ledger::rules::HoldState;
use apn::network_ledger::stream::{
    DUPLICATE_WINDOW, LedgerStream, StoredMessage, StreamSettings, catch_up, connect,
};
use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::emit;

/// Payer accounts settling concurrently (and publishing tasks in the baseline).
const PAYERS: usize = 8;
/// Messages applied to the projection in one transaction at most (as a node's settler).
const PROJECT_BATCH: usize = 256;
/// The baseline's stream and its subjects' prefix.
const BARE_STREAM: &str = "APN_BENCH_BARE";
const BARE_SUBJECT_PREFIX: &str = "apn.bench.bare.";
/// Fewest publishes per task in the baseline (a `--quick` run's few are too short to time).
const BASELINE_PER_TASK_MIN: usize = 500;
/// Bound on one measured phase: nothing here may hang.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the projection waits for the next entry before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries to create the baseline stream, and pause between them (a fresh cluster elects).
const CREATE_ATTEMPTS: u32 = 60;
const CREATE_RETRY: Duration = Duration::from_millis(250);
/// Each payer's funds, and the amount of each escrow.
const FUNDS: Vibe = Vibe::from_whole(1_000);
const ESCROW: Vibe = Vibe::from_micros(10);
/// How far ahead an escrow's deadline is (well inside the rules' maximum).
const DEADLINE_AHEAD_MS: i64 = 3_600_000;

/// The two rates measured on one server set.
struct Rates {
    publish_ack: f64,
    settlements: f64,
}

/// Measure on one server (R1), then on a three-server cluster (R3), and emit the figures.
/// `sqlite_insert_rate` is the bare SQLite one-row insert rate measured earlier in the run.
pub(crate) async fn run(quick: bool, sqlite_insert_rate: f64) -> anyhow::Result<()> {
    let settlements = if quick { 200 } else { 2000 };
    let per_payer = settlements / PAYERS;

    let server = NatsServer::start_jetstream()?;
    let r1 = measure(&server.url(), 1, per_payer).await?;
    drop(server);
    let cluster = NatsCluster::start(3)?;
    let r3 = measure(&cluster.urls().join(","), 3, per_payer).await?;
    drop(cluster);

    emit(
        "ledger",
        "jetstream_publish_ack_per_s",
        r1.publish_ack,
        "publishes/s",
        "sqlite_single_row_inserts_per_s",
        sqlite_insert_rate,
    );
    emit(
        "ledger",
        "settlements_per_s_jetstream_r1",
        r1.settlements,
        "settlements/s",
        "jetstream_publish_ack_per_s",
        r1.publish_ack,
    );
    emit(
        "ledger",
        "jetstream_publish_ack_per_s_r3",
        r3.publish_ack,
        "publishes/s",
        "jetstream_publish_ack_per_s",
        r1.publish_ack,
    );
    emit(
        "ledger",
        "settlements_per_s_jetstream_r3",
        r3.settlements,
        "settlements/s",
        "jetstream_publish_ack_per_s_r3",
        r3.publish_ack,
    );
    Ok(())
}

/// Both rates on the servers at `urls` (comma-separated), streams with `replicas` copies.
async fn measure(urls: &str, replicas: usize, per_payer: usize) -> anyhow::Result<Rates> {
    let client = connect(urls).await?;
    let settings = StreamSettings {
        replicas,
        ..StreamSettings::default()
    };
    // Opening retries until a fresh cluster has elected its leaders.
    let ledger = LedgerStream::open(client.clone(), &settings).await?;
    let publish_ack = tokio::time::timeout(
        PHASE_TIMEOUT,
        publish_ack_rate(client, replicas, (per_payer * 2).max(BASELINE_PER_TASK_MIN)),
    )
    .await
    .context("the publish baseline did not finish in time")??;
    let settlements = settlement_rate(&ledger, replicas, per_payer).await?;
    Ok(Rates {
        publish_ack,
        settlements,
    })
}

/// Bare publishes awaited for their ack: `PAYERS` tasks of `per_task` publishes each.
async fn publish_ack_rate(
    client: async_nats::Client,
    replicas: usize,
    per_task: usize,
) -> anyhow::Result<f64> {
    let jetstream = jetstream::new(client);
    // The ledger stream's settings (see `LedgerStream::open`), on other subjects.
    let config = jetstream::stream::Config {
        name: BARE_STREAM.into(),
        subjects: vec![format!("{BARE_SUBJECT_PREFIX}>")],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size: i32::try_from(entry::MAX_ENTRY_BYTES).unwrap_or(i32::MAX),
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match jetstream.get_or_create_stream(config.clone()).await {
            Ok(_) => break,
            Err(e) if attempt < CREATE_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "bare stream not available yet");
                tokio::time::sleep(CREATE_RETRY).await;
            }
            Err(e) => bail!("cannot create the baseline stream: {e}"),
        }
    }
    // A payload the size of a real settlement entry.
    let payload = entry::sign(
        &Identity::ephemeral(),
        Uuid::new_v4(),
        1,
        hold_body([0; 32]),
    )?;
    // One acked publish before the clock: the stream has a leader and the path is warm.
    jetstream
        .publish(
            format!("{BARE_SUBJECT_PREFIX}warmup"),
            payload.clone().into(),
        )
        .await?
        .await?;

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..PAYERS {
        let (jetstream, payload) = (jetstream.clone(), payload.clone());
        let subject = format!("{BARE_SUBJECT_PREFIX}{task}");
        tasks.spawn(async move {
            for _ in 0..per_task {
                jetstream
                    .publish(subject.clone(), payload.clone().into())
                    .await?
                    .await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    join_all(tasks).await?;
    Ok((PAYERS * per_task) as f64 / started.elapsed().as_secs_f64())
}

/// Settlements per second on `ledger`: `PAYERS` payers of `per_payer` settlements each,
/// counted once the projection has applied them.
async fn settlement_rate(
    ledger: &LedgerStream,
    replicas: usize,
    per_payer: usize,
) -> anyhow::Result<f64> {
    let treasury = Identity::ephemeral();
    let payee = Identity::ephemeral().public_key();
    let payers: Vec<Identity> = (0..PAYERS).map(|_| Identity::ephemeral()).collect();
    let mut treasury_prev = 0;
    for payer in &payers {
        let minted = ledger
            .append(
                &treasury,
                Uuid::new_v4(),
                EntryBody::Mint {
                    to: payer.public_key(),
                    amount: FUNDS,
                    memo: "bench".into(),
                },
                Some(treasury_prev),
            )
            .await?;
        treasury_prev = minted.sequence;
    }
    let dir = tempfile::tempdir()?;
    let mut projection =
        Projection::open(&dir.path().join(PROJECTION_FILE), &[treasury.public_key()])?;
    let funded = catch_up(ledger, &mut projection).await?;
    if funded.applied != PAYERS || funded.skipped != 0 {
        bail!("funding the payers: {funded:?}");
    }
    // For stderr: the same batches applied again in memory (no file, no fsync) afterwards.
    let mut in_memory = Projection::open_in_memory(&[treasury.public_key()])?;
    catch_up(ledger, &mut in_memory).await?;

    // The projection follows the stream on a thread of its own, as in a node.
    let expected = PAYERS * per_payer * 2;
    let arbiter = actix_rt::Arbiter::new();
    let (subscribed_sender, subscribed) = oneshot::channel();
    let (done_sender, done) = oneshot::channel();
    let follower_ledger = ledger.clone();
    arbiter.spawn(async move {
        let followed = follow(follower_ledger, projection, expected, subscribed_sender).await;
        let _ = done_sender.send(followed);
    });
    let followed = async {
        done.await
            .context("the projection's thread stopped")?
            .context("following the ledger stream")
    };
    if subscribed.await.is_err() {
        // The follower ended before subscribing: its result says why.
        followed.await?;
        bail!("the projection never subscribed to the stream");
    }

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for payer in payers.iter().cloned() {
        tasks.spawn(settle(ledger.clone(), payer, payee, per_payer));
    }
    tokio::time::timeout(PHASE_TIMEOUT, join_all(tasks))
        .await
        .context("the payers did not finish in time")??;
    let published = started.elapsed();
    let followed = tokio::time::timeout(PHASE_TIMEOUT, followed)
        .await
        .context("the projection did not finish in time")??;
    arbiter.stop();
    let elapsed = followed.finished.duration_since(started);

    if followed.skipped > 0 {
        bail!(
            "{} of {} settlement entries were skipped by the ledger rules",
            followed.skipped,
            followed.applied + followed.skipped
        );
    }
    let payer_keys: HashSet<AccountKey> = payers.iter().map(Identity::public_key).collect();
    let settled = followed
        .projection
        .state()
        .holds()
        .values()
        .filter(|hold| payer_keys.contains(&hold.payer) && hold.state == HoldState::Released)
        .count();
    if settled != PAYERS * per_payer {
        bail!(
            "{settled} escrows released of {} settlements",
            PAYERS * per_payer
        );
    }
    let in_memory_since = Instant::now();
    for batch in &followed.batches {
        in_memory.apply(batch)?;
    }
    let in_memory_applying = in_memory_since.elapsed();
    let batches = followed.batches.len();
    eprintln!(
        "ledger R{replicas}: {settled} settlements; payers done publishing after {:.0} ms, \
         projection done after {:.0} ms in {batches} batches ({:.1} messages each), \
         {:.0} ms of it applying (the same batches in memory: {:.0} ms)",
        published.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1000.0,
        (followed.applied as f64) / (batches.max(1) as f64),
        followed.applying.as_secs_f64() * 1000.0,
        in_memory_applying.as_secs_f64() * 1000.0,
    );
    Ok(settled as f64 / elapsed.as_secs_f64())
}

/// One payer's settlements, one entry at a time; each names the sequence of the one before.
async fn settle(
    ledger: LedgerStream,
    payer: Identity,
    payee: AccountKey,
    settlements: usize,
) -> anyhow::Result<()> {
    // The payer has written nothing yet (its funds are on the treasury's subject).
    let mut prev = 0;
    for _ in 0..settlements {
        let body = hold_body(payee);
        let hold = match &body {
            EntryBody::Hold { hold, .. } => *hold,
            _ => bail!("hold_body made no hold"),
        };
        let held = ledger
            .append(&payer, Uuid::new_v4(), body, Some(prev))
            .await?;
        let released = ledger
            .append(
                &payer,
                Uuid::new_v4(),
                EntryBody::Release { hold },
                Some(held.sequence),
            )
            .await?;
        prev = released.sequence;
    }
    Ok(())
}

/// A fresh escrow of `ESCROW` for `payee`, due in an hour.
fn hold_body(payee: AccountKey) -> EntryBody {
    EntryBody::Hold {
        hold: Uuid::new_v4(),
        payee,
        amount: ESCROW,
        task: Uuid::new_v4(),
        deadline_ms: chrono::Utc::now().timestamp_millis() + DEADLINE_AHEAD_MS,
    }
}

/// What the projection did while following.
struct Followed {
    projection: Projection,
    /// When the last expected entry was applied.
    finished: Instant,
    /// Time spent in `Projection::apply` (verifying, judging, writing, fsync).
    applying: Duration,
    applied: usize,
    skipped: usize,
    /// The batches as applied, to apply again without the file.
    batches: Vec<Vec<StoredMessage>>,
}

/// Follow the stream from after the projection's position until `expected` more messages are
/// judged, applying whatever has arrived (up to `PROJECT_BATCH`) in one transaction.
async fn follow(
    ledger: LedgerStream,
    mut projection: Projection,
    expected: usize,
    subscribed: oneshot::Sender<()>,
) -> anyhow::Result<Followed> {
    let messages = ledger.read_from(projection.position() + 1).await?;
    let _ = subscribed.send(());
    let mut chunks = std::pin::pin!(messages.ready_chunks(PROJECT_BATCH));
    let (mut applied, mut skipped, mut batches) = (0, 0, Vec::new());
    let mut applying = Duration::ZERO;
    while applied + skipped < expected {
        let chunk = tokio::time::timeout(READ_TIMEOUT, chunks.next())
            .await
            .with_context(|| format!("no ledger entry within {READ_TIMEOUT:?}"))?
            .context("the ledger stream ended")?;
        let batch = chunk
            .into_iter()
            .collect::<Result<Vec<StoredMessage>, _>>()?;
        let applying_since = Instant::now();
        let outcome = projection.apply(&batch)?;
        applying += applying_since.elapsed();
        applied += outcome.applied;
        skipped += outcome.skipped;
        batches.push(batch);
    }
    Ok(Followed {
        projection,
        finished: Instant::now(),
        applying,
        applied,
        skipped,
        batches,
    })
}

/// Wait for every task; the first error (or panic) wins.
async fn join_all(mut tasks: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}
