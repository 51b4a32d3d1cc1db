//! Escaping that keeps values from tags and plugins from injecting config syntax.
//!
//! Every `{{ }}` string in every template (built-in or custom) goes through [`escape_config_value`]
//! unless the template marks it `| safe`. The four frontends' syntaxes differ, so instead of four
//! quoting schemes there is one allow-list that is inert in all of them: anything that could end a
//! token, a string, a directive or a line (`;`, `{`, `}`, quotes, `#`, `\`, whitespace, newlines)
//! becomes `_`.

use std::io::Write;

/// True for bytes that are plain text in nginx, HAProxy, VCL and Apache configs.
fn is_inert(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '_' | ':' | '/' | '@' | '=' | '+' | ',' | '%' | '[' | ']' | '-'
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
    }

    #[test]
    fn ident_is_an_identifier() {
        assert_eq!(ident("10.0.0.1:80"), "b_10_0_0_1_80");
        assert_eq!(ident("web-1"), "web_1");
        assert_eq!(ident(""), "b_");
    }
}
