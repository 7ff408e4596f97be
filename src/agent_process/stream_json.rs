//! Claude Code's `--output-format stream-json` output, turned into [`AgentEvent`]s.
//!
//! `claude -p <prompt> --output-format stream-json --verbose` prints one JSON object a line:
//!
//! - `{"type":"system","subtype":"init",…}`: the session started → progress `Starting`.
//! - `{"type":"assistant","message":{"content":[…]}}`: items of type `text` become
//!   [`LogStream::Agent`] lines; `tool_use` items become progress: `Edit`, `Write`,
//!   `MultiEdit` (and `NotebookEdit`) with `input.file_path` → `Editing <path>`, the path
//!   counted in `files_modified`; `Bash` with `input.command` → `Running <command>`, stage
//!   `testing` when the command looks like a test run (`cargo test`, `pytest`, `npm test`,
//!   `go test`, …), else `coding`; other tools → `Reading <path>` or `Using <tool>`.
//! - `{"type":"user","message":{"content":[{"type":"tool_result",…}]}}`: the tool's output
//!   as [`LogStream::Stdout`] lines ([`LogStream::Stderr`] when `is_error`), bounded.
//! - `{"type":"result",…}`: the run's [`AgentSummary`] (subtype, turns, cost, tokens, text).
//!
//! Unknown types are skipped (logged at debug); a line that is not a JSON object is kept as
//! a plain stdout line: nothing here fails a run. Every string is bounded
//! ([`LOG_LINE_BYTES_MAX`], [`ACTION_BYTES_MAX`]), and so is the number of files tracked.
//! The percent is an estimate: it starts at [`PERCENT_START`] and grows with each tool use
//! up to [`PERCENT_MAX`]; the executor reports the rest itself.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{AgentEvent, AgentSummary, LogStream};
use crate::messages::ExecutionStage;

/// Longest log line made from an event, in bytes (longer text is cut, marked with `…`).
pub const LOG_LINE_BYTES_MAX: usize = 4 * 1024;
/// Longest progress action, in bytes.
pub const ACTION_BYTES_MAX: usize = 200;
/// Most lines of one tool result forwarded (the rest are counted in one note line).
pub const TOOL_RESULT_LINES_MAX: usize = 20;
/// Most distinct files remembered as modified.
pub const FILES_TRACKED_MAX: usize = 256;
/// Longest path remembered, in bytes.
const PATH_BYTES_MAX: usize = 1024;
/// Percent reported before any tool use.
pub const PERCENT_START: u8 = 10;
/// The estimate never claims more than this; the executor's diff and result come after.
pub const PERCENT_MAX: u8 = 85;
/// Percent added per tool use.
const PERCENT_PER_TOOL: u8 = 3;

/// Commands (after whitespace is collapsed, lowercased) that are test runs.
const TEST_COMMANDS: &[&str] = &[
    "cargo test",
    "cargo nextest",
    "pytest",
    "python -m pytest",
    "python3 -m pytest",
    "python -m unittest",
    "npm test",
    "npm run test",
    "yarn test",
    "pnpm test",
    "bun test",
    "deno test",
    "npx jest",
    "jest",
    "vitest",
    "go test",
    "make test",
    "make check",
    "mvn test",
    "gradle test",
    "./gradlew test",
    "ctest",
    "tox",
    "rspec",
    "phpunit",
    "mix test",
    "dotnet test",
];

/// Reads stream-json lines one at a time, keeping what the progress reports accumulate
/// (the stage, the files edited, the percent estimate).
#[derive(Debug, Clone)]
pub struct StreamJsonParser {
    /// The run's working directory: absolute paths under it are reported relative to it.
    workspace: Option<PathBuf>,
    stage: ExecutionStage,
    percent: u8,
    files_modified: Vec<String>,
}

impl StreamJsonParser {
    /// A parser for one run; `workspace` makes the edited paths relative to it.
    pub fn new(workspace: Option<&Path>) -> Self {
        StreamJsonParser {
            workspace: workspace.map(Path::to_path_buf),
            stage: ExecutionStage::Coding,
            percent: PERCENT_START,
            files_modified: Vec::new(),
        }
    }

    /// Files edited so far (relative to the workspace when under it), in first-edit order.
    pub fn files_modified(&self) -> &[String] {
        &self.files_modified
    }

    /// The events one stdout line makes (none for a blank line or an unknown event type).
    pub fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Vec::new();
        }
        let value: Value = match serde_json::from_str(trimmed) {
            Ok(value @ Value::Object(_)) => value,
            _ => return vec![log(LogStream::Stdout, line)],
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "system" => self.system(&value),
            "assistant" => self.assistant(&value),
            "user" => user(&value),
            "result" => vec![AgentEvent::Summary(summary(&value))],
            other => {
                tracing::debug!(
                    kind = %bounded(other, ACTION_BYTES_MAX),
                    "stream-json event of an unknown type skipped"
                );
                Vec::new()
            }
        }
    }

    fn progress(&self, action: String) -> AgentEvent {
        AgentEvent::Progress {
            stage: self.stage,
            percent: self.percent,
            action: bounded(&action, ACTION_BYTES_MAX),
            files_modified: self.files_modified.clone(),
        }
    }

    fn system(&mut self, value: &Value) -> Vec<AgentEvent> {
        if value.get("subtype").and_then(Value::as_str) != Some("init") {
            return Vec::new();
        }
        let action = match value.get("model").and_then(Value::as_str) {
            Some(model) => format!("Starting ({model})"),
            None => "Starting".to_string(),
        };
        vec![self.progress(action)]
    }

    fn assistant(&mut self, value: &Value) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        for item in content(value) {
            match item.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(text) = item.get("text").and_then(Value::as_str) {
                        let text = text.trim();
                        if !text.is_empty() {
                            events.push(log(LogStream::Agent, text));
                        }
                    }
                }
                Some("tool_use") => {
                    self.percent = self
                        .percent
                        .saturating_add(PERCENT_PER_TOOL)
                        .min(PERCENT_MAX);
                    let action = self.tool_use(item);
                    events.push(self.progress(action));
                }
                _ => {}
            }
        }
        events
    }

    /// The action a tool use stands for; updates the stage and the files edited.
    fn tool_use(&mut self, item: &Value) -> String {
        let name = item.get("name").and_then(Value::as_str).unwrap_or("tool");
        let input = item.get("input");
        let field = |key: &str| input.and_then(|i| i.get(key)).and_then(Value::as_str);
        match name {
            "Edit" | "Write" | "MultiEdit" | "NotebookEdit" => {
                self.stage = ExecutionStage::Coding;
                match field("file_path").or_else(|| field("notebook_path")) {
                    Some(path) => {
                        let path = self.relative(path);
                        self.note_file(&path);
                        format!("Editing {path}")
                    }
                    None => format!("Using {}", bounded(name, ACTION_BYTES_MAX)),
                }
            }
            "Bash" => match field("command") {
                Some(command) => {
                    self.stage = if is_test_command(command) {
                        ExecutionStage::Testing
                    } else {
                        ExecutionStage::Coding
                    };
                    format!("Running {}", shorten_command(command))
                }
                None => "Running a command".to_string(),
            },
            "Read" => match field("file_path") {
                Some(path) => format!("Reading {}", self.relative(path)),
                None => "Reading".to_string(),
            },
            other => format!("Using {}", bounded(other, ACTION_BYTES_MAX)),
        }
    }

    /// `path` relative to the workspace when it is under it, bounded.
    fn relative(&self, path: &str) -> String {
        let relative = self
            .workspace
            .as_deref()
            .and_then(|root| Path::new(path).strip_prefix(root).ok())
            .filter(|rest| !rest.as_os_str().is_empty())
            .map(|rest| rest.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string());
        bounded(&relative, PATH_BYTES_MAX)
    }

    fn note_file(&mut self, path: &str) {
        if self.files_modified.len() < FILES_TRACKED_MAX
            && !self.files_modified.iter().any(|known| known == path)
        {
            self.files_modified.push(path.to_string());
        }
    }
}

/// `message.content` as a list (any other shape has no items).
fn content(value: &Value) -> Vec<&Value> {
    match value.get("message").and_then(|m| m.get("content")) {
        Some(Value::Array(items)) => items.iter().collect(),
        _ => Vec::new(),
    }
}

/// A `user` event: its tool results as output lines.
fn user(value: &Value) -> Vec<AgentEvent> {
    let mut events = Vec::new();
    for item in content(value) {
        if item.get("type").and_then(Value::as_str) != Some("tool_result") {
            continue;
        }
        let stream = if item.get("is_error").and_then(Value::as_bool) == Some(true) {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        };
        let text = tool_result_text(item.get("content"));
        let text = bounded(&text, LOG_LINE_BYTES_MAX);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for line in lines.iter().take(TOOL_RESULT_LINES_MAX) {
            events.push(log(stream, line));
        }
        if lines.len() > TOOL_RESULT_LINES_MAX {
            events.push(log(
                stream,
                &format!(
                    "… {} more line(s) of tool output",
                    lines.len() - TOOL_RESULT_LINES_MAX
                ),
            ));
        }
    }
    events
}

/// A tool result's content: a string, or a list of `{"type":"text","text":…}` items.
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => {
            let mut text = String::new();
            for item in items {
                if let Some(part) = item.get("text").and_then(Value::as_str) {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(part);
                    if text.len() > LOG_LINE_BYTES_MAX {
                        break;
                    }
                }
            }
            text
        }
        _ => String::new(),
    }
}

/// The `result` event as the run's summary.
fn summary(value: &Value) -> AgentSummary {
    let subtype = value
        .get("subtype")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let usage = value.get("usage");
    let tokens = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
    AgentSummary {
        success: subtype == "success"
            && value.get("is_error").and_then(Value::as_bool) != Some(true),
        subtype: bounded(subtype, ACTION_BYTES_MAX),
        num_turns: value.get("num_turns").and_then(Value::as_u64),
        total_cost_usd: value
            .get("total_cost_usd")
            .or_else(|| value.get("cost_usd"))
            .and_then(Value::as_f64)
            .filter(|cost| cost.is_finite() && *cost >= 0.0),
        input_tokens: tokens("input_tokens"),
        output_tokens: tokens("output_tokens"),
        text: value
            .get("result")
            .and_then(Value::as_str)
            .map(|text| bounded(text.trim(), LOG_LINE_BYTES_MAX))
            .unwrap_or_default(),
    }
}

fn log(stream: LogStream, line: &str) -> AgentEvent {
    AgentEvent::Log {
        stream,
        line: bounded(line, LOG_LINE_BYTES_MAX),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, `…` marking a cut.
pub(super) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = text[..end].to_string();
    cut.push(ellipsis);
    cut
}

/// The command's first line, whitespace collapsed, short enough for an action.
fn shorten_command(command: &str) -> String {
    let mut lines = command.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("");
    let mut short = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if lines.next().is_some() {
        short.push_str(" …");
    }
    bounded(&short, ACTION_BYTES_MAX - "Running ".len())
}

/// True when `command` runs tests: one of [`TEST_COMMANDS`] at the start of the command or
/// after a separator (`&&`, `;`, `|`, a space, `(`).
pub fn is_test_command(command: &str) -> bool {
    let normalized = command
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    TEST_COMMANDS.iter().any(|pattern| {
        normalized.match_indices(pattern).any(|(at, _)| {
            let before_ok = normalized[..at]
                .chars()
                .next_back()
                .is_none_or(|c| matches!(c, ' ' | ';' | '&' | '|' | '(' | '/'));
            let after_ok = normalized[at + pattern.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')));
            before_ok && after_ok
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transcript shaped like `claude -p … --output-format stream-json --verbose` prints.
    const TRANSCRIPT: &str = r#"{"type":"system","subtype":"init","cwd":"/work/ws","session_id":"abc","tools":["Bash","Edit","Read"],"model":"claude-sonnet-4-5","permissionMode":"bypassPermissions"}
{"type":"assistant","message":{"id":"m1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"I'll fix the greeting in src/lib.rs."}],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":5}},"session_id":"abc"}
{"type":"assistant","message":{"id":"m2","role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Read","input":{"file_path":"/work/ws/src/lib.rs"}}]},"session_id":"abc"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t1","type":"tool_result","content":"     1→pub fn hello() {}\n     2→"}]},"session_id":"abc"}
{"type":"assistant","message":{"id":"m3","role":"assistant","content":[{"type":"tool_use","id":"t2","name":"Edit","input":{"file_path":"/work/ws/src/lib.rs","old_string":"hello","new_string":"hi"}}]},"session_id":"abc"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t2","type":"tool_result","content":[{"type":"text","text":"The file /work/ws/src/lib.rs has been updated."}]}]},"session_id":"abc"}
{"type":"assistant","message":{"id":"m4","role":"assistant","content":[{"type":"tool_use","id":"t3","name":"Bash","input":{"command":"cd /work/ws && cargo test --quiet 2>&1 | tail -20","description":"Run tests"}}]},"session_id":"abc"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t3","type":"tool_result","content":"test result: FAILED. 0 passed; 1 failed","is_error":true}]},"session_id":"abc"}
{"type":"rate_limit_event","whatever":1}
not json at all
{"type":"result","subtype":"success","is_error":false,"duration_ms":12000,"num_turns":7,"result":"Renamed hello to hi; tests run.","session_id":"abc","total_cost_usd":0.0421,"usage":{"input_tokens":1200,"output_tokens":340}}
"#;

    fn run(transcript: &str) -> Vec<AgentEvent> {
        let mut parser = StreamJsonParser::new(Some(Path::new("/work/ws")));
        transcript
            .lines()
            .flat_map(|line| parser.parse_line(line))
            .collect()
    }

    #[test]
    fn a_transcript_becomes_logs_progress_and_a_summary() {
        let events = run(TRANSCRIPT);
        let expected = vec![
            AgentEvent::Progress {
                stage: ExecutionStage::Coding,
                percent: 10,
                action: "Starting (claude-sonnet-4-5)".into(),
                files_modified: vec![],
            },
            AgentEvent::Log {
                stream: LogStream::Agent,
                line: "I'll fix the greeting in src/lib.rs.".into(),
            },
            AgentEvent::Progress {
                stage: ExecutionStage::Coding,
                percent: 13,
                action: "Reading src/lib.rs".into(),
                files_modified: vec![],
            },
            AgentEvent::Log {
                stream: LogStream::Stdout,
                line: "     1→pub fn hello() {}".into(),
            },
            AgentEvent::Log {
                stream: LogStream::Stdout,
                line: "     2→".into(),
            },
            AgentEvent::Progress {
                stage: ExecutionStage::Coding,
                percent: 16,
                action: "Editing src/lib.rs".into(),
                files_modified: vec!["src/lib.rs".into()],
            },
            AgentEvent::Log {
                stream: LogStream::Stdout,
                line: "The file /work/ws/src/lib.rs has been updated.".into(),
            },
            AgentEvent::Progress {
                stage: ExecutionStage::Testing,
                percent: 19,
                action: "Running cd /work/ws && cargo test --quiet 2>&1 | tail -20".into(),
                files_modified: vec!["src/lib.rs".into()],
            },
            AgentEvent::Log {
                stream: LogStream::Stderr,
                line: "test result: FAILED. 0 passed; 1 failed".into(),
            },
            AgentEvent::Log {
                stream: LogStream::Stdout,
                line: "not json at all".into(),
            },
            AgentEvent::Summary(AgentSummary {
                success: true,
                subtype: "success".into(),
                num_turns: Some(7),
                total_cost_usd: Some(0.0421),
                input_tokens: Some(1200),
                output_tokens: Some(340),
                text: "Renamed hello to hi; tests run.".into(),
            }),
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn an_error_result_and_odd_shapes_never_fail() {
        let events = run(concat!(
            "{\"type\":\"result\",\"subtype\":\"error_max_turns\",\"is_error\":true,\"num_turns\":\"x\"}\n",
            "{\"type\":\"assistant\"}\n",
            "{\"type\":\"assistant\",\"message\":{\"content\":\"plain\"}}\n",
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\"}]}}\n",
            "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"content\":7}]}}\n",
            "{\"no_type\":1}\n",
            "[1,2,3]\n",
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"Write\",\"input\":{\"file_path\":\"/elsewhere/x.txt\"}}]}}\n",
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"Bash\",\"input\":{\"command\":\"ls -la\"}}]}}\n",
            "{\"truncated\": \"li\n",
            "   \n",
        ));
        let AgentEvent::Summary(summary) = &events[0] else {
            panic!("{events:?}")
        };
        assert!(!summary.success);
        assert_eq!(summary.subtype, "error_max_turns");
        assert_eq!(summary.num_turns, None);
        assert_eq!(
            events[1],
            AgentEvent::Progress {
                stage: ExecutionStage::Coding,
                percent: 13,
                action: "Using tool".into(),
                files_modified: vec![],
            }
        );
        assert_eq!(
            events[2],
            AgentEvent::Log {
                stream: LogStream::Stdout,
                line: "[1,2,3]".into()
            }
        );
        let AgentEvent::Progress {
            action,
            files_modified,
            ..
        } = &events[3]
        else {
            panic!("{events:?}")
        };
        assert_eq!(action, "Editing /elsewhere/x.txt");
        assert_eq!(files_modified, &["/elsewhere/x.txt"]);
        let AgentEvent::Progress { stage, action, .. } = &events[4] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (*stage, action.as_str()),
            (ExecutionStage::Coding, "Running ls -la")
        );
        assert_eq!(
            events[5],
            AgentEvent::Log {
                stream: LogStream::Stdout,
                line: "{\"truncated\": \"li".into()
            }
        );
        assert_eq!(events.len(), 6);
    }

    #[test]
    fn strings_are_bounded() {
        let huge = "é".repeat(10_000);
        let text = serde_json::json!({"type":"assistant","message":{"content":[
            {"type":"text","text": huge},
            {"type":"tool_use","name":"Bash","input":{"command": format!("echo {huge}\nsecond")}},
            {"type":"tool_use","name":"Edit","input":{"file_path": huge}},
        ]}});
        let tool_output: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let result = serde_json::json!({"type":"user","message":{"content":[
            {"type":"tool_result","content": tool_output},
        ]}});
        let mut parser = StreamJsonParser::new(None);
        let mut events = parser.parse_line(&text.to_string());
        events.extend(parser.parse_line(&result.to_string()));
        for event in &events {
            match event {
                AgentEvent::Log { line, .. } => assert!(line.len() <= LOG_LINE_BYTES_MAX),
                AgentEvent::Progress {
                    action,
                    files_modified,
                    ..
                } => {
                    assert!(action.len() <= ACTION_BYTES_MAX, "{}", action.len());
                    assert!(files_modified.iter().all(|f| f.len() <= PATH_BYTES_MAX));
                }
                _ => {}
            }
        }
        let logs = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::Log { .. }))
            .count();
        assert_eq!(logs, 1 + TOOL_RESULT_LINES_MAX + 1);
        for _ in 0..FILES_TRACKED_MAX + 10 {
            let edit = serde_json::json!({"type":"assistant","message":{"content":[
                {"type":"tool_use","name":"Write","input":{"file_path": format!("f{}", parser.files_modified().len())}},
            ]}});
            parser.parse_line(&edit.to_string());
        }
        assert_eq!(parser.files_modified().len(), FILES_TRACKED_MAX);
    }

    #[test]
    fn test_commands_are_recognised() {
        for command in [
            "cargo test",
            "cargo test --quiet",
            "cd /w && cargo  test -p x",
            "python -m pytest tests/",
            "pytest -x",
            "npm test",
            "npm run test -- --watch=false",
            "go test ./...",
            "(make test)",
            "./node_modules/.bin/jest",
            "CI=1 yarn test",
        ] {
            assert!(is_test_command(command), "{command}");
        }
        for command in [
            "cargo build",
            "ls tests",
            "cat pytest.ini",
            "echo contest",
            "git status",
            "cargo testing-tool",
        ] {
            assert!(!is_test_command(command), "{command}");
        }
    }
}
