//! Following the ledger stream into the projection: the ordered consumer, the check that
//! replaces it when it stalls (its server died and the consumer did not fail over), and the
//! direct read of a gap.

use actix::prelude::*;
use futures::StreamExt;

use super::{DIRECT_READ_MAX, FOLLOW_RETRY, NetworkSettler, PROJECT_BATCH};
use crate::network_ledger::stream::{StoredMessage, StreamError};

impl NetworkSettler {
    pub(super) fn follow(&mut self, ctx: &mut Context<Self>) {
        let stream = self.stream.clone();
        let start = self.projection.position() + 1;
        ctx.spawn(
            async move { stream.read_from(start).await }
                .into_actor(self)
                .map(|subscribed, actor, ctx| match subscribed {
                    Ok(messages) => {
                        actor.following =
                            Some(ctx.add_stream(messages.ready_chunks(PROJECT_BATCH)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow the ledger stream; retrying");
                        ctx.run_later(FOLLOW_RETRY, |actor, ctx| actor.follow(ctx));
                    }
                }),
        );
    }

    /// A follower whose server died can stall without ending (the client fails over, the
    /// consumer does not always follow): when the stream is ahead of the projection and the
    /// projection has not moved since the last check, read the gap directly and follow again.
    pub(super) fn check_follower(&mut self, ctx: &mut Context<Self>) {
        let stream = self.stream.clone();
        ctx.spawn(
            async move { stream.last_stream_sequence().await }
                .into_actor(self)
                .map(|last, actor, ctx| {
                    let position = actor.projection.position();
                    let stalled = position == actor.position_at_check;
                    actor.position_at_check = position;
                    if let Ok(last) = last
                        && last > position
                        && stalled
                    {
                        tracing::warn!(position, last, "ledger follower stalled; following again");
                        if let Some(handle) = actor.following.take() {
                            ctx.cancel_future(handle);
                        }
                        actor.catch_up_directly(ctx);
                        actor.follow(ctx);
                    }
                }),
        );
    }

    /// Read what the stream has beyond the projection with a consumer of its own and apply it.
    fn catch_up_directly(&mut self, ctx: &mut Context<Self>) {
        let stream = self.stream.clone();
        let start = self.projection.position() + 1;
        ctx.spawn(
            async move { stream.read_range(start, DIRECT_READ_MAX).await }
                .into_actor(self)
                .map(|read, actor, _ctx| match read {
                    Ok(messages) => actor.project(messages),
                    Err(e) => tracing::warn!(error = %e, "cannot read the ledger stream directly"),
                }),
        );
    }

    /// Apply messages read from the stream (in order; ones already projected are skipped).
    pub(super) fn project(&mut self, messages: Vec<StoredMessage>) {
        match self.projection.apply(&messages) {
            Ok(outcome) => {
                if outcome.skipped > 0 {
                    tracing::debug!(
                        skipped = outcome.skipped,
                        "ledger entries skipped by the rules"
                    );
                }
                self.wake(&outcome.holds);
                self.show_credits(&outcome.credits);
            }
            Err(e) => tracing::error!(error = %e, "cannot write the ledger projection"),
        }
    }
}

impl StreamHandler<Vec<Result<StoredMessage, StreamError>>> for NetworkSettler {
    fn handle(&mut self, batch: Vec<Result<StoredMessage, StreamError>>, _ctx: &mut Context<Self>) {
        let mut messages = Vec::with_capacity(batch.len());
        for message in batch {
            match message {
                Ok(message) => messages.push(message),
                Err(e) => tracing::warn!(error = %e, "ledger stream read error"),
            }
        }
        self.project(messages);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!("ledger stream subscription ended; following again");
        ctx.run_later(FOLLOW_RETRY, |actor, ctx| actor.follow(ctx));
    }
}
