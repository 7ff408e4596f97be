//! Wiring: starts one node's actors in dependency order, each with its mailbox size, and
//! hands each role the `Recipient`s it needs (its `*Links`). This is the only file that
//! names concrete actors; roles know each other only through `protocol/` messages.
//!
//! ```text
//!                   ┌──────────── Inbound (verified envelopes) ─────────────┐
//!                   ▼              ▼             ▼            ▼           ▼
//!  PeerManager ─► Bidder    TaskDistributor  TaskExecutor  PaymentCourier  ResourceAccounting
//!  (swarm task,     │ReserveSlot  │ │ RunLocal ▲ │ LocalExecution│           │ PayPeer
//!   relay task)     └────────────►│ └──────────┘ │               │           │
//!      ▲  SendTo, Broadcast,      │ escrow, journal, reputation  ▼           ▼
//!      └─ GetPeers, NoiseKey ◄────┤ ──────────────────────► SettlementEngine (SQLite)
//!                                 └─► ExecutionRelay (streams)    ▲ RecordCounterparty
//!  every role ──► PanelHub (deltas, transaction log) ──► websocket clients
//! ```
//!
//! `start_node` must run inside an actix `System`. Several nodes can run in one process
//! (tests, `apn demo`): each has its own data dir, ports and actors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use libp2p::Multiaddr;

use super::accountant::ResourceAccounting;
use super::bidder::{Bidder, BidderLinks};
use super::courier::{CourierLinks, PaymentCourier};
use super::distributor::{DistributorLinks, TaskDistributor};
use super::executor::{ExecutorLinks, TaskExecutor};
use super::network_settler::NetworkSettler;
use super::panel_hub::PanelHub;
use super::peer_manager::{self, PeerManager, Routes, Transports};
use super::relay::ExecutionRelay;
use super::settler::{SettlementEngine, start_settlement_engine};
use crate::config::SettlementMode;
use crate::config::{Config, ConfigError};
use crate::identity::{Identity, IdentityError};
use crate::mesh::relay::{RelaySettings, spawn_relay};
use crate::mesh::swarm::{SwarmSettings, spawn_swarm};
use crate::mesh::{MeshError, MeshEvent};
use crate::metrics::NetMetrics;
use crate::protocol::ledger::{
    AcceptPayment, ConfirmDelivery, GetBalance, HoldEscrow, PayPeer, RefundEscrow, ReleaseEscrow,
    TakeDuePayments,
};
use crate::protocol::panel::PanelSender;

/// How long start-up waits for the swarm to report its listen addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration breaks a rule, or its HTTP bind address does not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node's keys in the data dir cannot be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The swarm could not start, or stopped before reporting a listen address.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The SQLite ledger in the data dir could not be opened.
    #[error("the ledger cannot start: {0}")]
    Ledger(String),
    /// The execution relay's SQLite log store in the data dir could not be opened.
    #[error("the execution log store cannot open: {0}")]
    LogStore(String),
    /// The transaction log's SQLite store in the data dir could not be opened.
    #[error("the transaction log cannot open: {0}")]
    TransactionLog(#[from] crate::transaction_log::TransactionStoreError),
    /// The panel's HTTP server could not bind or start.
    #[error("the HTTP server cannot start: {0}")]
    Http(String),
    /// The swarm reported no listen address within `LISTEN_TIMEOUT` (the value is carried).
    #[error("the swarm reported no listen address within {0:?}")]
    NoListenAddress(Duration),
    /// The `relay.credentials` file could not be read or parsed.
    #[error("config key 'relay.credentials': {0}")]
    RelayCredentials(String),
}

/// Everything outside code needs to talk to a running node. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    /// The node's keys and ids.
    pub identity: Identity,
    /// The configuration the node started with.
    pub config: Arc<Config>,
    /// The node's network counters, shared by its roles and read by `/metrics`.
    pub metrics: Arc<NetMetrics>,
    /// The peer manager: swarm, relay client, peer table; the node's only door to the network.
    pub peer_manager: Addr<PeerManager>,
    /// The distributor: creates, lists and cancels this node's task attempts.
    pub distributor: Addr<TaskDistributor>,
    /// The executor: runs tasks for peers and for this node.
    pub executor: Addr<TaskExecutor>,
    /// The execution relay: history and live stream of this node's tasks' runs.
    pub relay: Addr<ExecutionRelay>,
    /// The settlement engine: the SQLite ledger (balance, escrows, reputation, task journal).
    /// In settlement mode `jetstream` it keeps reputation and the journal; money is on the
    /// network settler.
    pub settler: Addr<SettlementEngine>,
    /// The network settler, in settlement mode `jetstream`.
    pub network_settler: Option<Addr<NetworkSettler>>,
    /// Whoever answers for this node's balance: the settlement engine or the network settler.
    pub balance: Recipient<GetBalance>,
    /// The accountant: bytes and compute this node gives the mesh.
    pub accountant: Addr<ResourceAccounting>,
    /// The panel hub: live deltas for websocket clients and the transaction log.
    pub panel_hub: Addr<PanelHub>,
    /// When the node finished starting its actors; the status API's uptime counts from it.
    pub started_at: DateTime<Utc>,
    /// The bound HTTP address, when the panel is on.
    pub http_addr: Option<SocketAddr>,
    /// libp2p listen addresses at start (empty in relay-only mode).
    pub listen_addrs: Vec<Multiaddr>,
    /// The node's data directory (keys, ledger, API token, scratch dirs).
    pub data_dir: PathBuf,
    http_server: Option<actix_web::dev::ServerHandle>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node_id", self.identity.node_id())
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// The node's API token (`api.token` in its data dir, created at start when the panel is
    /// on): what a client sends as `Authorization: Bearer <token>`.
    pub fn api_token(&self) -> Option<String> {
        crate::client::ApiClient::token_in(&self.data_dir)
    }

    /// The URL that logs a browser into the panel (`http://<addr>/?token=…`), when it is on.
    pub fn login_url(&self) -> Option<String> {
        Some(crate::web::login_url(self.http_addr?, &self.api_token()?))
    }

    /// A dialable address of this node (`<listen addr>/p2p/<peer id>`), for bootstrapping
    /// others.
    pub fn dial_address(&self) -> Option<Multiaddr> {
        let address = self.listen_addrs.first()?.clone();
        Some(address.with(libp2p::multiaddr::Protocol::P2p(self.identity.peer_id())))
    }

    /// Stop the node: HTTP server, transports (connections closed, relay drained), actors.
    /// The ledger is a SQLite database in WAL mode whose every settlement commits whole, so
    /// nothing is left to flush once its actor stops; the transaction log's writer is
    /// flushed.
    pub async fn shutdown(self) {
        if let Some(server) = &self.http_server {
            server.stop(true).await;
        }
        // Runs for peers stop with the node (their process groups are killed).
        let _ = self.executor.send(super::executor::CancelAllRuns).await;
        if let Err(e) = self.peer_manager.send(peer_manager::Shutdown).await {
            tracing::debug!(error = %e, "peer manager already stopped");
        }
        // The transaction log's last entries reach the disk before the node is gone.
        if let Err(e) = self
            .panel_hub
            .send(super::panel_hub::FlushTransactions)
            .await
        {
            tracing::debug!(error = %e, "panel hub already stopped");
        }
        tracing::info!(node_id = %self.identity.node_id(), "node stopped");
    }
}

/// Mailbox sizes, one per role (actix's default is 16). What may be lost (panel deltas, log
/// lines, byte counts) is handed over with `try_send` and counted when a mailbox is full
/// (`apn_role_drops_total`); assignments, results, payments and receipts go with
/// `do_send`, which a full mailbox never refuses (`peer_manager::must_deliver`).
pub const PEER_MANAGER_MAILBOX: usize = crate::mesh::MESH_EVENTS_MAX;
/// Mailbox of the task distributor (API requests, bids, execution streams, local updates).
pub const DISTRIBUTOR_MAILBOX: usize = 4096;
/// Mailbox of the bidder (task requests from peers).
pub const BIDDER_MAILBOX: usize = 1024;
/// Mailbox of the task executor (assignments, repo chunks, cancels, slot reservations).
pub const EXECUTOR_MAILBOX: usize = 1024;
/// Mailbox of the execution relay (updates of this node's tasks, subscriptions, log reads).
pub const RELAY_MAILBOX: usize = 4096;
/// Mailbox of the resource accountant (one byte count per transport frame).
pub const ACCOUNTANT_MAILBOX: usize = 4096;
/// Mailbox of the payment courier (payments and receipts from peers).
pub const COURIER_MAILBOX: usize = 1024;
/// Mailbox of the panel hub (panel events from every role).
pub const PANEL_HUB_MAILBOX: usize = 4096;
/// Mailbox of the settlement engine and of the network settler (holds, releases, payments,
/// escrow checks and commits): room for every concurrent caller, so writes can be grouped.
pub const SETTLER_MAILBOX: usize = 4096;

/// Who answers for money: the local settlement engine, or the network settler.
struct MoneyLinks {
    balance: Recipient<GetBalance>,
    hold: Recipient<HoldEscrow>,
    release: Recipient<ReleaseEscrow>,
    refund: Recipient<RefundEscrow>,
    pay: Recipient<PayPeer>,
    due: Recipient<TakeDuePayments>,
    accept: Recipient<AcceptPayment>,
    confirm: Recipient<ConfirmDelivery>,
    escrow: Option<super::executor::EscrowLinks>,
}

impl MoneyLinks {
    fn of<A>(settler: &Addr<A>) -> Self
    where
        A: Actor
            + Handler<GetBalance>
            + Handler<HoldEscrow>
            + Handler<ReleaseEscrow>
            + Handler<RefundEscrow>
            + Handler<PayPeer>
            + Handler<TakeDuePayments>
            + Handler<AcceptPayment>
            + Handler<ConfirmDelivery>,
        A::Context: actix::dev::ToEnvelope<A, GetBalance>
            + actix::dev::ToEnvelope<A, HoldEscrow>
            + actix::dev::ToEnvelope<A, ReleaseEscrow>
            + actix::dev::ToEnvelope<A, RefundEscrow>
            + actix::dev::ToEnvelope<A, PayPeer>
            + actix::dev::ToEnvelope<A, TakeDuePayments>
            + actix::dev::ToEnvelope<A, AcceptPayment>
            + actix::dev::ToEnvelope<A, ConfirmDelivery>,
    {
        MoneyLinks {
            balance: settler.clone().recipient(),
            hold: settler.clone().recipient(),
            release: settler.clone().recipient(),
            refund: settler.clone().recipient(),
            pay: settler.clone().recipient(),
            due: settler.clone().recipient(),
            accept: settler.clone().recipient(),
            confirm: settler.clone().recipient(),
            escrow: None,
        }
    }
}

/// Start `actor` with a mailbox of `capacity` messages.
fn start_with_mailbox<A>(actor: A, capacity: usize) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    let mut context = Context::new();
    context.set_mailbox_capacity(capacity);
    context.run(actor)
}

/// Start a node with this configuration. Must run inside an actix `System`.
pub async fn start_node(config: Config) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let config = Arc::new(config);
    let data_dir = config.node.data_dir.clone();
    let identity = Identity::load_or_create(&data_dir)?;
    let metrics = Arc::new(NetMetrics::default());
    if !config.executor.keep_workspaces {
        remove_leftovers(&data_dir);
    }

    // The peer manager and the distributor are addressed before they start: the roles they
    // serve need their addresses, and they need the roles'.
    let mut peer_manager_context = Context::<PeerManager>::new();
    peer_manager_context.set_mailbox_capacity(PEER_MANAGER_MAILBOX);
    let peer_manager_address = peer_manager_context.address();
    let mut distributor_context = Context::<TaskDistributor>::new();
    distributor_context.set_mailbox_capacity(DISTRIBUTOR_MAILBOX);
    let distributor_address = distributor_context.address();

    let ledger_path = data_dir.join(crate::ledger::LEDGER_FILE);
    let transactions = crate::transaction_log::TransactionStore::open(
        &data_dir.join(crate::transaction_log::TRANSACTION_LOG_FILE),
        super::panel_hub::TRANSACTION_LOG_MAX,
    )?;
    let panel_hub = start_with_mailbox(
        PanelHub::new(config.http.websocket_clients_max).with_store(transactions),
        PANEL_HUB_MAILBOX,
    );
    let panel = PanelSender::new(panel_hub.clone().recipient(), metrics.clone());
    let jetstream = config.settlement.mode == SettlementMode::Jetstream;
    // On the network ledger only the treasury mints: no local grant.
    let initial_balance = if jetstream {
        crate::messages::Vibe::default()
    } else {
        config.economics.initial_balance
    };
    let settler = start_settlement_engine(
        &ledger_path,
        identity.clone(),
        initial_balance,
        Some(panel.clone()),
    )
    .map_err(|e| NodeError::Ledger(e.to_string()))?;
    let (network_settler, money) = if jetstream {
        let network = NetworkSettler::connect(identity.clone(), &config, &data_dir)
            .await
            .map_err(|e| NodeError::Ledger(e.to_string()))?
            .with_panel(panel.clone())
            .start_own_arbiter();
        let mut money = MoneyLinks::of(&network);
        money.escrow = Some(super::executor::EscrowLinks {
            check: network.clone().recipient(),
            commit: network.clone().recipient(),
        });
        (Some(network), money)
    } else {
        (None, MoneyLinks::of(&settler))
    };
    let accountant = ResourceAccounting::new(
        identity.clone(),
        config.economics.clone(),
        config.resources.clone(),
        Some(money.pay.clone()),
        Some(peer_manager_address.clone().recipient()),
        Some(panel.clone()),
    );
    // Contribution records are checked against the local ledger, which holds the payments
    // only in settlement mode `local` (see `accountant`'s module docs).
    let accountant = if jetstream {
        accountant
    } else {
        accountant.with_contributions(super::accountant::ContributionLinks {
            history: settler.clone().recipient(),
            journal: settler.clone().recipient(),
            metrics: metrics.clone(),
        })
    };
    let accountant = start_with_mailbox(accountant, ACCOUNTANT_MAILBOX);
    let relay_role = start_with_mailbox(
        ExecutionRelay::with_store(
            Some(panel.clone()),
            &data_dir.join(super::relay::LOG_STORE_FILE),
        )
        .map_err(|e| NodeError::LogStore(e.to_string()))?,
        RELAY_MAILBOX,
    );
    let executor = start_with_mailbox(
        TaskExecutor::new(
            identity.clone(),
            config.clone(),
            metrics.clone(),
            ExecutorLinks {
                send: peer_manager_address.clone().recipient(),
                noise_key: peer_manager_address.clone().recipient(),
                free_slots: peer_manager_address.clone().recipient(),
                local_updates: distributor_address.clone().recipient(),
                compute: Some(accountant.clone().recipient()),
                runs: Some(accountant.clone().recipient()),
                panel: Some(panel.clone()),
                counterparties: Some(settler.clone().recipient()),
                escrow: money.escrow.clone(),
            },
        ),
        EXECUTOR_MAILBOX,
    );
    let distributor = distributor_context.run(TaskDistributor::new(
        identity.clone(),
        config.clone(),
        metrics.clone(),
        DistributorLinks {
            send: peer_manager_address.clone().recipient(),
            broadcast: peer_manager_address.clone().recipient(),
            peers: peer_manager_address.clone().recipient(),
            noise_key: peer_manager_address.clone().recipient(),
            run_local: executor.clone().recipient(),
            cancel_run: executor.clone().recipient(),
            hold: money.hold.clone(),
            release: money.release.clone(),
            refund: money.refund.clone(),
            outcome: settler.clone().recipient(),
            reputation: settler.clone().recipient(),
            journal: settler.clone().recipient(),
            lookup: settler.clone().recipient(),
            stream: relay_role.clone().recipient(),
            panel: panel.clone(),
            billing: Some(accountant.clone().recipient()),
        },
    ));

    let bidder = start_with_mailbox(
        Bidder::new(
            identity.clone(),
            config.clone(),
            metrics.clone(),
            BidderLinks {
                reserve: executor.clone().recipient(),
                send: peer_manager_address.clone().recipient(),
            },
        ),
        BIDDER_MAILBOX,
    );

    let courier = start_with_mailbox(
        PaymentCourier::new(
            CourierLinks {
                due: money.due.clone(),
                accept: money.accept.clone(),
                confirm: money.confirm.clone(),
                send: peer_manager_address.clone().recipient(),
                credited: Some(accountant.clone().recipient()),
            },
            metrics.clone(),
        ),
        COURIER_MAILBOX,
    );

    let transports = start_transports(&identity, &config).await?;
    let listen_addrs = transports.listen_addrs.clone();
    let routes = Routes {
        distributor: distributor.clone().recipient(),
        bidder: bidder.recipient(),
        executor: executor.clone().recipient(),
        payments: courier.recipient(),
        accountant: accountant.clone().recipient(),
        panel: panel_hub.clone().recipient(),
        bytes: accountant.clone().recipient(),
    };
    let peer_manager = peer_manager_context.run(PeerManager::new(
        identity.clone(),
        config.clone(),
        metrics.clone(),
        transports,
        routes,
    ));

    let mut handle = NodeHandle {
        identity,
        config,
        metrics,
        peer_manager,
        distributor,
        executor,
        relay: relay_role,
        settler,
        network_settler,
        balance: money.balance,
        accountant,
        panel_hub,
        started_at: Utc::now(),
        http_addr: None,
        listen_addrs,
        data_dir,
        http_server: None,
    };
    if let Some(bind) = handle.config.http.bind_addr()? {
        let (server, address) = crate::web::start_http(handle.clone(), bind)
            .map_err(|e| NodeError::Http(e.to_string()))?;
        handle.http_server = Some(server);
        handle.http_addr = Some(address);
    }
    // Before the start line: whoever waits for it may signal the node right away.
    log_sandbox(handle.config.executor.sandbox);
    tracing::info!(
        node_id = %handle.identity.node_id(),
        peer_id = %handle.identity.peer_id(),
        listen = ?handle.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        http = ?handle.http_addr,
        "node started"
    );
    Ok(handle)
}

/// Say at every start whether peers' runs are sandboxed, loudly when they are not.
fn log_sandbox(mode: crate::sandbox::SandboxMode) {
    let support = crate::sandbox::support();
    match (mode, &support.problem) {
        (crate::sandbox::SandboxMode::Off, _) => tracing::warn!(
            "executor.sandbox = \"off\": peers' tasks and verify commands run WITHOUT a sandbox; \
             any peer's prompt can read this machine's files, this node's keys included"
        ),
        (crate::sandbox::SandboxMode::Required, Some(problem)) => tracing::error!(
            %problem,
            "this kernel cannot sandbox runs: peers' tasks are refused (see `apn sandbox check`)"
        ),
        (crate::sandbox::SandboxMode::Required, None) => tracing::info!(
            landlock_abi = support.landlock_abi,
            "sandbox ready: peers' runs are confined"
        ),
    }
}

/// Directories a run or a task leaves behind only when the node dies under it: agent
/// workspaces (executor) and git bundles (originator). Nothing is live before start, so
/// whatever is there belongs to a previous, killed process.
pub const SCRATCH_DIRS: [&str; 2] = ["workspaces", "bundles"];

/// The executor's repository cache (`workspace::RepoCache`): kept across restarts, counted
/// with the scratch dirs against `resources.storage_gb`.
pub const REPO_CACHE_DIR: &str = "repo-cache";

fn remove_leftovers(data_dir: &std::path::Path) {
    for name in SCRATCH_DIRS {
        let Ok(entries) = std::fs::read_dir(data_dir.join(name)) else {
            continue;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            crate::workspace::remove_workspace(&entry.path());
            removed += 1;
        }
        if removed > 0 {
            tracing::warn!(dir = name, removed, "removed what a killed run left behind");
        }
    }
}

/// Start the swarm (unless relay-only) and the relay client (when configured), and wait for
/// the swarm's first listen address so callers can hand it to others.
async fn start_transports(identity: &Identity, config: &Config) -> Result<Transports, NodeError> {
    let mut listen_addrs = Vec::new();
    let mut early_events = Vec::new();
    let swarm = if config.node.relay_only {
        None
    } else {
        let settings = SwarmSettings {
            listen: config.listen_addrs(),
            bootstrap: config
                .node
                .bootstrap
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            mdns: config.node.mdns,
        };
        let (client, mut events) = spawn_swarm(identity, settings)?;
        // The first event of a freshly listening swarm is its address; anything that races
        // ahead of it is handed to the peer manager to process first.
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while listen_addrs.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(MeshEvent::ListenAddr(address))) => listen_addrs.push(address),
                Ok(Some(other)) => early_events.push(other),
                Ok(None) => return Err(NodeError::Mesh(MeshError::Closed)),
                Err(_) => return Err(NodeError::NoListenAddress(LISTEN_TIMEOUT)),
            }
        }
        Some((client, events))
    };
    let relay = if config.relay.url.is_empty() {
        None
    } else {
        let credentials = if config.relay.credentials.as_os_str().is_empty() {
            None
        } else {
            let path = &config.relay.credentials;
            let text = std::fs::read_to_string(path)
                .map_err(|e| NodeError::RelayCredentials(format!("{}: {e}", path.display())))?;
            Some(
                crate::mesh::relay::parse_credentials(&text)
                    .map_err(|e| NodeError::RelayCredentials(format!("{}: {e}", path.display())))?,
            )
        };
        let settings = RelaySettings {
            url: config.relay.url.clone(),
            auto_reconnect: config.relay.auto_reconnect,
            reconnect_backoff_max: Duration::from_millis(config.relay.reconnect_backoff_max_ms),
            credentials,
        };
        Some(spawn_relay(settings, identity.peer_id()))
    };
    Ok(Transports {
        swarm,
        relay,
        listen_addrs,
        early_events,
        injected: None,
    })
}
