//! Which program a task runs: the argv built from a profile (the prompt as one argument),
//! and the profiles this node can run because their program exists.

use super::PROMPT_PLACEHOLDER;
use crate::config::ProfileConfig;

/// Program then arguments, each argument exactly equal to `{prompt}` replaced by the prompt
/// as one element (never split, never interpreted).
pub fn build_argv(profile: &ProfileConfig, prompt: &str) -> Vec<String> {
    std::iter::once(profile.program.clone())
        .chain(profile.args.iter().map(|arg| {
            if arg == PROMPT_PLACEHOLDER {
                prompt.to_string()
            } else {
                arg.clone()
            }
        }))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_one_argument_never_split() {
        let profile = ProfileConfig::new("claude", &["-p", "{prompt}", "--flag={prompt}", "--yes"]);
        let prompt = "$(touch /tmp/pwned); rm -rf ~ `id` \"quoted\" 'single'\nnext line";
        assert_eq!(
            build_argv(&profile, prompt),
            vec!["claude", "-p", prompt, "--flag={prompt}", "--yes"]
        );
        let empty = ProfileConfig::new("agent", &["{prompt}"]);
        assert_eq!(build_argv(&empty, ""), vec!["agent", ""]);
    }
}
