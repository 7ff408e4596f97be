//! `apn config check`: load a config file the way `apn node` does (the file, then `APN_*`
//! environment variables), and print the merged result for people (TOML) or `--json`.

use std::path::Path;
use std::process::ExitCode;

use apn::config::Config;

/// Loads `config_file` (else `config/apn.toml` when it exists) with the environment's
/// `APN_*` overrides, exactly as `apn node` would, and prints the merged config: TOML, or
/// JSON with `json`. Exit 0 when it loads; a config that does not load is a usage error,
/// exit 2, the message naming the key (as `apn node` reports it).
pub(crate) fn check(config_file: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let config = match super::node::load_config(config_file, &[]) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    print_config(&config, json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_config(config: &Config, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(config)?);
    } else {
        print!("{}", toml::to_string_pretty(config)?);
    }
    Ok(())
}
