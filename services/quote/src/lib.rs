//! Go's quoting, as Docker and runc print it: [`go_quote`] is `strconv.Quote` (and `%q` of a
//! string), [`go_quote_list`] is `%q` of a `[]string`, [`go_quote_rune`] is `%q` of an
//! integer. berth copies Docker's texts where people or scripts compare them: the shim's
//! `exec: "x": executable file not found in $PATH`, the Dockerfile parser's errors, the build
//! history's `CMD ["sh" "-c" "…"]`.
//!
//! Its own crate, without dependencies, because the shim and the Dockerfile crate both need it
//! and both are kept small (`berth-core` brings gRPC and tokio).
//!
//! ```
//! use berth_quote::{go_quote, go_quote_list};
//!
//! assert_eq!(go_quote("a \"b\"\n"), r#""a \"b\"\n""#);
//! assert_eq!(go_quote_list(&["sh".into(), "-c".into()]), r#"["sh" "-c"]"#);
//! ```

/// Go's `strconv.Quote`: double quotes around `s`, with `"`, `\` and control characters
/// escaped (`\n`, `\x01`, `\u0085`); other characters, non-ASCII ones included, as they are.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%q` of an integer: a quoted character literal (`'\x00'`, `'\x03'`, `'A'`).
pub fn go_quote_rune(n: u32) -> String {
    let mut out = String::from("'");
    match char::from_u32(n) {
        Some(c) => push_escaped(&mut out, c, '\''),
        None => out.push('\u{fffd}'),
    }
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\x01é\"");
        assert_eq!(go_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(go_quote(""), "\"\"");
        assert_eq!(
            go_quote("\x07\x08\x0c\x0b\r\t\x7f"),
            "\"\\a\\b\\f\\v\\r\\t\\x7f\""
        );
        assert_eq!(go_quote("\u{85}"), "\"\\u0085\"");
        assert_eq!(go_quote("it's"), "\"it's\"");
    }

    #[test]
    fn quotes_runes_and_lists_like_go() {
        assert_eq!(go_quote_rune(0), "'\\x00'");
        assert_eq!(go_quote_rune(10), "'\\n'");
        assert_eq!(go_quote_rune(65), "'A'");
        assert_eq!(go_quote_rune(39), "'\\''");
        assert_eq!(go_quote_list(&[]), "[]");
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\""]"#
        );
    }
}
