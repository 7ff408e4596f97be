//! The pure checker of a diff received from the network: every path in its headers is
//! decoded (C-quoted names included) and refused if it could reach outside the repository
//! or into a `.git` directory, and so is any symbolic link or submodule it creates or
//! changes. Hunk bodies are skipped by their line counts, as `git apply` reads them. No I/O.

use super::{WorkspaceError, truncate_text};

/// Lines still expected in the current hunk, counted as `git apply` counts them.
#[derive(Default)]
struct HunkLines {
    old: u64,
    new: u64,
}

/// `@@ -12,3 +12,4 @@` → the line counts (a missing count is 1).
fn parse_hunk_header(line: &str) -> Option<HunkLines> {
    let rest = line.strip_prefix("@@ -")?;
    let (old_range, rest) = rest.split_once(" +")?;
    let (new_range, _) = rest.split_once(" @@")?;
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((start, count)) => {
                start.parse::<u64>().ok()?;
                count.parse().ok()
            }
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    Some(HunkLines {
        old: count(old_range)?,
        new: count(new_range)?,
    })
}

/// Decode a C-quoted git path (`"a/b\303\251"`, escapes `\a \b \t \n \v \f \r \" \\` and
/// octal `\ooo`), starting at the opening quote. Returns the bytes and the text after the
/// closing quote, or `None` if it is not well formed.
fn unquote_c_style(text: &str) -> Option<(Vec<u8>, &str)> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut index = 1;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => return Some((out, &text[index + 1..])),
            b'\\' => {
                let escape = *bytes.get(index + 1)?;
                index += 2;
                let decoded = match escape {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'0'..=b'3' => {
                        let digits = bytes.get(index - 1..index + 2)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        index += 2;
                        digits.iter().fold(0u8, |value, d| value * 8 + (d - b'0'))
                    }
                    _ => return None,
                };
                out.push(decoded);
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    None
}

/// Why one path (as bytes) is unsafe, if it is: absolute, an empty, `..` or `.git`
/// component (any case), or a control character.
fn unsafe_path_reason(path: &[u8]) -> Option<&'static str> {
    if path == b"/dev/null" {
        return None;
    }
    if path.first() == Some(&b'/') {
        return Some("absolute path");
    }
    if path.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
        return Some("control character in a path");
    }
    // `a/` and `b/` are git's prefixes; an absolute path hides behind them as `a//etc`.
    let components: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    for (index, component) in components.iter().enumerate() {
        if *component == b".." {
            return Some("path outside the repository");
        }
        if component.eq_ignore_ascii_case(b".git") {
            return Some("path into a .git directory");
        }
        if component.is_empty() && index + 1 < components.len() {
            return Some("empty path component");
        }
    }
    None
}

/// Check every path-like token of a header line's `text`: quoted paths are decoded first;
/// unquoted text is split at whitespace (a name with spaces is checked piece by piece,
/// which can only refuse more).
fn check_header_paths(line: &str, text: &str) -> Result<(), WorkspaceError> {
    let refuse = |reason| WorkspaceError::UnsafeDiff {
        reason,
        line: truncate_text(line, 256),
    };
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(());
        }
        let token: Vec<u8>;
        if rest.starts_with('"') {
            let (decoded, after) =
                unquote_c_style(rest).ok_or_else(|| refuse("malformed quoted path"))?;
            token = decoded;
            rest = after;
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            token = rest.as_bytes()[..end].to_vec();
            rest = &rest[end..];
        }
        if let Some(reason) = unsafe_path_reason(&token) {
            return Err(refuse(reason));
        }
    }
}

/// Refuse a diff that could write outside the repository or plant something dangerous:
/// any path (in `diff --git`, `---`/`+++`, `rename`/`copy` headers) that is absolute, has a
/// `..`, `.git` (any case) or empty component; the creation of a symbolic link or submodule
/// (`new file mode 120000|160000`, `new mode …`) or a change to one (`index … 120000`).
///
/// Hunk bodies are skipped by their line counts exactly as `git apply` reads them, so file
/// content such as a removed line `-- ../x` is not taken for a header; any line inside a
/// hunk that git would not accept as hunk content is checked as a header. Pure: no I/O.
pub fn check_diff_paths(diff: &str) -> Result<(), WorkspaceError> {
    let mut hunk = HunkLines::default();
    for line in diff.split('\n') {
        if hunk.old > 0 || hunk.new > 0 {
            match line.as_bytes().first() {
                None | Some(b' ') => {
                    hunk.old = hunk.old.saturating_sub(1);
                    hunk.new = hunk.new.saturating_sub(1);
                    continue;
                }
                Some(b'-') => {
                    hunk.old = hunk.old.saturating_sub(1);
                    continue;
                }
                Some(b'+') => {
                    hunk.new = hunk.new.saturating_sub(1);
                    continue;
                }
                Some(b'\\') => continue,
                // git would call the patch corrupt; check the line as a header anyway.
                Some(_) => hunk = HunkLines::default(),
            }
        }
        if let Some(counts) = parse_hunk_header(line) {
            hunk = counts;
            continue;
        }
        check_header_line(line)?;
    }
    Ok(())
}

/// One line outside any hunk.
fn check_header_line(line: &str) -> Result<(), WorkspaceError> {
    let trimmed = line.trim_end_matches('\r');
    for prefix in [
        "diff --git ",
        "--- ",
        "+++ ",
        "rename from ",
        "rename to ",
        "copy from ",
        "copy to ",
        "rename old ",
        "rename new ",
    ] {
        if let Some(paths) = trimmed.strip_prefix(prefix) {
            return check_header_paths(line, paths);
        }
    }
    let special_mode = |mode: &str| mode == "120000" || mode == "160000";
    let refuse = |reason| {
        Err(WorkspaceError::UnsafeDiff {
            reason,
            line: truncate_text(line, 256),
        })
    };
    if let Some(mode) = trimmed
        .strip_prefix("new file mode ")
        .or_else(|| trimmed.strip_prefix("new mode "))
    {
        if special_mode(mode.trim()) {
            return refuse("creates a symbolic link or submodule");
        }
    } else if let Some(index) = trimmed.strip_prefix("index ")
        && index.split_whitespace().nth(1).is_some_and(special_mode)
    {
        return refuse("changes a symbolic link or submodule");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAFE: &str = "diff --git a/src/x.rs b/src/x.rs\n\
        index 1111111..2222222 100644\n\
        --- a/src/x.rs\n\
        +++ b/src/x.rs\n\
        @@ -1,2 +1,2 @@\n\
        -- ../removed line of a Lua comment\n\
        +++ /etc/added line that looks like a header\n \
        context\n\
        diff --git a/new file.txt b/new file.txt\n\
        new file mode 100644\n\
        index 0000000..3333333\n\
        --- /dev/null\n\
        +++ b/new file.txt\n\
        @@ -0,0 +1 @@\n\
        +hello\n\
        \\ No newline at end of file\n\
        diff --git a/gone b/gone\n\
        deleted file mode 120000\n\
        index 4444444..0000000\n\
        --- a/gone\n\
        +++ /dev/null\n\
        @@ -1 +0,0 @@\n\
        -target\n";

    #[test]
    fn a_normal_diff_passes() {
        check_diff_paths(SAFE).unwrap();
        check_diff_paths("").unwrap();
        check_diff_paths("diff --git a/.github/x b/.github/x\n--- a/..x\n+++ b/..x\n").unwrap();
    }

    #[test]
    fn unsafe_diffs_are_refused() {
        for bad in [
            "diff --git a/../evil b/../evil\n",
            "--- /dev/null\n+++ b/../../etc/passwd\n",
            "--- /dev/null\n+++ /etc/passwd\n",
            "diff --git a//etc/passwd b//etc/passwd\n",
            "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\n",
            "diff --git a/sub/.GIT/config b/sub/.GIT/config\n",
            "diff --git a/link b/link\nnew file mode 120000\n",
            "diff --git a/link b/link\nold mode 100644\nnew mode 120000\n",
            "diff --git a/link b/link\nindex 1111111..2222222 120000\n",
            "diff --git a/mod b/mod\nnew file mode 160000\n",
            "rename to ../outside\n",
            "copy from /etc/shadow\n",
            // Octal escapes hide a slash: "..\057evil" is "../evil".
            "diff --git \"a/..\\057evil\" \"b/..\\057evil\"\n",
            "rename to \"\\056\\056/x\"\n",
            "diff --git \"a/unterminated b/x\n",
            // A header after a hunk whose counts are used up.
            "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n--- a/y\n+++ b/../y\n",
            // A line git would not accept inside a hunk is checked as a header.
            "--- a/x\n+++ b/x\n@@ -1,5 +1,5 @@\n-a\ndiff --git a/../z b/../z\n",
        ] {
            assert!(
                matches!(
                    check_diff_paths(bad),
                    Err(WorkspaceError::UnsafeDiff { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn quoted_paths_decode() {
        assert_eq!(
            unquote_c_style("\"a\\303\\251 b\\\"c\" rest"),
            Some(("aé b\"c".as_bytes().to_vec(), " rest"))
        );
        assert_eq!(unquote_c_style("\"a\\9\""), None);
        assert_eq!(unquote_c_style("\"open"), None);
    }

    #[test]
    fn hunk_headers_parse() {
        let lines = parse_hunk_header("@@ -3,4 +3 @@ fn main").unwrap();
        assert_eq!((lines.old, lines.new), (4, 1));
        assert!(parse_hunk_header("@@ -x +1 @@").is_none());
    }
}
