//! Docker's variable substitution in Dockerfile words: `$VAR`, `${VAR:-default}` and the other
//! modifiers, quotes and escapes ([`expand`]), and the same with splitting into words
//! ([`expand_words`]).

/// Expands one word as Docker's shell-word lexer does: `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`, `${VAR:?message}`, `${VAR?message}`;
/// the escape character keeps the next character literally (inside double quotes only before
/// `"`, `$` and itself); single quotes suppress expansion, double quotes allow it; quotes are
/// removed. Unset variables expand to the empty string; `$` not followed by a name stays `$`.
pub fn expand(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, String> {
    Ok(Lexer::new(word, lookup, escape).run(None)?.text)
}

/// Like [`expand`], then split into words at unquoted whitespace, including whitespace that
/// comes from a variable's value; quoted text never splits, and `""` gives an empty word.
pub fn expand_words(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, String> {
    Ok(Lexer::new(word, lookup, escape).run(None)?.finish())
}

/// The expanded text and, alongside, the words it splits into.
#[derive(Debug, Default)]
struct Words {
    text: String,
    words: Vec<String>,
    current: String,
    in_word: bool,
}

impl Words {
    /// A character that splits words when it is whitespace.
    fn add(&mut self, c: char) {
        self.text.push(c);
        if c.is_whitespace() {
            if self.in_word {
                self.words.push(std::mem::take(&mut self.current));
                self.in_word = false;
            }
        } else {
            self.current.push(c);
            self.in_word = true;
        }
    }

    /// Quoted or escaped text: never splits, and makes a word even when empty.
    fn add_raw(&mut self, s: &str) {
        self.text.push_str(s);
        self.current.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if self.in_word {
            self.words.push(self.current);
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Lexer<'a> {
    fn new(word: &str, lookup: &'a dyn Fn(&str) -> Option<String>, escape: char) -> Self {
        Lexer {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            lookup,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    /// Processes up to `stop` (consumed) or the end of the word.
    fn run(&mut self, stop: Option<char>) -> Result<Words, String> {
        let mut out = Words::default();
        loop {
            let Some(c) = self.peek() else {
                return match stop {
                    Some(s) => Err(format!("syntax error: missing '{s}' in {}", self.source())),
                    None => Ok(out),
                };
            };
            if Some(c) == stop {
                self.pos += 1;
                return Ok(out);
            }
            match c {
                '\'' => {
                    let s = self.single_quoted()?;
                    out.add_raw(&s);
                }
                '"' => {
                    let s = self.double_quoted()?;
                    out.add_raw(&s);
                }
                '$' => {
                    for ch in self.dollar()?.chars() {
                        out.add(ch);
                    }
                }
                c if c == self.escape => {
                    self.pos += 1;
                    if let Some(n) = self.next() {
                        out.add_raw(n.encode_utf8(&mut [0; 4]));
                    }
                }
                c => {
                    self.pos += 1;
                    out.add(c);
                }
            }
        }
    }

    fn source(&self) -> String {
        self.chars.iter().collect()
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                s.push(n);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    s.push(c);
                }
            }
        }
    }

    /// A name after `$`: letters, digits and `_`, or only digits when it starts with one.
    fn name(&mut self) -> String {
        let mut name = String::new();
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            while let Some(c) = self.peek().filter(char::is_ascii_digit) {
                name.push(c);
                self.pos += 1;
            }
            return name;
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// At a `$`: the substituted value.
    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok((self.lookup)(&name).unwrap_or_default());
        }
        self.pos += 1;
        let name = self.name();
        let value = (self.lookup)(&name);
        let (colon, modifier) = match self.next() {
            Some('}') => return Ok(value.unwrap_or_default()),
            Some(':') => (true, self.next()),
            Some(c @ ('-' | '+' | '?')) => (false, Some(c)),
            Some(c) => return Err(format!("unsupported modifier ({c}) in substitution")),
            None => return Err(format!("syntax error: missing '}}' in {}", self.source())),
        };
        let modifier = match modifier {
            Some(m @ ('-' | '+' | '?')) => m,
            Some(m) => return Err(format!("unsupported modifier (:{m}) in substitution")),
            None => return Err(format!("syntax error: missing '}}' in {}", self.source())),
        };
        let word = self.run(Some('}'))?.text;
        // With a colon, an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match modifier {
            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
            '+' => Ok(if set { word } else { String::new() }),
            _ => {
                if set {
                    Ok(value.unwrap_or_default())
                } else if word.is_empty() {
                    Err(format!("{name}: is not allowed to be unset"))
                } else {
                    Err(format!("{name}: {word}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::tests::{env, strs};

    fn x(word: &str, vars: &[(&str, &str)]) -> String {
        expand(word, &env(vars), '\\').unwrap()
    }

    #[test]
    fn substitution_docs_examples() {
        let vars = [("foo", "/bar")];
        assert_eq!(x("${foo}", &vars), "/bar");
        assert_eq!(x("$foo", &vars), "/bar");
        assert_eq!(x("\\$foo", &vars), "$foo");
        assert_eq!(x("\\${foo}", &vars), "${foo}");
        assert_eq!(x("${foo}_bar", &vars), "/bar_bar");
        assert_eq!(x("$foo_bar", &vars), "");
        assert_eq!(x("${variable:-word}", &[]), "word");
        assert_eq!(x("${variable:-word}", &[("variable", "v")]), "v");
        assert_eq!(x("${variable:+word}", &[("variable", "v")]), "word");
        assert_eq!(x("${variable:+word}", &[]), "");
        assert_eq!(x("${variable:-$foo/x}", &vars), "/bar/x");
    }

    #[test]
    fn substitution_set_but_empty() {
        let vars = [("E", "")];
        assert_eq!(x("${E:-d}", &vars), "d");
        assert_eq!(x("${E-d}", &vars), "");
        assert_eq!(x("${U-d}", &vars), "d");
        assert_eq!(x("${E:+a}", &vars), "");
        assert_eq!(x("${E+a}", &vars), "a");
        assert_eq!(x("${U+a}", &vars), "");
        assert_eq!(x("${E?}", &vars), "");
        let lookup = env(&vars);
        assert_eq!(
            expand("${E:?must be set}", &lookup, '\\').unwrap_err(),
            "E: must be set"
        );
        assert_eq!(
            expand("${U?}", &lookup, '\\').unwrap_err(),
            "U: is not allowed to be unset"
        );
    }

    #[test]
    fn substitution_quotes_and_escapes() {
        let vars = [("A", "x y"), ("B", "b")];
        assert_eq!(x("'$A'", &vars), "$A");
        assert_eq!(x("\"$A\"", &vars), "x y");
        assert_eq!(x("\"\\$A\"", &vars), "$A");
        assert_eq!(x("\"a\\\"b\"", &vars), "a\"b");
        assert_eq!(x("\"a\\nb\"", &vars), "a\\nb");
        assert_eq!(x("'a\\b'", &vars), "a\\b");
        assert_eq!(x("a\\ b", &vars), "a b");
        assert_eq!(x("\\\\$B", &vars), "\\b");
        assert_eq!(x("$", &vars), "$");
        assert_eq!(x("a$/b", &vars), "a$/b");
        assert_eq!(x("100$", &vars), "100$");
        assert_eq!(x("$1x", &vars), "x");
        assert_eq!(x("end\\", &vars), "end");
        assert_eq!(x("${A}${B}", &vars), "x yb");
        assert_eq!(x("${B:-'q q'}", &[]), "q q");
        let lookup = env(&vars);
        assert!(expand("'open", &lookup, '\\')
            .unwrap_err()
            .contains("single-quote"));
        assert!(expand("\"open", &lookup, '\\')
            .unwrap_err()
            .contains("double-quote"));
        assert!(expand("${A", &lookup, '\\')
            .unwrap_err()
            .contains("missing '}'"));
        assert!(expand("${A:-x", &lookup, '\\')
            .unwrap_err()
            .contains("missing '}'"));
        assert_eq!(
            expand("${A#x}", &lookup, '\\').unwrap_err(),
            "unsupported modifier (#) in substitution"
        );
    }

    #[test]
    fn expand_words_splits_like_docker() {
        let lookup = env(&[("P", "80 443"), ("E", "")]);
        let w = |s: &str| expand_words(s, &lookup, '\\').unwrap();
        assert_eq!(w("$P 8080"), strs(&["80", "443", "8080"]));
        assert_eq!(w("\"$P\" x"), strs(&["80 443", "x"]));
        assert_eq!(w("a\\ b  c"), strs(&["a b", "c"]));
        assert_eq!(w("\"\" x"), strs(&["", "x"]));
        assert_eq!(w("$E x"), strs(&["x"]));
        assert_eq!(w("  "), Vec::<String>::new());
    }
}
