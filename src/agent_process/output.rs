//! Reading an agent's output: pipes read as they become ready, bytes split into lines of at
//! most [`LINE_BYTES_MAX`] bytes, and the `APN_PROGRESS` lines recognised.

use tokio::io::AsyncReadExt;

use super::{LINE_BYTES_MAX, LogStream};
use crate::messages::ExecutionStage;

/// The line prefix that reports progress.
const PROGRESS_PREFIX: &str = "APN_PROGRESS";

/// `APN_PROGRESS <stage> <percent> <action…>` with stage `setup|coding|testing|done` and
/// percent `0..=100`; a percent above 100 makes the line not a progress line (a buggy
/// reporter is ignored, not clamped into a false "done"). The action may be empty.
pub fn parse_progress_line(line: &str) -> Option<(ExecutionStage, u8, String)> {
    let rest = line.trim().strip_prefix(PROGRESS_PREFIX)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let mut parts = rest.trim_start().splitn(3, char::is_whitespace);
    let stage = match parts.next()? {
        "setup" => ExecutionStage::Setup,
        "coding" => ExecutionStage::Coding,
        "testing" => ExecutionStage::Testing,
        "done" => ExecutionStage::Done,
        _ => return None,
    };
    let percent: u8 = parts.next()?.parse().ok().filter(|p| *p <= 100)?;
    let action = parts.next().unwrap_or("").trim().to_string();
    Some((stage, percent, action))
}

/// Splits a byte stream into lines of at most [`LINE_BYTES_MAX`] bytes (or another limit).
pub(super) struct LineSplitter {
    stream: LogStream,
    buffer: Vec<u8>,
    /// Inside a line that was already cut: drop until its newline.
    skipping: bool,
    line_bytes_max: usize,
}

impl LineSplitter {
    pub(super) fn new(stream: LogStream) -> Self {
        Self::with_limit(stream, LINE_BYTES_MAX)
    }

    /// Lines of at most `line_bytes_max` bytes (at least 1).
    pub(super) fn with_limit(stream: LogStream, line_bytes_max: usize) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            skipping: false,
            line_bytes_max: line_bytes_max.max(1),
        }
    }

    fn line(&self) -> (LogStream, String) {
        let bytes = self.buffer.strip_suffix(b"\r").unwrap_or(&self.buffer);
        (self.stream, String::from_utf8_lossy(bytes).into_owned())
    }

    pub(super) fn push(&mut self, bytes: &[u8], lines: &mut Vec<(LogStream, String)>) {
        for &byte in bytes {
            if byte == b'\n' {
                if !self.skipping {
                    lines.push(self.line());
                }
                self.buffer.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.buffer.push(byte);
                if self.buffer.len() >= self.line_bytes_max {
                    lines.push(self.line());
                    self.buffer.clear();
                    self.skipping = true;
                }
            }
        }
    }

    /// The stream ended: a last line without a newline still counts.
    pub(super) fn finish(&mut self, lines: &mut Vec<(LogStream, String)>) {
        if !self.buffer.is_empty() && !self.skipping {
            lines.push(self.line());
        }
        self.buffer.clear();
    }

    /// The cap was reached: a partial line is dropped.
    pub(super) fn discard(&mut self) {
        self.buffer.clear();
    }
}

/// Read into `buffer` from `pipe`, or never finish when the pipe is closed.
pub(super) async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    match pipe.as_mut() {
        Some(pipe) => pipe.read(buffer).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            parse_progress_line("APN_PROGRESS coding 40 editing files"),
            Some((ExecutionStage::Coding, 40, "editing files".into()))
        );
        assert_eq!(
            parse_progress_line("  APN_PROGRESS done 100"),
            Some((ExecutionStage::Done, 100, String::new()))
        );
        assert_eq!(
            parse_progress_line("APN_PROGRESS setup 0 cloning  the repo "),
            Some((ExecutionStage::Setup, 0, "cloning  the repo".into()))
        );
        assert_eq!(
            parse_progress_line("APN_PROGRESS\ttesting 7 cargo test"),
            Some((ExecutionStage::Testing, 7, "cargo test".into()))
        );
        for not_progress in [
            "APN_PROGRESS coding 140 x",
            "APN_PROGRESS coding -1 x",
            "APN_PROGRESS coding forty x",
            "APN_PROGRESS flying 40 x",
            "APN_PROGRESS coding",
            "APN_PROGRESSIVE coding 40 x",
            "progress coding 40",
            "",
        ] {
            assert_eq!(parse_progress_line(not_progress), None, "{not_progress}");
        }
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_dropped() {
        let mut splitter = LineSplitter::new(LogStream::Stdout);
        let mut lines = Vec::new();
        splitter.push(&vec![b'x'; LINE_BYTES_MAX * 3], &mut lines);
        splitter.push(b"\nnext\r\nlast", &mut lines);
        splitter.finish(&mut lines);
        let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(texts.len(), 3);
        assert_eq!(texts[0].len(), LINE_BYTES_MAX);
        assert_eq!(texts[1..], ["next", "last"]);
    }
}
