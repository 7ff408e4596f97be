//! `--settlement jetstream`: the soak's nodes pay each other on the network ledger, a stream
//! replicated three ways on a cluster of three nats-servers, funded by a soak treasury. One
//! server is killed and restarted while tasks flow. The audit brings every node's projection
//! file up to the end of the stream (as the node would on its next start) and checks that
//! each matches its own history, that all agree with a projection built from the stream
//! alone on every balance and every escrow, and that balances plus held escrow equal what
//! the treasury minted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use apn::harness::NatsCluster;
use apn::identity::Identity;
use apn::messages::Vibe;
use apn::network_ledger::entry::AccountKey;
use apn::network_ledger::projection::{PROJECTION_FILE, Projection};
use apn::network_ledger::rules::{HoldState, LedgerState};
use apn::network_ledger::stream::{LedgerStream, StreamSettings, catch_up, connect};
use apn::network_ledger::treasury;
use serde_json::{Value, json};

/// Servers in the ledger's cluster, and copies of the stream.
const CLUSTER_SIZE: usize = 3;
/// What the treasury mints into each node before the first task.
const GRANT: Vibe = Vibe::from_whole(10_000);
/// How long a killed ledger server stays down.
const SERVER_DOWN: Duration = Duration::from_secs(2);

/// The network ledger of one soak run.
pub(super) struct SoakLedger {
    cluster: NatsCluster,
    treasury: Identity,
    runtime: tokio::runtime::Runtime,
}

impl SoakLedger {
    /// Start the cluster and mint every node's grant (its key is known before it starts).
    pub(super) fn start(accounts: &[AccountKey]) -> anyhow::Result<SoakLedger> {
        let cluster = NatsCluster::start(CLUSTER_SIZE)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let ledger = SoakLedger {
            cluster,
            treasury: Identity::ephemeral(),
            runtime,
        };
        ledger.runtime.block_on(async {
            let stream = ledger.stream().await?;
            for account in accounts {
                treasury::mint(&stream, &ledger.treasury, *account, GRANT, "soak grant").await?;
            }
            anyhow::Ok(())
        })?;
        Ok(ledger)
    }

    fn urls(&self) -> String {
        self.cluster.urls().join(",")
    }

    async fn stream(&self) -> anyhow::Result<LedgerStream> {
        let client = connect(&self.urls()).await?;
        Ok(LedgerStream::open(client, &self.settings()).await?)
    }

    fn settings(&self) -> StreamSettings {
        StreamSettings {
            replicas: CLUSTER_SIZE,
            ..StreamSettings::default()
        }
    }

    /// The `[settlement]` section of every node's config. A short grace, so escrows of tasks
    /// whose originator died are settled by the clock before the audit.
    pub(super) fn config_section(&self) -> String {
        format!(
            "\n[settlement]\nmode = \"jetstream\"\nurl = \"{}\"\nreplicas = {CLUSTER_SIZE}\n\
             treasury = [\"{}\"]\nhold_grace_s = 2\nhold_wait_ms = 5000\n",
            self.urls(),
            hex::encode(self.treasury.public_key())
        )
    }

    /// Kill one server of the cluster and start it again on its port and store.
    pub(super) fn restart_server(&mut self, index: usize) -> anyhow::Result<()> {
        let server = &mut self.cluster.servers[index % CLUSTER_SIZE];
        server.stop();
        std::thread::sleep(SERVER_DOWN);
        server.restart()?;
        Ok(())
    }

    /// Bring each node's projection file up to the end of the stream and compare them with
    /// a projection of the stream alone. Returns the problems found and a summary.
    pub(super) fn audit(&self, data_dirs: &[PathBuf]) -> anyhow::Result<(Vec<String>, Value)> {
        let treasury = [self.treasury.public_key()];
        self.runtime.block_on(async {
            let stream = self.stream().await?;
            let mut reference = Projection::open_in_memory(&treasury)?;
            catch_up(&stream, &mut reference).await?;
            let mut problems = Vec::new();
            for dir in data_dirs {
                let path = dir.join(PROJECTION_FILE);
                // Opening re-derives the state from the file's history and refuses a file
                // whose balances do not match it.
                let mut projection = Projection::open(&path, &treasury)
                    .with_context(|| format!("opening {}", path.display()))?;
                catch_up(&stream, &mut projection).await?;
                problems.extend(disagreements(
                    &dir.display().to_string(),
                    projection.state(),
                    reference.state(),
                ));
            }
            let state = reference.state();
            if state.circulating() != state.minted() {
                problems.push(format!(
                    "balances plus held escrow are {} micro-VIBE, the treasury minted {}",
                    state.circulating(),
                    state.minted()
                ));
            }
            let count = |wanted: HoldState| {
                state
                    .holds()
                    .values()
                    .filter(|hold| hold.state == wanted)
                    .count()
            };
            let summary = json!({
                "stream_entries": reference.position(),
                "minted_micros": state.minted().to_string(),
                "escrows": {
                    "released": count(HoldState::Released),
                    "claimed": count(HoldState::Claimed),
                    "disputed": count(HoldState::Disputed),
                    "refunded": count(HoldState::Refunded),
                    "held": count(HoldState::Held),
                },
            });
            Ok((problems, summary))
        })
    }
}

/// Where a node's projection differs from the reference: every balance and every escrow.
fn disagreements(name: &str, node: &LedgerState, reference: &LedgerState) -> Vec<String> {
    let mut problems = Vec::new();
    if node.balances() != reference.balances() {
        problems.push(format!("{name}: balances differ from the stream's"));
    }
    if node.holds() != reference.holds() {
        problems.push(format!("{name}: escrows differ from the stream's"));
    }
    problems
}
