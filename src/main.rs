//! The `apn` binary: parses the command line, starts tracing and hands each subcommand to
//! [`cli`], which talks to the library (and, for the API commands, a typed client).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use apn::actors::distributor::CreateTaskAttempt;
use apn::config::Override;
use clap::{Args, Parser, Subcommand};

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
    /// Run several nodes on loopback with their panels and a stream of small tasks.
    ///
    /// Example: apn demo --nodes 3 --tasks 10
    Demo(DemoArgs),
    /// Show this node's ledger: balance, escrow, last transfers (reads the data dir).
    ///
    /// Example: apn ledger --data-dir data/apn --last 20 --json
    Ledger(LedgerArgs),
    /// Show a running node's status.
    ///
    /// Example: apn status --node http://127.0.0.1:8080
    Status(ApiArgs),
    /// List a running node's peers.
    ///
    /// Example: apn peers --json
    Peers(ApiArgs),
    /// Create, follow, list, show and cancel task attempts on a running node.
    #[command(subcommand)]
    Task(TaskCommand),
    /// The sandbox peers' runs and verify commands run in.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// The treasury of the network ledger (settlement mode jetstream): its key, and minting.
    #[command(subcommand)]
    Treasury(TreasuryCommand),
    /// The node's configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the config the way `apn node` does (the file, then APN_* environment variables)
    /// and print the merged result; exit status 2, naming the key, when it does not load.
    ///
    /// Example: apn config check --config config/apn.toml --json
    Check {
        /// Config file (default: config/apn.toml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TreasuryCommand {
    /// Create the treasury key (or show the one there) and print the config line for nodes.
    ///
    /// Example: apn treasury init --dir treasury
    Init {
        /// The treasury's directory (keep it off the nodes).
        #[arg(long, value_name = "DIR", default_value = "treasury")]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mint VIBE into an account on the network ledger.
    ///
    /// Example: apn treasury mint --to 12D3KooW... --amount 100 --url nats://127.0.0.1:4222
    Mint(MintArgs),
    /// Run the faucet (off unless started): one grant per identity that asks, rate limited.
    /// Nodes ask at start when `settlement.faucet = true`.
    ///
    /// Example: apn treasury faucet --amount 100 --grants-per-hour 60 --url nats://127.0.0.1:4222
    Faucet(FaucetArgs),
    /// Print the nats-server `authorization` section that lets the treasury and each node in
    /// as its own key, publishing on its own account subject only.
    ///
    /// Example: apn treasury nats-authorization --node 12D3KooW... --node 12D3KooW... >> nats.conf
    NatsAuthorization {
        /// The treasury's directory.
        #[arg(long, value_name = "DIR", default_value = "treasury")]
        dir: PathBuf,
        /// A node's peer id or hex public key; repeat for each node.
        #[arg(long = "node", value_name = "ACCOUNT")]
        nodes: Vec<String>,
        /// The ledger stream's name.
        #[arg(long, default_value = "APN_LEDGER")]
        stream: String,
    },
}

/// Where the treasury finds the ledger, and how it logs in.
#[derive(Args)]
struct LedgerServerArgs {
    /// NATS server(s) holding the ledger stream, comma-separated.
    #[arg(long, value_name = "URL", env = "APN_SETTLEMENT_URL")]
    url: String,
    /// The ledger stream's name (created if missing).
    #[arg(long, default_value = "APN_LEDGER")]
    stream: String,
    /// Copies of the stream when it is created here.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Log in to the server as the treasury's own nkey (a server with per-account
    /// permissions).
    #[arg(long)]
    identity_nkey: bool,
}

impl LedgerServerArgs {
    fn settings(&self) -> apn::network_ledger::stream::StreamSettings {
        apn::network_ledger::stream::StreamSettings {
            name: self.stream.clone(),
            replicas: self.replicas,
        }
    }
}

#[derive(Args)]
struct FaucetArgs {
    /// The treasury's directory.
    #[arg(long, value_name = "DIR", default_value = "treasury")]
    dir: PathBuf,
    /// VIBE each new identity is granted.
    #[arg(long, value_name = "N")]
    amount: String,
    /// Most grants in any hour.
    #[arg(long, value_name = "N", default_value_t = 60)]
    grants_per_hour: u32,
    #[command(flatten)]
    ledger: LedgerServerArgs,
}

#[derive(Args)]
struct MintArgs {
    /// The treasury's directory.
    #[arg(long, value_name = "DIR", default_value = "treasury")]
    dir: PathBuf,
    /// The account credited: a node's peer id or hex public key.
    #[arg(long, value_name = "ACCOUNT")]
    to: String,
    /// Amount in VIBE (up to 6 decimals).
    #[arg(long, value_name = "N")]
    amount: String,
    /// Why, for the history.
    #[arg(long, default_value = "")]
    memo: String,
    #[command(flatten)]
    ledger: LedgerServerArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Try the sandbox on this kernel and print what it supports; exit status 1 when runs
    /// cannot be sandboxed here (such a node refuses peers' tasks).
    ///
    /// Example: apn sandbox check --json
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// Nodes to start (the first submits tasks, the others execute them).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Tasks to submit before stopping.
    #[arg(long, default_value_t = 10, conflicts_with = "forever")]
    tasks: usize,
    /// Keep submitting until Ctrl-C.
    #[arg(long)]
    forever: bool,
    /// Panel port of the first node; the others count up from it.
    #[arg(long, default_value_t = 8080)]
    http_base_port: u16,
    /// A NATS relay for the nodes (none by default).
    #[arg(long, value_name = "URL")]
    relay: Option<String>,
    /// Keep the temporary data dirs.
    #[arg(long)]
    keep: bool,
    /// Where VIBE lives: `local` (each node its own ledger) or `jetstream` (a local
    /// nats-server with JetStream holds the network ledger; a demo treasury funds the nodes).
    #[arg(long, value_enum, default_value = "local")]
    settlement: SettlementArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SettlementArg {
    Local,
    Jetstream,
}

#[derive(Args)]
struct LedgerArgs {
    /// The node's data dir.
    #[arg(long, value_name = "DIR", default_value = "data/apn")]
    data_dir: PathBuf,
    /// Transfers (or network ledger history rows) to show.
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// Network ledger only: history rows below this stream sequence (paging).
    #[arg(long, value_name = "SEQ")]
    before: Option<u64>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// The node's HTTP address.
    #[arg(long, value_name = "URL", default_value = apn::client::DEFAULT_NODE_URL, env = "APN_NODE")]
    node: String,
    /// The node's data dir, to read its API token from (else APN_TOKEN). Creating and
    /// cancelling tasks need the token, loopback included.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

impl ApiArgs {
    fn client(&self) -> apn::client::ApiClient {
        let token = apn::client::ApiClient::token_from(self.data_dir.as_deref());
        apn::client::ApiClient::new(&self.node, token)
    }
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Create a task attempt, follow it with a progress bar, print the diff.
    ///
    /// Example: apn task submit --repo . --profile CLAUDE_CODE --prompt "fix the login bug" --reward 5
    Submit(SubmitArgs),
    /// List task attempts.
    ///
    /// Example: apn task list --json
    List(ApiArgs),
    /// Show one task attempt, with its diff.
    ///
    /// Example: apn task show 3f2c…
    Show {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel a task attempt (escrow is refunded).
    ///
    /// Example: apn task cancel 3f2c…
    Cancel {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Path of the git repository (on the node's disk).
    #[arg(long, value_name = "PATH")]
    repo: PathBuf,
    /// Executor profile (CLAUDE_CODE, AMP, CODEX, GEMINI, SHELL…).
    #[arg(long, value_name = "P")]
    profile: String,
    /// What the agent should do.
    #[arg(long, value_name = "TEXT")]
    prompt: String,
    /// The most you pay, in VIBE (up to 6 decimals).
    #[arg(long, value_name = "N")]
    reward: String,
    #[arg(long, value_name = "T", default_value = "")]
    title: String,
    /// Commit or branch to start from.
    #[arg(long, default_value = "HEAD")]
    base: String,
    /// local, mesh or auto.
    #[arg(long, default_value = "auto")]
    prefer: String,
    /// Follow the task to its end (the default): its events stream from the node (its
    /// log lines on stderr), with polling when the stream is not available.
    #[arg(long, conflicts_with = "no_follow")]
    follow: bool,
    /// Return at once with the task id instead of following it.
    #[arg(long)]
    no_follow: bool,
}

impl SubmitArgs {
    /// The request these arguments describe. A reward or preference the node would refuse
    /// is an error here (exit 1, as when the node refused it), not a usage error.
    fn request(&self) -> anyhow::Result<CreateTaskAttempt> {
        let repo = std::fs::canonicalize(&self.repo)
            .map_err(|e| anyhow::anyhow!("repository {}: {e}", self.repo.display()))?;
        let reward = (self.reward.parse())
            .map_err(|e| anyhow::anyhow!("--reward {:?}: {e}", self.reward))?;
        let prefer = serde_json::from_value(serde_json::Value::String(self.prefer.clone()))
            .map_err(|e| anyhow::anyhow!("--prefer {:?}: {e}", self.prefer))?;
        Ok(CreateTaskAttempt {
            title: self.title.clone(),
            prompt: self.prompt.clone(),
            executor_profile: self.profile.clone(),
            repo_path: repo.display().to_string(),
            base: self.base.clone(),
            requirements: Default::default(),
            reward,
            prefer,
            verify_command: None,
        })
    }
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
}

fn strings(values: &[String]) -> toml::Value {
    toml::Value::Array(
        values
            .iter()
            .map(|v| toml::Value::String(v.clone()))
            .collect(),
    )
}

/// Logging from `RUST_LOG`, else `default_filter`.
fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story on stdout: its nodes log only warnings unless
    // RUST_LOG asks for more. A node logs what an operator follows.
    init_tracing(match cli.command {
        Command::Demo(_) => "warn",
        _ => "info,libp2p=warn,async_nats=warn",
    });
    let result = match cli.command {
        Command::Node(args) => cli::node::run(args.config.as_deref(), &args.overrides()),
        Command::Demo(args) => cli::node::demo(apn::demo::DemoOptions {
            nodes: args.nodes.max(2),
            tasks: if args.forever { None } else { Some(args.tasks) },
            http_base_port: args.http_base_port,
            relay: args.relay,
            keep: args.keep,
            settlement: match args.settlement {
                SettlementArg::Local => apn::config::SettlementMode::Local,
                SettlementArg::Jetstream => apn::config::SettlementMode::Jetstream,
            },
        }),
        Command::Ledger(args) => {
            cli::ledger::ledger(&args.data_dir, args.last, args.before, args.json)
        }
        Command::Status(api) => cli::status::status(&api.client(), api.json),
        Command::Peers(api) => cli::status::peers(&api.client(), api.json),
        Command::Task(TaskCommand::Submit(args)) => args.request().and_then(|request| {
            cli::task::submit(&args.api.client(), &request, !args.no_follow, args.api.json)
        }),
        Command::Task(TaskCommand::List(api)) => cli::task::list(&api.client(), api.json),
        Command::Task(TaskCommand::Show { id, api }) => {
            cli::task::show(&api.client(), &id, api.json)
        }
        Command::Task(TaskCommand::Cancel { id, api }) => {
            cli::task::cancel(&api.client(), &id, api.json)
        }
        Command::Sandbox(SandboxCommand::Check { json }) => cli::sandbox::check(json),
        Command::Config(ConfigCommand::Check { config, json }) => {
            cli::config::check(config.as_deref(), json)
        }
        Command::Treasury(TreasuryCommand::Init { dir, json }) => cli::treasury::init(&dir, json),
        Command::Treasury(TreasuryCommand::Faucet(args)) => {
            cli::treasury::faucet(&cli::treasury::FaucetRequest {
                dir: &args.dir,
                amount: &args.amount,
                grants_per_hour: args.grants_per_hour,
                url: &args.ledger.url,
                identity_nkey: args.ledger.identity_nkey,
                stream: args.ledger.settings(),
            })
        }
        Command::Treasury(TreasuryCommand::NatsAuthorization { dir, nodes, stream }) => {
            cli::treasury::nats_authorization(&dir, &nodes, &stream)
        }
        Command::Treasury(TreasuryCommand::Mint(args)) => cli::treasury::mint(
            &cli::treasury::MintRequest {
                dir: &args.dir,
                to: &args.to,
                amount: &args.amount,
                memo: &args.memo,
                url: &args.ledger.url,
                identity_nkey: args.ledger.identity_nkey,
                stream: args.ledger.settings(),
            },
            args.json,
        ),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
