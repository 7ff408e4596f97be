//! `TaskExecutor`: started by the node; for now it receives the verified inbound messages of its
//! variants and records them. Its full behaviour lands with the task market.

use actix::prelude::*;

use super::peer_manager::Inbound;

/// The `TaskExecutor` role.
#[derive(Debug, Default)]
pub struct TaskExecutor {
    received: u64,
}

impl Actor for TaskExecutor {
    type Context = Context<Self>;
}

impl Handler<Inbound> for TaskExecutor {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
        self.received += 1;
        tracing::debug!(kind = inbound.envelope.message.kind(), from = %inbound.envelope.from_node, "received");
    }
}

/// Slots and runs, for the resources view.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ExecutorStatus {
    pub active: u32,
    pub max: u32,
    pub completed_today: u64,
}

/// Ask for [`ExecutorStatus`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "ExecutorStatus")]
pub struct GetExecutorStatus;

impl Handler<GetExecutorStatus> for TaskExecutor {
    type Result = MessageResult<GetExecutorStatus>;

    fn handle(&mut self, _request: GetExecutorStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(ExecutorStatus::default())
    }
}

/// Profiles this node can run: enabled in the config and with a program that exists (an
/// absolute or relative path that is a file, or a name found on `PATH`).
pub fn available_profiles(config: &crate::config::ExecutorConfig) -> Vec<String> {
    config
        .profiles
        .iter()
        .filter(|(_, profile)| profile.enabled && program_exists(&profile.program))
        .map(|(name, _)| name.clone())
        .collect()
}

/// True when `program` can be started.
pub fn program_exists(program: &str) -> bool {
    let path = std::path::Path::new(program);
    if path.components().count() > 1 {
        return path.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
