//! One execution, from repository to result: the task a `TaskExecutor` spawns per run.
//!
//! Remote runs talk to their originator through the peer manager, every payload sealed
//! with the run's Noise session: `ExecutionStarted` (handshake answer), then the git bundle
//! arrives in `RepoChunk`s, then `ExecutionProgress` (stages setup → coding → testing →
//! done, or what the agent reports with `APN_PROGRESS` lines or its structured output, plus
//! a heartbeat; each carries the files changed so far, from the agent's reports and the
//! workspace watcher of `watch`), batched `ExecutionLogs` (each line typed `Agent`,
//! `Stdout` or `Stderr`), and `ExecutionCompleted` (result hash signed by this node) or
//! `ExecutionFailed`. Each send waits for the previous one (backpressure, and order).
//!
//! Local runs report the same updates, in plaintext, to the distributor. Only they may name
//! the repository as a path on this node's disk (`RepoDelivery::LocalPath`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent_process::{self, AgentEvent, AgentOutcome, AgentSpec};
use crate::config::Config;
use crate::identity::Identity;
use crate::market::{
    ExecutionResult, FailureDetail, LogLine, ProgressAction, RESULT_CHUNK_BYTES,
    RESULT_INLINE_BYTES_MAX, RepoDelivery, TaskPayload,
};
use crate::mesh::e2e::E2eSession;
use crate::messages::{
    APNMessage, ComputeUsage, ExecutionCompleted, ExecutionFailed, ExecutionLogs,
    ExecutionProgress, ExecutionStage, ExecutionStarted, RepoChunk, ResultChunk, ResultDelivery,
};
use crate::protocol::accounting::ComputeUsed;
use crate::protocol::mesh::SendTo;
use crate::protocol::network_ledger::CommitResult;
use crate::protocol::panel::PanelSender;
use crate::sandbox::{self, SandboxLimits, SandboxNetwork, SandboxPolicy};
use crate::workspace;

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::execution::{ExecutionUpdate, LocalExecution};

/// Log lines are sent at least this often while a run produces output.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// A log batch is sent once it holds this many lines…
const LOG_BATCH_LINES_MAX: usize = 200;
/// …or this many bytes.
const LOG_BATCH_BYTES_MAX: usize = 48 * 1024;
/// Agent events buffered between the process reader and this task.
const AGENT_EVENTS_QUEUED_MAX: usize = 1024;
/// How long the executor waits for the repository bundle.
const BUNDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest repository bundle accepted, in bytes.
pub const BUNDLE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// CPU seconds a sandboxed process may use beyond the run's wall-clock timeout (the
/// timeout is what ends a run; the CPU limit only stops a runaway after it).
const CPU_SECONDS_MARGIN: u64 = 60;

/// The directories of one run besides its workspace: a fresh `HOME` and a private temp dir,
/// siblings of the workspace so that nothing in them shows up in the diff.
pub struct RunDirs {
    /// The checkout the agent works in; the result is its diff against the base commit.
    pub workspace: PathBuf,
    /// The run's private `HOME` (`<workspace>.home`).
    pub home: PathBuf,
    /// The run's private `TMPDIR` (`<workspace>.tmp`).
    pub tmp: PathBuf,
    /// The repository cache's objects the workspace borrows (git `alternates`), readable
    /// by the agent, never writable; `None` for a workspace with its own objects.
    pub shared_objects: Option<PathBuf>,
}

impl RunDirs {
    /// The directories of the run whose workspace is `workspace`; creates nothing.
    pub fn beside(workspace: &std::path::Path) -> Self {
        RunDirs {
            workspace: workspace.to_path_buf(),
            home: workspace.with_extension("home"),
            tmp: workspace.with_extension("tmp"),
            shared_objects: None,
        }
    }

    /// Create the home and temp dirs, mode 0700.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [&self.home, &self.tmp] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        Ok(())
    }

    /// `HOME`, `TMPDIR` and `PATH` of the run.
    pub fn environment(&self) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        vec![
            ("HOME".into(), self.home.display().to_string()),
            ("TMPDIR".into(), self.tmp.display().to_string()),
            ("PATH".into(), path),
        ]
    }
}

/// Variables a run copies from the node: `executor.pass_env`, then the profile's own.
pub fn agent_pass_env(config: &Config, profile: &crate::config::ProfileConfig) -> Vec<String> {
    let mut names = config.executor.pass_env.clone();
    for name in &profile.pass_env {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Variables a run gets set: the profile's fixed `env`, then the run's own `HOME`, `TMPDIR`
/// and `PATH`, which a profile cannot override.
pub fn agent_extra_env(
    profile: &crate::config::ProfileConfig,
    dirs: &RunDirs,
) -> Vec<(String, String)> {
    let mut variables: Vec<(String, String)> = profile
        .env
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    variables.extend(dirs.environment());
    variables
}

/// The sandbox of an agent run: its workspace, home and temp dir writable, the workspace's
/// `.git` read-only, the profile's program tree and extra paths readable, TCP only to the
/// profile's ports (none: a private network), the node's memory and process limits.
pub fn agent_sandbox_policy(
    config: &Config,
    profile: &crate::config::ProfileConfig,
    dirs: &RunDirs,
    timeout_s: u64,
) -> SandboxPolicy {
    let search_path = std::env::var_os("PATH");
    let data_dir = std::fs::canonicalize(&config.node.data_dir)
        .unwrap_or_else(|_| config.node.data_dir.clone());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut protected = vec![data_dir.as_path()];
    if let Some(home) = &home {
        protected.push(home.as_path());
    }
    let mut read_only_paths = sandbox::paths::program_read_only_paths(
        &profile.program,
        search_path.as_deref(),
        &protected,
    );
    read_only_paths.extend(profile.read_only_paths.iter().cloned());
    read_only_paths.extend(dirs.shared_objects.iter().cloned());
    SandboxPolicy {
        writable_dirs: vec![dirs.workspace.clone(), dirs.home.clone(), dirs.tmp.clone()],
        read_only_paths,
        read_only_binds: vec![dirs.workspace.join(".git")],
        network: if profile.network_ports.is_empty() {
            SandboxNetwork::None
        } else {
            SandboxNetwork::TcpPorts(profile.network_ports.clone())
        },
        limits: SandboxLimits {
            memory_bytes_max: config.resources.max_memory_mb.saturating_mul(1024 * 1024),
            processes_max: config.resources.max_processes,
            cpu_seconds_max: timeout_s.saturating_add(CPU_SECONDS_MARGIN),
        },
    }
}

/// Who the run reports to.
pub enum RunOrigin {
    /// A peer assigned the task: updates go back to it, sealed with the Noise session.
    Remote {
        /// The originator's peer id.
        origin: PeerId,
        /// The Noise session every update is sealed with.
        session: Box<E2eSession>,
        /// The Noise handshake answer, sent in `ExecutionStarted` before any sealed update.
        handshake_answer: Vec<u8>,
        /// The repository cache's entry for this originator and repository, held for the
        /// run (`None` when the task named no repository to cache).
        cache: Option<workspace::CacheLease>,
    },
    /// This node's own task: updates go to the distributor in plaintext.
    Local {
        /// The distributor, which takes the run's updates.
        distributor: Recipient<LocalExecution>,
    },
}

/// Everything a run needs.
pub struct RunContext {
    /// The task being run.
    pub task_id: Uuid,
    /// This node's keys: its node id goes in `ExecutionStarted`, and it signs the result hash.
    pub identity: Identity,
    /// The node's configuration: data dir, executor profiles, sandbox and resource limits.
    pub config: Arc<Config>,
    /// The peer manager, which carries the execution stream to the originator.
    pub send: Recipient<SendTo>,
    /// The accountant, told the compute the run used.
    pub compute: Option<Recipient<ComputeUsed>>,
    /// The panel hub (the compute a peer's run contributed is shown by the accountant, once paid).
    pub panel: Option<PanelSender>,
    /// Who assigned the run, and so where its updates go.
    pub origin: RunOrigin,
    /// The task itself: prompt, profile, base commit, how the repository comes, timeout.
    pub payload: TaskPayload,
    /// The repository bundle's chunks, as they arrive from the originator.
    pub chunks: mpsc::Receiver<RepoChunk>,
    /// Cancelled to stop the run: a cancel from the originator or this node, or shutdown.
    pub cancel: CancellationToken,
    /// Settlement mode `jetstream`: the escrow paying for the run, and the network settler
    /// that commits to the result's hash on it before the result is delivered.
    pub commit: Option<(Uuid, Recipient<CommitResult>)>,
}

mod bundle;
mod report;
mod watch;

use report::Reporter;

/// Run one execution to its end. Returns whether it completed.
pub async fn run(mut run: RunContext) -> bool {
    let execution_id = Uuid::new_v4();
    let task_id = run.task_id;
    let started_at = Instant::now();
    // The handshake answer goes first, in ExecutionStarted; after it every update is sealed.
    let mut handshake_answer = Vec::new();
    if let RunOrigin::Remote {
        handshake_answer: answer,
        ..
    } = &mut run.origin
    {
        handshake_answer = std::mem::take(answer);
    }
    let mut reporter = Reporter {
        task_id,
        execution_id,
        identity: run.identity.clone(),
        send: run.send.clone(),
        origin: run.origin,
        log_sequence: 0,
        files: Vec::new(),
    };
    match &reporter.origin {
        RunOrigin::Remote { origin, .. } => {
            let message = APNMessage::ExecutionStarted(ExecutionStarted {
                task_id,
                execution_id,
                executor: run.identity.node_id().clone(),
                started_at: Utc::now(),
                noise_handshake: ByteBuf::from(handshake_answer),
            });
            if let Err(e) = run
                .send
                .send(SendTo {
                    peer: *origin,
                    message,
                })
                .await
            {
                tracing::warn!(%task_id, error = %e, "cannot announce the start");
            }
        }
        RunOrigin::Local { .. } => {
            reporter
                .send(ExecutionUpdate::Started { execution_id })
                .await
        }
    }
    reporter
        .progress(ExecutionStage::Setup, 0, "preparing the workspace")
        .await;

    let workspace_dir = run
        .config
        .node
        .data_dir
        .join("workspaces")
        .join(execution_id.to_string());
    let outcome = execute(
        &mut run.chunks,
        &run.config,
        &run.payload,
        &workspace_dir,
        &mut reporter,
        &run.cancel,
    )
    .await;
    let succeeded = matches!(outcome, ExecutionUpdate::Completed { .. });
    let usage = match &outcome {
        ExecutionUpdate::Completed { usage, .. } | ExecutionUpdate::Failed { usage, .. } => *usage,
        _ => ComputeUsage::default(),
    };
    if succeeded {
        reporter.progress(ExecutionStage::Done, 100, "done").await;
    }
    if let (Some((hold, commit)), ExecutionUpdate::Completed { result, .. }) =
        (&run.commit, &outcome)
    {
        commit_result(*hold, commit, result).await;
    }
    reporter.send(outcome).await;
    // The panel's compute_contributed entry comes from the accountant once the escrow
    // paying for the run is credited: it shows VIBE earned, not a local estimate.
    if let Some(compute) = &run.compute {
        let peer = match &reporter.origin {
            RunOrigin::Remote { origin, .. } => Some(*origin),
            RunOrigin::Local { .. } => None,
        };
        compute.do_send(ComputeUsed {
            task_id,
            peer,
            usage,
        });
    }
    if !run.config.executor.keep_workspaces {
        // A checkout can hold many files: removed on the blocking pool, never on the
        // thread the node's actors share.
        let removed = blocking(move || {
            let dirs = RunDirs::beside(&workspace_dir);
            for path in [
                workspace_dir.clone(),
                workspace_dir.with_extension("bundle"),
                dirs.home,
                dirs.tmp,
            ] {
                workspace::remove_workspace(&path);
            }
            Ok(())
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(%task_id, error = %e, "cannot remove the run's directories");
        }
    }
    tracing::info!(%task_id, %execution_id, succeeded, seconds = started_at.elapsed().as_secs_f64(), "run finished");
    succeeded
}

/// Commit to the result's hash on the escrow before delivering it: with the commit on the
/// network ledger this node can claim the escrow after its deadline if the originator
/// neither releases nor disputes it. A failed commit is logged; the result still goes out
/// (the originator may release anyway).
async fn commit_result(hold: Uuid, commit: &Recipient<CommitResult>, result: &ExecutionResult) {
    let hash = workspace::result_hash(&result.diff, &result.summary, &result.files_modified);
    let Some(result_hash) = hex::decode(&hash)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
    else {
        tracing::warn!(%hold, "result hash is not 32 bytes of hex; not committed");
        return;
    };
    match commit.send(CommitResult { hold, result_hash }).await {
        Ok(Ok(())) => tracing::debug!(%hold, "result committed on the network ledger"),
        Ok(Err(e)) => tracing::warn!(%hold, error = %e, "result not committed"),
        Err(e) => {
            tracing::warn!(%hold, error = %e, "network settler unavailable; result not committed")
        }
    }
}

/// The `stream` name of a log line from `stream`: `stdout`, `stderr`, `agent` (the
/// line's `log_type` follows from it).
fn stream_name(stream: agent_process::LogStream) -> &'static str {
    match stream {
        agent_process::LogStream::Stdout => "stdout",
        agent_process::LogStream::Stderr => "stderr",
        agent_process::LogStream::Agent => "agent",
    }
}

/// At least the size of a result's encoding (CBOR spends at most 9 bytes on a string's or
/// list's length), so a result within it is within `executor.result_bytes_max` on the wire.
fn result_bytes_bound(diff: &str, summary: &str, files: &[String]) -> u64 {
    let strings = files.iter().map(|f| f.len() as u64 + 9).sum::<u64>();
    diff.len() as u64 + summary.len() as u64 + strings + 64
}

/// Run `work` on the blocking pool; a panic in it is an error too.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the task failed: {e}"))?
}

/// Create the parent of a workspace, mode 0700: other users never see into a run.
fn create_private_parent(workspace: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match workspace.parent() {
        Some(parent) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display())),
        None => Ok(()),
    }
}

/// The storage check of a bundle about to arrive, run on the blocking pool once its size
/// is known: with `resources.storage_gb`, the repository cache's least recently used
/// entries (not `key`, which the run holds) make room first; a bundle that still does not
/// fit is refused.
fn room_for_bundle(
    config: &Config,
    cache: Arc<workspace::RepoCache>,
    key: String,
) -> impl FnOnce(u64) -> Result<(), String> + Send + 'static {
    let cap = config.resources.storage_cap_bytes();
    let data_dir = config.node.data_dir.clone();
    move |bytes| {
        let Some(cap) = cap else {
            return Ok(());
        };
        let mut used = crate::storage::scratch_usage(&data_dir).bytes;
        if cache.evict(used, bytes, cap) > 0 {
            used = crate::storage::scratch_usage(&data_dir).bytes;
        }
        tracing::debug!(entry = %key, bytes, used, cap, "room for a bundle");
        crate::market::check_storage(bytes, used, Some(cap)).map_err(|e| e.to_string())
    }
}

fn failed(stage: ExecutionStage, error: impl Into<String>, usage: ComputeUsage) -> ExecutionUpdate {
    ExecutionUpdate::Failed {
        stage,
        error: error.into(),
        usage,
    }
}

async fn execute(
    chunks: &mut mpsc::Receiver<RepoChunk>,
    config: &Config,
    payload: &TaskPayload,
    workspace_dir: &std::path::Path,
    reporter: &mut Reporter,
    cancel: &CancellationToken,
) -> ExecutionUpdate {
    // A peer's task runs only in the sandbox, unless the operator switched it off.
    let remote = matches!(reporter.origin, RunOrigin::Remote { .. });
    let support = sandbox::support();
    if remote && let Err(reason) = sandbox::peer_runs_allowed(config.executor.sandbox, support) {
        return failed(ExecutionStage::Setup, reason, ComputeUsage::default());
    }
    let Some(profile) = config
        .executor
        .profiles
        .get(&payload.executor_profile)
        .filter(|p| p.enabled)
    else {
        return failed(
            ExecutionStage::Setup,
            format!("profile {} is not enabled here", payload.executor_profile),
            ComputeUsage::default(),
        );
    };
    // 1. The repository: a path on this disk (this node's own task), or what a peer sends
    // of it into the repository cache, the workspace borrowing the cache's objects.
    let setup_failed =
        |error: String| failed(ExecutionStage::Setup, error, ComputeUsage::default());
    let shared_objects = match &payload.repo {
        // A path on this node's disk is for this node's own tasks only; admission refuses it
        // from a peer already, and this holds even if a run were started another way.
        RepoDelivery::LocalPath(_) if matches!(reporter.origin, RunOrigin::Remote { .. }) => {
            return setup_failed(crate::market::AdmissionRefusal::LocalPath.to_string());
        }
        RepoDelivery::LocalPath(path) => {
            let (source, commit, target) = (
                PathBuf::from(path),
                payload.base_commit.clone(),
                workspace_dir.to_path_buf(),
            );
            let checkout = blocking(move || {
                create_private_parent(&target)?;
                workspace::checkout_workspace(
                    workspace::RepoSource::LocalPath(&source),
                    &commit,
                    &target,
                )
                .map_err(|e| format!("checkout failed: {e}"))
            })
            .await;
            if let Err(e) = checkout {
                return setup_failed(e);
            }
            None
        }
        RepoDelivery::Bundle { .. } => {
            let RunOrigin::Remote {
                cache: Some(lease), ..
            } = &reporter.origin
            else {
                return setup_failed("a bundle comes only from a peer, with a cache entry".into());
            };
            let (cache, key) = (lease.cache(), lease.key().to_string());
            let bundle_path = workspace_dir.with_extension("bundle");
            let room = room_for_bundle(config, cache.clone(), key.clone());
            let received = tokio::select! {
                _ = cancel.cancelled() => return setup_failed("cancelled".into()),
                received = bundle::receive_bundle(chunks, reporter, &bundle_path, room) => received,
            };
            let bytes = match received {
                Ok(bytes) => bytes,
                Err(e) => return setup_failed(e),
            };
            let (commit, target) = (payload.base_commit.clone(), workspace_dir.to_path_buf());
            let reference = crate::market::bundle_reference(reporter.task_id);
            let objects = cache.objects_dir(&key);
            let checkout = blocking(move || {
                if bytes > 0 {
                    let stored = cache.store_bundle(&key, &bundle_path, &reference, &commit);
                    workspace::remove_workspace(&bundle_path);
                    stored.map_err(|e| format!("the repository does not unpack: {e}"))?;
                }
                create_private_parent(&target)?;
                cache
                    .checkout(&key, &commit, &target)
                    .map_err(|e| format!("checkout failed: {e}"))
            })
            .await;
            if let Err(e) = checkout {
                return setup_failed(e);
            }
            tracing::debug!(task_id = %reporter.task_id, bytes, "workspace checked out from the repository cache");
            Some(objects)
        }
    };
    reporter
        .progress(ExecutionStage::Coding, 10, "agent started")
        .await;

    // 2. The agent.
    let timeout_s = match payload.timeout_s {
        0 => config.executor.timeout_s,
        requested => requested.min(config.executor.timeout_s),
    };
    let run_dirs = RunDirs {
        shared_objects,
        ..RunDirs::beside(workspace_dir)
    };
    if let Err(e) = run_dirs.create() {
        return failed(
            ExecutionStage::Setup,
            format!("cannot create the run's home and temp dirs: {e}"),
            ComputeUsage::default(),
        );
    }
    let sandboxed = sandbox::sandboxes_runs(config.executor.sandbox, support);
    if !sandboxed {
        tracing::warn!(
            task_id = %reporter.task_id,
            mode = ?config.executor.sandbox,
            problem = support.problem.as_deref().unwrap_or("switched off"),
            "running an agent WITHOUT the sandbox"
        );
    }
    let spec = AgentSpec {
        argv: agent_process::build_argv(profile, &payload.prompt),
        workspace: workspace_dir.to_path_buf(),
        pass_env: agent_pass_env(config, profile),
        extra_env: agent_extra_env(profile, &run_dirs),
        timeout: Duration::from_secs(timeout_s),
        output_bytes_max: config.executor.output_bytes_max,
        sandbox: sandboxed.then(|| agent_sandbox_policy(config, profile, &run_dirs, timeout_s)),
        output: profile.output,
    };
    let (events, mut agent_events) = mpsc::channel(AGENT_EVENTS_QUEUED_MAX);
    let agent_cancel = cancel.clone();
    let agent = tokio::spawn(agent_process::run_agent(spec, events, agent_cancel));
    let heartbeat_every = Duration::from_secs((config.market.heartbeat_timeout_s / 3).max(1));
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    let mut flush = tokio::time::interval(LOG_FLUSH_INTERVAL);
    let mut batch: Vec<LogLine> = Vec::new();
    let mut batch_bytes = 0usize;
    let (mut stage, mut percent) = (ExecutionStage::Coding, 10u8);
    let mut watcher = watch::Watcher::start(
        reporter.task_id,
        workspace_dir.to_path_buf(),
        config.executor.watch_interval_ms,
    );
    // The agent's own list of edited files, and what the watcher last saw.
    let (mut agent_files, mut workspace_files) = (Vec::new(), Vec::new());
    loop {
        tokio::select! {
            event = agent_events.recv() => match event {
                Some(AgentEvent::Log { stream, line }) => {
                    batch_bytes += line.len();
                    batch.push(LogLine::new(stream_name(stream), line, Utc::now().timestamp_millis()));
                    if batch.len() >= LOG_BATCH_LINES_MAX || batch_bytes >= LOG_BATCH_BYTES_MAX {
                        reporter.send(ExecutionUpdate::Logs(std::mem::take(&mut batch))).await;
                        batch_bytes = 0;
                    }
                }
                Some(AgentEvent::Progress { stage: new_stage, percent: new_percent, action, files_modified }) => {
                    (stage, percent) = (new_stage, new_percent);
                    // `APN_PROGRESS` lines name no files: they do not clear the agent's list.
                    if !files_modified.is_empty() {
                        agent_files = files_modified;
                    }
                    reporter.files = watch::merge(&agent_files, &workspace_files);
                    reporter.progress(stage, percent, action).await;
                }
                Some(AgentEvent::Summary(summary)) => {
                    let line = summary.to_string();
                    batch_bytes += line.len();
                    batch.push(LogLine::new("agent", line, Utc::now().timestamp_millis()));
                }
                Some(AgentEvent::OutputCapped { dropped_bytes }) => {
                    batch.push(LogLine::new("apn", format!("output cap reached; {dropped_bytes} bytes not forwarded"), Utc::now().timestamp_millis()));
                }
                None => break,
            },
            changed = watch::next_change(&mut watcher) => {
                workspace_files = changed.files;
                let files = watch::merge(&agent_files, &workspace_files);
                if files != reporter.files {
                    reporter.files = files;
                    // No new action: the originator keeps showing the agent's last one.
                    reporter.progress(stage, percent, "").await;
                }
            }
            _ = flush.tick() => {
                if !batch.is_empty() {
                    reporter.send(ExecutionUpdate::Logs(std::mem::take(&mut batch))).await;
                    batch_bytes = 0;
                }
            }
            _ = heartbeat.tick() => {
                reporter.progress(stage, percent, "running").await;
            }
        }
    }
    if let Some(watcher) = watcher.take() {
        watcher.stop().await;
    }
    if !batch.is_empty() {
        reporter.send(ExecutionUpdate::Logs(batch)).await;
    }
    let outcome: AgentOutcome = match agent.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            return failed(
                ExecutionStage::Coding,
                format!("agent could not run: {e}"),
                ComputeUsage::default(),
            );
        }
        Err(e) => {
            return failed(
                ExecutionStage::Coding,
                format!("agent task failed: {e}"),
                ComputeUsage::default(),
            );
        }
    };
    let usage = outcome.usage;
    if outcome.cancelled {
        return failed(stage, "cancelled", usage);
    }
    if outcome.timed_out {
        return failed(
            stage,
            format!("timed out after {timeout_s} s; the process group was killed"),
            usage,
        );
    }
    if outcome.exit_code != Some(0) {
        let status = match (outcome.exit_code, outcome.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "unknown exit status".to_string(),
        };
        let error = match &outcome.summary {
            Some(agent) => format!("agent failed: {status}; {agent}"),
            None => format!("agent failed: {status}"),
        };
        return failed(stage, error, usage);
    }

    // 3. The result.
    reporter
        .progress(ExecutionStage::Testing, 90, "collecting the diff")
        .await;
    let base = payload.base_commit.clone();
    let dir = workspace_dir.to_path_buf();
    let diff_limit = usize::try_from(config.executor.diff_limit()).unwrap_or(usize::MAX);
    let diff =
        tokio::task::spawn_blocking(move || workspace::diff_against_base(&dir, &base, diff_limit))
            .await;
    match diff {
        Ok(Ok(diff)) => {
            let mut summary = format!(
                "{} file(s) changed, {} bytes of diff, {:.2} cpu s",
                diff.files_modified.len(),
                diff.bytes,
                usage.cpu_seconds
            );
            if let Some(agent) = &outcome.summary {
                summary = format!("{agent}\n{summary}");
            }
            let bytes = result_bytes_bound(&diff.diff, &summary, &diff.files_modified);
            let limit = config.executor.result_bytes_max;
            if bytes > limit {
                return failed(
                    ExecutionStage::Testing,
                    format!(
                        "the result is {bytes} bytes, over executor.result_bytes_max ({limit}) ({} files changed)",
                        diff.files_modified.len()
                    ),
                    usage,
                );
            }
            ExecutionUpdate::Completed {
                result: ExecutionResult {
                    summary,
                    files_modified: diff.files_modified,
                    diff: diff.diff,
                },
                usage,
            }
        }
        Ok(Err(e)) => failed(
            ExecutionStage::Testing,
            format!("cannot produce the diff: {e}"),
            usage,
        ),
        Err(e) => failed(
            ExecutionStage::Testing,
            format!("diff task failed: {e}"),
            usage,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_size_bound_is_never_below_its_encoding() {
        let cases = [
            (String::new(), String::new(), vec![]),
            (
                "+x\n".repeat(100_000),
                "summary é".into(),
                vec!["a".to_string(); 1000],
            ),
            (
                "d".repeat(70_000),
                "s".repeat(300),
                (0..5000).map(|i| format!("dir/{i}/file.rs")).collect(),
            ),
        ];
        for (diff, summary, files) in cases {
            let bound = result_bytes_bound(&diff, &summary, &files);
            let encoded = crate::messages::codec::encode(&ExecutionResult {
                summary,
                files_modified: files,
                diff,
            })
            .map(|bytes| bytes.len() as u64)
            .unwrap_or(u64::MAX);
            assert!(encoded <= bound, "{encoded} > {bound}");
        }
    }
}
