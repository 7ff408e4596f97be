//! Stand-ins for the `codex`, `gemini` and `amp` CLIs, for tests of the CODEX, GEMINI and
//! AMP profiles. Each checks the flags a real run passes and that its API key reached it
//! (exit 2 otherwise), writes `greeting.txt` in its working directory and prints a short
//! transcript in its CLI's structured output: a message, the edit, a test command, the end.

use std::path::{Path, PathBuf};

/// The API key every stand-in insists on (in its own variable).
pub const TEST_KEY: &str = "test-agent-key";

/// A stand-in CLI: its program name, the variable its key comes in, its script.
pub struct StandIn {
    /// The program's file name (`codex`, `gemini`, `amp`).
    pub program: &'static str,
    /// The variable the profile passes the key in.
    pub key_variable: &'static str,
    script: &'static str,
}

impl StandIn {
    /// Set the node's key variable to [`TEST_KEY`] (the profile passes it through).
    pub fn set_test_key(&self) {
        // SAFETY: only the stand-in tests read these variables, always set to this value.
        unsafe { std::env::set_var(self.key_variable, TEST_KEY) };
    }

    /// Write the stand-in into `dir`, executable; its path.
    pub fn install(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(self.program);
        std::fs::write(&path, self.script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

/// `codex exec --json --dangerously-bypass-approvals-and-sandbox <prompt>`.
pub const CODEX: StandIn = StandIn {
    program: "codex",
    key_variable: "OPENAI_API_KEY",
    script: r#"#!/bin/sh
[ "$1" = "exec" ] || { echo "expected exec first, got: $*" >&2; exit 2; }
case " $* " in
  *" --json "*) ;;
  *) echo "expected --json, got: $*" >&2; exit 2 ;;
esac
case " $* " in
  *" --dangerously-bypass-approvals-and-sandbox "*) ;;
  *) echo "expected --dangerously-bypass-approvals-and-sandbox, got: $*" >&2; exit 2 ;;
esac
[ "$OPENAI_API_KEY" = "test-agent-key" ] || { echo "OPENAI_API_KEY did not reach codex" >&2; exit 2; }
here=$(pwd -P)
printf 'hello, codex\n' > greeting.txt
echo '{"type":"thread.started","thread_id":"t-1"}'
echo '{"type":"turn.started"}'
echo '{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Planning the greeting**"}}'
echo '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"I will write the greeting."}}'
echo '{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"'"$here"'/greeting.txt","kind":"add"}],"status":"completed"}}'
echo '{"type":"item.started","item":{"id":"item_3","type":"command_execution","command":"bash -lc '"'"'cargo test --quiet'"'"'","aggregated_output":"","exit_code":null,"status":"in_progress"}}'
echo '{"type":"item.completed","item":{"id":"item_3","type":"command_execution","command":"bash -lc '"'"'cargo test --quiet'"'"'","aggregated_output":"test result: ok. 3 passed","exit_code":0,"status":"completed"}}'
echo '{"type":"item.completed","item":{"id":"item_4","type":"agent_message","text":"Greeting written; tests pass."}}'
echo '{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":50,"output_tokens":20}}'
"#,
};

/// `gemini -p <prompt> --output-format stream-json --yolo`.
pub const GEMINI: StandIn = StandIn {
    program: "gemini",
    key_variable: "GEMINI_API_KEY",
    script: r#"#!/bin/sh
[ "$1" = "-p" ] || { echo "expected -p first, got: $*" >&2; exit 2; }
case " $* " in
  *" --output-format stream-json "*) ;;
  *) echo "expected --output-format stream-json, got: $*" >&2; exit 2 ;;
esac
case " $* " in
  *" --yolo "*) ;;
  *) echo "expected --yolo, got: $*" >&2; exit 2 ;;
esac
[ "$GEMINI_API_KEY" = "test-agent-key" ] || { echo "GEMINI_API_KEY did not reach gemini" >&2; exit 2; }
here=$(pwd -P)
printf 'hello, gemini\n' > greeting.txt
echo '{"type":"init","session_id":"s1","model":"stand-in"}'
echo '{"type":"message","role":"user","content":"write a greeting"}'
echo '{"type":"message","role":"assistant","content":"I will write ","delta":true}'
echo '{"type":"message","role":"assistant","content":"the greeting.","delta":true}'
echo '{"type":"tool_use","tool_name":"write_file","tool_id":"w1","parameters":{"file_path":"'"$here"'/greeting.txt","content":"hello"}}'
echo '{"type":"tool_result","tool_id":"w1","status":"success","output":"Wrote greeting.txt"}'
echo '{"type":"tool_use","tool_name":"run_shell_command","tool_id":"b1","parameters":{"command":"cargo test --quiet"}}'
echo '{"type":"tool_result","tool_id":"b1","status":"success","output":"test result: ok. 3 passed"}'
echo '{"type":"message","role":"assistant","content":"Greeting written; tests pass."}'
echo '{"type":"result","status":"success","stats":{"total_tokens":120,"input_tokens":100,"output_tokens":20,"duration_ms":900,"tool_calls":2}}'
"#,
};

/// `amp --dangerously-allow-all -x <prompt> --stream-json`.
pub const AMP: StandIn = StandIn {
    program: "amp",
    key_variable: "AMP_API_KEY",
    script: r#"#!/bin/sh
case " $* " in
  *" --dangerously-allow-all "*) ;;
  *) echo "expected --dangerously-allow-all, got: $*" >&2; exit 2 ;;
esac
case " $* " in
  *" -x "*) ;;
  *) echo "expected -x, got: $*" >&2; exit 2 ;;
esac
case " $* " in
  *" --stream-json "*) ;;
  *) echo "expected --stream-json, got: $*" >&2; exit 2 ;;
esac
[ "$AMP_API_KEY" = "test-agent-key" ] || { echo "AMP_API_KEY did not reach amp" >&2; exit 2; }
here=$(pwd -P)
printf 'hello, amp\n' > greeting.txt
echo '{"type":"system","subtype":"init","cwd":"'"$here"'","session_id":"T-1","tools":["Bash","edit_file","create_file"],"mcp_servers":[]}'
echo '{"type":"assistant","message":{"type":"message","role":"assistant","content":[{"type":"text","text":"I will write the greeting."}],"stop_reason":"tool_use"},"parent_tool_use_id":null,"session_id":"T-1"}'
echo '{"type":"assistant","message":{"type":"message","role":"assistant","content":[{"type":"tool_use","id":"t1","name":"create_file","input":{"path":"'"$here"'/greeting.txt","content":"hello"}}]},"parent_tool_use_id":null,"session_id":"T-1"}'
echo '{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"Created greeting.txt","is_error":false}]},"parent_tool_use_id":null,"session_id":"T-1"}'
echo '{"type":"assistant","message":{"type":"message","role":"assistant","content":[{"type":"tool_use","id":"t2","name":"Bash","input":{"cmd":"cargo test --quiet"}}]},"parent_tool_use_id":null,"session_id":"T-1"}'
echo '{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t2","content":"test result: ok. 3 passed","is_error":false}]},"parent_tool_use_id":null,"session_id":"T-1"}'
echo '{"type":"result","subtype":"success","duration_ms":900,"is_error":false,"num_turns":3,"result":"Greeting written; tests pass.","session_id":"T-1"}'
"#,
};
