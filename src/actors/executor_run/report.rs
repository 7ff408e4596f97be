//! Where a run's updates go: to this node's distributor for a local run, or sealed in the
//! run's Noise session and sent to the originator (log batches numbered in order). A
//! result too large for one frame goes first as numbered `ResultChunk`s, each sealed and
//! acknowledged before the next, then `ExecutionCompleted` announcing their count, size
//! and hash (`ResultDelivery::Chunked`).

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

    /// Tell a remote originator how many of the repository's chunks are written (its
    /// sender's flow control), with a line the user sees; nothing for a local run.
    pub(super) async fn repo_received(&mut self, received: u32, total: u32, bytes: u64) {
        let RunOrigin::Remote {
            origin, session, ..
        } = &mut self.origin
        else {
            return;
        };
        let megabytes = |chunks: u32| {
            (u64::from(chunks) * crate::market::REPO_CHUNK_BYTES as u64).min(bytes) as f64 / 1e6
        };
        let action = ProgressAction {
            stage: ExecutionStage::Setup,
            action: format!(
                "receiving the repository: {:.1} of {:.1} MB",
                megabytes(received),
                megabytes(total)
            ),
            files_modified: Vec::new(),
            files_omitted: 0,
            repo_chunks_received: Some(received),
        };
        let sealed = crate::messages::codec::encode(&action)
            .map_err(|e| e.to_string())
            .and_then(|plain| session.seal(&plain).map_err(|e| e.to_string()));
        let current_action = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!(task_id = %self.task_id, error = %e, "cannot seal a progress report");
                return;
            }
        };
        let message = APNMessage::ExecutionProgress(ExecutionProgress {
            task_id: self.task_id,
            execution_id: self.execution_id,
            stage: ExecutionStage::Setup,
            percent: 0,
            current_action: Some(current_action),
        });
        let peer = *origin;
        if let Err(e) = self.send.send(SendTo { peer, message }).await {
            tracing::warn!(task_id = %self.task_id, error = %e, "peer manager gone");
        }
    }

    pub(super) async fn send(&mut self, update: ExecutionUpdate) {
        let update = match update {
            ExecutionUpdate::Completed { result, usage }
                if matches!(self.origin, RunOrigin::Remote { .. }) =>
            {
                return self.send_result(result, usage).await;
            }
            update => update,
        };
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

impl Reporter {
    /// Send a remote run's result: inline when its encoding fits a frame, else in chunks
    /// followed by `ExecutionCompleted` announcing them. Encoding and hashing tens of MiB
    /// happen off this (actor) thread; each chunk is sealed as it is sent.
    async fn send_result(&mut self, result: ExecutionResult, usage: ComputeUsage) {
        let task_id = self.task_id;
        let prepared = tokio::task::spawn_blocking(move || {
            let result_hash =
                workspace::result_hash(&result.diff, &result.summary, &result.files_modified);
            let encoded = crate::messages::codec::encode(&result).map_err(|e| e.to_string())?;
            let sha256 = (encoded.len() > RESULT_INLINE_BYTES_MAX)
                .then(|| crate::market::result_assembly::encoded_sha256(&encoded));
            Ok::<_, String>((result_hash, encoded, sha256))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|prepared| prepared);
        let (result_hash, encoded, sha256) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::warn!(%task_id, error = %e, "cannot encode the result");
                return;
            }
        };
        let result_signature = ByteBuf::from(self.identity.sign(result_hash.as_bytes()));
        let RunOrigin::Remote {
            origin, session, ..
        } = &mut self.origin
        else {
            return;
        };
        let origin = *origin;
        let (sealed, delivery) = match sha256 {
            None => (session.seal(&encoded), ResultDelivery::Inline),
            Some(sha256) => {
                let bytes = encoded.len() as u64;
                let total = u32::try_from(crate::market::result_chunks(bytes)).unwrap_or(u32::MAX);
                for (index, part) in encoded.chunks(RESULT_CHUNK_BYTES).enumerate() {
                    let data = match session.seal(part) {
                        Ok(data) => data,
                        Err(e) => {
                            tracing::warn!(%task_id, error = %e, "cannot seal a result chunk");
                            return;
                        }
                    };
                    let message = APNMessage::ResultChunk(ResultChunk {
                        task_id,
                        execution_id: self.execution_id,
                        index: index as u32,
                        total,
                        data,
                    });
                    // One after another, each acknowledged: the order the originator
                    // expects, and no more than one chunk in flight per run.
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
                            tracing::warn!(%task_id, index, error = %e, "result chunk not delivered");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(%task_id, error = %e, "peer manager gone");
                            return;
                        }
                    }
                }
                (
                    session.seal(&[]),
                    ResultDelivery::Chunked {
                        bytes,
                        total_chunks: total,
                        sha256,
                    },
                )
            }
        };
        let result = match sealed {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(%task_id, error = %e, "cannot seal the result");
                return;
            }
        };
        let message = APNMessage::ExecutionCompleted(ExecutionCompleted {
            task_id,
            execution_id: self.execution_id,
            result_hash,
            result_signature,
            result,
            usage,
            delivery,
        });
        match self
            .send
            .send(SendTo {
                peer: origin,
                message,
            })
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(%task_id, error = %e, "result not delivered"),
            Err(e) => tracing::warn!(%task_id, error = %e, "peer manager gone"),
        }
    }
}

fn seal_update(
    task_id: Uuid,
    execution_id: Uuid,
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
                repo_chunks_received: None,
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
        // A remote result goes through `Reporter::send_result`, off this thread.
        ExecutionUpdate::Completed { .. } => return Err("a result is sent on its own".into()),
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
