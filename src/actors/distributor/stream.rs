//! What arrives for this node's tasks from the mesh: bids (into the task's state machine)
//! and the execution stream, which only the assigned executor may send. The stream is
//! decrypted with the assignment's Noise session, decoded under named limits, handed to
//! the `ExecutionRelay` and billed (log and progress bytes only, counted after the
//! check); its milestones (started, result, failure) are events for the state machine.
//! A result announced as chunked (`ResultDelivery::Chunked`) is collected from its
//! `ResultChunk`s (in either order with `ExecutionCompleted`), and only once its hash
//! checks out, off the actor thread, does it arrive like an inline one.

use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;

use super::{TaskDistributor, TaskStatus};
use crate::identity;
use crate::ledger::Outcome;
use crate::market::origin_task::{BidOffer, BidRefused};
use crate::market::result_assembly::{self, Announced, AssemblyError, ResultAssembly};
use crate::market::{
    ExecutionResult, FailureDetail, LogLine, ProgressAction, RepoHave, SealedPayload,
};
use crate::messages::{
    APNMessage, DropReason, ExecutionCompleted, ExecutionStage, ResultChunk, ResultDelivery,
    TaskBid, VerifiedEnvelope,
};
use crate::protocol::execution::ExecutionEvent;
use crate::protocol::execution::ExecutionUpdate;
use crate::protocol::panel::{ExecutionDetails, TransactionDetails};
use crate::workspace;

use uuid::Uuid;

impl TaskDistributor {
    pub(super) fn on_bid(
        &mut self,
        envelope: &VerifiedEnvelope,
        bid: &TaskBid,
        ctx: &mut Context<Self>,
    ) {
        let Some(task) = self.tasks.get_mut(&bid.task_id) else {
            self.metrics.count_drop(DropReason::Unauthorized);
            return;
        };
        if bid.bidder != envelope.from_node {
            // A bid naming another node than its signer.
            self.metrics.count_drop(DropReason::Unauthorized);
            return;
        }
        let Some(machine) = task.mesh.as_mut() else {
            return;
        };
        let offer = BidOffer {
            node_id: bid.bidder.to_string(),
            price: bid.price,
            estimated_duration_s: bid.estimated_duration_s,
            valid_until: bid.valid_until,
            free_slots: bid.free_slots,
        };
        let task_id = bid.task_id;
        match machine.bid(envelope.from_peer, offer) {
            Ok(effects) => {
                task.view.bids_received = machine.bids_received();
                if !effects.is_empty() {
                    tracing::debug!(%task_id, bids = machine.bids_received(), "enough bids: the window closes early");
                }
                for effect in effects {
                    self.carry_out(task_id, effect, ctx);
                }
            }
            // A copy, or a bid before the request was out: nothing to count.
            Err(BidRefused::NotBidding | BidRefused::Duplicate) => {}
            // After the window: the bidder holds a slot for it, give it back now.
            Err(BidRefused::Late) => {
                self.tell_cancelled(task_id, envelope.from_peer, "the bid window closed".into())
            }
            Err(BidRefused::TooMany) => self.metrics.count_drop(DropReason::RateLimited),
            Err(refused @ BidRefused::BelowMinimum) => {
                // Refused where it arrives: it takes no place among the bids.
                self.metrics.count_drop(DropReason::BidBelowMinimum);
                tracing::warn!(task_id = %bid.task_id, from = %envelope.from_node, reason = %refused, "bid refused");
            }
        }
    }

    /// An execution message from the mesh: only the assigned executor may send it.
    pub(super) fn on_execution_message(
        &mut self,
        envelope: &VerifiedEnvelope,
        ctx: &mut Context<Self>,
    ) {
        let task_id = match &envelope.message {
            APNMessage::ExecutionStarted(m) => m.task_id,
            APNMessage::ExecutionProgress(m) => m.task_id,
            APNMessage::ExecutionLogs(m) => m.task_id,
            APNMessage::ExecutionCompleted(m) => m.task_id,
            APNMessage::ExecutionFailed(m) => m.task_id,
            APNMessage::ResultChunk(m) => m.task_id,
            _ => return,
        };
        let authorised = self
            .tasks
            .get_mut(&task_id)
            .and_then(|t| t.mesh.as_mut())
            .is_some_and(|m| m.heard_from(envelope.from_peer, Instant::now()));
        if !authorised {
            let reason = match envelope.message {
                APNMessage::ResultChunk(_) => DropReason::BadResultChunk,
                _ => DropReason::Unauthorized,
            };
            self.metrics.count_drop(reason);
            tracing::warn!(%task_id, from = %envelope.from_node, kind = envelope.message.kind(), "execution message from a node not assigned the task");
            return;
        }
        // Only now, from the executor this node assigned, is a log stream traffic it asked
        // for and pays for.
        if matches!(
            envelope.message,
            APNMessage::ExecutionLogs(_) | APNMessage::ExecutionProgress(_)
        ) && let Some(billing) = &self.links.billing
        {
            let _ = billing.try_send(crate::protocol::accounting::BillableBytes {
                peer: envelope.from_peer,
                bytes: envelope.frame_bytes as u64,
            });
        }
        match &envelope.message {
            APNMessage::ExecutionStarted(started) => {
                let Some(task) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                let Some(sealed) = task.current_sealed() else {
                    return;
                };
                let Some(pending) = sealed.pending.take() else {
                    return;
                };
                match pending.complete(&started.noise_handshake) {
                    Ok((session, said)) => {
                        sealed.session = Some(session);
                        // What the executor's cache holds; an answer that does not decode
                        // (or says nothing) only means the whole history is sent.
                        sealed.repo_have = <RepoHave as SealedPayload>::decode(&said)
                            .map(|have| have.checked_commits())
                            .unwrap_or_default();
                    }
                    Err(e) => {
                        self.metrics.count_drop(DropReason::DecryptFailed);
                        let reason = format!("handshake failed: {e}");
                        return self.drive(task_id, ctx, |task| {
                            task.executor_gave_up(Some(Outcome::BadResult), reason, Utc::now())
                        });
                    }
                }
                let executor = task.view.assigned_node.clone().unwrap_or_default();
                let task_attempt_id = Some(started.execution_id);
                task.view.task_attempt_id = task_attempt_id;
                task.started = Some(std::time::Instant::now());
                let details = ExecutionDetails {
                    execution_time_ms: None,
                    ..self.execution_details(task_id, Some(executor.clone()))
                };
                self.log(
                    TransactionDetails::ExecutionStarted(details),
                    format!("{} running on {executor}", self.title(task_id)),
                );
                self.event(ExecutionEvent::Started {
                    task_id,
                    executor,
                    task_attempt_id,
                });
                self.drive(task_id, ctx, |task| task.started());
            }
            APNMessage::ExecutionProgress(progress) => {
                // An unreadable action is counted; the stage and percent still count.
                let opened = progress
                    .current_action
                    .as_ref()
                    .and_then(|sealed| self.open_payload::<ProgressAction>(task_id, sealed));
                let action = match opened.map(|a| a.check().map(|()| a)) {
                    Some(Ok(action)) => Some(action),
                    Some(Err(e)) => {
                        // A peer past the limits its own node keeps to: its list is not shown.
                        self.metrics.count_drop(DropReason::Oversized);
                        tracing::warn!(%task_id, from = %envelope.from_node, error = %e, "progress report refused");
                        return;
                    }
                    None => None,
                };
                if let Some(received) = action.as_ref().and_then(|a| a.repo_chunks_received)
                    && let Some(acked) = self
                        .tasks
                        .get_mut(&task_id)
                        .and_then(|t| t.current_sealed())
                        .and_then(|s| s.repo_acked.as_ref())
                {
                    acked.send_if_modified(|known| {
                        let newer = received > *known;
                        *known = (*known).max(received);
                        newer
                    });
                }
                let (action, files_modified, files_omitted) = match action {
                    Some(a) => (a.action, a.files_modified, a.files_omitted),
                    None => (String::new(), Vec::new(), 0),
                };
                self.on_update(
                    task_id,
                    ExecutionUpdate::Progress {
                        stage: progress.stage,
                        percent: progress.percent.min(100),
                        action,
                        files_modified,
                        files_omitted,
                    },
                );
            }
            APNMessage::ExecutionLogs(logs) => {
                if let Some(lines) = self.open_payload::<Vec<LogLine>>(task_id, &logs.lines) {
                    let ready = self
                        .tasks
                        .get_mut(&task_id)
                        .and_then(|t| t.current_sealed())
                        .map(|s| s.logs.accept(logs.sequence, lines))
                        .unwrap_or_default();
                    for lines in ready {
                        self.on_update(task_id, ExecutionUpdate::Logs(lines));
                    }
                }
            }
            APNMessage::ExecutionCompleted(completed) => {
                self.flush_logs(task_id);
                let signed = identity::verify_signature(
                    &envelope.from_key,
                    completed.result_hash.as_bytes(),
                    &completed.result_signature,
                );
                match &completed.delivery {
                    ResultDelivery::Inline => {
                        self.on_inline_result(task_id, completed, signed, ctx)
                    }
                    ResultDelivery::Chunked {
                        bytes,
                        total_chunks,
                        sha256,
                    } => {
                        if !signed {
                            return self.drive(task_id, ctx, |task| {
                                task.executor_gave_up(
                                    Some(Outcome::BadResult),
                                    "result signature does not verify".into(),
                                    Utc::now(),
                                )
                            });
                        }
                        let announced = Announced {
                            bytes: *bytes,
                            sha256: sha256.clone(),
                            result_hash: completed.result_hash.clone(),
                        };
                        self.on_chunked_result(
                            task_id,
                            completed.execution_id,
                            *total_chunks,
                            announced,
                            ctx,
                        );
                    }
                }
            }
            APNMessage::ResultChunk(chunk) => self.on_result_chunk(task_id, chunk, ctx),
            APNMessage::ExecutionFailed(failed) => {
                self.flush_logs(task_id);
                // A run's failure is sealed; only a refusal before any session is clear.
                let has_session = self
                    .tasks
                    .get_mut(&task_id)
                    .and_then(|t| t.current_sealed())
                    .is_some_and(|s| s.session.is_some());
                let (stage, error) = match (&failed.detail, has_session) {
                    (None, _) => (failed.stage, failed.error.clone()),
                    (Some(sealed), true) => {
                        match self.open_payload::<FailureDetail>(task_id, sealed) {
                            Some(detail) => (detail.stage, detail.error),
                            None => (failed.stage, "its failure does not decrypt".into()),
                        }
                    }
                    (Some(_), false) => {
                        self.metrics.count_drop(DropReason::DecryptFailed);
                        (failed.stage, "its failure came before its session".into())
                    }
                };
                let reason = format!("failed at {stage:?}: {error}");
                self.event(ExecutionEvent::Log {
                    task_id,
                    line: LogLine::new("apn", reason.clone(), Utc::now().timestamp_millis()),
                    task_attempt_id: self.attempt_of(task_id),
                });
                // A nil execution id: the executor refused the assignment and ran nothing.
                let outcome = (!failed.execution_id.is_nil()).then_some(Outcome::Failed);
                self.drive(task_id, ctx, |task| {
                    task.executor_gave_up(outcome, reason, Utc::now())
                });
            }
            _ => {}
        }
    }

    /// A result sealed inside `ExecutionCompleted`.
    fn on_inline_result(
        &mut self,
        task_id: Uuid,
        completed: &ExecutionCompleted,
        signed: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(result) = self.open_payload::<ExecutionResult>(task_id, &completed.result) else {
            return self.drive(task_id, ctx, |task| {
                task.executor_gave_up(
                    Some(Outcome::BadResult),
                    "result does not decrypt".into(),
                    Utc::now(),
                )
            });
        };
        let hash = workspace::result_hash(&result.diff, &result.summary, &result.files_modified);
        if hash != completed.result_hash || !signed {
            return self.drive(task_id, ctx, |task| {
                task.executor_gave_up(
                    Some(Outcome::BadResult),
                    "result hash or signature does not verify".into(),
                    Utc::now(),
                )
            });
        }
        if let Some(task) = self.tasks.get_mut(&task_id) {
            task.result = Some(result);
        }
        self.drive(task_id, ctx, |task| task.result_arrived());
    }

    /// `ExecutionCompleted` announced a chunked result: check the announcement against
    /// this node's cap and the chunks so far; collect the rest, or finish.
    fn on_chunked_result(
        &mut self,
        task_id: Uuid,
        execution_id: Uuid,
        total_chunks: u32,
        announced: Announced,
        ctx: &mut Context<Self>,
    ) {
        let cap = self.config.executor.result_bytes_max;
        let running = self.attempt_of(task_id) == Some(execution_id);
        let Some(sealed) = self
            .tasks
            .get_mut(&task_id)
            .and_then(|t| t.current_sealed())
        else {
            return;
        };
        let checked = result_assembly::check_announcement(announced.bytes, total_chunks, cap)
            .and_then(|()| {
                if !running {
                    return Err(AssemblyError::WrongRun(execution_id));
                }
                let mut assembly = match sealed.result_chunks.take() {
                    Some(assembly) if assembly.execution_id() == execution_id => assembly,
                    // No chunk yet: the announcement comes first this time.
                    _ => ResultAssembly::new(execution_id, total_chunks, cap)?,
                };
                assembly.announce(total_chunks, announced, cap)?;
                Ok(assembly)
            });
        match checked {
            Ok(assembly) => {
                let complete = assembly.is_complete();
                sealed.result_chunks = Some(assembly);
                if complete {
                    self.finish_chunked_result(task_id, ctx);
                }
            }
            Err(e) => {
                tracing::warn!(%task_id, error = %e, "chunked result refused");
                // Over this node's own cap is no fault of the executor's result.
                let outcome = match e {
                    AssemblyError::TooLarge { .. } => Outcome::Failed,
                    _ => Outcome::BadResult,
                };
                let reason = format!("result refused: {e}");
                self.drive(task_id, ctx, |task| {
                    task.executor_gave_up(Some(outcome), reason, Utc::now())
                });
            }
        }
    }

    /// A chunk of the current run's result: opened and collected under this node's cap;
    /// anything that does not fit is dropped and counted (`bad_result_chunk`).
    fn on_result_chunk(&mut self, task_id: Uuid, chunk: &ResultChunk, ctx: &mut Context<Self>) {
        let cap = self.config.executor.result_bytes_max;
        let running = self.attempt_of(task_id) == Some(chunk.execution_id);
        let accepted = self
            .tasks
            .get_mut(&task_id)
            .and_then(|t| t.current_sealed())
            .ok_or_else(|| "no assignment in force".to_string())
            .and_then(|sealed| {
                if !running {
                    return Err(format!(
                        "chunk of run {}, not the run in force",
                        chunk.execution_id
                    ));
                }
                let session = sealed.session.as_ref().ok_or("chunk before the session")?;
                if sealed.result_chunks.is_none() {
                    sealed.result_chunks = Some(
                        ResultAssembly::new(chunk.execution_id, chunk.total, cap)
                            .map_err(|e| e.to_string())?,
                    );
                }
                let assembly = sealed
                    .result_chunks
                    .as_mut()
                    .ok_or("no result being collected")?;
                let data = session
                    .open(&chunk.data)
                    .map_err(|e| format!("chunk does not decrypt: {e}"))?;
                assembly
                    .accept(chunk.execution_id, chunk.index, chunk.total, data)
                    .map_err(|e| e.to_string())?;
                Ok(assembly.is_complete())
            });
        match accepted {
            Ok(true) => self.finish_chunked_result(task_id, ctx),
            Ok(false) => {}
            Err(reason) => {
                self.metrics.count_drop(DropReason::BadResultChunk);
                tracing::warn!(%task_id, index = chunk.index, total = chunk.total, %reason, "result chunk dropped");
            }
        }
    }

    /// Every chunk is in and announced: check the whole against its hash, decode it and
    /// check its signed result hash, off the actor thread; then the result has arrived.
    fn finish_chunked_result(&mut self, task_id: Uuid, ctx: &mut Context<Self>) {
        let cap = self.config.executor.result_bytes_max;
        let Some(sealed) = self
            .tasks
            .get_mut(&task_id)
            .and_then(|t| t.current_sealed())
        else {
            return;
        };
        let escrow_id = sealed.escrow_id;
        let Some(assembly) = sealed.result_chunks.take() else {
            return;
        };
        // Joining, hashing and decoding tens of MiB: not on the actor thread.
        let check = tokio::task::spawn_blocking(move || {
            let (bytes, announced) = assembly.into_bytes().ok_or("the result is not complete")?;
            let result =
                result_assembly::finish(&bytes, &announced, cap).map_err(|e| e.to_string())?;
            let hash =
                workspace::result_hash(&result.diff, &result.summary, &result.files_modified);
            if hash != announced.result_hash {
                return Err("result hash does not verify".to_string());
            }
            Ok(result)
        });
        ctx.spawn(check.into_actor(self).map(move |checked, actor, ctx| {
            // The assignment may have ended while the result was checked.
            let current = actor
                .tasks
                .get_mut(&task_id)
                .and_then(|t| t.current_sealed())
                .is_some_and(|s| s.escrow_id == escrow_id);
            if !current {
                return;
            }
            match checked.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(result) => {
                    if let Some(task) = actor.tasks.get_mut(&task_id) {
                        task.result = Some(result);
                    }
                    actor.drive(task_id, ctx, |task| task.result_arrived());
                }
                Err(reason) => {
                    tracing::warn!(%task_id, %reason, "chunked result refused");
                    let reason = format!("result refused: {reason}");
                    actor.drive(task_id, ctx, |task| {
                        task.executor_gave_up(Some(Outcome::BadResult), reason, Utc::now())
                    });
                }
            }
        }));
    }

    /// The run attempt in force for a task, once one started.
    fn attempt_of(&self, task_id: Uuid) -> Option<Uuid> {
        self.tasks.get(&task_id)?.view.task_attempt_id
    }

    /// The run ended: log batches still waiting for a missing one go out now, in order.
    fn flush_logs(&mut self, task_id: Uuid) {
        let held = self
            .tasks
            .get_mut(&task_id)
            .and_then(|t| t.current_sealed())
            .map(|s| s.logs.drain())
            .unwrap_or_default();
        for lines in held {
            self.on_update(task_id, ExecutionUpdate::Logs(lines));
        }
    }

    /// Open a payload sealed in the current assignment's session and decode it under its
    /// named limit; a failure of either is counted (`decrypt_failed`).
    fn open_payload<T: SealedPayload>(
        &mut self,
        task_id: Uuid,
        sealed: &crate::messages::Sealed,
    ) -> Option<T> {
        let session = self
            .tasks
            .get_mut(&task_id)
            .and_then(|t| t.current_sealed())
            .and_then(|s| s.session.as_mut());
        let Some(session) = session else {
            self.metrics.count_drop(DropReason::DecryptFailed);
            return None;
        };
        let decoded = session
            .open(sealed)
            .ok()
            .and_then(|plain| T::decode(&plain).ok());
        if decoded.is_none() {
            self.metrics.count_drop(DropReason::DecryptFailed);
        }
        decoded
    }

    /// A decrypted (remote) or plaintext (local) update.
    pub(super) fn on_update(&mut self, id: Uuid, update: ExecutionUpdate) {
        match update {
            ExecutionUpdate::Started { execution_id } => {
                self.touch(id, |view| {
                    view.status = TaskStatus::Running;
                    view.task_attempt_id = Some(execution_id);
                });
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.started = Some(std::time::Instant::now());
                }
                let details = ExecutionDetails {
                    execution_time_ms: None,
                    ..self.execution_details(id, Some("local".into()))
                };
                self.log(
                    TransactionDetails::ExecutionStarted(details),
                    format!("{} running on this node", self.title(id)),
                );
                self.event(ExecutionEvent::Started {
                    task_id: id,
                    executor: "local".into(),
                    task_attempt_id: Some(execution_id),
                });
            }
            ExecutionUpdate::Progress {
                stage,
                percent,
                action,
                files_modified,
                files_omitted,
            } => {
                let shown = action.clone();
                let files = files_modified.clone();
                self.touch(id, |view| {
                    view.stage = Some(stage);
                    view.progress_percent = percent;
                    if !shown.is_empty() {
                        view.current_action = Some(shown);
                    }
                    // Every report of a run carries the whole list so far: it replaces.
                    view.files_modified = files;
                });
                self.event(ExecutionEvent::Progress {
                    task_id: id,
                    stage,
                    percent,
                    action,
                    files_modified,
                    files_omitted,
                    task_attempt_id: self.attempt_of(id),
                });
            }
            ExecutionUpdate::Logs(lines) => {
                let task_attempt_id = self.attempt_of(id);
                for line in lines {
                    self.event(ExecutionEvent::Log {
                        task_id: id,
                        line,
                        task_attempt_id,
                    });
                }
            }
            ExecutionUpdate::Completed { result, .. } => {
                // Only local runs arrive here complete; remote results go through
                // verification and settlement first.
                let summary = result.summary.clone();
                let details = ExecutionDetails {
                    files_modified: Some(result.files_modified.len() as u64),
                    ..self.execution_details(id, Some("local".into()))
                };
                self.log(
                    TransactionDetails::ExecutionCompleted(details),
                    format!("{}: {summary}", self.title(id)),
                );
                self.touch(id, |view| {
                    view.status = TaskStatus::Completed;
                    view.stage = Some(ExecutionStage::Done);
                    view.progress_percent = 100;
                    view.summary = Some(result.summary);
                    view.files_modified = result.files_modified;
                    view.diff = Some(result.diff);
                });
                self.event(ExecutionEvent::Finished {
                    task_id: id,
                    succeeded: true,
                    detail: summary,
                });
            }
            ExecutionUpdate::Failed { stage, error, .. } => {
                self.fail(id, format!("failed at {stage:?}: {error}"));
            }
        }
    }
}
