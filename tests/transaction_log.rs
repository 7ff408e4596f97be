//! `/api/transactions` in the seed's `TransactionLog` shape (`id`, `timestamp`, `type`,
//! `details` with typed fields, `description`), on real nodes: a remote run as the
//! originator and the executor log it, the history survives a restart on the same data
//! dir, and `before=` pages through it, past the hub's in-memory ring into the store.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::collections::HashSet;

use apn::actors::distributor::TaskStatus;
use apn::actors::node::NodeHandle;
use apn::actors::panel_hub::{
    FlushTransactions, PanelEvent, TRANSACTION_LOG_MAX, TransactionDetails, TransactionLogEntry,
    VibeEarnedDetails,
};
use apn::client::ApiClient;
use apn::config::Config;
use common::*;
use serde_json::Value;

/// `config` with the HTTP API on an ephemeral loopback port.
fn with_web(mut config: Config) -> Config {
    config.http.bind = "127.0.0.1:0".into();
    config
}

/// `GET /api/transactions?<query>` on `node`, as JSON entries.
async fn transactions(node: &NodeHandle, query: &str) -> Vec<Value> {
    let base = format!("http://{}", node.http_addr.expect("the API is on"));
    let path = format!("/api/transactions?{query}");
    let answer = tokio::task::spawn_blocking(move || ApiClient::new(&base, None).get(&path))
        .await
        .unwrap()
        .unwrap();
    answer.as_array().expect("an array of entries").clone()
}

/// The first entry of `kind` about task `task_id` on `node`, waited for.
async fn entry_of(node: &NodeHandle, kind: &str, task_id: &str) -> Value {
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let found = transactions(node, &format!("type={kind}&limit=1000"))
            .await
            .into_iter()
            .find(|e| e["details"]["task_id"] == task_id);
        if let Some(entry) = found {
            return entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} entry for {task_id}: {:#?}",
            transactions(node, "limit=50").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every entry has the seed's fields and none of the old ones.
fn assert_seed_shape(entry: &Value) {
    assert!(
        uuid::Uuid::parse_str(entry["id"].as_str().unwrap_or("")).is_ok(),
        "{entry}"
    );
    assert!(entry["seq"].as_u64().is_some(), "{entry}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(entry["timestamp"].as_str().unwrap_or("")).is_ok(),
        "{entry}"
    );
    assert!(entry["type"].is_string(), "{entry}");
    assert!(entry["details"].is_object(), "{entry}");
    assert!(entry["description"].is_string(), "{entry}");
    for old in ["at", "detail", "amount", "peer", "task_id"] {
        assert!(entry.get(old).is_none(), "old field {old} in {entry}");
    }
}

#[actix_rt::test]
async fn a_remote_run_is_logged_in_the_seed_shape_on_both_nodes_and_survives_a_restart() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let executor_config = with_web(shell_config(dirs[1].path()));
    let (origin, executor) = connected_pair(
        with_web(test_config(dirs[0].path())),
        executor_config.clone(),
    )
    .await;
    let origin_id = origin.identity.node_id().to_string();
    let executor_id = executor.identity.node_id().to_string();
    let repo = git_repo(&[("README.md", "hello\n")]);
    let id = origin
        .distributor
        .send(mesh_shell_task(
            repo.path(),
            "log me",
            "echo changed > out.txt",
            10,
        ))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT * 3).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    let price = view.paid.expect("the executor was paid").to_string();
    let task_id = id.to_string();

    // The originator: distributed, started on the executor, completed with the run's figures,
    // and the payment.
    let distributed = entry_of(&origin, "task_distributed", &task_id).await;
    assert_eq!(distributed["details"]["task_title"], "log me");
    assert_eq!(distributed["details"]["reward_vibe"], "10");
    let started = entry_of(&origin, "execution_started", &task_id).await;
    assert_eq!(started["details"]["executor_node"], executor_id);
    let completed = entry_of(&origin, "execution_completed", &task_id).await;
    let details = &completed["details"];
    assert_eq!(details["task_title"], "log me");
    assert_eq!(details["executor_node"], executor_id);
    assert!(
        details["execution_time_ms"].as_u64().is_some(),
        "{completed}"
    );
    assert_eq!(details["files_modified"], 1);
    assert_eq!(details["vibe_paid"], price);
    let spent = entry_of(&origin, "vibe_spent", &task_id).await;
    assert_eq!(spent["details"]["vibe_spent"], price);
    assert_eq!(spent["details"]["peer_node"], executor_id);

    // The executor: the hosted run, with the originator and the earning.
    let received = entry_of(&executor, "task_received", &task_id).await;
    assert_eq!(received["details"]["origin_node"], origin_id);
    assert_eq!(received["details"]["vibe_earned"], price);
    let hosted_start = entry_of(&executor, "execution_started", &task_id).await;
    assert_eq!(hosted_start["details"]["origin_node"], origin_id);
    assert_eq!(hosted_start["details"]["task_title"], "log me");
    let sentence = hosted_start["description"].as_str().unwrap();
    assert!(
        sentence.starts_with("Execution started locally")
            && sentence.contains(&format!("from {origin_id}"))
            && sentence.contains("Earning: ~"),
        "{sentence}"
    );
    let hosted_end = entry_of(&executor, "execution_completed", &task_id).await;
    assert_eq!(hosted_end["details"]["origin_node"], origin_id);
    assert_eq!(hosted_end["details"]["executor_node"], executor_id);
    assert!(
        hosted_end["details"]["execution_time_ms"]
            .as_u64()
            .is_some()
    );
    assert_eq!(hosted_end["details"]["vibe_earned"], price);
    let computed = entry_of(&executor, "compute_contributed", &task_id).await;
    assert_eq!(computed["details"]["peer_node"], origin_id);

    let before_restart = transactions(&executor, "limit=1000").await;
    for entry in transactions(&origin, "limit=1000")
        .await
        .iter()
        .chain(&before_restart)
    {
        assert_seed_shape(entry);
    }

    // The executor restarts on the same data dir: its history is still served, and new
    // entries continue the sequence.
    executor.shutdown().await;
    let executor = node(executor_config).await;
    let after_restart = transactions(&executor, "limit=1000").await;
    let ids_after: HashSet<&str> = after_restart
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    for entry in &before_restart {
        assert!(
            ids_after.contains(entry["id"].as_str().unwrap()),
            "lost in the restart: {entry}"
        );
    }
    let hosted_again = entry_of(&executor, "execution_completed", &task_id).await;
    assert_eq!(hosted_again, hosted_end);
    origin.shutdown().await;
    executor.shutdown().await;
}

#[actix_rt::test]
async fn before_pages_through_the_ring_and_the_store_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_web(test_config(dir.path()));
    let first = node(config.clone()).await;
    // More entries than the hub's ring holds: the oldest are served from the store.
    let count = TRANSACTION_LOG_MAX + 250;
    for n in 0..count {
        let entry = TransactionLogEntry::new(
            TransactionDetails::VibeEarned(VibeEarnedDetails {
                vibe_earned: apn::messages::Vibe::from_micros(n as u64 + 1),
                peer_node: Some("apn_testpeer".into()),
                task_id: None,
                purpose: Some("test".into()),
            }),
            format!("entry {n}"),
        );
        first.panel_hub.do_send(PanelEvent::Transaction(entry));
    }
    first.panel_hub.send(FlushTransactions).await.unwrap();

    /// All entries of type `vibe_earned`, newest first, in pages of `limit`.
    async fn all_pages(node: &NodeHandle, limit: usize) -> Vec<Value> {
        let mut entries: Vec<Value> = Vec::new();
        loop {
            let query = match entries.last() {
                Some(last) => format!("type=vibe_earned&limit={limit}&before={}", last["seq"]),
                None => format!("type=vibe_earned&limit={limit}"),
            };
            let page = transactions(node, &query).await;
            assert!(page.len() <= limit);
            if page.is_empty() {
                return entries;
            }
            entries.extend(page);
        }
    }

    let pages = all_pages(&first, 300).await;
    assert_eq!(pages.len(), count);
    let seqs: Vec<u64> = pages.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "not strictly newest first"
    );
    assert_eq!(pages[0]["description"], format!("entry {}", count - 1));
    assert_eq!(pages[count - 1]["description"], "entry 0");
    assert_eq!(pages[count - 1]["details"]["vibe_earned"], "0.000001");
    for entry in &pages {
        assert_seed_shape(entry);
    }
    let two = transactions(
        &first,
        &format!("type=vibe_earned&limit=2&before={}", seqs[10]),
    )
    .await;
    assert_eq!(two, pages[11..13].to_vec());

    first.shutdown().await;
    let second = node(config).await;
    let again = all_pages(&second, 1000).await;
    assert_eq!(again, pages);
    second.shutdown().await;
}

#[actix_rt::test]
async fn a_failed_remote_run_is_logged_as_failed_on_both_nodes() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (origin, executor) = connected_pair(
        with_web(test_config(dirs[0].path())),
        with_web(shell_config(dirs[1].path())),
    )
    .await;
    let origin_id = origin.identity.node_id().to_string();
    let repo = git_repo(&[("README.md", "hello\n")]);
    let id = origin
        .distributor
        .send(mesh_shell_task(repo.path(), "doomed", "exit 3", 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT * 3).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    let task_id = id.to_string();

    let failed = entry_of(&origin, "execution_failed", &task_id).await;
    assert_eq!(failed["details"]["task_title"], "doomed");
    assert!(failed["details"]["error"].is_string(), "{failed}");
    assert!(failed["details"].get("vibe_paid").is_none(), "{failed}");

    let hosted = entry_of(&executor, "execution_failed", &task_id).await;
    assert_eq!(hosted["details"]["origin_node"], origin_id);
    assert!(hosted["details"]["execution_time_ms"].as_u64().is_some());
    assert!(hosted["details"].get("vibe_earned").is_none(), "{hosted}");
    assert!(
        hosted["description"]
            .as_str()
            .unwrap()
            .starts_with("Execution failed locally"),
        "{hosted}"
    );
    origin.shutdown().await;
    executor.shutdown().await;
}
