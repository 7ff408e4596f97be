//! The messages the peer manager answers: sends and broadcasts (direct when connected, else
//! through the relay), pings, the peer table and mesh status, Noise keys, free slots,
//! inbound taps and shutdown.

use super::*;

impl Handler<Broadcast> for PeerManager {
    type Result = ResponseActFuture<Self, Result<(), MeshError>>;

    fn handle(&mut self, request: Broadcast, _ctx: &mut Self::Context) -> Self::Result {
        let frame = match self.seal(&Audience::Topic(request.topic), &request.message) {
            Ok(frame) => frame,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let swarm = self.swarm.clone();
        let relay = self.relay.clone().filter(|relay| relay.is_connected());
        let topic = request.topic;
        let bytes = frame.len() as u64;
        let work = async move {
            let mut paths = 0u64;
            let mut last_error = MeshError::NoBroadcastPath;
            if let Some(swarm) = swarm {
                match swarm.publish(topic, frame.clone()).await {
                    Ok(()) => paths += 1,
                    Err(e) => last_error = e,
                }
            }
            if let Some(relay) = relay {
                match relay.broadcast(topic, frame).await {
                    Ok(()) => paths += 1,
                    Err(e) => last_error = e,
                }
            }
            if paths > 0 {
                Ok(paths)
            } else {
                Err(last_error)
            }
        };
        Box::pin(
            work.into_actor(self)
                .map(move |result, actor, _| match result {
                    Ok(paths) => {
                        NetMetrics::add(&actor.metrics.messages_out, paths);
                        NetMetrics::add(&actor.metrics.bytes_out, bytes * paths);
                        Ok(())
                    }
                    Err(e) => {
                        NetMetrics::add(&actor.metrics.send_failures, 1);
                        Err(e)
                    }
                }),
        )
    }
}

impl Handler<SendTo> for PeerManager {
    type Result = ResponseActFuture<Self, Result<PeerPath, MeshError>>;

    fn handle(&mut self, request: SendTo, _ctx: &mut Self::Context) -> Self::Result {
        let peer = request.peer;
        let purpose = purpose_of(&request.message);
        let to = Audience::peer(&peer);
        // A repository or result chunk is signed on the blocking pool: Ed25519 hashes its
        // hundreds of KiB twice, which would hold up every actor sharing this thread.
        let bulk = matches!(
            request.message,
            APNMessage::RepoChunk(_) | APNMessage::ResultChunk(_)
        );
        let sealed = if bulk {
            let identity = self.identity.clone();
            let message = request.message;
            futures::future::Either::Left(async move {
                tokio::task::spawn_blocking(move || {
                    Envelope::seal(&identity, &to, &message, now_ms())
                        .map_err(|e| MeshError::Encode(e.to_string()))
                })
                .await
                .map_err(|e| MeshError::Encode(e.to_string()))?
            })
        } else {
            futures::future::Either::Right(std::future::ready(self.seal(&to, &request.message)))
        };
        let direct = if self.connected.contains(&peer) {
            self.swarm.clone()
        } else {
            None
        };
        let relay = self.relay.clone();
        let work = async move {
            let frame = sealed.await?;
            let bytes = frame.len() as u64;
            if let Some(swarm) = direct {
                match swarm.send_direct(peer, frame.clone()).await {
                    Ok(()) => return Ok((PeerPath::Direct, bytes)),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "direct send failed, trying the relay")
                    }
                }
            }
            match relay {
                Some(relay) => relay
                    .send_to(&peer, frame)
                    .await
                    .map(|()| (PeerPath::Relay, bytes)),
                None => Err(MeshError::NoPath(peer)),
            }
        };
        Box::pin(
            work.into_actor(self)
                .map(move |result, actor, _| match result {
                    Ok((path, bytes)) => {
                        actor.record_sent(peer, path, bytes, purpose);
                        Ok(path)
                    }
                    Err(e) => {
                        NetMetrics::add(&actor.metrics.send_failures, 1);
                        tracing::debug!(%peer, error = %e, "send failed");
                        Err(e)
                    }
                }),
        )
    }
}

impl Handler<Ping> for PeerManager {
    type Result = ResponseActFuture<Self, Result<Duration, MeshError>>;

    fn handle(&mut self, request: Ping, ctx: &mut Self::Context) -> Self::Result {
        if self.pending_pings.len() >= PENDING_PINGS_MAX {
            return Box::pin(fut::ready(Err(MeshError::Busy)));
        }
        let nonce: u64 = rand::random();
        let (reply, answer) = oneshot::channel();
        self.pending_pings.insert(
            nonce,
            PendingPing {
                sent_at: Instant::now(),
                reply,
            },
        );
        let address = ctx.address();
        let work = async move {
            let message = APNMessage::PingRequest(PingRequest { nonce });
            address
                .send(SendTo {
                    peer: request.peer,
                    message,
                })
                .await
                .map_err(|_| MeshError::Closed)??;
            tokio::time::timeout(PING_TIMEOUT, answer)
                .await
                .map_err(|_| MeshError::Timeout(PING_TIMEOUT))?
                .map_err(|_| MeshError::Closed)
        };
        Box::pin(work.into_actor(self).map(move |result, actor, _| {
            actor.pending_pings.remove(&nonce);
            result
        }))
    }
}

impl Handler<GetPeers> for PeerManager {
    type Result = MessageResult<GetPeers>;

    fn handle(&mut self, _request: GetPeers, _ctx: &mut Self::Context) -> Self::Result {
        let mut peers: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|entry| entry.info.clone())
            .collect();
        peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        MessageResult(peers)
    }
}

impl Handler<GetMeshStatus> for PeerManager {
    type Result = MessageResult<GetMeshStatus>;

    fn handle(&mut self, _request: GetMeshStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<GetPeerNoiseKey> for PeerManager {
    type Result = Option<[u8; NOISE_KEY_BYTES]>;

    fn handle(&mut self, request: GetPeerNoiseKey, _ctx: &mut Self::Context) -> Self::Result {
        self.peers
            .get(&request.0)
            .and_then(|entry| entry.noise_static_key)
    }
}

impl Handler<SetFreeSlots> for PeerManager {
    type Result = ();

    fn handle(&mut self, request: SetFreeSlots, ctx: &mut Self::Context) {
        let changed = crate::market::offers::offer_changed(self.free_slots, request.0);
        self.free_slots = request.0;
        // Peers treat the latest announcement as a live offer: when it stops (or starts)
        // being one, tell them now rather than at the next periodic announcement. Changes
        // within the pause make one announcement, with the state at its end.
        if changed && !self.offer_update_pending {
            self.offer_update_pending = true;
            ctx.run_later(OFFER_UPDATE_DELAY, |actor, ctx| {
                actor.offer_update_pending = false;
                actor.broadcast_announcement(ctx);
            });
        }
    }
}

impl Handler<Subscribe> for PeerManager {
    type Result = ();

    fn handle(&mut self, request: Subscribe, _ctx: &mut Self::Context) {
        self.taps.push(request.0);
    }
}

impl Handler<Shutdown> for PeerManager {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _request: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let swarm = self.swarm.take();
        let relay = self.relay.take();
        let work = async move {
            if let Some(swarm) = swarm {
                swarm.shutdown(TRANSPORT_SHUTDOWN_TIMEOUT).await;
            }
            if let Some(relay) = relay {
                relay.shutdown(TRANSPORT_SHUTDOWN_TIMEOUT).await;
            }
        };
        Box::pin(work.into_actor(self).map(|(), _actor, ctx| ctx.stop()))
    }
}
