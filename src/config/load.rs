//! Loading: the TOML file, then flag overrides, then `APN_*` environment overrides, merged as
//! TOML values and deserialised once (so errors name the key), then validated.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, SECTIONS, invalid};

/// One override: a dotted key (`relay.url`) and its value.
#[derive(Debug, Clone)]
pub struct Override {
    /// Dotted `section.key`, e.g. `relay.url`; it must name a known section.
    pub key: String,
    /// The value, replacing the file's; type-checked with the rest of the config.
    pub value: toml::Value,
}

impl Override {
    /// An override from a flag.
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        Override {
            key: key.to_string(),
            value: value.into(),
        }
    }
}

impl Config {
    /// Read the file (if given and present: a missing *default* file is fine, a missing
    /// *named* file is an error), apply flag overrides, then `APN_*` environment overrides.
    pub fn load(
        path: Option<&Path>,
        path_is_explicit: bool,
        flags: &[Override],
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => (text, path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path_is_explicit => {
                    (String::new(), path)
                }
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            },
            None => (String::new(), Path::new("<none>")),
        };
        Config::from_text_with_overrides(&text, origin, flags, environment)
    }

    /// `load` without the file system: `text` is the file's contents and `origin` names it
    /// in errors. The config fuzz target drives this.
    pub fn from_text_with_overrides(
        text: &str,
        origin: &Path,
        flags: &[Override],
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: origin.to_path_buf(),
                message: e.to_string(),
            })?;
        for flag in flags {
            set_key(&mut root, &flag.key, flag.value.clone())?;
        }
        for (name, value) in environment {
            if let Some((key, value)) = environment_override(&name, &value) {
                set_key(&mut root, &key, value)?;
            }
        }
        Config::from_table(root)
    }

    /// Parse a complete TOML text (tests, the demo).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: PathBuf::from("<inline>"),
                message: e.to_string(),
            })?;
        Config::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let languages_set = table
            .get("node")
            .and_then(toml::Value::as_table)
            .is_some_and(|node| node.contains_key("languages"));
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                invalid(&key, e.into_inner().to_string())
            })?;
        config.node.split_capabilities(languages_set)?;
        config.validate()?;
        Ok(config)
    }
}

/// `APN_RELAY_URL=x` → (`relay.url`, x). Variables that name no section (such as `APN_TOKEN`,
/// read by the CLI) are not config and are skipped.
fn environment_override(name: &str, value: &str) -> Option<(String, toml::Value)> {
    let rest = name.strip_prefix("APN_")?.to_ascii_lowercase();
    let (section, key) = SECTIONS.iter().find_map(|section| {
        rest.strip_prefix(section)
            .and_then(|r| r.strip_prefix('_'))
            .map(|key| (*section, key))
    })?;
    if key.is_empty() {
        return None;
    }
    Some((format!("{section}.{key}"), parse_environment_value(value)))
}

/// Environment values are TOML when they parse as TOML (`42`, `true`, `["a", "b"]`), text
/// otherwise; the typed deserialisation then judges them with the key's name.
fn parse_environment_value(value: &str) -> toml::Value {
    let probe = format!("value = {value}");
    match probe.parse::<toml::Table>() {
        Ok(mut table) => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn set_key(root: &mut toml::Table, dotted: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut parts = dotted.split('.').peekable();
    let mut table = root;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| invalid(dotted, format!("`{part}` is not a table")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::messages::Vibe;

    fn load(text: &str, flags: &[Override], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apn.toml");
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), true, flags, env)
    }

    #[test]
    fn shipped_config_file_parses_and_matches_defaults_where_it_should() {
        let text = include_str!("../../config/apn.toml");
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.resources.max_concurrent_tasks, 2);
        assert!(config.executor.profiles.contains_key("SHELL"));
        assert!(!config.executor.profiles["SHELL"].enabled);
        let defaults = crate::config::ExecutorConfig::default();
        for name in ["CLAUDE_CODE", "AMP", "CODEX", "GEMINI", "SHELL"] {
            assert_eq!(
                config.executor.profiles[name], defaults.profiles[name],
                "the shipped {name} profile is the default one"
            );
        }
        assert_eq!(
            config.market.bids_enough,
            crate::config::MarketConfig::default().bids_enough
        );
        assert_eq!(
            config.market.offer_ttl_ms,
            crate::config::MarketConfig::default().offer_ttl_ms
        );
        assert!(!config.http.allow_remote_reads);
        assert!(config.http.trusted_proxies.is_empty() && config.http.allowed_hosts.is_empty());
    }

    #[test]
    fn the_workspace_watch_interval_is_off_or_in_its_range() {
        let shipped = Config::from_toml(include_str!("../../config/apn.toml")).unwrap();
        assert_eq!(shipped.executor.watch_interval_ms, 2000);
        assert_eq!(
            crate::config::ExecutorConfig::default().watch_interval_ms,
            2000
        );
        for ok in [0, 100, 2000, 3_600_000] {
            let config = load(&format!("[executor]\nwatch_interval_ms = {ok}\n"), &[], &[]);
            assert_eq!(config.map(|c| c.executor.watch_interval_ms).ok(), Some(ok));
        }
        for bad in [1, 99, 3_600_001] {
            let error = load(
                &format!("[executor]\nwatch_interval_ms = {bad}\n"),
                &[],
                &[],
            )
            .unwrap_err();
            assert!(
                error.to_string().contains("executor.watch_interval_ms"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_result_cap_is_a_named_value_and_bounds_the_diff() {
        let shipped = Config::from_toml(include_str!("../../config/apn.toml")).unwrap();
        let defaults = crate::config::ExecutorConfig::default();
        assert_eq!(shipped.executor.result_bytes_max, 64 * 1024 * 1024);
        assert_eq!(defaults.result_bytes_max, shipped.executor.result_bytes_max);
        assert_eq!(defaults.diff_bytes_max, shipped.executor.diff_bytes_max);
        // A diff up to the cap less the room for the summary and file list.
        assert_eq!(
            defaults.diff_limit(),
            defaults.result_bytes_max - crate::config::RESULT_ROOM_BYTES
        );
        let smaller = load("[executor]\nresult_bytes_max = 4194304\n", &[], &[]).unwrap();
        assert_eq!(smaller.executor.diff_limit(), 3 * 1024 * 1024);
        for bad in [0u64, 1_048_576, 2 * 1024 * 1024 * 1024] {
            let error =
                load(&format!("[executor]\nresult_bytes_max = {bad}\n"), &[], &[]).unwrap_err();
            assert!(
                error.to_string().contains("executor.result_bytes_max"),
                "{error}"
            );
        }
        let error = load("[executor]\ndiff_bytes_max = 0\n", &[], &[]).unwrap_err();
        assert!(
            error.to_string().contains("executor.diff_bytes_max"),
            "{error}"
        );
    }

    #[test]
    fn an_older_profile_without_the_new_keys_still_loads_as_text() {
        let config = load(
            "[executor.profiles.CLAUDE_CODE]\nprogram = \"claude\"\n\
             args = [\"-p\", \"{prompt}\", \"--dangerously-skip-permissions\"]\n",
            &[],
            &[],
        )
        .unwrap();
        let profile = &config.executor.profiles["CLAUDE_CODE"];
        assert_eq!(profile.output, crate::config::AgentOutputFormat::Text);
        assert!(profile.pass_env.is_empty() && profile.env.is_empty());
        let config = load(
            "[executor.profiles.C]\nprogram = \"c\"\noutput = \"stream-json\"\n\
             pass_env = [\"K\"]\nenv = { IS_SANDBOX = \"1\" }\n",
            &[],
            &[],
        )
        .unwrap();
        let profile = &config.executor.profiles["C"];
        assert_eq!(profile.output, crate::config::AgentOutputFormat::StreamJson);
        assert_eq!(profile.pass_env, ["K"]);
        assert_eq!(profile.env["IS_SANDBOX"], "1");
    }

    #[test]
    fn flags_override_file_and_environment_overrides_both() {
        let config = load(
            "[node]\nport = 1000\n[relay]\nurl = \"nats://a:1\"\n",
            &[
                Override::new("node.port", 2000i64),
                Override::new("relay.url", "nats://b:2"),
            ],
            &[
                ("APN_RELAY_URL", "nats://c:3"),
                ("APN_TOKEN", "ignored"),
                ("APN_NODE_MDNS", "false"),
            ],
        )
        .unwrap();
        assert_eq!(config.node.port, 2000);
        assert_eq!(config.relay.url, "nats://c:3");
        assert!(!config.node.mdns);
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = load("[economics]\nmin_task_reward = \"-1\"\n", &[], &[]).unwrap_err();
        assert!(
            error.to_string().contains("economics.min_task_reward"),
            "{error}"
        );
        let error = load("[node]\nport = \"x\"\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("node.port"), "{error}");
        let error = load("[node]\nprot = 1\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("prot"), "{error}");
        let error = load("", &[], &[("APN_RESOURCES_MAX_CONCURRENT_TASKS", "0")]).unwrap_err();
        assert!(
            error.to_string().contains("resources.max_concurrent_tasks"),
            "{error}"
        );
        let error = load("[http]\nbind = \"nowhere\"\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("http.bind"), "{error}");
        let error = load(
            "[http]\nallowed_hosts = [\"ok.lan\", \"http://x/\"]\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("http.allowed_hosts[1]"),
            "{error}"
        );
        let error = load("[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n", &[], &[]).unwrap_err();
        assert!(
            error.to_string().contains("http.trusted_proxies"),
            "{error}"
        );
        let error = load("[http]\ntrust_forwarded_for = true\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("trust_forwarded_for"), "{error}");
        let error = load("[node]\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("node.bootstrap[0]"), "{error}");
        for bad in ["0", "65"] {
            let error = load(&format!("[market]\nbids_enough = {bad}\n"), &[], &[]).unwrap_err();
            assert!(error.to_string().contains("market.bids_enough"), "{error}");
        }
        let error = load("[market]\noffer_ttl_ms = 600001\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("market.offer_ttl_ms"), "{error}");
        assert_eq!(
            load("[market]\noffer_ttl_ms = 0\n", &[], &[])
                .unwrap()
                .market
                .offer_ttl_ms,
            0
        );
        let error = load(
            "[executor.profiles.X]\nprogram = \"x\"\noutput = \"json\"\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("executor.profiles.X.output"),
            "{error}"
        );
        let error = load(
            "[executor.profiles.X]\nprogram = \"x\"\npass_env = [\"A\", \"B=C\"]\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("executor.profiles.X.pass_env[1]"),
            "{error}"
        );
        let error = load(
            "[executor.profiles.X]\nprogram = \"x\"\nenv = { \"\" = \"1\" }\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("executor.profiles.X.env."),
            "{error}"
        );
        assert_eq!(
            load("[market]\nbids_enough = 1\n", &[], &[])
                .unwrap()
                .market
                .bids_enough,
            1
        );
    }

    /// The project seed's config file, exactly as the seed ships it (`config/seed.toml`).
    const SEED_CONFIG: &str = include_str!("../../config/seed.toml");

    #[test]
    fn the_seed_config_file_loads_as_written() {
        let config = load(SEED_CONFIG, &[], &[]).unwrap();
        assert_eq!(config.node.port, 4001);
        assert_eq!(config.node.capabilities, ["compute", "relay", "storage"]);
        // No `languages` key: the default language tags.
        assert_eq!(config.node.languages, NodeConfig::default().languages);
        assert_eq!(config.resources.max_bandwidth_mbps, 100);
        assert_eq!(config.resources.max_concurrent_tasks, 4);
        assert_eq!(config.resources.storage_gb, 50);
        assert_eq!(
            config.resources.storage_cap_bytes(),
            Some(50 * 1_000_000_000)
        );
        assert_eq!(config.economics.min_task_reward, Vibe::from_whole(1));
        assert_eq!(
            config.economics.bandwidth_rate_per_gb,
            Vibe::from_micros(10_000)
        );
        assert_eq!(
            config.economics.compute_rate_per_cpu_hour,
            Vibe::from_micros(500_000)
        );
        assert_eq!(config.relay.url, "nats://nonlocal.info:4222");
        assert!(config.relay.auto_reconnect);
        assert_eq!(
            config.node.announced_capabilities()[..3],
            ["compute", "relay", "storage"]
        );
    }

    #[test]
    fn amounts_as_toml_floats_keep_the_six_decimal_limit_and_name_the_key() {
        let config = load("[economics]\nmin_task_reward = 0.000001\n", &[], &[]).unwrap();
        assert_eq!(config.economics.min_task_reward, Vibe::from_micros(1));
        let config = load("[economics]\ninitial_balance = 2.5\n", &[], &[]).unwrap();
        assert_eq!(
            config.economics.initial_balance,
            Vibe::from_micros(2_500_000)
        );
        for bad in ["0.0000001", "-1.0", "nan", "inf"] {
            let error =
                load(&format!("[economics]\nmin_task_reward = {bad}\n"), &[], &[]).unwrap_err();
            assert!(
                error.to_string().contains("economics.min_task_reward"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn capabilities_take_roles_and_languages_in_either_spelling() {
        // Today's spelling: roles and languages apart.
        let config = load(
            "[node]\ncapabilities = [\"compute\"]\nlanguages = [\"rust\", \"go\"]\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(config.node.capabilities, ["compute"]);
        assert_eq!(config.node.languages, ["rust", "go"]);
        assert_eq!(
            config.node.announced_capabilities(),
            ["compute", "rust", "go"]
        );
        // The older spelling: language tags in `capabilities`. Without a `languages` key
        // they replace the default languages (the node announces what it did before);
        // duplicates are dropped.
        let config = load(
            "[node]\ncapabilities = [\"rust\", \"relay\", \"gpu\", \"rust\"]\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(config.node.capabilities, ["relay"]);
        assert_eq!(config.node.languages, ["rust", "gpu"]);
        assert_eq!(
            config.node.announced_capabilities(),
            ["relay", "rust", "gpu"]
        );
        // The file shipped before the split: all language tags, announced as they were.
        let config = load(
            "[node]\ncapabilities = [\"rust\", \"python\", \"typescript\"]\n",
            &[],
            &[],
        )
        .unwrap();
        assert!(config.node.capabilities.is_empty());
        assert_eq!(
            config.node.announced_capabilities(),
            ["rust", "python", "typescript"]
        );
        // Both keys set: the old tags join the given languages.
        let config = load(
            "[node]\ncapabilities = [\"compute\", \"go\"]\nlanguages = [\"rust\"]\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(config.node.capabilities, ["compute"]);
        assert_eq!(config.node.languages, ["rust", "go"]);
        // The environment takes either spelling too.
        let config = load(
            "",
            &[],
            &[("APN_NODE_CAPABILITIES", "[\"storage\", \"typescript\"]")],
        )
        .unwrap();
        assert_eq!(config.node.capabilities, ["storage"]);
        assert_eq!(config.node.languages, ["typescript"]);
        // Bad tags name their key as written.
        let error = load("[node]\ncapabilities = [\"compute\", \"\"]\n", &[], &[]).unwrap_err();
        assert!(
            error.to_string().contains("node.capabilities[1]"),
            "{error}"
        );
        let error = load("[node]\nlanguages = [\"a b\"]\n", &[], &[]).unwrap_err();
        assert!(error.to_string().contains("node.languages[0]"), "{error}");
        // What loads prints back and loads the same.
        let config = load(SEED_CONFIG, &[], &[]).unwrap();
        let printed = toml::to_string(&config).unwrap();
        let again = Config::from_toml(&printed).unwrap();
        assert_eq!(again.node.capabilities, config.node.capabilities);
        assert_eq!(again.resources.storage_gb, 50);
    }

    #[test]
    fn storage_gb_names_the_key_on_bad_values() {
        assert_eq!(
            load("", &[], &[]).unwrap().resources.storage_cap_bytes(),
            None
        );
        for bad in ["-1", "\"lots\"", "1.5", "1000001"] {
            let error = load(&format!("[resources]\nstorage_gb = {bad}\n"), &[], &[]).unwrap_err();
            assert!(
                error.to_string().contains("resources.storage_gb"),
                "{bad}: {error}"
            );
        }
        let error = load("", &[], &[("APN_RESOURCES_STORAGE_GB", "x")]).unwrap_err();
        assert!(
            error.to_string().contains("resources.storage_gb"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_named_file_is_an_error_but_a_missing_default_is_not() {
        let missing = Path::new("/nonexistent/apn.toml");
        assert!(Config::load(Some(missing), true, &[], Vec::new()).is_err());
        assert!(Config::load(Some(missing), false, &[], Vec::new()).is_ok());
    }
}
