//! Codex's `codex exec --json` output, turned into [`AgentEvent`]s.
//!
//! `codex exec --json <prompt>` prints one JSON object a line:
//!
//! - `{"type":"thread.started","thread_id":…}` → progress `Starting`; `turn.started` is
//!   skipped.
//! - `{"type":"item.started"|"item.updated"|"item.completed","item":{"id":…,"type":…}}`, by
//!   item type:
//!   - `agent_message` (`text`), when completed → a [`LogStream::Agent`] line (the last one
//!     is the summary's text);
//!   - `reasoning` (`text`) → logged at debug level only (bounded), not forwarded;
//!   - `command_execution` (`command`, `aggregated_output`, `exit_code`, `status`): started →
//!     progress `Running <command>`, stage `testing` for a test command; completed → its
//!     output as [`LogStream::Stdout`] lines ([`LogStream::Stderr`] when it failed), bounded;
//!   - `file_change` (`changes: [{"path","kind"}]`) → `Editing <path>` for each path, counted
//!     in `files_modified`;
//!   - `todo_list` (`items: [{"text","completed"}]`) → progress `Plan: <done>/<total> done`;
//!   - `mcp_tool_call` (`server`, `tool`) → `Using <server>.<tool>`; `web_search` (`query`) →
//!     `Searching <query>`; `error` (`message`) → a [`LogStream::Stderr`] line.
//! - `{"type":"turn.completed","usage":{…}}` → the [`AgentSummary`] (success, tokens).
//! - `{"type":"turn.failed","error":{"message":…}}` and `{"type":"error","message":…}` → a
//!   [`LogStream::Stderr`] line and a failed [`AgentSummary`].
//!
//! A command or file change that is only seen completed still reports its progress once.
//! Unknown event and item types are skipped (logged at debug); a line that is not a JSON
//! object is kept as a plain stdout line: nothing here fails a run. Everything is bounded as
//! in [`super::stream_json`].

use std::path::Path;

use serde_json::Value;

use super::structured::{
    ACTION_BYTES_MAX, LOG_LINE_BYTES_MAX, Line, Tracker, bounded, classify, log, output_lines,
    skip_unknown,
};
use super::{AgentEvent, AgentSummary, LogStream};

/// Most item ids remembered as already reported (older ones are forgotten first).
const ITEMS_TRACKED_MAX: usize = 256;

/// Reads `codex exec --json` lines one at a time, keeping what progress accumulates.
#[derive(Debug, Clone)]
pub struct CodexJsonParser {
    tracker: Tracker,
    /// Ids of the items whose progress was reported (started, or seen completed).
    reported: Vec<String>,
    /// The last agent message, the summary's text.
    last_message: String,
    /// `turn.completed` events seen.
    turns: u64,
}

impl CodexJsonParser {
    /// A parser for one run; `workspace` makes the edited paths relative to it.
    pub fn new(workspace: Option<&Path>) -> Self {
        CodexJsonParser {
            tracker: Tracker::new(workspace),
            reported: Vec::new(),
            last_message: String::new(),
            turns: 0,
        }
    }

    /// Files changed so far (relative to the workspace when under it), in first-change order.
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
            "thread.started" => vec![self.tracker.progress("Starting")],
            "turn.started" => Vec::new(),
            "item.started" | "item.updated" | "item.completed" => match value.get("item") {
                Some(item) => self.item(kind, item),
                None => Vec::new(),
            },
            "turn.completed" => {
                self.turns += 1;
                vec![AgentEvent::Summary(self.summary(true, "success", &value))]
            }
            "turn.failed" => {
                let message = str_field(value.get("error"), "message").unwrap_or("turn failed");
                self.failure("turn_failed", message)
            }
            "error" => {
                let message = str_field(Some(&value), "message").unwrap_or("error");
                self.failure("error", message)
            }
            other => {
                skip_unknown("codex-json", other);
                Vec::new()
            }
        }
    }

    fn item(&mut self, kind: &str, item: &Value) -> Vec<AgentEvent> {
        let completed = kind == "item.completed";
        let item_type = item.get("type").and_then(Value::as_str).unwrap_or("");
        let text = |key: &str| str_field(Some(item), key);
        let mut events = Vec::new();
        match item_type {
            "agent_message" => {
                if let Some(message) = text("text").map(str::trim).filter(|t| !t.is_empty())
                    && completed
                {
                    self.last_message = bounded(message, LOG_LINE_BYTES_MAX);
                    events.push(log(LogStream::Agent, message));
                }
            }
            "reasoning" => {
                if completed && let Some(reasoning) = text("text") {
                    tracing::debug!(
                        reasoning = %bounded(reasoning.trim(), LOG_LINE_BYTES_MAX),
                        "codex reasoning"
                    );
                }
            }
            "command_execution" => {
                if self.first_report(item) {
                    self.tracker.step();
                    let action = match text("command") {
                        Some(command) => self.tracker.command(command),
                        None => "Running a command".to_string(),
                    };
                    events.push(self.tracker.progress(&action));
                }
                if completed {
                    let failed = text("status") == Some("failed")
                        || item
                            .get("exit_code")
                            .and_then(Value::as_i64)
                            .is_some_and(|code| code != 0);
                    let stream = if failed {
                        LogStream::Stderr
                    } else {
                        LogStream::Stdout
                    };
                    output_lines(stream, text("aggregated_output").unwrap_or(""), &mut events);
                }
            }
            "file_change" => {
                if self.first_report(item) {
                    self.tracker.step();
                    if let Some(Value::Array(changes)) = item.get("changes") {
                        for change in changes.iter().take(super::structured::FILES_TRACKED_MAX) {
                            if let Some(path) = str_field(Some(change), "path") {
                                let action = self.tracker.edit(path);
                                events.push(self.tracker.progress(&action));
                            }
                        }
                    }
                }
            }
            "todo_list" => {
                if let Some(Value::Array(items)) = item.get("items") {
                    let done = items
                        .iter()
                        .filter(|i| i.get("completed").and_then(Value::as_bool) == Some(true))
                        .count();
                    let action = format!("Plan: {done}/{} done", items.len());
                    events.push(self.tracker.progress(&action));
                }
            }
            "mcp_tool_call" => {
                if self.first_report(item) {
                    self.tracker.step();
                    let action = match (text("server"), text("tool")) {
                        (Some(server), Some(tool)) => format!("Using {server}.{tool}"),
                        (None, Some(tool)) => format!("Using {tool}"),
                        _ => "Using a tool".to_string(),
                    };
                    events.push(self.tracker.progress(&bounded(&action, ACTION_BYTES_MAX)));
                }
            }
            "web_search" => {
                if self.first_report(item) {
                    self.tracker.step();
                    let action = match text("query") {
                        Some(query) => format!("Searching {query}"),
                        None => "Searching the web".to_string(),
                    };
                    events.push(self.tracker.progress(&action));
                }
            }
            "error" => {
                if completed && let Some(message) = text("message") {
                    events.push(log(LogStream::Stderr, message));
                }
            }
            other => skip_unknown("codex-json item", other),
        }
        events
    }

    /// True the first time an item (by id) is seen; an item without an id always counts once
    /// per event.
    fn first_report(&mut self, item: &Value) -> bool {
        let Some(id) = str_field(Some(item), "id") else {
            return true;
        };
        let id = bounded(id, ACTION_BYTES_MAX);
        if self.reported.contains(&id) {
            return false;
        }
        if self.reported.len() >= ITEMS_TRACKED_MAX {
            self.reported.remove(0);
        }
        self.reported.push(id);
        true
    }

    fn failure(&mut self, subtype: &str, message: &str) -> Vec<AgentEvent> {
        let mut summary = self.summary(false, subtype, &Value::Null);
        summary.text = bounded(message.trim(), LOG_LINE_BYTES_MAX);
        vec![
            log(LogStream::Stderr, message),
            AgentEvent::Summary(summary),
        ]
    }

    fn summary(&self, success: bool, subtype: &str, value: &Value) -> AgentSummary {
        let usage = value.get("usage");
        let tokens = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
        AgentSummary {
            success,
            subtype: subtype.to_string(),
            num_turns: (self.turns > 0).then_some(self.turns),
            total_cost_usd: None,
            input_tokens: tokens("input_tokens"),
            output_tokens: tokens("output_tokens"),
            text: self.last_message.clone(),
        }
    }
}

/// `value.key` as a string.
fn str_field<'a>(value: Option<&'a Value>, key: &str) -> Option<&'a str> {
    value.and_then(|v| v.get(key)).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_process::structured::TOOL_RESULT_LINES_MAX;
    use crate::messages::ExecutionStage;

    /// A transcript shaped like `codex exec --json` prints.
    const TRANSCRIPT: &str = r#"{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Looking at the greeting**"}}
{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"I'll fix the greeting in src/lib.rs."}}
{"type":"item.started","item":{"id":"item_2","type":"command_execution","command":"bash -lc 'cat src/lib.rs'","aggregated_output":"","exit_code":null,"status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_2","type":"command_execution","command":"bash -lc 'cat src/lib.rs'","aggregated_output":"pub fn hello() {}\n","exit_code":0,"status":"completed"}}
{"type":"item.started","item":{"id":"item_3","type":"todo_list","items":[{"text":"Rename","completed":true},{"text":"Test","completed":false}]}}
{"type":"item.completed","item":{"id":"item_4","type":"file_change","changes":[{"path":"/work/ws/src/lib.rs","kind":"update"},{"path":"/work/ws/src/new.rs","kind":"add"}],"status":"completed"}}
{"type":"item.started","item":{"id":"item_5","type":"command_execution","command":"bash -lc 'cargo test --quiet'","aggregated_output":"","exit_code":null,"status":"in_progress"}}
{"type":"item.updated","item":{"id":"item_5","type":"command_execution","command":"bash -lc 'cargo test --quiet'","aggregated_output":"running","exit_code":null,"status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_5","type":"command_execution","command":"bash -lc 'cargo test --quiet'","aggregated_output":"test result: FAILED. 0 passed; 1 failed\n","exit_code":101,"status":"failed"}}
{"type":"item.completed","item":{"id":"item_6","type":"agent_message","text":"Renamed hello to hi; tests run."}}
{"type":"some.future.event","x":1}
not json at all
{"type":"turn.completed","usage":{"input_tokens":1200,"cached_input_tokens":1000,"output_tokens":340}}
"#;

    fn run(transcript: &str) -> Vec<AgentEvent> {
        let mut parser = CodexJsonParser::new(Some(Path::new("/work/ws")));
        transcript
            .lines()
            .flat_map(|line| parser.parse_line(line))
            .collect()
    }

    use crate::agent_process::structured::test_events::{line, progress};

    #[test]
    fn a_transcript_becomes_logs_progress_and_a_summary() {
        use ExecutionStage::{Coding, Testing};
        let events = run(TRANSCRIPT);
        let both = ["src/lib.rs", "src/new.rs"];
        let expected = vec![
            progress(Coding, 10, "Starting", &[]),
            line(LogStream::Agent, "I'll fix the greeting in src/lib.rs."),
            progress(Coding, 13, "Running bash -lc 'cat src/lib.rs'", &[]),
            line(LogStream::Stdout, "pub fn hello() {}"),
            progress(Coding, 13, "Plan: 1/2 done", &[]),
            progress(Coding, 16, "Editing src/lib.rs", &["src/lib.rs"]),
            progress(Coding, 16, "Editing src/new.rs", &both),
            progress(Testing, 19, "Running bash -lc 'cargo test --quiet'", &both),
            line(LogStream::Stderr, "test result: FAILED. 0 passed; 1 failed"),
            line(LogStream::Agent, "Renamed hello to hi; tests run."),
            line(LogStream::Stdout, "not json at all"),
            AgentEvent::Summary(AgentSummary {
                success: true,
                subtype: "success".into(),
                num_turns: Some(1),
                total_cost_usd: None,
                input_tokens: Some(1200),
                output_tokens: Some(340),
                text: "Renamed hello to hi; tests run.".into(),
            }),
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn failures_and_odd_shapes_never_fail() {
        let events = run(concat!(
            "{\"type\":\"item.completed\"}\n",
            "{\"type\":\"item.completed\",\"item\":7}\n",
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"file_change\",\"changes\":\"x\"}}\n",
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"command_execution\",\"id\":\"c\"}}\n",
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"brand_new\"}}\n",
            "[1]\n",
            "{\"type\":\"error\",\"message\":\"stream disconnected\"}\n",
            "{\"type\":\"turn.failed\",\"error\":{\"message\":\"quota exceeded\"}}\n",
        ));
        assert_eq!(
            events[0],
            progress(ExecutionStage::Coding, 16, "Running a command", &[])
        );
        assert_eq!(events[1], line(LogStream::Stdout, "[1]"));
        assert_eq!(events[2], line(LogStream::Stderr, "stream disconnected"));
        let AgentEvent::Summary(summary) = &events[5] else {
            panic!("{events:?}")
        };
        assert!(!summary.success);
        assert_eq!(summary.subtype, "turn_failed");
        assert_eq!(summary.text, "quota exceeded");
        assert_eq!(events.len(), 6);
    }

    #[test]
    fn strings_are_bounded() {
        let huge = "é".repeat(10_000);
        let output: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let mut parser = CodexJsonParser::new(None);
        let mut events = Vec::new();
        for value in [
            serde_json::json!({"type":"item.completed","item":{"id":"a","type":"agent_message","text": huge}}),
            serde_json::json!({"type":"item.completed","item":{"id":"b","type":"command_execution","command": huge,"aggregated_output": output,"exit_code":0}}),
            serde_json::json!({"type":"item.completed","item":{"id": huge,"type":"file_change","changes":[{"path": huge}]}}),
            serde_json::json!({"type":"error","message": huge}),
        ] {
            events.extend(parser.parse_line(&value.to_string()));
        }
        let stdout = crate::agent_process::structured::assert_bounded(&events);
        assert_eq!(stdout, TOOL_RESULT_LINES_MAX + 1);
        for i in 0..ITEMS_TRACKED_MAX + 10 {
            let value = serde_json::json!({"type":"item.started","item":{"id": i.to_string(),"type":"web_search","query":"q"}});
            parser.parse_line(&value.to_string());
        }
        assert!(parser.reported.len() <= ITEMS_TRACKED_MAX);
    }
}
