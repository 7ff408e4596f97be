//! What the structured-output parsers share: the bounds, the progress a run accumulates
//! (stage, percent estimate, files edited, paths relative to the workspace), the actions
//! (`Editing <path>`, `Running <command>`, test commands → stage `testing`), tool output as
//! bounded log lines, and [`StructuredParser`], which picks the parser for a profile's
//! `output`.
//!
//! The parsers themselves are in `stream_json` (Claude Code and Amp), `codex_json` (`codex
//! exec --json`) and `gemini_json` (`gemini --output-format stream-json`).

use std::path::{Path, PathBuf};

use super::codex_json::CodexJsonParser;
use super::gemini_json::GeminiJsonParser;
use super::stream_json::StreamJsonParser;
use serde_json::Value;

use super::{AgentEvent, AgentOutputFormat, LogStream};
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
pub(super) const PATH_BYTES_MAX: usize = 1024;
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

/// The parser for a profile's structured `output` (none for `text`).
#[derive(Debug, Clone)]
pub enum StructuredParser {
    /// Claude Code's (and Amp's) stream-json.
    StreamJson(StreamJsonParser),
    /// `codex exec --json`.
    CodexJson(CodexJsonParser),
    /// `gemini --output-format stream-json`.
    GeminiJson(GeminiJsonParser),
}

impl StructuredParser {
    /// The parser for `output`, paths made relative to `workspace`; `None` for plain text.
    pub fn for_output(output: AgentOutputFormat, workspace: Option<&Path>) -> Option<Self> {
        match output {
            AgentOutputFormat::Text => None,
            AgentOutputFormat::StreamJson => Some(StructuredParser::StreamJson(
                StreamJsonParser::new(workspace),
            )),
            AgentOutputFormat::CodexJson => {
                Some(StructuredParser::CodexJson(CodexJsonParser::new(workspace)))
            }
            AgentOutputFormat::GeminiJson => Some(StructuredParser::GeminiJson(
                GeminiJsonParser::new(workspace),
            )),
        }
    }

    /// The events one stdout line makes.
    pub fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        match self {
            StructuredParser::StreamJson(parser) => parser.parse_line(line),
            StructuredParser::CodexJson(parser) => parser.parse_line(line),
            StructuredParser::GeminiJson(parser) => parser.parse_line(line),
        }
    }

    /// Files edited so far (relative to the workspace when under it), in first-edit order.
    pub fn files_modified(&self) -> &[String] {
        match self {
            StructuredParser::StreamJson(parser) => parser.files_modified(),
            StructuredParser::CodexJson(parser) => parser.files_modified(),
            StructuredParser::GeminiJson(parser) => parser.files_modified(),
        }
    }
}

/// What progress reports accumulate over a run: the stage, the files edited, the percent.
#[derive(Debug, Clone)]
pub(super) struct Tracker {
    /// The run's working directory: absolute paths under it are reported relative to it.
    workspace: Option<PathBuf>,
    stage: ExecutionStage,
    percent: u8,
    files_modified: Vec<String>,
}

impl Tracker {
    pub(super) fn new(workspace: Option<&Path>) -> Self {
        Tracker {
            workspace: workspace.map(Path::to_path_buf),
            stage: ExecutionStage::Coding,
            percent: PERCENT_START,
            files_modified: Vec::new(),
        }
    }

    pub(super) fn files_modified(&self) -> &[String] {
        &self.files_modified
    }

    /// A progress event with the current stage, percent and files, and this action.
    pub(super) fn progress(&self, action: &str) -> AgentEvent {
        AgentEvent::Progress {
            stage: self.stage,
            percent: self.percent,
            action: bounded(action, ACTION_BYTES_MAX),
            files_modified: self.files_modified.clone(),
        }
    }

    /// One more tool use: the percent estimate grows (up to [`PERCENT_MAX`]).
    pub(super) fn step(&mut self) {
        self.percent = self
            .percent
            .saturating_add(PERCENT_PER_TOOL)
            .min(PERCENT_MAX);
    }

    /// `path` was edited: stage `coding`, the path noted; the action `Editing <path>`.
    pub(super) fn edit(&mut self, path: &str) -> String {
        self.stage = ExecutionStage::Coding;
        let path = self.relative(path);
        if self.files_modified.len() < FILES_TRACKED_MAX
            && !self.files_modified.iter().any(|known| known == &path)
        {
            self.files_modified.push(path.clone());
        }
        format!("Editing {path}")
    }

    /// `command` is run: stage `testing` for a test command, else `coding`; the action
    /// `Running <command>`.
    pub(super) fn command(&mut self, command: &str) -> String {
        self.stage = if is_test_command(command) {
            ExecutionStage::Testing
        } else {
            ExecutionStage::Coding
        };
        format!("Running {}", shorten_command(command))
    }

    /// The action `Reading <path>`.
    pub(super) fn reading(&self, path: &str) -> String {
        format!("Reading {}", self.relative(path))
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
}

/// A log line, bounded.
/// What one stdout line of a structured output format is.
pub(super) enum Line {
    /// Nothing on it.
    Blank,
    /// Not a JSON object: shown as a plain stdout line.
    Plain,
    /// An event object.
    Event(Value),
}

/// Read one stdout line of a structured output format.
pub(super) fn classify(line: &str) -> Line {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Line::Blank;
    }
    match serde_json::from_str(trimmed) {
        Ok(value @ Value::Object(_)) => Line::Event(value),
        _ => Line::Plain,
    }
}

/// Expected events, for the parsers' tests.
#[cfg(test)]
pub(super) mod test_events {
    use crate::agent_process::{AgentEvent, LogStream};
    use crate::messages::ExecutionStage;

    /// A progress event.
    pub(crate) fn progress(
        stage: ExecutionStage,
        percent: u8,
        action: &str,
        files: &[&str],
    ) -> AgentEvent {
        AgentEvent::Progress {
            stage,
            percent,
            action: action.into(),
            files_modified: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// A log line.
    pub(crate) fn line(stream: LogStream, line: &str) -> AgentEvent {
        AgentEvent::Log {
            stream,
            line: line.into(),
        }
    }
}

/// Every event within its bound; returns how many stdout log lines there are (tests).
#[cfg(test)]
pub(super) fn assert_bounded(events: &[AgentEvent]) -> usize {
    let mut stdout = 0;
    for event in events {
        match event {
            AgentEvent::Log { line, stream } => {
                assert!(line.len() <= LOG_LINE_BYTES_MAX);
                if *stream == LogStream::Stdout {
                    stdout += 1;
                }
            }
            AgentEvent::Progress { action, .. } => assert!(action.len() <= ACTION_BYTES_MAX),
            AgentEvent::Summary(summary) => assert!(summary.text.len() <= LOG_LINE_BYTES_MAX),
            _ => {}
        }
    }
    stdout
}

pub(super) fn log(stream: LogStream, line: &str) -> AgentEvent {
    AgentEvent::Log {
        stream,
        line: bounded(line, LOG_LINE_BYTES_MAX),
    }
}

/// A tool's output as at most [`TOOL_RESULT_LINES_MAX`] non-blank lines (the rest counted in
/// one note line), the whole bounded to [`LOG_LINE_BYTES_MAX`] bytes first.
pub(super) fn output_lines(stream: LogStream, text: &str, events: &mut Vec<AgentEvent>) {
    let text = bounded(text, LOG_LINE_BYTES_MAX);
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

/// An event of a type the parser does not know: logged at debug, skipped.
pub(super) fn skip_unknown(format: &str, kind: &str) {
    tracing::debug!(
        format,
        kind = %bounded(kind, ACTION_BYTES_MAX),
        "agent output event of an unknown type skipped"
    );
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

/// `text` with `more` appended, the whole kept within `max` bytes.
pub(super) fn append_bounded(text: &mut String, more: &str, max: usize) {
    if text.len() >= max {
        return;
    }
    text.push_str(more);
    if text.len() > max {
        *text = bounded(text, max);
    }
}

/// The command's first line, whitespace collapsed, short enough for an action.
pub(super) fn shorten_command(command: &str) -> String {
    let mut lines = command.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("");
    let mut short = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if lines.next().is_some() {
        short.push_str(" …");
    }
    bounded(&short, ACTION_BYTES_MAX - "Running ".len())
}

/// True when `command` runs tests: one of [`TEST_COMMANDS`] at the start of the command or
/// after a separator (`&&`, `;`, `|`, a space, `(`, a quote as in Codex's
/// `bash -lc 'cargo test'`).
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
                .is_none_or(|c| matches!(c, ' ' | ';' | '&' | '|' | '(' | '/' | '\'' | '"'));
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
            "bash -lc 'cargo test --quiet'",
            "sh -c \"pytest\"",
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

    #[test]
    fn appending_stays_bounded() {
        let mut text = String::new();
        for _ in 0..100 {
            append_bounded(&mut text, "éééé", 50);
        }
        assert!(text.len() <= 50);
        assert!(text.ends_with('…'));
    }
}
