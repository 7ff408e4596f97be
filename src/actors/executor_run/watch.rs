//! The workspace watcher: while the agent runs, a task of its own looks at the workspace
//! every `executor.watch_interval_ms` ([`crate::workspace::status::changed_files`], on a
//! blocking thread: git must not hold up the run's event loop) and hands the run the
//! changed paths when they differ from the last look. The run merges them with what the
//! agent reported and sends a progress update when the list it last sent changed — so an
//! agent that only prints text still shows its file count at the originator.
//!
//! A look that fails (git missing, the agent broke the repository) is logged once and the
//! watcher keeps looking: the run's result does not depend on it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::workspace::status::{self, ChangedFiles};

/// The running watcher of one run.
pub(super) struct Watcher {
    changes: mpsc::Receiver<ChangedFiles>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Start watching `workspace` every `interval_ms` (none when it is 0: watching is off).
    pub(super) fn start(task_id: Uuid, workspace: PathBuf, interval_ms: u64) -> Option<Self> {
        if interval_ms == 0 {
            return None;
        }
        // One pending look is enough: the run only cares about the latest one.
        let (sender, changes) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            task_id,
            workspace,
            Duration::from_millis(interval_ms),
            sender,
            stop.clone(),
        ));
        Some(Watcher {
            changes,
            stop,
            task,
        })
    }

    /// Stop, and wait for a look under way to end: the run's diff comes next, and git
    /// should not run twice at once in the workspace.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        drop(self.changes);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "workspace watcher ended abnormally");
        }
    }
}

/// The next changed list of `watcher`; never ready without a watcher, or once it ended.
pub(super) async fn next_change(watcher: &mut Option<Watcher>) -> ChangedFiles {
    if let Some(watcher) = watcher
        && let Some(changed) = watcher.changes.recv().await
    {
        return changed;
    }
    std::future::pending().await
}

async fn watch(
    task_id: Uuid,
    workspace: PathBuf,
    interval: Duration,
    changes: mpsc::Sender<ChangedFiles>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    // A slow look delays the next one rather than causing a burst of them.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the agent has only just started.
    ticker.tick().await;
    let mut last = ChangedFiles {
        files: Vec::new(),
        complete: true,
    };
    let (mut failure_logged, mut cut_logged) = (false, false);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let dir = workspace.clone();
        let looked = tokio::task::spawn_blocking(move || status::changed_files(&dir)).await;
        let changed = match looked {
            Ok(Ok(changed)) => changed,
            Ok(Err(e)) => {
                if !failure_logged {
                    failure_logged = true;
                    tracing::warn!(%task_id, error = %e, "workspace watcher cannot read the workspace");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%task_id, error = %e, "workspace watcher's look failed; watching stops");
                return;
            }
        };
        if !changed.complete && !cut_logged {
            cut_logged = true;
            tracing::info!(%task_id, listed = changed.files.len(), "the workspace has more changes than the watcher lists");
        }
        if changed == last {
            continue;
        }
        last = changed.clone();
        tokio::select! {
            _ = stop.cancelled() => return,
            sent = changes.send(changed) => if sent.is_err() { return },
        }
    }
}

/// The files a run reports: the agent's own list first (its order is the order it worked
/// in), then what the watcher saw that the agent did not name.
pub(super) fn merge(agent: &[String], workspace: &[String]) -> Vec<String> {
    let named: std::collections::HashSet<&str> = agent.iter().map(String::as_str).collect();
    let mut files = agent.to_vec();
    files.extend(
        workspace
            .iter()
            .filter(|path| !named.contains(path.as_str()))
            .cloned(),
    );
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_files_come_first_and_none_twice() {
        let agent = vec!["b.rs".to_string(), "a.rs".to_string()];
        let seen = vec!["a.rs".to_string(), "c.rs".to_string()];
        assert_eq!(merge(&agent, &seen), ["b.rs", "a.rs", "c.rs"]);
        assert_eq!(merge(&[], &seen), ["a.rs", "c.rs"]);
        assert!(merge(&[], &[]).is_empty());
    }
}
