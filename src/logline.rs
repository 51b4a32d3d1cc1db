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
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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

/// The `tracing` event formatter of `--log-format json`: one JSON object per line,
/// `{"timestamp", "level", "message", "fields"}`, for journald, Loki or ELK. The timestamp is
/// RFC 3339 in UTC; `fields` holds every other field of the event, numbers and booleans as such
/// and anything else as text. JSON escapes line breaks and control characters, and the
/// characters [`sanitize`] escapes in text are escaped here too (`\u202e`), so that no value can
/// end a record early or reorder what a log viewer shows.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(&json_line(
            chrono::Utc::now(),
            event.metadata().level(),
            |visitor| event.record(visitor),
        ))?;
        writer.write_char('\n')
    }
}

/// One `--log-format json` record, without its newline; `record` feeds the event's fields.
fn json_line(
    time: chrono::DateTime<chrono::Utc>,
    level: &tracing::Level,
    record: impl FnOnce(&mut JsonFields),
) -> String {
    let mut fields = JsonFields::default();
    record(&mut fields);
    let line = JsonRecord {
        timestamp: time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        level: level.as_str(),
        message: fields.message.unwrap_or_default(),
        fields: fields.map,
    };
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, SafeJson);
    // Serializing a map of strings and numbers into memory cannot fail.
    if serde::Serialize::serialize(&line, &mut serializer).is_err() {
        return String::from("{\"level\":\"ERROR\",\"message\":\"unprintable log record\"}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// One record of `--log-format json`, in this key order.
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    timestamp: String,
    level: &'a str,
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

/// The fields of one event: `message`, and the rest by name.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    map: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn insert(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        // As in text: records bridged from the `log` crate carry their metadata as `log.*`.
        if name.starts_with("log.") {
            return;
        }
        if name == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.map.insert(name.to_string(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number; `null` says as much.
        self.insert(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, format!("{value:?}").into());
    }
}

/// serde_json's compact output, with every character [`is_escaped`] written as a `\uXXXX`
/// escape (serde_json itself escapes only those below U+0020).
struct SafeJson;

impl serde_json::ser::Formatter for SafeJson {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| is_escaped(c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
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

    #[test]
    fn json_lines_are_one_safe_object_each() {
        use tracing::field::{FieldSet, Value as _};
        use tracing::{callsite, metadata::Kind};
        struct Site;
        impl callsite::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                &META
            }
        }
        static SITE: Site = Site;
        static META: tracing::Metadata<'static> = tracing::Metadata::new(
            "event",
            "elasticd",
            tracing::Level::WARN,
            None,
            None,
            None,
            FieldSet::new(
                &["message", "service", "count", "ok"],
                callsite::Identifier(&SITE),
            ),
            Kind::EVENT,
        );
        let fields = META.fields();
        let field = |name| fields.field(name).unwrap();
        let time = chrono::DateTime::from_timestamp(1_780_000_000, 123_456_000).unwrap();
        let line = json_line(time, &tracing::Level::WARN, |v| {
            "forged\n{\"level\":\"ERROR\"} \u{1b}[31m \u{202e}\u{2028}\u{85}"
                .record(&field("message"), v);
            tracing::field::display("web\"x").record(&field("service"), v);
            3u64.record(&field("count"), v);
            true.record(&field("ok"), v);
        });
        assert!(!line.contains('\n'), "{line}");
        assert!(line.is_ascii(), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "timestamp": "2026-05-28T20:26:40.123456Z",
                "level": "WARN",
                "message": "forged\n{\"level\":\"ERROR\"} \u{1b}[31m \u{202e}\u{2028}\u{85}",
                "fields": { "service": "web\"x", "count": 3, "ok": true },
            })
        );
        assert!(line.contains(r"\u202e\u2028\u0085"), "{line}");
    }
}
