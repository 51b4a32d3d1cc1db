//! Escaping that keeps values from tags and plugins from injecting config syntax.
//!
//! Every `{{ }}` string in every template (built-in or custom) goes through [`escape_config_value`]
//! unless the template marks it `| safe`. The four frontends' syntaxes differ, so instead of four
//! quoting schemes there is one allow-list that is inert in all of them: anything that could end a
//! token, a string, a directive or a line (`;`, `{`, `}`, quotes, `#`, `\`, whitespace, newlines)
//! becomes `_`, and so does `%`, which starts an expansion in HAProxy log-format strings
//! (`%[src]` is a sample fetch, `%ci` a variable) and in Apache (`%{VAR}e`). `[` and `]` stay for
//! IPv6 endpoints (`[::1]:80`): without a `%` before them they are plain text in all four.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use tera::{Kwargs, State, TeraResult, Value};

/// True for bytes that are plain text in nginx, HAProxy, VCL and Apache configs.
fn is_inert(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '_' | ':' | '/' | '@' | '=' | '+' | ',' | '[' | ']' | '-'
        )
}

/// Tera escape function: replaces every character outside the inert set with `_`.
pub fn escape_config_value(input: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let mut start = 0;
    for (i, c) in input.char_indices() {
        if !is_inert(c) {
            out.write_all(&input.as_bytes()[start..i])?;
            out.write_all(b"_")?;
            start = i + c.len_utf8();
        }
    }
    out.write_all(&input.as_bytes()[start..])
}

/// [`escape_config_value`] into a `String`, for the native renderers (see `fast`).
pub fn escape_into(input: &str, out: &mut String) {
    let mut start = 0;
    for (i, c) in input.char_indices() {
        if !is_inert(c) {
            out.push_str(&input[start..i]);
            out.push('_');
            start = i + c.len_utf8();
        }
    }
    out.push_str(&input[start..]);
}

/// The `ident` filter: letters, digits and `_` only, never starting with a digit; for names that
/// must be identifiers (VCL backends, HAProxy servers).
pub fn ident(input: &str) -> String {
    let mut out: String = input
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "b_");
    }
    out
}

/// [`ident`] of each name, made unique within the list. `ident` folds `.`, `-` and `:` into `_`,
/// so `10.0.0.1` and the host `10-0-0-1` (or `web-1.example` and `web.1.example`) would share a
/// name, which HAProxy and Varnish refuse. A name that is unique keeps its plain `ident`, so does
/// the first name of a group that shares one; the others get `_2`, `_3`, ... (the first of these
/// not already taken by any name in the list).
pub fn unique_idents<S: AsRef<str>>(names: &[S]) -> Vec<String> {
    let plain: Vec<String> = names.iter().map(|n| ident(n.as_ref())).collect();
    let mut taken: HashSet<String> = plain.iter().cloned().collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for name in &plain {
        *count.entry(name.as_str()).or_default() += 1;
    }
    let mut first_seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(plain.len());
    for name in &plain {
        if count.get(name.as_str()).copied().unwrap_or(0) <= 1 || first_seen.insert(name.as_str()) {
            out.push(name.clone());
            continue;
        }
        let mut n: u64 = 2;
        let unique = loop {
            let candidate = format!("{name}_{n}");
            if taken.insert(candidate.clone()) {
                break candidate;
            }
            n = n.saturating_add(1);
        };
        out.push(unique);
    }
    out
}

/// The `backend_idents` filter: `backends | backend_idents(prefix=NAME)` is, for each backend in
/// order, the identifier `(NAME ~ "_" ~ b.address ~ "_" ~ b.port) | ident`, made unique within
/// the list by [`unique_idents`]. Templates index it with `loop.index0`.
pub fn backend_idents(backends: &[Value], kwargs: Kwargs, _: &State) -> TeraResult<Vec<String>> {
    let prefix: Option<Value> = kwargs.get("prefix")?;
    fn field(b: &Value, key: &'static str) -> String {
        b.as_map()
            .and_then(|m| m.get(&tera::value::Key::from(key)))
            .map(ToString::to_string)
            .unwrap_or_default()
    }
    let names: Vec<String> = backends
        .iter()
        .map(|b| {
            let address = field(b, "address");
            let port = field(b, "port");
            match &prefix {
                Some(prefix) => format!("{prefix}_{address}_{port}"),
                None => format!("{address}_{port}"),
            }
        })
        .collect();
    Ok(unique_idents(&names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        escape_config_value(s, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hostile_text_becomes_inert() {
        assert_eq!(escaped("a;b{c}d\"e'f\ng#h i\\j"), "a_b_c_d_e_f_g_h_i_j");
        assert_eq!(escaped("10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(escaped("[::1]:80"), "[::1]:80");
        assert_eq!(escaped("zoné"), "zon_");
        // HAProxy evaluates `%[...]` (a sample fetch) and `%ci` (a variable) in log-format strings.
        assert_eq!(escaped("%[src]"), "_[src]");
        assert_eq!(escaped("%{+Q}[src]%ci%%"), "__+Q_[src]_ci__");
    }

    #[test]
    fn ident_is_an_identifier() {
        assert_eq!(ident("10.0.0.1:80"), "b_10_0_0_1_80");
        assert_eq!(ident("web-1"), "web_1");
        assert_eq!(ident(""), "b_");
    }

    #[test]
    fn unique_idents_keep_plain_names_and_break_ties() {
        assert_eq!(
            unique_idents(&["web_10.0.0.1_80", "web_10.0.0.2_80"]),
            ["web_10_0_0_1_80", "web_10_0_0_2_80"]
        );
        assert_eq!(
            unique_idents(&["web_10.0.0.1_80", "web_10-0-0-1_80", "web_10:0:0:1_80"]),
            ["web_10_0_0_1_80", "web_10_0_0_1_80_2", "web_10_0_0_1_80_3"]
        );
        assert_eq!(
            unique_idents(&["b_web-1.example_80", "b_web.1.example_80"]),
            ["b_web_1_example_80", "b_web_1_example_80_2"]
        );
        // A suffixed name never takes one that a real name already has.
        let names = ["a_x.y_1", "a_x-y_1", "a_x-y_1-2"];
        assert_eq!(unique_idents(&names), ["a_x_y_1", "a_x_y_1_3", "a_x_y_1_2"]);
        let many: Vec<String> = (0..50)
            .map(|i| format!("a{}b", ".".repeat(i % 2 + 1)))
            .collect();
        let out = unique_idents(&many);
        let set: HashSet<&String> = out.iter().collect();
        assert_eq!(set.len(), out.len());
        assert!(unique_idents::<&str>(&[]).is_empty());
    }
}
