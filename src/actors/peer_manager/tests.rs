//! Unit tests of the peer manager's plain rules.

use super::*;

#[test]
fn assignments_results_and_payments_are_never_dropped_for_a_full_mailbox() {
    let every = crate::messages::samples::every_variant(&Identity::ephemeral(), Utc::now());
    let must: Vec<&str> = every
        .iter()
        .filter(|m| must_deliver(m))
        .map(|m| m.kind())
        .collect();
    for kind in [
        "task_assigned",
        "task_cancelled",
        "execution_started",
        "execution_completed",
        "execution_failed",
        "result_chunk",
        "vibe_transaction",
        "payment_receipt",
    ] {
        assert!(must.contains(&kind), "{kind} may be dropped");
    }
    // Streams and offers may be lost under load (and are counted when they are).
    for kind in [
        "execution_logs",
        "execution_progress",
        "task_distribution_request",
        "task_bid",
    ] {
        assert!(!must.contains(&kind), "{kind} bypasses the mailbox bound");
    }
}

#[test]
fn only_unknown_unconnected_peers_make_room() {
    let now = Instant::now();
    let later = now + Duration::from_secs(1);
    let entries = [
        ("announced", true, false, now),
        ("connected", false, true, now),
        ("fresh-old", false, false, now),
        ("fresh-new", false, false, later),
    ];
    assert_eq!(peer_to_evict(entries.into_iter()), Some("fresh-old"));
    assert_eq!(peer_to_evict(entries[..2].iter().copied()), None);
}

/// The peer manager with its verification pool, fed frames the way a transport feeds them.
mod pooled {
    use std::sync::Mutex;

    use super::*;
    use crate::mesh::MESH_EVENTS_MAX;
    use crate::messages::{TaskBid, Vibe};

    /// What reached a role, in order: (signer, the bid's sequence number).
    type Seen = Arc<Mutex<Vec<(PeerId, u64)>>>;

    /// Stands in for every role and records the bids routed to it.
    struct Recorder {
        seen: Seen,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<Inbound> for Recorder {
        type Result = ();
        fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
            if let APNMessage::TaskBid(bid) = &inbound.envelope.message {
                self.seen
                    .lock()
                    .unwrap()
                    .push((inbound.envelope.from_peer, bid.estimated_duration_s));
            }
        }
    }

    impl Handler<PanelEvent> for Recorder {
        type Result = ();
        fn handle(&mut self, _event: PanelEvent, _ctx: &mut Self::Context) {}
    }

    impl Handler<BytesTransferred> for Recorder {
        type Result = ();
        fn handle(&mut self, _bytes: BytesTransferred, _ctx: &mut Self::Context) {}
    }

    struct Node {
        identity: Identity,
        inject: mpsc::Sender<MeshEvent>,
        metrics: Arc<NetMetrics>,
        seen: Seen,
        _manager: Addr<PeerManager>,
    }

    fn start_node() -> Node {
        let seen = Seen::default();
        let recorder = Recorder::create({
            let seen = seen.clone();
            // Big enough that no routed bid is refused for a full mailbox in these tests.
            move |ctx| {
                ctx.set_mailbox_capacity(100_000);
                Recorder { seen }
            }
        });
        let routes = Routes {
            distributor: recorder.clone().recipient(),
            bidder: recorder.clone().recipient(),
            executor: recorder.clone().recipient(),
            payments: recorder.clone().recipient(),
            accountant: recorder.clone().recipient(),
            panel: recorder.clone().recipient(),
            bytes: recorder.recipient(),
        };
        let identity = Identity::ephemeral();
        let metrics = Arc::new(NetMetrics::default());
        let (inject, injected) = mpsc::channel(MESH_EVENTS_MAX);
        let mut transports = Transports::none();
        transports.injected = Some(injected);
        let mut config = Config::default();
        config.node.announce_interval_s = 3600;
        let manager = PeerManager::new(
            identity.clone(),
            Arc::new(config),
            metrics.clone(),
            transports,
            routes,
        )
        .start();
        Node {
            identity,
            inject,
            metrics,
            seen,
            _manager: manager,
        }
    }

    fn bid_frame(sender: &Identity, to: &PeerId, sequence: u64) -> Envelope {
        let bid = APNMessage::TaskBid(TaskBid {
            task_id: uuid::Uuid::new_v4(),
            bidder: sender.node_id().clone(),
            price: Vibe::from_whole(1),
            estimated_duration_s: sequence,
            capabilities: Vec::new(),
            valid_until: Utc::now(),
            free_slots: None,
        });
        Envelope::sign(sender, &Audience::peer(to), &bid, now_ms()).unwrap()
    }

    async fn inject(node: &Node, frame: Vec<u8>, via: FrameVia, transport_peer: Option<PeerId>) {
        node.inject
            .send(MeshEvent::Frame {
                frame,
                via,
                transport_peer,
                gossip: None,
            })
            .await
            .unwrap();
    }

    async fn wait_for(node: &Node, count: usize) -> Vec<(PeerId, u64)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = node.seen.lock().unwrap().clone();
            if seen.len() >= count || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[actix_rt::test]
    async fn frames_of_many_senders_are_all_routed_in_each_senders_order() {
        let node = start_node();
        let me = node.identity.peer_id();
        // Direct senders are sharded by their transport peer, relay senders by their key.
        let senders: Vec<(Identity, bool)> = (0..6)
            .map(|n| (Identity::ephemeral(), n % 2 == 0))
            .collect();
        let per_sender = 150u64;
        for sequence in 0..per_sender {
            for (sender, direct) in &senders {
                let frame = bid_frame(sender, &me, sequence).encode().unwrap();
                if *direct {
                    inject(&node, frame, FrameVia::Direct, Some(sender.peer_id())).await;
                } else {
                    inject(&node, frame, FrameVia::RelayDirect, None).await;
                }
            }
        }
        let expected = senders.len() * per_sender as usize;
        let seen = wait_for(&node, expected).await;
        assert_eq!(seen.len(), expected, "not every frame was routed");
        for (sender, _) in &senders {
            let order: Vec<u64> = seen
                .iter()
                .filter(|(from, _)| *from == sender.peer_id())
                .map(|(_, sequence)| *sequence)
                .collect();
            assert_eq!(order, (0..per_sender).collect::<Vec<_>>());
        }
        assert!(
            node.metrics
                .dropped_by_reason()
                .iter()
                .all(|(_, n)| *n == 0)
        );
    }

    #[actix_rt::test]
    async fn a_bad_signature_from_the_pool_is_dropped_and_counted() {
        let node = start_node();
        let me = node.identity.peer_id();
        let sender = Identity::ephemeral();
        let peer = Some(sender.peer_id());
        let first = bid_frame(&sender, &me, 0).encode().unwrap();
        let mut forged = bid_frame(&sender, &me, 1);
        forged.signature[3] ^= 0x01;
        inject(&node, first.clone(), FrameVia::Direct, peer).await;
        inject(&node, forged.encode().unwrap(), FrameVia::Direct, peer).await;
        // Replayed by the relay: another path (and shard) for the same signer.
        inject(&node, first, FrameVia::RelayDirect, None).await;
        inject(
            &node,
            bid_frame(&sender, &me, 2).encode().unwrap(),
            FrameVia::Direct,
            peer,
        )
        .await;
        let seen = wait_for(&node, 2).await;
        let sequences: Vec<u64> = seen.iter().map(|(_, sequence)| *sequence).collect();
        assert_eq!(sequences, vec![0, 2]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.metrics.dropped(DropReason::Replayed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(node.metrics.dropped(DropReason::BadSignature), 1);
        assert_eq!(node.metrics.dropped(DropReason::Replayed), 1);
        // Nothing else was dropped, and nothing more routed.
        assert_eq!(
            node.metrics
                .dropped_by_reason()
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>(),
            2
        );
        assert_eq!(node.seen.lock().unwrap().len(), 2);
    }
}
