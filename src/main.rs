//! The `apn` binary: parses the command line and calls the library. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use apn::config::{Config, Override};
use clap::{Args, Parser, Subcommand};

/// The default config file, used when present.
const DEFAULT_CONFIG: &str = "config/apn.toml";

#[derive(Parser)]
#[command(
    name = "apn",
    version,
    about = "Alpha Protocol Network node: share coding-agent work across a mesh, paid in VIBE credits",
    long_about = "Alpha Protocol Network node.\n\nA node that cannot run a coding-agent task offers it \
to the mesh; peers bid; the winner runs the agent on a copy of the repository, streams progress \
and logs back, returns a git diff and is paid in VIBE credits from escrow.\n\nExample:\n  apn node \
--config config/apn.toml --bootstrap /ip4/10.0.0.2/tcp/4001/p2p/12D3KooW..."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a headless node with its Mesh Panel.
    ///
    /// Example: apn node --data-dir /var/lib/apn --listen /ip4/0.0.0.0/tcp/4001 --relay nats://relay:4222
    Node(NodeArgs),
}

#[derive(Args)]
struct NodeArgs {
    /// Config file (default: config/apn.toml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (keys, token, ledger, workspaces).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// libp2p listen multiaddr; repeat for several.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Peer to dial at start (…/p2p/<peer id>); repeat for several.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// NATS relay URL, or `none`.
    #[arg(long, value_name = "URL|none")]
    relay: Option<String>,
    /// Switch off mDNS LAN discovery.
    #[arg(long)]
    no_mdns: bool,
    /// Talk only through the relay (no libp2p listening or dialling).
    #[arg(long)]
    relay_only: bool,
    /// Mesh Panel and API address, or `none`.
    #[arg(long, value_name = "ADDR|none")]
    http: Option<String>,
}

impl NodeArgs {
    fn overrides(&self) -> Vec<Override> {
        let mut overrides = Vec::new();
        if let Some(dir) = &self.data_dir {
            overrides.push(Override::new("node.data_dir", dir.display().to_string()));
        }
        if !self.listen.is_empty() {
            overrides.push(Override::new("node.listen", strings(&self.listen)));
        }
        if !self.bootstrap.is_empty() {
            overrides.push(Override::new("node.bootstrap", strings(&self.bootstrap)));
        }
        if let Some(relay) = &self.relay {
            let url = if relay.eq_ignore_ascii_case("none") {
                ""
            } else {
                relay.as_str()
            };
            overrides.push(Override::new("relay.url", url));
        }
        if self.no_mdns {
            overrides.push(Override::new("node.mdns", false));
        }
        if self.relay_only {
            overrides.push(Override::new("node.relay_only", true));
        }
        if let Some(http) = &self.http {
            overrides.push(Override::new("http.bind", http.as_str()));
        }
        overrides
    }

    fn load_config(&self) -> Result<Config, apn::config::ConfigError> {
        let (path, explicit) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        Config::load(Some(&path), explicit, &self.overrides(), std::env::vars())
    }
}

fn strings(values: &[String]) -> toml::Value {
    toml::Value::Array(
        values
            .iter()
            .map(|v| toml::Value::String(v.clone()))
            .collect(),
    )
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn,async_nats=warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Node(args) => run_node(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run_node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = match args.load_config() {
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
