//! The end of a run offered to the mesh: verify the result off the actor thread (it applies
//! to the base commit, and the verify command passes on it, sandboxed like a peer's run),
//! pay the executor from escrow, and show the completed task.

use std::path::PathBuf;

use actix::prelude::*;
use chrono::Utc;
use libp2p::PeerId;
use uuid::Uuid;

use super::{TaskDistributor, TaskStatus, VERIFY_TIMEOUT};
use crate::identity;
use crate::ledger::Outcome;
use crate::messages::{APNMessage, ExecutionStage, Vibe};
use crate::protocol::execution::ExecutionEvent;
use crate::protocol::ledger::{RecordOutcome, ReleaseEscrow};
use crate::protocol::mesh::SendTo;
use crate::protocol::panel::{ExecutionDetails, TransactionDetails, VibeSpentDetails};
use crate::workspace;

impl TaskDistributor {
    /// Check the result off the actor thread: it applies to the base commit, and the verify
    /// command (sandboxed like a peer's run) passes on it.
    pub(super) fn verify(&mut self, id: Uuid, escrow_id: Uuid, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let Some(result) = &task.result else {
            return;
        };
        let repo = PathBuf::from(&task.request.repo_path);
        let base = task.base_commit.clone();
        let verify = task.request.verify_command.clone();
        let diff = result.diff.clone();
        let verify_sandbox = self.verify_sandbox();
        let check = tokio::task::spawn_blocking(move || {
            workspace::apply_check(&repo, &base, &diff)
                .map_err(|e| format!("diff does not apply: {e}"))?;
            if let Some(command) = verify {
                let limits = verify_sandbox?;
                let passed = workspace::apply_and_verify(
                    &repo,
                    &base,
                    &diff,
                    &command,
                    VERIFY_TIMEOUT,
                    limits,
                )
                .map_err(|e| format!("verify command could not run: {e}"))?;
                if !passed {
                    return Err("verify command failed on the result".to_string());
                }
            }
            Ok(())
        });
        ctx.spawn(check.into_actor(self).map(move |checked, actor, ctx| {
            match checked.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(()) => actor.drive(id, ctx, |task| task.verified(escrow_id)),
                Err(reason) => actor.drive(id, ctx, |task| {
                    task.executor_gave_up(Some(Outcome::BadResult), reason, Utc::now())
                }),
            }
        }));
    }

    /// The sandbox a verify command runs in: `Ok(None)` when the operator switched the
    /// sandbox off, `Err` when it is required and this kernel cannot provide it.
    fn verify_sandbox(&self) -> Result<Option<crate::sandbox::SandboxLimits>, String> {
        let mode = self.config.executor.sandbox;
        crate::sandbox::peer_runs_allowed(mode, crate::sandbox::support())
            .map_err(|reason| format!("verify command not run: {reason}"))?;
        Ok(
            crate::sandbox::sandboxes_runs(mode, crate::sandbox::support()).then(|| {
                crate::sandbox::SandboxLimits {
                    memory_bytes_max: self
                        .config
                        .resources
                        .max_memory_mb
                        .saturating_mul(1024 * 1024),
                    processes_max: self.config.resources.max_processes,
                    cpu_seconds_max: VERIFY_TIMEOUT.as_secs().saturating_add(60),
                }
            }),
        )
    }

    /// Pay the executor from escrow, record its good outcome and send it the signed
    /// transaction.
    pub(super) fn release(
        &mut self,
        id: Uuid,
        peer: PeerId,
        price: Vibe,
        escrow_id: Uuid,
        ctx: &mut Context<Self>,
    ) {
        let Some(payee) = identity::public_key_of(&peer) else {
            let reason = format!("{peer} has no Ed25519 key to pay");
            return self.drive(id, ctx, |task| task.release_failed(reason));
        };
        let (release, outcome, send) = (
            self.links.release.clone(),
            self.links.outcome.clone(),
            self.links.send.clone(),
        );
        let work = async move {
            let transaction = release
                .send(ReleaseEscrow {
                    task_id: escrow_id,
                    payee,
                    amount: price,
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            outcome.do_send(RecordOutcome {
                peer: payee,
                outcome: Outcome::Completed,
            });
            if let Err(e) = send
                .send(SendTo {
                    peer,
                    message: APNMessage::VibeTransaction(transaction),
                })
                .await
            {
                tracing::warn!(task_id = %id, error = %e, "payment record not delivered; the ledger entry stands");
            }
            Ok::<_, String>(())
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |paid, actor, ctx| match paid {
                    Ok(()) => actor.drive(id, ctx, |task| task.released(price)),
                    Err(e) => actor.drive(id, ctx, |task| task.release_failed(e)),
                }),
        );
    }

    /// Done and paid: show the result, journal the final view, tell the panel and stream.
    pub(super) fn complete(&mut self, id: Uuid, price: Vibe) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        // Set when the result arrived; verified and paid for since.
        let started = task.started.take();
        let (summary, files_modified, diff) = match task.result.take() {
            Some(result) => (result.summary, result.files_modified, Some(result.diff)),
            None => (String::new(), Vec::new(), None),
        };
        let view = &mut task.view;
        view.status = TaskStatus::Completed;
        view.stage = Some(ExecutionStage::Done);
        view.progress_percent = 100;
        view.paid = Some(price);
        view.error = None;
        view.summary = Some(summary.clone());
        view.files_modified = files_modified;
        view.diff = diff;
        view.updated_at = Utc::now();
        let executor = view.assigned_node.clone();
        tracing::info!(task_id = %id, executor = %executor.clone().unwrap_or_default(), %price, "task completed and paid");
        self.journal(id);
        let title = self.title(id);
        let files_count = self
            .tasks
            .get(&id)
            .map_or(0, |t| t.view.files_modified.len() as u64);
        let details = ExecutionDetails {
            task_id: id,
            task_title: title.clone(),
            executor_node: executor.clone(),
            execution_time_ms: started
                .map(|started| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            files_modified: Some(files_count),
            vibe_paid: Some(price),
            ..ExecutionDetails::default()
        };
        self.log(
            TransactionDetails::ExecutionCompleted(details),
            format!("{title}: {summary}"),
        );
        let spent = VibeSpentDetails {
            vibe_spent: price,
            peer_node: executor.clone(),
            task_id: Some(id),
            purpose: Some("task".into()),
        };
        self.log(
            TransactionDetails::VibeSpent(spent),
            format!("paid {} for {title}", executor.unwrap_or_default()),
        );
        self.event(ExecutionEvent::Finished {
            task_id: id,
            succeeded: true,
            detail: summary,
        });
    }
}
