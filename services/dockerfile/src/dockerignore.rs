//! `.dockerignore` rules: which paths of the build context are left out. Pure code, no I/O.
//!
//! [`DockerIgnore::parse`] reads the file's text; [`DockerIgnore::excluded`] answers for one
//! path relative to the context root (`/`-separated); [`DockerIgnore::skip_dir`] tells a walker
//! when it need not look inside a directory at all.
//!
//! The rules, as Docker documents them:
//! - a line starting with `#` is a comment; lines are trimmed, blank lines skipped;
//! - `!` makes an exception, re-including what it matches;
//! - a pattern is cleaned like Go's `filepath.Clean` (`./a//b/` → `a/b`, `a/../b` → `b`) and a
//!   leading `/` dropped, so `/foo`, `./foo` and `foo/` all mean `foo`;
//! - globs: `*` any run of characters but `/`, `?` one character but `/`, `[a-z]` / `[^a-z]`
//!   classes, the escape `\` keeps the next character literal, `**` any number of directories
//!   (`**/x` also matches `x` at the root; a trailing `**` anything below);
//! - a pattern matches a path when it matches the path itself or one of its parent
//!   directories, so `node_modules` leaves out everything below it; the last pattern that
//!   matches decides.
//!
//! ```
//! use berth_dockerfile::dockerignore::DockerIgnore;
//!
//! let rules = DockerIgnore::parse("# docs\n*.md\n!README*.md\nREADME-secret.md\n").unwrap();
//! assert!(rules.excluded("CHANGES.md", false));
//! assert!(!rules.excluded("README.md", false));
//! assert!(rules.excluded("README-secret.md", false));
//! ```

/// The parsed rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The cleaned pattern, as Docker reports it (without the `!`).
    text: String,
    tokens: Vec<Token>,
    /// A `!` exception: re-includes what it matches.
    exception: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters except `/`.
    Star,
    /// `?`: one character except `/`.
    Question,
    /// `[...]`: a class of ranges, possibly negated.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**/` or a `**` inside a pattern: zero or more leading path elements (`(.*/)?`).
    AnyDirs,
    /// A trailing `**`: anything.
    Anything,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file. Refuses a bare `!` and malformed classes.
    pub fn parse(text: &str) -> Result<DockerIgnore, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
                if pattern.is_empty() {
                    return Err(format!(
                        ".dockerignore line {}: illegal exclusion pattern: \"!\"",
                        n + 1
                    ));
                }
            }
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let tokens = compile(&cleaned)
                .map_err(|e| format!(".dockerignore line {}: {e}: {pattern:?}", n + 1))?;
            patterns.push(Pattern {
                text: cleaned,
                tokens,
                exception,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated; a leading `./` or `/`
    /// is ignored) is left out of the context. Docker's rules do not depend on the kind of
    /// entry, so `is_dir` only documents the caller's intent.
    ///
    /// A path below an excluded directory is excluded too unless an exception re-includes it;
    /// a walker that keeps such a path must still create its parent directories.
    pub fn excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        let _ = is_dir;
        let path = clean(rel_path);
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == "." {
            return false;
        }
        let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut excluded = false;
        for p in &self.patterns {
            // An exclusion can only change an included path and vice versa.
            if p.exception != excluded {
                continue;
            }
            let hit = matches(&p.tokens, path) || parents.iter().any(|d| matches(&p.tokens, d));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether a walker may skip everything below the directory `rel_dir`: it is excluded and
    /// no `!` exception could match anything inside it.
    pub fn skip_dir(&self, rel_dir: &str) -> bool {
        if !self.excluded(rel_dir, true) {
            return false;
        }
        let dir = clean(rel_dir);
        let prefix = format!("{}/", dir.trim_start_matches('/'));
        !self
            .patterns
            .iter()
            .any(|p| p.exception && matches_prefix(&p.tokens, &prefix))
    }

    /// Whether no rule is present (everything is included).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The cleaned patterns, exceptions with their `!`, as Docker would list them.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exception {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn compile(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i >= chars.len() {
                    Token::Anything
                } else {
                    Token::AnyDirs
                });
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Question),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    tokens.push(Token::Literal(n));
                    i += 1;
                }
                None => return Err("syntax error in pattern".into()),
            },
            '[' => {
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    let Some(&lo) = chars.get(i) else {
                        return Err("syntax error in pattern".into());
                    };
                    if lo == ']' && !ranges.is_empty() {
                        i += 1;
                        break;
                    }
                    let lo = class_char(&chars, &mut i)?;
                    let hi = if chars.get(i) == Some(&'-') && chars.get(i + 1) != Some(&']') {
                        i += 1;
                        class_char(&chars, &mut i)?
                    } else {
                        lo
                    };
                    if hi < lo {
                        return Err("syntax error in pattern".into());
                    }
                    ranges.push((lo, hi));
                }
                tokens.push(Token::Class { negated, ranges });
            }
            c => tokens.push(Token::Literal(c)),
        }
    }
    Ok(tokens)
}

fn class_char(chars: &[char], i: &mut usize) -> Result<char, String> {
    let c = *chars.get(*i).ok_or("syntax error in pattern")?;
    *i += 1;
    if c == '\\' {
        let n = *chars.get(*i).ok_or("syntax error in pattern")?;
        *i += 1;
        return Ok(n);
    }
    Ok(c)
}

fn matches(tokens: &[Token], path: &str) -> bool {
    let chars: Vec<char> = path.chars().collect();
    match_at(tokens, &chars, false)
}

/// Whether some path starting with `prefix` could match.
fn matches_prefix(tokens: &[Token], prefix: &str) -> bool {
    let chars: Vec<char> = prefix.chars().collect();
    match_at(tokens, &chars, true)
}

/// Backtracking glob match; with `partial`, running out of text counts as a match (the rest of
/// the pattern could match what follows).
fn match_at(tokens: &[Token], text: &[char], partial: bool) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    if text.is_empty() && partial {
        return true;
    }
    match token {
        Token::Literal(c) => text.first() == Some(c) && match_at(rest, &text[1..], partial),
        Token::Question => {
            text.first().is_some_and(|c| *c != '/') && match_at(rest, &text[1..], partial)
        }
        Token::Class { negated, ranges } => {
            text.first().is_some_and(|c| {
                let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                inside != *negated
            }) && match_at(rest, &text[1..], partial)
        }
        Token::Star => {
            let run = text.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|n| match_at(rest, &text[n..], partial))
        }
        Token::AnyDirs => {
            match_at(rest, text, partial)
                || text
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == '/')
                    .any(|(i, _)| match_at(rest, &text[i + 1..], partial))
        }
        Token::Anything => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap()
    }

    #[test]
    fn docs_example_temp_patterns() {
        let r = rules("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
        assert!(r.excluded("somedir/temporary.txt", false));
        assert!(r.excluded("somedir/temp", true));
        assert!(r.excluded("somedir/subdir/temporary.txt", false));
        assert!(r.excluded("tempa", false));
        assert!(r.excluded("tempb", false));
        assert!(!r.excluded("temp", false));
        assert!(!r.excluded("temporary.txt", false));
        assert!(!r.excluded("a/b/c/temp.txt", false));
        assert!(!r.excluded("# comment", false));
    }

    #[test]
    fn double_star_matches_any_depth_including_root() {
        let r = rules("**/*.go\n");
        assert!(r.excluded("main.go", false));
        assert!(r.excluded("a/b/c.go", false));
        assert!(!r.excluded("a/b/c.rs", false));
        let r = rules("docs/**\n");
        assert!(r.excluded("docs/a/b.md", false));
        assert!(!r.excluded("docs", true));
        let r = rules("a/**/z\n");
        assert!(r.excluded("a/z", false));
        assert!(r.excluded("a/b/c/z", false));
        assert!(!r.excluded("b/z", false));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let r = rules("*.md\n!README.md\n");
        assert!(r.excluded("CHANGES.md", false));
        assert!(!r.excluded("README.md", false));

        let r = rules("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(!r.excluded("README.md", false));
        assert!(!r.excluded("README-public.md", false));
        assert!(r.excluded("README-secret.md", false));

        let r = rules("*.md\nREADME-secret.md\n!README*.md\n");
        assert!(!r.excluded("README-secret.md", false));
        assert!(r.excluded("other.md", false));
    }

    #[test]
    fn include_only_with_star_then_exceptions() {
        let r = rules("*\n!src\n!Cargo.toml\n");
        assert!(r.excluded("target", true));
        assert!(r.excluded("target/debug/x", false));
        assert!(!r.excluded("src", true));
        assert!(!r.excluded("src/main.rs", false));
        assert!(!r.excluded("Cargo.toml", false));
    }

    #[test]
    fn parent_directory_excludes_children_unless_reincluded() {
        let r = rules("node_modules\n");
        assert!(r.excluded("node_modules", true));
        assert!(r.excluded("node_modules/x/y.js", false));
        assert!(!r.excluded("src/node_modules_list.txt", false));

        let r = rules("build\n!build/keep.txt\n");
        assert!(r.excluded("build/other", false));
        assert!(!r.excluded("build/keep.txt", false));
        assert!(r.excluded("build", true));
        assert!(!r.skip_dir("build"));
        let r = rules("build\n");
        assert!(r.skip_dir("build"));
        assert!(!r.skip_dir("src"));
        let r = rules("vendor\n!**/*.go\n");
        assert!(!r.skip_dir("vendor"));
        let r = rules("vendor\n!docs/*.md\n");
        assert!(r.skip_dir("vendor"));
    }

    #[test]
    fn leading_slash_dot_and_cleaning() {
        for p in [
            "/foo/bar",
            "foo/bar",
            "./foo/bar",
            "foo//bar/",
            "foo/x/../bar",
        ] {
            let r = rules(p);
            assert_eq!(r.patterns(), vec!["foo/bar".to_string()], "{p}");
            assert!(r.excluded("foo/bar", false), "{p}");
            assert!(r.excluded("foo/bar/baz", false), "{p}");
            assert!(!r.excluded("foo", true), "{p}");
            assert!(!r.excluded("bar", false), "{p}");
        }
        assert!(rules("foo").excluded("./foo", false));
        assert_eq!(rules("! /x\n").patterns(), vec!["!x".to_string()]);
    }

    #[test]
    fn classes_question_and_escapes() {
        let r = rules("file[0-9].txt\nlog[^a-c]\nq?\n\\*literal\n");
        assert!(r.excluded("file3.txt", false));
        assert!(!r.excluded("filex.txt", false));
        assert!(r.excluded("logd", false));
        assert!(!r.excluded("loga", false));
        assert!(r.excluded("qx", false));
        assert!(!r.excluded("q", false));
        assert!(!r.excluded("q/x", false));
        assert!(r.excluded("*literal", false));
        assert!(!r.excluded("xliteral", false));
    }

    #[test]
    fn comments_blank_lines_and_errors() {
        let r = rules("\n   \n# *.rs\n  *.o  \n");
        assert!(!r.excluded("main.rs", false));
        assert!(r.excluded("main.o", false));
        assert!(rules("").is_empty());
        assert!(DockerIgnore::parse("!\n").is_err());
        assert!(DockerIgnore::parse("a[\n").is_err());
        assert!(DockerIgnore::parse("[z-a]\n").is_err());
        // A '#' after leading spaces is a pattern, as in Docker.
        assert!(rules(" #x\n").excluded("#x", false));
    }

    #[test]
    fn star_does_not_cross_slash() {
        let r = rules("*.txt\n");
        assert!(r.excluded("a.txt", false));
        assert!(!r.excluded("dir/a.txt", false));
        let r = rules("*\n");
        assert!(r.excluded("anything/below", false));
        assert!(!r.excluded(".", true));
    }
}
