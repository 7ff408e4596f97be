//! Reading a node's server-sent events (`apn task submit` follows a task this way): a
//! line-by-line parser that turns `data:` lines into events, skips comments and fields it
//! does not use, and refuses an event larger than [`EVENT_BYTES_MAX`], plus the events the
//! CLI reads from a task's execution stream. Unknown event types are kept as
//! [`StreamEvent::Other`], never an error, so a newer node's stream still reads.

use serde::Deserialize;

/// Largest event (the sum of its `data:` lines) the parser accepts, in bytes.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// One event's data passed [`EVENT_BYTES_MAX`].
    #[error("an event of the stream passed {max} bytes")]
    EventTooLarge {
        /// The limit.
        max: usize,
    },
}

/// Collects `data:` lines into events; feed it the stream's lines without their newline.
#[derive(Debug, Default)]
pub struct SseParser {
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Takes one line; returns an event's data when the line ends one (a blank line).
    pub fn push_line(&mut self, line: &str) -> Result<Option<String>, SseError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if !self.has_data {
                return Ok(None);
            }
            self.has_data = false;
            return Ok(Some(std::mem::take(&mut self.data)));
        }
        if line.starts_with(':') {
            return Ok(None); // a comment, e.g. a keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field != "data" {
            return Ok(None); // `event`, `id`, `retry`: the node does not use them
        }
        if self.data.len() + value.len() + 1 > EVENT_BYTES_MAX {
            self.data.clear();
            self.has_data = false;
            return Err(SseError::EventTooLarge {
                max: EVENT_BYTES_MAX,
            });
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
        Ok(None)
    }
}

/// One event of a task's execution stream, as the CLI reads it (fields it does not show
/// are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A run began on `executor` (`local` for this node).
    Started {
        /// Who runs it.
        executor: String,
    },
    /// The run's stage, completion and current action.
    Progress {
        /// The stage's wire name.
        stage: String,
        /// Completion estimate, 0..=100.
        percent: u8,
        /// What the agent is doing now.
        action: String,
    },
    /// One log line of the run.
    Log {
        /// The line and its stream.
        line: StreamLogLine,
    },
    /// The task ended.
    Finished {
        /// True when it completed with a result.
        succeeded: bool,
        /// The summary, or the reason it failed.
        detail: String,
    },
    /// An event type this client does not know.
    #[serde(other)]
    Other,
}

/// A log line inside [`StreamEvent::Log`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StreamLogLine {
    /// `stdout`, `stderr` or `apn`.
    pub stream: String,
    /// The text.
    pub line: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<Result<Option<String>, SseError>> {
        let mut parser = SseParser::default();
        text.split('\n').map(|l| parser.push_line(l)).collect()
    }

    #[test]
    fn data_lines_make_an_event_at_the_blank_line_and_comments_are_skipped() {
        let out: Vec<String> =
            events(": keep-alive\n\ndata: {\"a\":1}\r\n\ndata: one\ndata:two\nid: 7\n\n")
                .into_iter()
                .filter_map(|r| r.unwrap())
                .collect();
        assert_eq!(out, vec!["{\"a\":1}".to_string(), "one\ntwo".to_string()]);
    }

    #[test]
    fn an_event_past_the_limit_is_an_error_and_the_parser_goes_on() {
        let mut parser = SseParser::default();
        let big = format!("data: {}", "x".repeat(EVENT_BYTES_MAX));
        assert_eq!(
            parser.push_line(&big),
            Err(SseError::EventTooLarge {
                max: EVENT_BYTES_MAX
            })
        );
        assert_eq!(parser.push_line(""), Ok(None));
        assert_eq!(parser.push_line("data: ok"), Ok(None));
        assert_eq!(parser.push_line(""), Ok(Some("ok".into())));
    }

    #[test]
    fn stream_events_decode_and_unknown_types_are_other() {
        let progress: StreamEvent = serde_json::from_str(
            r#"{"type":"progress","task_id":"x","stage":"coding","percent":40,"action":"Editing a.rs","files_modified":["a.rs"]}"#,
        )
        .unwrap();
        assert_eq!(
            progress,
            StreamEvent::Progress {
                stage: "coding".into(),
                percent: 40,
                action: "Editing a.rs".into()
            }
        );
        let other: StreamEvent = serde_json::from_str(r#"{"type":"new_kind","x":1}"#).unwrap();
        assert_eq!(other, StreamEvent::Other);
    }
}
