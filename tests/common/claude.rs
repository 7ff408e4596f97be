//! A stand-in for the `claude` CLI, for tests of the CLAUDE_CODE profile.

use std::path::{Path, PathBuf};

/// The `ANTHROPIC_API_KEY` the stand-in insists on.
pub const TEST_KEY: &str = "sk-ant-test-key";

/// Set the node's `ANTHROPIC_API_KEY` to [`TEST_KEY`] (the profile passes it through).
pub fn set_test_key() {
    // SAFETY: only the stand-in tests read the variable, always set to this value.
    unsafe { std::env::set_var("ANTHROPIC_API_KEY", TEST_KEY) };
}

/// A stand-in for `claude`: checks what the CLAUDE_CODE profile gives it (`-p`, stream-json
/// output, the API key passed through, `IS_SANDBOX=1`), edits a file in its working
/// directory and prints a short stream-json transcript.
const FAKE_CLAUDE: &str = r#"#!/bin/sh
[ "$1" = "-p" ] || { echo "expected -p first, got: $*" >&2; exit 2; }
case " $* " in
  *" --output-format stream-json "*) ;;
  *) echo "expected --output-format stream-json, got: $*" >&2; exit 2 ;;
esac
[ "$ANTHROPIC_API_KEY" = "sk-ant-test-key" ] || { echo "ANTHROPIC_API_KEY did not reach claude" >&2; exit 2; }
[ "$IS_SANDBOX" = "1" ] || { echo "IS_SANDBOX=1 did not reach claude" >&2; exit 2; }
here=$(pwd -P)
printf 'hello, stream-json\n' > greeting.txt
echo '{"type":"system","subtype":"init","cwd":"'"$here"'","session_id":"s1","tools":["Bash","Edit"],"model":"stand-in"}'
echo '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"I will write the greeting."}]},"session_id":"s1"}'
echo '{"type":"assistant","message":{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Edit","input":{"file_path":"'"$here"'/greeting.txt","old_string":"","new_string":"hello"}}]},"session_id":"s1"}'
echo '{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t1","type":"tool_result","content":"The file greeting.txt has been updated."}]},"session_id":"s1"}'
echo '{"type":"assistant","message":{"role":"assistant","content":[{"type":"tool_use","id":"t2","name":"Bash","input":{"command":"cargo test --quiet"}}]},"session_id":"s1"}'
echo '{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t2","type":"tool_result","content":"test result: ok. 3 passed"}]},"session_id":"s1"}'
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":4,"result":"Greeting written; tests pass.","total_cost_usd":0.0123,"usage":{"input_tokens":100,"output_tokens":20},"session_id":"s1"}'
"#;

/// Write the stand-in `claude` into `dir`, executable; its path.
pub fn fake_claude(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("claude");
    std::fs::write(&path, FAKE_CLAUDE).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
