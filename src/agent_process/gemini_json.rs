//! Gemini CLI's `--output-format stream-json` output, turned into [`AgentEvent`]s.
//!
//! `gemini -p <prompt> --output-format stream-json` prints one JSON object a line:
//!
//! - `{"type":"init","session_id":…,"model":…}` → progress `Starting (<model>)`.
//! - `{"type":"message","role":"assistant","content":…,"delta":true?}` → a
//!   [`LogStream::Agent`] line; `delta` chunks are joined (bounded) and logged as one line
//!   when the next event that is not a chunk (or the result) arrives. User messages are
//!   skipped.
//! - `{"type":"tool_use","tool_name":…,"tool_id":…,"parameters":{…}}`: `write_file`,
//!   `replace`, `edit` with `parameters.file_path` → `Editing <path>`, the path counted in
//!   `files_modified`; `run_shell_command` with `parameters.command` → `Running <command>`,
//!   stage `testing` for a test command; `read_file` → `Reading <path>`; others →
//!   `Using <tool>`.
//! - `{"type":"tool_result","tool_id":…,"status":"success"|"error","output":…}` → the
//!   output as [`LogStream::Stdout`] lines ([`LogStream::Stderr`] for an error), bounded.
//! - `{"type":"error","severity":…,"message":…}` → a [`LogStream::Stderr`] line.
//! - `{"type":"result","status":…,"stats":{"total_tokens","input_tokens","output_tokens",
//!   "duration_ms","tool_calls"}}` → the [`AgentSummary`] (its text is the last assistant
//!   message).
//!
//! Unknown types are skipped (logged at debug); a line that is not a JSON object is kept as
//! a plain stdout line: nothing here fails a run. Everything is bounded as in
//! [`super::stream_json`].

use std::path::Path;

use serde_json::Value;

use super::structured::{
    ACTION_BYTES_MAX, LOG_LINE_BYTES_MAX, Line, Tracker, append_bounded, bounded, classify, log,
    output_lines, skip_unknown,
};
use super::{AgentEvent, AgentSummary, LogStream};

/// Reads `gemini --output-format stream-json` lines one at a time, keeping what progress
/// accumulates.
#[derive(Debug, Clone)]
pub struct GeminiJsonParser {
    tracker: Tracker,
    /// Assistant `delta` chunks not logged yet.
    pending: String,
    /// The last assistant message, the summary's text.
    last_message: String,
}

impl GeminiJsonParser {
    /// A parser for one run; `workspace` makes the edited paths relative to it.
    pub fn new(workspace: Option<&Path>) -> Self {
        GeminiJsonParser {
            tracker: Tracker::new(workspace),
            pending: String::new(),
            last_message: String::new(),
        }
    }

    /// Files edited so far (relative to the workspace when under it), in first-edit order.
    pub fn files_modified(&self) -> &[String] {
        self.tracker.files_modified()
    }

    /// The events one stdout line makes (none for a blank line or an unknown event type).
    pub fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        let value = match classify(line) {
            Line::Blank => return events,
            Line::Plain => {
                self.flush(&mut events);
                events.push(log(LogStream::Stdout, line));
                return events;
            }
            Line::Event(value) => value,
        };
        let field = |key: &str| value.get(key).and_then(Value::as_str);
        let kind = field("type").unwrap_or("");
        let is_delta = value.get("delta").and_then(Value::as_bool) == Some(true);
        if !(kind == "message" && is_delta) {
            self.flush(&mut events);
        }
        match kind {
            "init" => {
                let action = match field("model") {
                    Some(model) => format!("Starting ({model})"),
                    None => "Starting".to_string(),
                };
                events.push(self.tracker.progress(&action));
            }
            "message" => {
                if field("role") == Some("assistant") {
                    let content = message_text(value.get("content"));
                    if is_delta {
                        append_bounded(&mut self.pending, &content, LOG_LINE_BYTES_MAX);
                    } else {
                        self.pending = bounded(&content, LOG_LINE_BYTES_MAX);
                        self.flush(&mut events);
                    }
                }
            }
            "tool_use" => {
                self.tracker.step();
                let action = self.tool_use(&value);
                events.push(self.tracker.progress(&action));
            }
            "tool_result" => {
                let stream = if field("status") == Some("error") {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                };
                let text = match value.get("output") {
                    Some(Value::String(output)) => output.clone(),
                    _ => value
                        .get("error")
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                };
                output_lines(stream, &text, &mut events);
            }
            "error" => {
                let message = field("message").unwrap_or("error");
                let line = match field("severity") {
                    Some(severity) => format!("{severity}: {message}"),
                    None => message.to_string(),
                };
                events.push(log(LogStream::Stderr, &line));
            }
            "result" => events.push(AgentEvent::Summary(self.summary(&value))),
            other => skip_unknown("gemini-json", other),
        }
        events
    }

    /// Log the assistant text gathered so far as one line.
    fn flush(&mut self, events: &mut Vec<AgentEvent>) {
        let text = std::mem::take(&mut self.pending);
        let text = text.trim();
        if !text.is_empty() {
            events.push(log(LogStream::Agent, text));
            self.last_message = text.to_string();
        }
    }

    /// The action a tool use stands for; updates the stage and the files edited.
    fn tool_use(&mut self, value: &Value) -> String {
        let name = value
            .get("tool_name")
            .and_then(Value::as_str)
            .unwrap_or("tool");
        let parameters = value.get("parameters");
        let field = |key: &str| parameters.and_then(|p| p.get(key)).and_then(Value::as_str);
        match name {
            "write_file" | "replace" | "edit" => match field("file_path") {
                Some(path) => self.tracker.edit(path),
                None => format!("Using {}", bounded(name, ACTION_BYTES_MAX)),
            },
            "run_shell_command" => match field("command") {
                Some(command) => self.tracker.command(command),
                None => "Running a command".to_string(),
            },
            "read_file" => match field("file_path").or_else(|| field("absolute_path")) {
                Some(path) => self.tracker.reading(path),
                None => "Reading".to_string(),
            },
            other => format!("Using {}", bounded(other, ACTION_BYTES_MAX)),
        }
    }

    fn summary(&self, value: &Value) -> AgentSummary {
        let status = value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let stats = value.get("stats");
        let stat = |key: &str| stats.and_then(|s| s.get(key)).and_then(Value::as_u64);
        let error = value
            .get("error")
            .and_then(|e| e.get("message").or(Some(e)))
            .and_then(Value::as_str);
        let text = match error {
            Some(error) if status != "success" => error,
            _ => &self.last_message,
        };
        AgentSummary {
            success: status == "success",
            subtype: bounded(status, ACTION_BYTES_MAX),
            num_turns: None,
            total_cost_usd: None,
            input_tokens: stat("input_tokens"),
            output_tokens: stat("output_tokens"),
            text: bounded(text.trim(), LOG_LINE_BYTES_MAX),
        }
    }
}

/// A message's content: a string, or a list of `{"text":…}` parts.
fn message_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => bounded(text, LOG_LINE_BYTES_MAX),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                if let Some(piece) = part.get("text").and_then(Value::as_str) {
                    append_bounded(&mut text, piece, LOG_LINE_BYTES_MAX);
                }
            }
            text
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_process::structured::TOOL_RESULT_LINES_MAX;
    use crate::messages::ExecutionStage;

    /// A transcript shaped like `gemini -p … --output-format stream-json` prints.
    const TRANSCRIPT: &str = r#"{"type":"init","timestamp":"2025-10-10T12:00:00.000Z","session_id":"s1","model":"gemini-2.5-pro"}
{"type":"message","timestamp":"2025-10-10T12:00:00.100Z","role":"user","content":"Fix the greeting"}
{"type":"message","timestamp":"2025-10-10T12:00:01.000Z","role":"assistant","content":"I'll fix ","delta":true}
{"type":"message","timestamp":"2025-10-10T12:00:01.100Z","role":"assistant","content":"the greeting.","delta":true}
{"type":"tool_use","timestamp":"2025-10-10T12:00:02.000Z","tool_name":"read_file","tool_id":"r1","parameters":{"absolute_path":"/work/ws/src/lib.rs"}}
{"type":"tool_result","timestamp":"2025-10-10T12:00:02.100Z","tool_id":"r1","status":"success","output":"pub fn hello() {}\n"}
{"type":"tool_use","timestamp":"2025-10-10T12:00:03.000Z","tool_name":"replace","tool_id":"e1","parameters":{"file_path":"/work/ws/src/lib.rs","old_string":"hello","new_string":"hi"}}
{"type":"tool_result","timestamp":"2025-10-10T12:00:03.100Z","tool_id":"e1","status":"success","output":"Successfully modified file: /work/ws/src/lib.rs (1 replacements)."}
{"type":"tool_use","timestamp":"2025-10-10T12:00:04.000Z","tool_name":"run_shell_command","tool_id":"b1","parameters":{"command":"cargo test --quiet","description":"Run tests"}}
{"type":"tool_result","timestamp":"2025-10-10T12:00:04.100Z","tool_id":"b1","status":"error","output":"test result: FAILED. 0 passed; 1 failed"}
{"type":"error","timestamp":"2025-10-10T12:00:04.200Z","severity":"warning","message":"Loop detected, stopping"}
{"type":"brand_new","x":1}
not json at all
{"type":"message","timestamp":"2025-10-10T12:00:05.000Z","role":"assistant","content":"Renamed hello to hi; tests run."}
{"type":"result","timestamp":"2025-10-10T12:00:06.000Z","status":"success","stats":{"total_tokens":1540,"input_tokens":1200,"output_tokens":340,"duration_ms":6000,"tool_calls":3}}
"#;

    use crate::agent_process::structured::test_events::{line, progress};

    fn run(transcript: &str) -> Vec<AgentEvent> {
        let mut parser = GeminiJsonParser::new(Some(Path::new("/work/ws")));
        transcript
            .lines()
            .flat_map(|line| parser.parse_line(line))
            .collect()
    }

    #[test]
    fn a_transcript_becomes_logs_progress_and_a_summary() {
        use ExecutionStage::{Coding, Testing};
        let lib = ["src/lib.rs"];
        let expected = vec![
            progress(Coding, 10, "Starting (gemini-2.5-pro)", &[]),
            line(LogStream::Agent, "I'll fix the greeting."),
            progress(Coding, 13, "Reading src/lib.rs", &[]),
            line(LogStream::Stdout, "pub fn hello() {}"),
            progress(Coding, 16, "Editing src/lib.rs", &lib),
            line(
                LogStream::Stdout,
                "Successfully modified file: /work/ws/src/lib.rs (1 replacements).",
            ),
            progress(Testing, 19, "Running cargo test --quiet", &lib),
            line(LogStream::Stderr, "test result: FAILED. 0 passed; 1 failed"),
            line(LogStream::Stderr, "warning: Loop detected, stopping"),
            line(LogStream::Stdout, "not json at all"),
            line(LogStream::Agent, "Renamed hello to hi; tests run."),
            AgentEvent::Summary(AgentSummary {
                success: true,
                subtype: "success".into(),
                num_turns: None,
                total_cost_usd: None,
                input_tokens: Some(1200),
                output_tokens: Some(340),
                text: "Renamed hello to hi; tests run.".into(),
            }),
        ];
        assert_eq!(run(TRANSCRIPT), expected);
    }

    #[test]
    fn an_error_result_and_odd_shapes_never_fail() {
        let events = run(concat!(
            "{\"type\":\"message\",\"role\":\"assistant\",\"content\":\"partial\",\"delta\":true}\n",
            "{\"type\":\"tool_use\"}\n",
            "{\"type\":\"tool_result\",\"status\":\"error\",\"error\":{\"message\":\"denied\"}}\n",
            "{\"type\":\"message\",\"role\":\"assistant\",\"content\":7}\n",
            "[1]\n",
            "{\"type\":\"result\",\"status\":\"error\",\"error\":{\"type\":\"FatalError\",\"message\":\"quota\"},\"stats\":\"x\"}\n",
        ));
        assert_eq!(
            events,
            vec![
                line(LogStream::Agent, "partial"),
                progress(ExecutionStage::Coding, 13, "Using tool", &[]),
                line(LogStream::Stderr, "denied"),
                line(LogStream::Stdout, "[1]"),
                AgentEvent::Summary(AgentSummary {
                    success: false,
                    subtype: "error".into(),
                    text: "quota".into(),
                    ..AgentSummary::default()
                }),
            ]
        );
    }

    #[test]
    fn strings_are_bounded() {
        let huge = "é".repeat(10_000);
        let output: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let mut parser = GeminiJsonParser::new(None);
        let mut events = Vec::new();
        for _ in 0..10 {
            let chunk = serde_json::json!({"type":"message","role":"assistant","content": huge,"delta":true});
            events.extend(parser.parse_line(&chunk.to_string()));
        }
        assert!(parser.pending.len() <= LOG_LINE_BYTES_MAX);
        for value in [
            serde_json::json!({"type":"tool_use","tool_name":"write_file","parameters":{"file_path": huge}}),
            serde_json::json!({"type":"tool_use","tool_name":"run_shell_command","parameters":{"command": huge}}),
            serde_json::json!({"type":"tool_result","status":"success","output": output}),
            serde_json::json!({"type":"error","message": huge}),
        ] {
            events.extend(parser.parse_line(&value.to_string()));
        }
        let stdout = crate::agent_process::structured::assert_bounded(&events);
        assert_eq!(stdout, TOOL_RESULT_LINES_MAX + 1);
    }
}
