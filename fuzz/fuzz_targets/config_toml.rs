//! The config file and `APN_*` environment overrides, as `apn node` loads them. The input is
//! TOML text, optionally followed by a line `---` and `NAME=VALUE` lines. Any input gives a
//! config or a `ConfigError` naming the problem, never a panic; an accepted config (loading
//! already ran its validation) yields its listen addresses and HTTP bind without a panic.
#![no_main]

use std::path::Path;

use apn::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, environment) = text.split_once("\n---\n").unwrap_or((text, ""));
    let environment = environment.lines().filter_map(|line| {
        line.split_once('=')
            .map(|(name, value)| (name.to_string(), value.to_string()))
    });
    let Ok(config) =
        Config::from_text_with_overrides(toml, Path::new("fuzz.toml"), &[], environment)
    else {
        return;
    };
    let _ = config.listen_addrs();
    let _ = config.http.bind_addr();
});
