//! One actix actor per role, and `node.rs`, which starts them in dependency order and wires
//! each to the `Recipient`s it needs (the diagram in DESIGN.md, in code).
//!
//! | actor | file | job |
//! |---|---|---|
//! | `PeerManager` | `peer_manager.rs` | swarm + relay client, peer table, envelope checks, routing |
//! | `TaskDistributor` | `distributor.rs` | this node's task attempts: bids, assignment, settlement |
//! | `Bidder` | `bidder.rs` | bids on other nodes' task requests |
//! | `TaskExecutor` | `executor.rs`, `executor_run.rs` | runs agent processes (one run task each) |
//! | `ExecutionRelay` | `relay.rs` | log and progress streams |
//! | `ResourceAccounting` | `accountant.rs` | bandwidth and compute metering |
//! | `SettlementEngine` | `settler.rs` | the SQLite ledger, group commit (own arbiter) |
//! | `NetworkSettler` | `network_settler.rs` | settlement mode `jetstream`: the network ledger |
//! | `PaymentCourier` | `courier.rs` | payments delivered until the payee's receipt |
//! | `PanelHub` | `panel_hub.rs` | panel state and websocket fan-out |

pub mod accountant;
pub mod bidder;
pub mod courier;
pub mod distributor;
pub mod executor;
pub mod executor_run;
pub mod network_settler;
pub mod node;
pub mod panel_hub;
pub mod peer_manager;
pub mod relay;
pub mod settler;
