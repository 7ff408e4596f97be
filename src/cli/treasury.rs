//! `apn treasury`: create the treasury key, mint VIBE into an account on the network
//! ledger, run the faucet, and write the ledger server's per-account permissions. The treasury's directory
//! holds only its key; keep it off the nodes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use apn::messages::Vibe;
use apn::network_ledger::permissions::{authorization_block, nkey_user};
use apn::network_ledger::stream::{LedgerStream, StreamSettings, connect, connect_as};
use apn::network_ledger::{faucet, treasury};

/// Creates the treasury key in `dir` (or loads the one there) and prints its public key and
/// the config line that makes nodes accept its mints.
pub(crate) fn init(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (identity, created) = treasury::init(dir)?;
    let key = hex::encode(identity.public_key());
    if json {
        let document = serde_json::json!({
            "public_key": key,
            "nkey_user": nkey_user(&identity.public_key()),
            "dir": dir.display().to_string(),
            "created": created,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        let verb = if created { "created" } else { "already there" };
        println!("treasury key {verb}: {}", dir.display());
        println!("public key   {key}");
        println!("nkey user    {}", nkey_user(&identity.public_key()));
        println!("nodes accept its mints with, in [settlement]:");
        println!("  treasury = [\"{key}\"]");
    }
    Ok(ExitCode::SUCCESS)
}

/// What the faucet gives, and where the ledger is.
pub(crate) struct FaucetRequest<'a> {
    /// The treasury's directory.
    pub dir: &'a Path,
    /// VIBE per grant, as text.
    pub amount: &'a str,
    /// Most grants in any hour.
    pub grants_per_hour: u32,
    /// NATS server(s), comma-separated.
    pub url: &'a str,
    /// Log in as the treasury's own nkey.
    pub identity_nkey: bool,
    /// The ledger stream (created if missing).
    pub stream: StreamSettings,
}

/// Runs the faucet until Ctrl-C, SIGTERM or the server goes away.
pub(crate) fn faucet(request: &FaucetRequest<'_>) -> anyhow::Result<ExitCode> {
    let identity = treasury::load(request.dir)?;
    let policy = faucet::FaucetPolicy {
        amount: request
            .amount
            .parse()
            .map_err(|e| anyhow::anyhow!("--amount {:?}: {e}", request.amount))?,
        grants_per_hour: request.grants_per_hour,
    };
    policy.validate()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = login(request.url, request.identity_nkey, &identity).await?;
        let stream = LedgerStream::open(client.clone(), &request.stream).await?;
        tokio::select! {
            served = faucet::serve(client, stream, identity, policy) => anyhow::Ok(served?),
            signal = tokio::signal::ctrl_c() => Ok(signal?),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn login(
    url: &str,
    identity_nkey: bool,
    identity: &apn::identity::Identity,
) -> anyhow::Result<async_nats::Client> {
    Ok(if identity_nkey {
        connect_as(url, identity).await?
    } else {
        connect(url).await?
    })
}

/// What to mint, and where the ledger is.
pub(crate) struct MintRequest<'a> {
    /// The treasury's directory.
    pub dir: &'a Path,
    /// The account credited: hex key or peer id.
    pub to: &'a str,
    /// Amount, as VIBE text (`12.5`).
    pub amount: &'a str,
    /// Why, for the history.
    pub memo: &'a str,
    /// NATS server(s), comma-separated.
    pub url: &'a str,
    /// Log in as the treasury's own nkey.
    pub identity_nkey: bool,
    /// The ledger stream (created if missing).
    pub stream: StreamSettings,
}

/// Appends one `Mint` and prints where it landed.
pub(crate) fn mint(request: &MintRequest<'_>, json: bool) -> anyhow::Result<ExitCode> {
    let identity = treasury::load(request.dir)?;
    let to = treasury::parse_account(request.to).context("--to")?;
    let amount: Vibe = request
        .amount
        .parse()
        .map_err(|e| anyhow::anyhow!("--amount {:?}: {e}", request.amount))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let appended = runtime.block_on(async {
        let client = login(request.url, request.identity_nkey, &identity).await?;
        let stream = LedgerStream::open(client, &request.stream).await?;
        anyhow::Ok(treasury::mint(&stream, &identity, to, amount, request.memo).await?)
    })?;
    if json {
        let document = serde_json::json!({
            "to": hex::encode(to),
            "amount": amount,
            "sequence": appended.sequence,
            "duplicate": appended.duplicate,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        println!(
            "minted {amount} VIBE to {} at stream sequence {}",
            hex::encode(to),
            appended.sequence
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the nats-server `authorization` section for the treasury in `dir` and `nodes`.
pub(crate) fn nats_authorization(
    dir: &Path,
    nodes: &[String],
    stream: &str,
) -> anyhow::Result<ExitCode> {
    let identity = treasury::load(dir)?;
    let accounts = nodes
        .iter()
        .map(|node| treasury::parse_account(node).with_context(|| format!("--node {node}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print!(
        "{}",
        authorization_block(stream, &[identity.public_key()], &accounts)
    );
    Ok(ExitCode::SUCCESS)
}
