//! Claude Code's `--output-format stream-json` output (and Amp's `--stream-json`, which
//! has the same shape), turned into [`AgentEvent`]s.
//!
//! `claude -p <prompt> --output-format stream-json --verbose` prints one JSON object a line:
//!
//! - `{"type":"system","subtype":"init",…}`: the session started → progress `Starting`.
//! - `{"type":"assistant","message":{"content":[…]}}`: items of type `text` become
//!   [`LogStream::Agent`] lines; `tool_use` items become progress: `Edit`, `Write`,
//!   `MultiEdit` (and `NotebookEdit`) with `input.file_path`, and Amp's `edit_file`,
//!   `create_file` with `input.path` → `Editing <path>`, the path counted in
//!   `files_modified`; `Bash` with `input.command` (Amp: `input.cmd`) → `Running <command>`,
//!   stage `testing` when the command looks like a test run (`cargo test`, `pytest`,
//!   `npm test`, `go test`, …), else `coding`; other tools → `Reading <path>` or
//!   `Using <tool>`.
//! - `{"type":"user","message":{"content":[{"type":"tool_result",…}]}}`: the tool's output
//!   as [`LogStream::Stdout`] lines ([`LogStream::Stderr`] when `is_error`), bounded.
//! - `{"type":"result",…}`: the run's [`AgentSummary`] (subtype, turns, cost, tokens, text).
//!
//! Unknown types are skipped (logged at debug); a line that is not a JSON object is kept as
//! a plain stdout line: nothing here fails a run. Every string is bounded
//! ([`LOG_LINE_BYTES_MAX`], [`ACTION_BYTES_MAX`]), and so is the number of files tracked.
//! The percent is an estimate: it starts at [`PERCENT_START`] and grows with each tool use
//! up to [`PERCENT_MAX`]; the executor reports the rest itself.

use std::path::Path;

use serde_json::Value;

#[cfg(test)]
use super::structured::PATH_BYTES_MAX;
pub use super::structured::{
    ACTION_BYTES_MAX, FILES_TRACKED_MAX, LOG_LINE_BYTES_MAX, PERCENT_MAX, PERCENT_START,
    TOOL_RESULT_LINES_MAX, is_test_command,
};
use super::structured::{Line, Tracker, bounded, classify, log, output_lines, skip_unknown};
use super::{AgentEvent, AgentSummary, LogStream};
#[cfg(test)]
use crate::messages::ExecutionStage;

/// Reads stream-json lines one at a time, keeping what the progress reports accumulate
/// (the stage, the files edited, the percent estimate).
#[derive(Debug, Clone)]
pub struct StreamJsonParser {
    tracker: Tracker,
}

impl StreamJsonParser {
    /// A parser for one run; `workspace` makes the edited paths relative to it.
    pub fn new(workspace: Option<&Path>) -> Self {
        StreamJsonParser {
            tracker: Tracker::new(workspace),
        }
    }

    /// Files edited so far (relative to the workspace when under it), in first-edit order.
    pub fn files_modified(&self) -> &[String] {
        self.tracker.files_modified()
    }

    /// The events one stdout line makes (none for a blank line or an unknown event type).
    pub fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let value = match classify(line) {
            Line::Blank => return Vec::new(),
            Line::Plain => return vec![log(LogStream::Stdout, line)],
            Line::Event(value) => value,
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "system" => self.system(&value),
            "assistant" => self.assistant(&value),
            "user" => user(&value),
            "result" => vec![AgentEvent::Summary(summary(&value))],
            other => {
                skip_unknown("stream-json", other);
                Vec::new()
            }
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
        vec![self.tracker.progress(&action)]
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
                    self.tracker.step();
                    let action = self.tool_use(item);
                    events.push(self.tracker.progress(&action));
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
            "Edit" | "Write" | "MultiEdit" | "NotebookEdit" | "edit_file" | "create_file" => {
                match field("file_path")
                    .or_else(|| field("notebook_path"))
                    .or_else(|| field("path"))
                {
                    Some(path) => self.tracker.edit(path),
                    None => format!("Using {}", bounded(name, ACTION_BYTES_MAX)),
                }
            }
            "Bash" => match field("command").or_else(|| field("cmd")) {
                Some(command) => self.tracker.command(command),
                None => "Running a command".to_string(),
            },
            "Read" | "read_file" => match field("file_path").or_else(|| field("path")) {
                Some(path) => self.tracker.reading(path),
                None => "Reading".to_string(),
            },
            other => format!("Using {}", bounded(other, ACTION_BYTES_MAX)),
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
        output_lines(stream, &text, &mut events);
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
    fn amp_tool_names_are_edits_and_commands_too() {
        let events = run(concat!(
            r#"{"type":"system","subtype":"init","cwd":"/work/ws","session_id":"T-1","tools":["Bash","edit_file","create_file"]}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"a","name":"create_file","input":{"path":"/work/ws/new.rs","content":"x"}}]}}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"b","name":"edit_file","input":{"path":"/work/ws/src/lib.rs","old_str":"a","new_str":"b"}}]}}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"c","name":"Bash","input":{"cmd":"go test ./..."}}]}}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"d","name":"read_file","input":{"path":"/work/ws/README.md"}}]}}"#,
            "\n",
        ));
        let both = ["new.rs".to_string(), "src/lib.rs".to_string()];
        let progress: Vec<(ExecutionStage, &str, &[String])> = events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Progress {
                    stage,
                    action,
                    files_modified,
                    ..
                } => Some((*stage, action.as_str(), files_modified.as_slice())),
                _ => None,
            })
            .collect();
        assert_eq!(
            progress,
            vec![
                (ExecutionStage::Coding, "Starting", &[][..]),
                (ExecutionStage::Coding, "Editing new.rs", &both[..1]),
                (ExecutionStage::Coding, "Editing src/lib.rs", &both[..]),
                (ExecutionStage::Testing, "Running go test ./...", &both[..]),
                (ExecutionStage::Testing, "Reading README.md", &both[..]),
            ]
        );
    }
}
