//! The `--name[=value]` flags that come before an instruction's arguments (`COPY --from=…`,
//! `HEALTHCHECK --interval=…`): read once, taken by name, and any left untaken is Docker's
//! `unknown flag` error.

use super::duration::parse_go_duration;
use berth_quote::go_quote;
use std::time::Duration;

/// The `--name[=value]` flags before an instruction's arguments.
#[derive(Debug, Default)]
pub(super) struct Flags {
    /// `(name, value, used)`.
    pub(super) items: Vec<(String, Option<String>, bool)>,
}

impl Flags {
    /// Reads leading `--flag[=value]` words (quotes in them removed); `--` ends the flags.
    pub(super) fn extract(mut rest: &str) -> Result<(Flags, &str), String> {
        let mut flags = Flags::default();
        loop {
            rest = rest.trim_start();
            if !rest.starts_with("--") {
                break;
            }
            let mut word = String::new();
            let mut quote: Option<char> = None;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => word.push(c),
                    None if c == '"' || c == '\'' => quote = Some(c),
                    None if c.is_whitespace() => {
                        end = i;
                        break;
                    }
                    None => word.push(c),
                }
            }
            if let Some(q) = quote {
                return Err(format!("unterminated {q} quote in flag {word}"));
            }
            rest = &rest[end..];
            if word == "--" {
                break;
            }
            let body = &word[2..];
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            flags.items.push((name, value, false));
        }
        Ok((flags, rest))
    }

    fn take(&mut self, name: &str) -> Vec<Option<String>> {
        self.items
            .iter_mut()
            .filter(|(n, _, _)| n == name)
            .map(|(_, v, used)| {
                *used = true;
                v.clone()
            })
            .collect()
    }

    pub(super) fn string(&mut self, name: &str) -> Result<Option<String>, String> {
        let values = self.take(name);
        match values.as_slice() {
            [] => Ok(None),
            [Some(v)] => Ok(Some(v.clone())),
            [None] => Err(format!("missing a value on flag: {name}")),
            _ => Err(format!("duplicate flag specified: {name}")),
        }
    }

    pub(super) fn strings(&mut self, name: &str) -> Vec<String> {
        self.take(name).into_iter().flatten().collect()
    }

    pub(super) fn bool(&mut self, name: &str) -> Result<bool, String> {
        let values = self.take(name);
        match values.as_slice() {
            [] => Ok(false),
            [None] => Ok(true),
            [Some(v)] => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "t" => Ok(true),
                "false" | "0" | "f" => Ok(false),
                _ => Err(format!("expecting boolean value for flag {name}, not: {v}")),
            },
            _ => Err(format!("duplicate flag specified: {name}")),
        }
    }

    pub(super) fn duration(&mut self, name: &str) -> Result<Duration, String> {
        let Some(v) = self.string(name)? else {
            return Ok(Duration::ZERO);
        };
        let negative = v.starts_with('-');
        let d = parse_go_duration(v.trim_start_matches(['-', '+']))
            .ok_or_else(|| format!("time: invalid duration {}", go_quote(&v)))?;
        if negative && !d.is_zero() {
            return Err(format!("Interval {} cannot be negative", go_quote(name)));
        }
        if !d.is_zero() && d < Duration::from_millis(1) {
            return Err(format!(
                "Interval {} cannot be less than 1ms",
                go_quote(name)
            ));
        }
        Ok(d)
    }

    pub(super) fn unused(&self) -> Option<&str> {
        self.items
            .iter()
            .find(|(_, _, used)| !used)
            .map(|(n, _, _)| n.as_str())
    }
}
