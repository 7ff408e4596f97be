//! `apn node` and `apn demo`: start the actor system, run until Ctrl-C or SIGTERM (or, for
//! the demo, until its tasks are done), then shut down cleanly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use apn::actors::distributor::TaskStatus;
use apn::config::{Config, ConfigError, Override};
use apn::demo::{DemoOptions, DemoUpdate};

/// The default config file, used when present.
const DEFAULT_CONFIG: &str = "config/apn.toml";

/// Runs a node until a shutdown signal, configured from `config_file` (else
/// `config/apn.toml` when it exists), the environment and the command line's `overrides`.
/// A config that does not load is a usage error: exit 2, naming the key.
pub(crate) fn run(config_file: Option<&Path>, overrides: &[Override]) -> anyhow::Result<ExitCode> {
    let config = match load_config(config_file, overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let system = actix_rt::System::new();
    system.block_on(async move {
        let node = apn::actors::node::start_node(config)
            .await
            .context("starting the node")?;
        if let Some(address) = node.http_addr {
            tracing::info!("Mesh Panel at http://{address}/");
        }
        wait_for_shutdown_signal().await?;
        tracing::info!("shutting down");
        node.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The config `apn node` runs with: `config_file` (else `config/apn.toml` when it exists),
/// then the command line's `overrides`, then the `APN_*` environment. `apn config check`
/// loads through here too, so it judges a file exactly as the node would.
pub(crate) fn load_config(
    config_file: Option<&Path>,
    overrides: &[Override],
) -> Result<Config, ConfigError> {
    let (path, explicit) = match config_file {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    Config::load(Some(&path), explicit, overrides, std::env::vars())
}

/// Runs the loopback demo, printing its lines, until its tasks are done or a signal.
pub(crate) fn demo(options: DemoOptions) -> anyhow::Result<ExitCode> {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let live = DemoLiveLine::new();
        let demo = apn::demo::run_demo(options, |update| live.show(update));
        tokio::select! {
            result = demo => {
                let outcomes = result.context("running the demo")?;
                let completed = outcomes.iter().filter(|o| o.view.status == TaskStatus::Completed).count();
                println!("demo finished: {completed} of {} tasks completed", outcomes.len());
                Ok(ExitCode::SUCCESS)
            }
            signal = wait_for_shutdown_signal() => {
                signal?;
                println!("demo stopped");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// The demo's story on stdout, and the running task as one live line on stderr (drawn by
/// indicatif on a terminal only, so piped output stays the story).
struct DemoLiveLine {
    bar: indicatif::ProgressBar,
}

impl DemoLiveLine {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        DemoLiveLine { bar }
    }

    fn show(&self, update: DemoUpdate) {
        match update {
            DemoUpdate::Line(line) => self.bar.suspend(|| println!("{line}")),
            DemoUpdate::Running { title, view } => {
                self.bar.set_message(apn::demo::running_line(&title, &view));
            }
        }
    }
}

impl Drop for DemoLiveLine {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Ctrl-C or SIGTERM.
async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
