//! Where a run's updates go: to this node's distributor for a local run, or sealed in the
//! run's Noise session and sent to the originator (log batches numbered in order).

use super::*;

/// Where updates go.
pub(super) struct Reporter {
    pub(super) task_id: Uuid,
    pub(super) execution_id: Uuid,
    pub(super) identity: Identity,
    pub(super) send: Recipient<SendTo>,
    pub(super) origin: RunOrigin,
    /// The next log batch's sequence number.
    pub(super) log_sequence: u64,
    /// The files the run has changed so far, as last reported (every progress update
    /// carries the whole list, so the originator's view is right after any one of them).
    pub(super) files: Vec<String>,
}

impl Reporter {
    /// A progress update at `stage` and `percent` with `action` (empty: no new action) and
    /// the files changed so far, bounded as a progress report may be.
    pub(super) async fn progress(
        &mut self,
        stage: ExecutionStage,
        percent: u8,
        action: impl Into<String>,
    ) {
        let bounded = ProgressAction::bounded(stage, action.into(), &self.files);
        self.send(ExecutionUpdate::Progress {
            stage,
            percent,
            action: bounded.action,
            files_modified: bounded.files_modified,
            files_omitted: bounded.files_omitted,
        })
        .await
    }

    pub(super) async fn send(&mut self, update: ExecutionUpdate) {
        let (origin, session) = match &mut self.origin {
            RunOrigin::Local { distributor } => {
                if let Err(e) = distributor
                    .send(LocalExecution {
                        task_id: self.task_id,
                        update,
                    })
                    .await
                {
                    tracing::warn!(task_id = %self.task_id, error = %e, "distributor gone");
                }
                return;
            }
            RunOrigin::Remote {
                origin, session, ..
            } => (*origin, session),
        };
        let message = match seal_update(
            self.task_id,
            self.execution_id,
            &self.identity,
            session,
            &mut self.log_sequence,
            update,
        ) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(task_id = %self.task_id, error = %e, "cannot seal an update");
                return;
            }
        };
        match self
            .send
            .send(SendTo {
                peer: origin,
                message,
            })
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(task_id = %self.task_id, error = %e, "update not delivered")
            }
            Err(e) => tracing::warn!(task_id = %self.task_id, error = %e, "peer manager gone"),
        }
    }
}

fn seal_update(
    task_id: Uuid,
    execution_id: Uuid,
    identity: &Identity,
    session: &mut E2eSession,
    log_sequence: &mut u64,
    update: ExecutionUpdate,
) -> Result<APNMessage, String> {
    fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
        crate::messages::codec::encode(value).map_err(|e| e.to_string())
    }
    Ok(match update {
        // A remote start is `ExecutionStarted` with the handshake answer, sent by `run`.
        ExecutionUpdate::Started { .. } => return Err("start is not sealed".into()),
        ExecutionUpdate::Progress {
            stage,
            percent,
            action,
            files_modified,
            files_omitted,
        } => {
            let plaintext = encode(&ProgressAction {
                stage,
                action,
                files_modified,
                files_omitted,
            })?;
            APNMessage::ExecutionProgress(ExecutionProgress {
                task_id,
                execution_id,
                stage,
                percent,
                current_action: Some(session.seal(&plaintext).map_err(|e| e.to_string())?),
            })
        }
        ExecutionUpdate::Logs(lines) => {
            let plaintext = encode(&lines)?;
            let sequence = *log_sequence;
            *log_sequence += 1;
            APNMessage::ExecutionLogs(ExecutionLogs {
                task_id,
                execution_id,
                sequence,
                lines: session.seal(&plaintext).map_err(|e| e.to_string())?,
            })
        }
        ExecutionUpdate::Completed { result, usage } => {
            let result_hash =
                workspace::result_hash(&result.diff, &result.summary, &result.files_modified);
            let result_signature = ByteBuf::from(identity.sign(result_hash.as_bytes()));
            let plaintext = encode(&result)?;
            APNMessage::ExecutionCompleted(ExecutionCompleted {
                task_id,
                execution_id,
                result_hash,
                result_signature,
                result: session.seal(&plaintext).map_err(|e| e.to_string())?,
                usage,
            })
        }
        ExecutionUpdate::Failed {
            stage,
            error,
            usage,
        } => {
            let detail = encode(&FailureDetail { stage, error })?;
            APNMessage::ExecutionFailed(ExecutionFailed {
                task_id,
                execution_id,
                stage: ExecutionStage::Setup,
                error: String::new(),
                detail: Some(session.seal(&detail).map_err(|e| e.to_string())?),
                usage,
            })
        }
    })
}
