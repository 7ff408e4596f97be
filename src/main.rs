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
}

#[derive(Args)]
struct LedgerArgs {
    /// The node's data dir.
    #[arg(long, value_name = "DIR", default_value = "data/apn")]
    data_dir: PathBuf,
    /// Transfers to show.
    #[arg(long, default_value_t = 20)]
    last: usize,
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
    /// Return at once with the task id instead of following it.
    #[arg(long)]
    no_follow: bool,
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
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Node(args) => run_node(args),
        Command::Demo(args) => run_demo(args),
        Command::Ledger(args) => commands::ledger(&args),
        Command::Status(args) => commands::status(&args),
        Command::Peers(args) => commands::peers(&args),
        Command::Task(TaskCommand::Submit(args)) => commands::submit(&args),
        Command::Task(TaskCommand::List(args)) => commands::list(&args),
        Command::Task(TaskCommand::Show { id, api }) => commands::show(&api, &id),
        Command::Task(TaskCommand::Cancel { id, api }) => commands::cancel(&api, &id),
        Command::Sandbox(SandboxCommand::Check { json }) => sandbox_check(json),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn sandbox_check(json: bool) -> anyhow::Result<ExitCode> {
    let support = apn::sandbox::probe();
    if json {
        println!("{}", serde_json::to_string_pretty(&support)?);
    } else {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        println!("landlock abi          {}", support.landlock_abi);
        println!("tcp connect rules     {}", yes_no(support.tcp_rules));
        println!("signal/socket scopes  {}", yes_no(support.scopes));
        println!(
            "unix socket rules     {}",
            yes_no(support.unix_socket_rules)
        );
        println!("sandboxed trial run   {}", yes_no(support.trial_run));
        match &support.problem {
            None => println!("runs can be sandboxed on this kernel"),
            Some(problem) => println!(
                "runs CANNOT be sandboxed: {problem}\n\
                 a node here refuses peers' tasks unless executor.sandbox = \"off\""
            ),
        }
    }
    Ok(if support.available() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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

fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = apn::demo::DemoOptions {
        nodes: args.nodes.max(2),
        tasks: if args.forever { None } else { Some(args.tasks) },
        http_base_port: args.http_base_port,
        relay: args.relay,
        keep: args.keep,
    };
    let system = actix_rt::System::new();
    system.block_on(async move {
        let demo = apn::demo::run_demo(options, |line| println!("{line}"));
        tokio::select! {
            result = demo => {
                let outcomes = result.context("running the demo")?;
                let completed = outcomes.iter().filter(|o| o.view.status == apn::actors::distributor::TaskStatus::Completed).count();
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

/// The API-backed subcommands: fetch JSON, print it for people or pass it through.
mod commands {
    use std::io::IsTerminal;
    use std::process::ExitCode;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::{ApiArgs, SubmitArgs};

    /// How often `task submit` polls the task while following it.
    const FOLLOW_INTERVAL: Duration = Duration::from_millis(300);

    fn text(value: &Value, key: &str) -> String {
        match value.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".to_string(),
            Some(other) => other.to_string(),
        }
    }

    fn print_json(value: &Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    pub fn ledger(args: &super::LedgerArgs) -> anyhow::Result<ExitCode> {
        let report = apn::ledger::report(&args.data_dir, args.last)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{report}");
        }
        Ok(ExitCode::SUCCESS)
    }

    pub fn status(args: &ApiArgs) -> anyhow::Result<ExitCode> {
        let status = args.client().get("/api/status")?;
        if args.json {
            print_json(&status)?;
        } else {
            println!("node      {}", text(&status, "node_id"));
            println!("peer id   {}", text(&status, "peer_id"));
            println!("uptime    {} s", text(&status, "uptime_s"));
            println!("peers     {}", text(&status, "peers"));
            println!("relay     {}", text(&status, "relay"));
            println!(
                "balance   {} VIBE ({} escrowed)",
                text(&status, "balance"),
                text(&status, "escrowed")
            );
            if let Some(addresses) = status.get("listen_addrs").and_then(Value::as_array) {
                for address in addresses {
                    println!("listen    {}", address.as_str().unwrap_or_default());
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub fn peers(args: &ApiArgs) -> anyhow::Result<ExitCode> {
        let peers = args.client().get("/api/peers")?;
        if args.json {
            print_json(&peers)?;
            return Ok(ExitCode::SUCCESS);
        }
        let list = peers.as_array().cloned().unwrap_or_default();
        println!(
            "{:<14} {:<7} {:>9} {:<24} capabilities",
            "node", "path", "latency", "profiles"
        );
        for peer in &list {
            let latency = peer
                .get("latency_ms")
                .and_then(Value::as_f64)
                .map(|ms| format!("{ms:.1} ms"))
                .unwrap_or_else(|| "-".into());
            let join = |key: &str| {
                peer.get(key)
                    .and_then(Value::as_array)
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            };
            println!(
                "{:<14} {:<7} {:>9} {:<24} {}",
                text(peer, "node_id"),
                text(peer, "path"),
                latency,
                join("executor_profiles"),
                join("capabilities")
            );
        }
        println!("{} peer(s)", list.len());
        Ok(ExitCode::SUCCESS)
    }

    pub fn list(args: &ApiArgs) -> anyhow::Result<ExitCode> {
        let tasks = args.client().get("/api/tasks")?;
        if args.json {
            print_json(&tasks)?;
            return Ok(ExitCode::SUCCESS);
        }
        for task in tasks.as_array().cloned().unwrap_or_default() {
            println!(
                "{}  {:<10} {:<14} {:>8} VIBE  {}",
                text(&task, "id"),
                text(&task, "status"),
                text(&task, "assigned_node"),
                text(&task, "reward"),
                text(&task, "title")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    fn print_task(task: &Value) {
        println!("task      {}", text(task, "id"));
        println!("title     {}", text(task, "title"));
        println!("status    {}", text(task, "status"));
        println!("executor  {}", text(task, "assigned_node"));
        println!(
            "reward    {} VIBE, paid {}",
            text(task, "reward"),
            text(task, "paid")
        );
        if let Some(summary) = task.get("summary").and_then(Value::as_str) {
            println!("summary   {summary}");
        }
        if let Some(error) = task.get("error").and_then(Value::as_str) {
            println!("error     {error}");
        }
        if let Some(diff) = task.get("diff").and_then(Value::as_str) {
            println!();
            print!("{diff}");
        }
    }

    fn exit_for(task: &Value) -> ExitCode {
        match task.get("status").and_then(Value::as_str) {
            Some("failed") | Some("cancelled") => ExitCode::from(1),
            _ => ExitCode::SUCCESS,
        }
    }

    pub fn show(args: &ApiArgs, id: &str) -> anyhow::Result<ExitCode> {
        let task = args.client().get(&format!("/api/tasks/{id}"))?;
        if args.json {
            print_json(&task)?;
        } else {
            print_task(&task);
        }
        Ok(exit_for(&task))
    }

    pub fn cancel(args: &ApiArgs, id: &str) -> anyhow::Result<ExitCode> {
        let task = args
            .client()
            .post(&format!("/api/tasks/{id}/cancel"), &json!({}))?;
        if args.json {
            print_json(&task)?;
        } else {
            println!("cancelled {}", text(&task, "id"));
        }
        Ok(ExitCode::SUCCESS)
    }

    pub fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
        let repo = std::fs::canonicalize(&args.repo)
            .map_err(|e| anyhow::anyhow!("repository {}: {e}", args.repo.display()))?;
        let body = json!({
            "title": args.title,
            "prompt": args.prompt,
            "executor_profile": args.profile,
            "repo_path": repo.display().to_string(),
            "base": args.base,
            "reward": args.reward,
            "prefer": args.prefer,
        });
        let client = args.api.client();
        let created = client.post("/api/tasks", &body)?;
        let id = created
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if args.no_follow {
            if args.api.json {
                print_json(&created)?;
            } else {
                println!("{id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        let interactive = std::io::stderr().is_terminal() && !args.api.json;
        let bar = if interactive {
            let bar = indicatif::ProgressBar::new(100);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}% {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            Some(bar)
        } else {
            None
        };
        let mut last_line = String::new();
        let task = loop {
            let task = client.get(&format!("/api/tasks/{id}"))?;
            let status = text(&task, "status");
            let line = format!(
                "{status} on {} {} {}",
                text(&task, "assigned_node"),
                text(&task, "stage"),
                task.get("current_action")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            let percent = task
                .get("progress_percent")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            match &bar {
                Some(bar) => {
                    bar.set_position(percent);
                    bar.set_message(line.clone());
                }
                None if line != last_line && !args.api.json => eprintln!("{percent:>3}% {line}"),
                None => {}
            }
            last_line = line;
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                break task;
            }
            std::thread::sleep(FOLLOW_INTERVAL);
        };
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if args.api.json {
            print_json(&task)?;
        } else {
            print_task(&task);
        }
        Ok(exit_for(&task))
    }
}
