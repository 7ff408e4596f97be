//! `PaymentCourier`: gets every payment to its payee, exactly once on both ledgers.
//!
//! Payer side: the settlement engine queues each signed payment in the ledger's outbox in
//! the same transaction that debits it (see `ledger::outbox`); the role that settled sends
//! it at once, and the courier sends again whatever is still waiting for a receipt, with
//! backoff, until the payee confirms. Payee side: an incoming `VibeTransaction` is credited
//! by the settlement engine (a repeat is a no-op) and answered with a `PaymentReceipt`. A
//! payment the engine refuses (forged, not ours, from a peer with no task relationship, or
//! overflowing a balance) gets no receipt and is counted by reason in the metrics.
//!
//! In: `Inbound` (`VibeTransaction`, `PaymentReceipt`). Out: `SendTo` through the peer
//! manager; `AcceptPayment`, `TakeDuePayments`, `ConfirmDelivery` to the settlement engine;
//! `PaymentCredited` to the accountant.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::identity;
use crate::ledger::LedgerError;
use crate::messages::{APNMessage, DropReason, PaymentReceipt};
use crate::metrics::NetMetrics;
use crate::protocol::accounting::PaymentCredited;
use crate::protocol::ledger::{AcceptPayment, ConfirmDelivery, TakeDuePayments};
use crate::protocol::mesh::{Inbound, SendTo};

/// How often the outbox is checked for payments due again.
const OUTBOX_POLL: Duration = Duration::from_secs(1);
/// Payments resent per poll: a long outage drains over several polls instead of one burst.
const RESEND_PER_POLL: usize = 64;

/// The `Recipient`s the courier talks to, wired in `actors/node.rs`.
pub struct CourierLinks {
    /// The settlement engine: the payment outbox and incoming payments.
    pub due: Recipient<TakeDuePayments>,
    /// Credits a payment from a peer; on success a receipt is sent back.
    pub accept: Recipient<AcceptPayment>,
    /// Records a payee's receipt, so the payment is not sent again.
    pub confirm: Recipient<ConfirmDelivery>,
    /// The peer manager: payments and receipts go out through it.
    pub send: Recipient<SendTo>,
    /// The accountant, told of each payment credited for the first time (an executor's
    /// escrow payment is what its `ComputeContribution` record reports).
    pub credited: Option<Recipient<PaymentCredited>>,
}

/// The courier of one node: resends due payments every `OUTBOX_POLL`, answers payments
/// with receipts, records receipts.
pub struct PaymentCourier {
    links: CourierLinks,
    metrics: Arc<NetMetrics>,
    /// A poll is in flight: the next tick waits for it.
    polling: bool,
}

impl PaymentCourier {
    /// A courier with nothing in flight; polling starts with the actor.
    pub fn new(links: CourierLinks, metrics: Arc<NetMetrics>) -> Self {
        PaymentCourier {
            links,
            metrics,
            polling: false,
        }
    }

    fn resend_due(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let due_payments = self.links.due.clone();
        let send = self.links.send.clone();
        let work = async move {
            let due = match due_payments
                .send(TakeDuePayments {
                    limit: RESEND_PER_POLL,
                })
                .await
            {
                Ok(Ok(due)) => due,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "payment outbox unreadable");
                    return;
                }
                Err(_) => return,
            };
            for pending in due {
                let transaction = pending.transaction;
                let Some(peer) = identity::peer_id_of(&transaction.to) else {
                    tracing::warn!(tx = %transaction.tx_id, "payee key is not a peer id; payment stays queued");
                    continue;
                };
                tracing::debug!(tx = %transaction.tx_id, %peer, attempts = pending.attempts, "resending payment");
                let message = APNMessage::VibeTransaction(transaction);
                let _ = send.send(SendTo { peer, message }).await;
            }
        };
        ctx.spawn(
            work.into_actor(self)
                .map(|(), actor, _| actor.polling = false),
        );
    }

    fn on_payment(&mut self, inbound: Inbound, ctx: &mut Context<Self>) {
        let payer = inbound.envelope.from_peer;
        let APNMessage::VibeTransaction(transaction) = &inbound.envelope.message else {
            return;
        };
        let tx_id = transaction.tx_id;
        let credited = self.links.credited.clone().map(|to| {
            (
                to,
                PaymentCredited {
                    payer,
                    transaction: transaction.clone(),
                },
            )
        });
        let accept = self.links.accept.clone();
        let send = self.links.send.clone();
        let metrics = self.metrics.clone();
        ctx.spawn(
            async move {
                match accept.send(AcceptPayment(inbound)).await {
                    Ok(Ok(first)) => {
                        if let (true, Some((to, credited))) = (first, credited) {
                            to.do_send(credited);
                        }
                        let message = APNMessage::PaymentReceipt(PaymentReceipt { tx_id });
                        let _ = send
                            .send(SendTo {
                                peer: payer,
                                message,
                            })
                            .await;
                    }
                    Ok(Err(e)) => {
                        metrics.count_drop(refusal_reason(&e));
                        tracing::warn!(tx = %tx_id, from = %payer, error = %e, "payment refused")
                    }
                    Err(_) => {}
                }
            }
            .into_actor(self),
        );
    }

    fn on_receipt(&mut self, inbound: &Inbound, receipt: &PaymentReceipt) {
        let confirmations = self.links.confirm.clone();
        let confirm = ConfirmDelivery {
            tx_id: receipt.tx_id,
            payee: inbound.envelope.from_key.to_vec(),
        };
        actix::spawn(async move {
            match confirmations.send(confirm).await {
                Ok(Ok(true)) => tracing::debug!("payment receipt recorded"),
                Ok(Ok(false)) => tracing::debug!("receipt for no waiting payment"),
                Ok(Err(e)) => tracing::warn!(error = %e, "receipt not recorded"),
                Err(_) => {}
            }
        });
    }
}

/// The metric a refused payment is counted under.
pub fn refusal_reason(error: &LedgerError) -> DropReason {
    match error {
        LedgerError::Unsolicited => DropReason::UnsolicitedPayment,
        LedgerError::Overflow { .. } => DropReason::PaymentOverflow,
        _ => DropReason::Unauthorized,
    }
}

impl Actor for PaymentCourier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(OUTBOX_POLL, |actor, ctx| actor.resend_due(ctx));
    }
}

impl Handler<Inbound> for PaymentCourier {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, ctx: &mut Self::Context) {
        match &inbound.envelope.message {
            APNMessage::VibeTransaction(_) => self.on_payment(inbound, ctx),
            APNMessage::PaymentReceipt(receipt) => {
                let receipt = receipt.clone();
                self.on_receipt(&inbound, &receipt);
            }
            _ => {}
        }
    }
}
