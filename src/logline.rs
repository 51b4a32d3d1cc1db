//! Log and error lines that a value cannot forge: every control character is escaped, and a line
//! break inside a message only ever starts an indented continuation line.
//!
//! Values from locators, plugins and frontends end up in messages (a bad target, a plugin's
//! stderr, an HAProxy answer). Printed as they are, a newline followed by a fake record, a `\r`
//! or a terminal escape sequence would make the log say what the value wants. elasticd's own
//! multi-line messages (the problem list of a config, the quoted end of a program's output, a
//! template error's excerpt) stay readable: their line breaks are kept, and their continuation
//! lines are indented (by two more spaces if one of them was not), so nothing a value holds can
//! begin a line of its own.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// True for characters that are escaped: C0 and C1 controls and DEL (but not the newline, which
/// [`sanitize`] handles), the Unicode line and paragraph separators, and the bidirectional
/// controls that reorder what a terminal shows.
fn is_escaped(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` made safe to print as (the end of) one log or error line; see the module comment.
/// Text without control characters or unindented continuation lines comes back unchanged.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let needs_escape = text.chars().any(is_escaped);
    let needs_indent = text
        .split('\n')
        .skip(1)
        .any(|line| !line.is_empty() && !line.starts_with(' '));
    if !needs_escape && !needs_indent {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            if needs_indent && !line.is_empty() {
                out.push_str("  ");
            }
        }
        for c in line.chars() {
            match c {
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if is_escaped(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    Cow::Owned(out)
}

/// The `tracing` field formatter of the `elasticd` binary: fields as the default formatter
/// prints them (`message`, then `name=value`), each value passed through [`sanitize`]. The line's
/// own trailing newline is the event formatter's, after the fields, so it stays.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    fn write(&mut self, field: &Field, text: &str) {
        let name = field.name();
        // Records bridged from the `log` crate carry their metadata as `log.*` fields, which the
        // event formatter has already printed.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let text = sanitize(text);
        self.result = if name == "message" {
            write!(self.writer, "{separator}{text}")
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{separator}{name}={text}")
        };
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(sanitize("plain `text`: 10.0.0.1"), "plain `text`: 10.0.0.1");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
        assert_eq!(
            sanitize("a\rb\x1b[31mc\td\u{7f}\u{85}\u{202e}"),
            "a\\rb\\u{1b}[31mc\\td\\u{7f}\\u{85}\\u{202e}"
        );
    }

    #[test]
    fn indented_continuation_lines_stay_and_others_are_indented() {
        let listed = "config.yaml has 2 problems:\n  a: x\n  b: y";
        assert_eq!(sanitize(listed), listed);
        let tail = "failed; its output ends with:\n    | boom";
        assert_eq!(sanitize(tail), tail);
        assert_eq!(
            sanitize("bad `x\n2026-01-01T00:00:00Z ERROR forged`"),
            "bad `x\n  2026-01-01T00:00:00Z ERROR forged`"
        );
        // All continuation lines move together, so an excerpt keeps its alignment.
        assert_eq!(
            sanitize("do not compile:\nerror: e\n --> t:1:3\n  |\n1 | {{ x\n\n"),
            "do not compile:\n  error: e\n   --> t:1:3\n    |\n  1 | {{ x\n\n"
        );
    }
}
