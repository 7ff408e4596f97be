//! Issue 13, the relay can require credentials: a real nats-server started with nkey
//! authorization lets in nodes that hold the user's seed (`relay.credentials`), and they
//! find each other through it; a node without the seed never gets in, and a bad
//! credentials file is a start-up error that names the key.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::actors::peer_manager::{GetMeshStatus, RelayState};
use apn::harness::NatsServer;
use common::*;

/// How long a node without credentials is watched (it must stay outside the relay).
const OUTSIDE: Duration = Duration::from_secs(3);

#[actix_rt::test]
async fn only_nodes_with_the_relays_credentials_get_in() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("a user seed");
    let relay = NatsServer::start_with_config(Some(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let seed_file = dirs[0].path().join("relay.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();

    let relay_only = |dir: &std::path::Path, credentials: Option<&std::path::Path>| {
        let mut config = test_config(dir);
        config.relay.url = relay.url();
        config.node.relay_only = true;
        if let Some(path) = credentials {
            config.relay.credentials = path.to_path_buf();
        }
        config
    };
    let a = node(relay_only(dirs[0].path(), Some(&seed_file))).await;
    let b = node(relay_only(dirs[1].path(), Some(&seed_file))).await;
    let outsider = node(relay_only(dirs[2].path(), None)).await;
    let (only_a, only_b) = ([&a], [&b]);
    assert!(
        wait_until(EVENT_TIMEOUT, || knows_all(&a, &only_b)).await
            && wait_until(EVENT_TIMEOUT, || knows_all(&b, &only_a)).await,
        "nodes with the credentials never met through the relay"
    );
    let connected = |node: &apn::actors::node::NodeHandle| {
        let peer_manager = node.peer_manager.clone();
        async move {
            peer_manager
                .send(GetMeshStatus)
                .await
                .is_ok_and(|status| status.relay == RelayState::Connected)
        }
    };
    assert!(connected(&a).await);
    // The outsider is refused by the server: never connected, never seen.
    assert!(
        !wait_until(OUTSIDE, || connected(&outsider)).await,
        "a node without credentials got into the relay"
    );
    assert!(!knows_all(&a, &[&outsider]).await);
    for node in [a, b, outsider] {
        node.shutdown().await;
    }

    // A credentials file that is neither a .creds file nor a seed names the key.
    let junk = dirs[2].path().join("junk");
    std::fs::write(&junk, "hunter2\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let error = match apn::actors::node::start_node(relay_only(dir.path(), Some(&junk))).await {
        Ok(_) => panic!("a junk credentials file was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("relay.credentials"), "{error}");
    assert!(
        !error.contains("hunter2"),
        "the secret was printed: {error}"
    );
}
