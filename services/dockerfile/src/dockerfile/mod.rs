//! The Dockerfile front end: parser, variable substitution and history text. Pure code, no I/O.
//!
//! - [`parse`] turns Dockerfile text into a [`Dockerfile`]: its parser directives, the global
//!   `ARG`s before the first `FROM`, and one [`Stage`] per `FROM`, each a list of
//!   [`Instruction`]s whose [`Args`] are typed but **unexpanded**: words keep the quotes and
//!   escapes Docker's parser leaves in them (`ENV A="x y"` keeps the value `"x y"`).
//! - [`expand`] / [`expand_words`] do Docker's variable substitution (`$VAR`, `${VAR:-x}`, quotes,
//!   escapes). The executor calls them at execution time, with the stage's env and build args,
//!   for the instructions Docker substitutes in: ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER
//!   VOLUME WORKDIR ARG (not RUN CMD ENTRYPOINT SHELL HEALTHCHECK ONBUILD MAINTAINER).
//!   [`expand`] also removes quotes and escapes, so ENV/LABEL/ARG keys and values must go
//!   through it even when they hold no variable.
//! - [`history_text`] / [`history_text_with_args`] give the `created_by` text Docker's classic
//!   builder records (`/bin/sh -c #(nop)  CMD ["sh"]`, `|1 V=2 /bin/sh -c make`, …).
//!
//! What the parser does, following Docker's reference:
//! - parser directives (`# syntax=…`, `# escape=\` or `` # escape=` ``, `# check=…`) only at
//!   the very top; the first comment, blank line or instruction ends them;
//! - comments (`#` first on a line) and blank lines are skipped, also inside a continuation;
//!   a line ending with the escape character continues on the next line (the escape character
//!   and the line break are removed, nothing is inserted);
//! - keywords are case-insensitive; flags (`--name=value`) are read before the arguments of
//!   every instruction and an unknown flag is an error, as in Docker;
//! - exec form is a valid JSON array of strings, anything else is shell form;
//! - heredocs (`RUN <<EOF`) are refused with an error.
//!
//! The parser is here; its rooms: `flags` (an instruction's `--name=value` flags),
//! `expand` (variable substitution), `history` (the `created_by` text) and `duration` (Go's
//! duration text, which HEALTHCHECK's flags and the history use).
//!
//! ```
//! use berth_dockerfile::dockerfile::{self, Args, Command};
//!
//! let df = dockerfile::parse("FROM scratch\nADD hello /\nCMD [\"./hello\"]\n").unwrap();
//! assert_eq!(df.stages.len(), 1);
//! assert_eq!(df.stages[0].base, "scratch");
//! let cmd = &df.stages[0].instructions[1];
//! assert_eq!(cmd.args, Args::Cmd(Command::Exec(vec!["./hello".into()])));
//! let shell = ["/bin/sh".to_string(), "-c".to_string()];
//! assert_eq!(dockerfile::history_text(cmd, &shell), r#"/bin/sh -c #(nop)  CMD ["./hello"]"#);
//!
//! let env = |name: &str| (name == "V").then(|| "1.2".to_string());
//! assert_eq!(dockerfile::expand("/opt/app-${V:-dev}", &env, '\\').unwrap(), "/opt/app-1.2");
//! ```

mod duration;
mod expand;
mod flags;
mod history;

pub use expand::{expand, expand_words};
pub use history::{history_text, history_text_with_args};

use berth_quote::go_quote;
use flags::Flags;
use std::fmt;
use std::time::Duration;

/// A parse error, naming the 1-based line of the instruction's first line (0 when the error
/// is about the whole file, e.g. an empty one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl ParseError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "Dockerfile: {}", self.message)
        } else {
            write!(f, "Dockerfile:{}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` said otherwise).
    pub escape: char,
    /// The `# syntax=` directive, if any (recorded, not acted on).
    pub syntax: Option<String>,
    /// The `ARG` instructions before the first `FROM` (each with [`Args::Arg`]).
    pub global_args: Vec<Instruction>,
    /// One stage per `FROM`, in order; never empty.
    pub stages: Vec<Stage>,
}

/// One build stage: a `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 0-based position among the stages.
    pub index: usize,
    /// The `AS name`, lowercased.
    pub name: Option<String>,
    /// FROM's image word, unexpanded (may hold `$VAR` from global ARGs).
    pub base: String,
    /// `--platform=…`, unexpanded.
    pub platform: Option<String>,
    /// Line of the `FROM`.
    pub line: usize,
    /// The `FROM` instruction itself (with [`Args::From`]), for messages.
    pub from: Instruction,
    /// Instructions after the `FROM`.
    pub instructions: Vec<Instruction>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    /// Upper-case keyword (`RUN`, `COPY`, …).
    pub keyword: String,
    /// The instruction as written, continuation lines joined (escape char and line break
    /// removed), surrounding whitespace trimmed.
    pub original: String,
    pub args: Args,
}

/// A command as RUN, CMD, ENTRYPOINT and HEALTHCHECK take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Shell form: run with the stage's SHELL (`/bin/sh -c` by default).
    Shell(String),
    /// Exec form: a JSON array of strings.
    Exec(Vec<String>),
}

impl Command {
    /// The argv Docker stores in the config (CMD, ENTRYPOINT) or runs (RUN): exec form as is,
    /// shell form appended to `shell`.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Shell(s) => f.write_str(s),
            Command::Exec(v) => f.write_str(&serde_json::to_string(v).unwrap_or_default()),
        }
    }
}

/// `HEALTHCHECK` options and command. Durations are zero and retries 0 when not given, as in
/// Docker's image config (meaning "the default").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub command: Command,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
}

impl Healthcheck {
    /// The `Test` field of the image config: `["CMD", args…]` for exec form,
    /// `["CMD-SHELL", command]` for shell form.
    pub fn test(&self) -> Vec<String> {
        match &self.command {
            Command::Exec(v) => std::iter::once("CMD".to_string())
                .chain(v.iter().cloned())
                .collect(),
            Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
        }
    }
}

/// The arguments of each instruction, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    From {
        image: String,
        /// `AS name`, lowercased.
        name: Option<String>,
        platform: Option<String>,
    },
    Run {
        command: Command,
        /// Each `--mount=…` value, as written.
        mounts: Vec<String>,
        /// `--network=…`.
        network: Option<String>,
        /// `--security=…`.
        security: Option<String>,
    },
    Cmd(Command),
    Entrypoint(Command),
    /// Exec form only, at least one element.
    Shell(Vec<String>),
    /// `(key, value)`, both raw (quotes/escapes kept): run them through [`expand`].
    Env(Vec<(String, String)>),
    /// `(key, value)`, both raw (quotes/escapes kept): run them through [`expand`].
    Label(Vec<(String, String)>),
    /// `(name, default)`, both raw.
    Arg(Vec<(String, Option<String>)>),
    Copy {
        /// At least one.
        sources: Vec<String>,
        dest: String,
        /// `--from=stage|index|image`.
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
        link: bool,
    },
    Add {
        /// At least one.
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
        chmod: Option<String>,
        checksum: Option<String>,
        link: bool,
    },
    Workdir(String),
    User(String),
    Volume(Vec<String>),
    Expose(Vec<String>),
    StopSignal(String),
    /// `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    /// The trigger as written (e.g. `RUN make`), already checked by [`parse_instruction`],
    /// which the executor uses again when the image serves as a base.
    Onbuild(String),
    Maintainer(String),
}

impl Dockerfile {
    /// The index of the stage named `name_or_index`: an `AS` name (case-insensitive) or a
    /// number below the number of stages.
    pub fn stage_index(&self, name_or_index: &str) -> Option<usize> {
        let wanted = name_or_index.to_ascii_lowercase();
        if let Some(stage) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(wanted.as_str()))
        {
            return Some(stage.index);
        }
        match name_or_index.parse::<usize>() {
            Ok(i) if i < self.stages.len() => Some(i),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();

    let mut escape = '\\';
    let mut syntax = None;
    let mut seen: Vec<String> = Vec::new();
    let mut first = 0;
    while let Some((key, value)) = lines.get(first).and_then(|l| directive(l)) {
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            break; // an unknown directive is a comment, and ends the directives
        }
        if seen.contains(&key) {
            return Err(ParseError::new(
                first + 1,
                format!("only one {key} parser directive can be used"),
            ));
        }
        match key.as_str() {
            "escape" => {
                escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(ParseError::new(
                            first + 1,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            "syntax" => syntax = Some(value),
            _ => {}
        }
        seen.push(key);
        first += 1;
    }

    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut any = false;
    for (line, text) in logical_lines(&lines, first, escape) {
        any = true;
        let inst = parse_instruction(&text, line, escape)?;
        match &inst.args {
            Args::From {
                image,
                name,
                platform,
            } => {
                if let Some(n) = name {
                    if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                        return Err(ParseError::new(line, format!("duplicate stage name {n:?}")));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: name.clone(),
                    base: image.clone(),
                    platform: platform.clone(),
                    line,
                    from: inst.clone(),
                    instructions: Vec::new(),
                });
            }
            Args::Arg(_) if stages.is_empty() => global_args.push(inst),
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(inst),
                None => {
                    return Err(ParseError::new(
                        line,
                        format!(
                            "{} before the first FROM: no build stage in current context \
                             (only ARG may come before FROM)",
                            inst.keyword
                        ),
                    ))
                }
            },
        }
    }
    if !any {
        return Err(ParseError::new(0, "file with no instructions"));
    }
    if stages.is_empty() {
        return Err(ParseError::new(
            0,
            "no FROM instruction: the Dockerfile contains no stages to build",
        ));
    }
    Ok(Dockerfile {
        escape,
        syntax,
        global_args,
        stages,
    })
}

/// `# key=value` at the top of the file: the key lowercased, the value trimmed.
fn directive(line: &str) -> Option<(String, String)> {
    let body = line.strip_prefix('#')?;
    let (key, value) = body.split_once('=')?;
    let key = key.trim_matches([' ', '\t']);
    let value = value.trim_matches([' ', '\t']);
    let mut chars = key.chars();
    let valid_key = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    (valid_key && !value.is_empty()).then(|| (key.to_ascii_lowercase(), value.to_string()))
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing escape character (plus trailing blanks after it); `true` when the line
/// ends the instruction.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(rest) => (rest, false),
        None => (line, true),
    }
}

/// Joins continuation lines: `(line of the first line, text)` per instruction.
fn logical_lines(lines: &[&str], first: usize, escape: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut i = first;
    while i < lines.len() {
        let start = i + 1;
        let raw = lines[i].trim_start();
        i += 1;
        if raw.is_empty() || is_comment(raw) {
            continue;
        }
        let (head, mut ended) = trim_continuation(raw, escape);
        let mut text = head.to_string();
        while !ended && i < lines.len() {
            let raw = lines[i];
            i += 1;
            // Docker skips comment lines and empty lines inside a continuation.
            if is_comment(raw) || raw.trim().is_empty() {
                continue;
            }
            let (part, end) = trim_continuation(raw, escape);
            text.push_str(part);
            ended = end;
        }
        if !text.trim().is_empty() {
            out.push((start, text));
        }
    }
    out
}

/// Parses one instruction's text (continuations already joined), e.g. an ONBUILD trigger
/// taken from a base image's config. `line` is used for errors.
pub fn parse_instruction(text: &str, line: usize, escape: char) -> Result<Instruction, ParseError> {
    let original = text.trim().to_string();
    let err = |message: String| ParseError::new(line, message);
    let (word, rest) = split_first_word(&original);
    let keyword = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        let hint = KEYWORDS
            .iter()
            .find(|k| edit_distance(k, &keyword) <= 2 && keyword.len() > 2)
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        return Err(err(format!("unknown instruction: {keyword}{hint}")));
    }
    let (mut flags, rest) = Flags::extract(rest).map_err(&err)?;
    let args = instruction_args(&keyword, &mut flags, rest, escape).map_err(&err)?;
    if let Some(name) = flags.unused() {
        return Err(err(format!("unknown flag: {name}")));
    }
    Ok(Instruction {
        line,
        keyword,
        original,
        args,
    })
}

/// The typed arguments of one instruction; `keyword` is one of [`KEYWORDS`].
fn instruction_args(
    keyword: &str,
    flags: &mut Flags,
    rest: &str,
    escape: char,
) -> Result<Args, String> {
    let rest = rest.trim();
    let one_arg = |rest: &str| -> Result<String, String> {
        if rest.is_empty() {
            Err(format!("{keyword} requires exactly one argument"))
        } else {
            Ok(rest.to_string())
        }
    };
    let args = match keyword {
        "FROM" => from_args(flags, rest)?,
        "RUN" => {
            let mounts = flags.strings("mount");
            let network = flags.string("network")?;
            let security = flags.string("security")?;
            refuse_heredoc(keyword, rest)?;
            Args::Run {
                command: required_command(keyword, rest)?,
                mounts,
                network,
                security,
            }
        }
        "CMD" => Args::Cmd(required_command(keyword, rest)?),
        "ENTRYPOINT" => Args::Entrypoint(required_command(keyword, rest)?),
        "SHELL" => match parse_command(rest) {
            Command::Exec(v) if v.is_empty() => {
                return Err("SHELL requires at least one argument".into())
            }
            Command::Exec(v) => Args::Shell(v),
            Command::Shell(_) => {
                return Err("SHELL requires the arguments to be in JSON form".into())
            }
        },
        "ENV" => Args::Env(parse_name_values(keyword, rest, escape)?),
        "LABEL" => Args::Label(parse_name_values(keyword, rest, escape)?),
        "ARG" => arg_args(rest, escape)?,
        "COPY" | "ADD" => copy_args(keyword, flags, rest)?,
        "WORKDIR" => Args::Workdir(one_arg(rest)?),
        "USER" => Args::User(one_arg(rest)?),
        "STOPSIGNAL" => Args::StopSignal(one_arg(rest)?),
        "MAINTAINER" => Args::Maintainer(one_arg(rest)?),
        "VOLUME" => {
            let volumes = json_or_words(rest);
            if volumes.is_empty() {
                return Err("VOLUME requires at least one argument".into());
            }
            if volumes.iter().any(|v| v.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            Args::Volume(volumes)
        }
        "EXPOSE" => {
            let ports: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if ports.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            Args::Expose(ports)
        }
        "HEALTHCHECK" => Args::Healthcheck(parse_healthcheck(flags, rest)?),
        "ONBUILD" => onbuild_args(rest, escape)?,
        _ => unreachable!("keyword checked against KEYWORDS"),
    };
    Ok(args)
}

/// `FROM [--platform=…] image [AS name]`.
fn from_args(flags: &mut Flags, rest: &str) -> Result<Args, String> {
    let platform = flags.string("platform")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let name = match words.as_slice() {
        [_] => None,
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let lower = name.to_ascii_lowercase();
            if !valid_stage_name(&lower) {
                return Err(format!(
                    "invalid name for build stage: {name:?}, name can't start with a \
                     number or contain symbols"
                ));
            }
            Some(lower)
        }
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    Ok(Args::From {
        image: words[0].to_string(),
        name,
        platform,
    })
}

/// `ARG name[=default] …`.
fn arg_args(rest: &str, escape: char) -> Result<Args, String> {
    let words = split_words(rest, escape);
    if words.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    let mut out = Vec::new();
    for w in words {
        let (name, value) = match w.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (w, None),
        };
        if name.is_empty() {
            return Err("ARG names can not be blank".into());
        }
        out.push((name, value));
    }
    Ok(Args::Arg(out))
}

/// `COPY` and `ADD`: their flags, then sources and a destination.
fn copy_args(keyword: &str, flags: &mut Flags, rest: &str) -> Result<Args, String> {
    // COPY alone takes --from; ADD alone --checksum. Flags are read in this order so that
    // the first bad one is the one reported, as before.
    let from = match keyword {
        "COPY" => flags.string("from")?,
        _ => None,
    };
    let chown = flags.string("chown")?;
    let chmod = flags.string("chmod")?;
    let checksum = match keyword {
        "ADD" => flags.string("checksum")?,
        _ => None,
    };
    let link = flags.bool("link")?;
    refuse_heredoc(keyword, rest)?;
    let (sources, dest) = sources_and_dest(keyword, rest)?;
    Ok(match keyword {
        "COPY" => Args::Copy {
            sources,
            dest,
            from,
            chown,
            chmod,
            link,
        },
        _ => Args::Add {
            sources,
            dest,
            chown,
            chmod,
            checksum,
            link,
        },
    })
}

/// `ONBUILD trigger`: the trigger is checked now, kept as written.
fn onbuild_args(rest: &str, escape: char) -> Result<Args, String> {
    if rest.is_empty() {
        return Err("ONBUILD requires at least one argument".into());
    }
    let (trigger, _) = split_first_word(rest);
    match trigger.to_ascii_uppercase().as_str() {
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        t @ ("FROM" | "MAINTAINER") => {
            return Err(format!("{t} isn't allowed as an ONBUILD trigger"))
        }
        _ => {}
    }
    parse_instruction(rest, 0, escape).map_err(|e| format!("ONBUILD: {}", e.message))?;
    Ok(Args::Onbuild(rest.to_string()))
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn split_first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Docker's rule: a valid JSON array of strings is exec form, anything else shell form.
fn parse_command(rest: &str) -> Command {
    let rest = rest.trim();
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return Command::Exec(v);
        }
    }
    Command::Shell(rest.to_string())
}

fn required_command(keyword: &str, rest: &str) -> Result<Command, String> {
    match parse_command(rest) {
        Command::Shell(s) if s.is_empty() => {
            Err(format!("{keyword} requires at least one argument"))
        }
        Command::Exec(v) if v.is_empty() && keyword == "RUN" => {
            Err(format!("{keyword} requires at least one argument"))
        }
        c => Ok(c),
    }
}

/// A JSON array of strings, or whitespace-separated words.
fn json_or_words(rest: &str) -> Vec<String> {
    match parse_command(rest) {
        Command::Exec(v) => v,
        Command::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
    }
}

fn sources_and_dest(keyword: &str, rest: &str) -> Result<(Vec<String>, String), String> {
    let mut words = json_or_words(rest);
    match words.len() {
        0 => Err(format!("{keyword} requires at least two arguments")),
        1 => Err(format!(
            "{keyword} requires at least two arguments, but only one was provided. Destination \
             could not be determined."
        )),
        _ => {
            let dest = words.pop().unwrap_or_default();
            Ok((words, dest))
        }
    }
}

fn refuse_heredoc(keyword: &str, rest: &str) -> Result<(), String> {
    let mut search = rest;
    while let Some(i) = search.find("<<") {
        let after = &search[i + 2..];
        let candidate = after
            .strip_prefix('-')
            .unwrap_or(after)
            .trim_start_matches(['"', '\'']);
        if !after.starts_with('<')
            && candidate
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            let word: String = candidate
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            return Err(format!(
                "heredocs are not supported ({keyword} <<{word}): put the content in a file of \
                 the build context and COPY it"
            ));
        }
        search = after.trim_start_matches('<');
    }
    Ok(())
}

/// ENV and LABEL: `K=V K2="v 2"` or the legacy `K value words`.
fn parse_name_values(
    keyword: &str,
    rest: &str,
    escape: char,
) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} requires at least one argument"));
    };
    if !first.contains('=') {
        let (name, value) = split_first_word(rest);
        if value.is_empty() {
            return Err(format!("{keyword} must have two arguments"));
        }
        return Ok(vec![(name.to_string(), value.to_string())]);
    }
    let mut out = Vec::new();
    for w in &words {
        let Some((name, value)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(w)
            ));
        };
        if name.is_empty() {
            return Err(format!("{keyword} names can not be blank"));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Splits at unquoted whitespace as Docker's parser does for ENV/LABEL/ARG: quotes and escapes
/// stay in the words (substitution removes them later); `""` is a word.
fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                continue;
            }
            None => {
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                } else if c == escape {
                    // An escape at the very end is dropped.
                    if let Some(n) = chars.next() {
                        word.push(c);
                        word.push(n);
                    }
                    continue;
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                } else if c == escape && q != '\'' {
                    if let Some(n) = chars.next() {
                        word.push(c);
                        word.push(n);
                    }
                    continue;
                }
            }
        }
        word.push(c);
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_healthcheck(flags: &mut Flags, rest: &str) -> Result<Option<Healthcheck>, String> {
    if rest.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".into());
    }
    let (kind, command) = split_first_word(rest);
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !command.is_empty() || !flags.items.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            Ok(None)
        }
        "CMD" => {
            let interval = flags.duration("interval")?;
            let timeout = flags.duration("timeout")?;
            let start_period = flags.duration("start-period")?;
            let start_interval = flags.duration("start-interval")?;
            let retries = match flags.string("retries")? {
                None => 0,
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if n < 0 => return Err(format!("--retries cannot be negative ({n})")),
                    Ok(n) => u32::try_from(n).map_err(|_| format!("--retries too large ({n})"))?,
                    Err(_) => return Err(format!("invalid value for --retries: {v:?}")),
                },
            };
            let command = match parse_command(command) {
                Command::Shell(s) if s.is_empty() => None,
                Command::Exec(v) if v.is_empty() => None,
                c => Some(c),
            }
            .ok_or("Missing command after HEALTHCHECK CMD")?;
            Ok(Some(Healthcheck {
                command,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            }))
        }
        _ => Err(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            go_quote(kind)
        )),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    //! The parser's tests; their helpers serve the other rooms' tests too.
    use super::*;

    pub(crate) fn sh() -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into()]
    }

    pub(crate) fn one(text: &str) -> Instruction {
        let df = parse(&format!("FROM scratch\n{text}\n")).unwrap();
        assert_eq!(df.stages[0].instructions.len(), 1, "{text}");
        df.stages[0].instructions[0].clone()
    }

    fn args(text: &str) -> Args {
        one(text).args
    }

    fn err(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    pub(crate) fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    pub(crate) fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    // ---- whole files ---------------------------------------------------------------------

    #[test]
    fn seed_dockerfile() {
        let df = parse("FROM scratch\nADD hello /\nCMD [\"./hello\"]\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert!(df.global_args.is_empty());
        let stage = &df.stages[0];
        assert_eq!(
            (stage.index, stage.line, stage.base.as_str()),
            (0, 1, "scratch")
        );
        assert_eq!(stage.name, None);
        assert_eq!(stage.instructions[0].line, 2);
        assert_eq!(
            stage.instructions[0].args,
            Args::Add {
                sources: strs(&["hello"]),
                dest: "/".into(),
                chown: None,
                chmod: None,
                checksum: None,
                link: false
            }
        );
        assert_eq!(stage.instructions[1].keyword, "CMD");
        assert_eq!(stage.instructions[1].original, "CMD [\"./hello\"]");
        assert_eq!(
            stage.instructions[1].args,
            Args::Cmd(Command::Exec(strs(&["./hello"])))
        );
    }

    #[test]
    fn multi_stage_with_names_platform_and_global_args() {
        let df = parse(
            "ARG VERSION=1.0 OTHER\n\
             FROM --platform=$BUILDPLATFORM golang:${VERSION} AS Builder\n\
             RUN go build\n\
             from alpine as runtime\n\
             COPY --from=builder /out /app\n\
             FROM scratch\n\
             COPY --from=1 /app /app\n",
        )
        .unwrap();
        assert_eq!(df.global_args.len(), 1);
        assert_eq!(
            df.global_args[0].args,
            Args::Arg(vec![
                ("VERSION".into(), Some("1.0".into())),
                ("OTHER".into(), None)
            ])
        );
        assert_eq!(df.stages.len(), 3);
        let b = &df.stages[0];
        assert_eq!(b.name.as_deref(), Some("builder"));
        assert_eq!(b.base, "golang:${VERSION}");
        assert_eq!(b.platform.as_deref(), Some("$BUILDPLATFORM"));
        assert_eq!(b.line, 2);
        assert_eq!(df.stages[1].name.as_deref(), Some("runtime"));
        assert_eq!(df.stages[1].line, 4);
        assert_eq!(df.stages[2].name, None);
        assert_eq!(df.stage_index("builder"), Some(0));
        assert_eq!(df.stage_index("BUILDER"), Some(0));
        assert_eq!(df.stage_index("runtime"), Some(1));
        assert_eq!(df.stage_index("2"), Some(2));
        assert_eq!(df.stage_index("3"), None);
        assert_eq!(df.stage_index("nope"), None);
        match &df.stages[1].instructions[0].args {
            Args::Copy { from, .. } => assert_eq!(from.as_deref(), Some("builder")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stage_name_errors() {
        assert_eq!(
            err("FROM a AS 1x\n").message,
            "invalid name for build stage: \"1x\", name can't start with a number or contain \
             symbols"
        );
        let e = err("FROM a AS x\nFROM b AS X\n");
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "duplicate stage name \"x\"")
        );
        assert_eq!(
            err("FROM a b\n").message,
            "FROM requires either one or three arguments"
        );
        assert_eq!(
            err("FROM a FOR b\n").message,
            "FROM requires either one or three arguments"
        );
        assert_eq!(
            err("FROM\n").message,
            "FROM requires either one or three arguments"
        );
    }

    #[test]
    fn empty_and_fromless_files_are_errors() {
        assert_eq!(err("").message, "file with no instructions");
        assert_eq!(
            err("\n# only a comment\n\n").message,
            "file with no instructions"
        );
        assert!(err("ARG A=1\n").message.contains("no stages"));
        let e = err("# hi\n\nRUN echo\nFROM scratch\n");
        assert_eq!(e.line, 3);
        assert!(e.message.starts_with("RUN before the first FROM"), "{e}");
        assert_eq!(e.to_string(), format!("Dockerfile:3: {}", e.message));
        assert_eq!(err("").to_string(), "Dockerfile: file with no instructions");
    }

    #[test]
    fn unknown_instruction_names_its_line() {
        let e = err("FROM scratch\n\n# c\nFROBNICATE all the things\n");
        assert_eq!(e.line, 4);
        assert_eq!(e.message, "unknown instruction: FROBNICATE");
        assert_eq!(
            e.to_string(),
            "Dockerfile:4: unknown instruction: FROBNICATE"
        );
        assert_eq!(
            err("FROM scratch\nRUNN echo\n").message,
            "unknown instruction: RUNN (did you mean RUN?)"
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let df = parse("from scratch\nRuN echo hi\ncmd [\"x\"]\n").unwrap();
        let i = &df.stages[0].instructions;
        assert_eq!(i[0].keyword, "RUN");
        assert_eq!(i[0].original, "RuN echo hi");
        assert_eq!(i[1].keyword, "CMD");
    }

    // ---- lines, comments, directives ------------------------------------------------------

    #[test]
    fn continuations_join_and_skip_comments_and_empty_lines() {
        let text = "FROM scratch\n\
                    RUN apt-get update \\\n\
                    # a comment inside\n\
                    \n\
                    \x20   && apt-get install -y curl \\  \n\
                    \x20     # indented comment\n\
                    \x20   && echo done\n\
                    CMD x\n";
        let df = parse(text).unwrap();
        let run = &df.stages[0].instructions[0];
        assert_eq!(run.line, 2);
        assert_eq!(
            run.args,
            Args::Run {
                command: Command::Shell(
                    "apt-get update     && apt-get install -y curl     && echo done".into()
                ),
                mounts: vec![],
                network: None,
                security: None
            }
        );
        assert_eq!(df.stages[0].instructions[1].line, 8);
    }

    #[test]
    fn crlf_bom_and_trailing_continuation_at_eof() {
        let df = parse("\u{feff}FROM scratch\r\nRUN a \\\r\n  b\r\nCMD c \\").unwrap();
        let i = &df.stages[0].instructions;
        assert_eq!(args_command(&i[0]), Command::Shell("a   b".into()));
        assert_eq!(i[1].args, Args::Cmd(Command::Shell("c".into())));
    }

    fn args_command(inst: &Instruction) -> Command {
        match &inst.args {
            Args::Run { command, .. } => command.clone(),
            Args::Cmd(c) | Args::Entrypoint(c) => c.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn directives_at_the_top() {
        let df = parse("# syntax=docker/dockerfile:1\n#ESCAPE = `\nFROM scratch\n").unwrap();
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.escape, '`');
        let df = parse("# escape=\\\nFROM scratch\n").unwrap();
        assert_eq!(df.escape, '\\');
        // After a comment, a blank line or an unknown directive: only a comment.
        for text in [
            "# hello\n# escape=`\nFROM scratch\n",
            "\n# escape=`\nFROM scratch\n",
            "# unknowndirective=value\n# escape=`\nFROM scratch\n",
            "FROM scratch\n# escape=`\n",
        ] {
            assert_eq!(parse(text).unwrap().escape, '\\', "{text}");
        }
        let e = err("# escape=`\n# escape=\\\nFROM scratch\n");
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "only one escape parser directive can be used")
        );
        let e = err("# escape=x\nFROM scratch\n");
        assert_eq!(e.message, "invalid escape token 'x' does not match ` or \\");
    }

    #[test]
    fn backtick_escape_windows_style() {
        let text =
            "# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n\
                    RUN powershell -Command `\n    Write-Host hi\n";
        let df = parse(text).unwrap();
        assert_eq!(df.escape, '`');
        let i = &df.stages[0].instructions;
        assert_eq!(i.len(), 3);
        match &i[0].args {
            Args::Copy { sources, dest, .. } => {
                assert_eq!(sources, &strs(&["testfile.txt"]));
                assert_eq!(dest, "c:\\");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(args_command(&i[1]), Command::Shell("dir c:\\".into()));
        assert_eq!(
            args_command(&i[2]),
            Command::Shell("powershell -Command     Write-Host hi".into())
        );
        assert_eq!(i[2].line, 6);
        // Without the directive, the trailing backslash continues the line.
        let df = parse("FROM x\nRUN dir c:\\\nRUN next\n").unwrap();
        assert_eq!(df.stages[0].instructions.len(), 1);
        assert_eq!(
            args_command(&df.stages[0].instructions[0]),
            Command::Shell("dir c:RUN next".into())
        );
        // Substitution follows the escape character too.
        let lookup = env(&[("A", "1")]);
        assert_eq!(expand("`$A\\$A", &lookup, '`').unwrap(), "$A\\1");
    }

    // ---- instructions ---------------------------------------------------------------------

    #[test]
    fn run_forms_and_flags() {
        assert_eq!(
            args("RUN [\"echo\", \"a b\"]"),
            Args::Run {
                command: Command::Exec(strs(&["echo", "a b"])),
                mounts: vec![],
                network: None,
                security: None
            }
        );
        assert_eq!(
            args(
                "RUN --mount=type=cache,target=/root/.cache --mount=type=bind,source=\"a b\" \
                 --network=none --security=insecure make all"
            ),
            Args::Run {
                command: Command::Shell("make all".into()),
                mounts: strs(&["type=cache,target=/root/.cache", "type=bind,source=a b"]),
                network: Some("none".into()),
                security: Some("insecure".into())
            }
        );
        // Not a valid JSON array of strings: shell form.
        for text in ["[\"a\", 1]", "[\"a\",]", "[a]", "[\"a\"] b"] {
            assert_eq!(
                args_command(&one(&format!("RUN {text}"))),
                Command::Shell(text.into())
            );
        }
        let e = err("FROM x\nRUN --frobnicate echo\n");
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "unknown flag: frobnicate")
        );
        assert_eq!(
            err("FROM x\nRUN --network echo\n").message,
            "missing a value on flag: network"
        );
        assert_eq!(
            err("FROM x\nRUN --network=a --network=b echo\n").message,
            "duplicate flag specified: network"
        );
        assert_eq!(
            err("FROM x\nRUN\n").message,
            "RUN requires at least one argument"
        );
        assert_eq!(
            err("FROM x\nRUN []\n").message,
            "RUN requires at least one argument"
        );
        assert_eq!(
            args_command(&one("RUN -- --weird")),
            Command::Shell("--weird".into())
        );
    }

    #[test]
    fn cmd_entrypoint_shell() {
        assert_eq!(
            args("CMD echo $HOME"),
            Args::Cmd(Command::Shell("echo $HOME".into()))
        );
        assert_eq!(args("CMD []"), Args::Cmd(Command::Exec(vec![])));
        assert_eq!(
            args("ENTRYPOINT [\"/bin/app\", \"--flag\"]"),
            Args::Entrypoint(Command::Exec(strs(&["/bin/app", "--flag"])))
        );
        assert_eq!(
            args("ENTRYPOINT exec app"),
            Args::Entrypoint(Command::Shell("exec app".into()))
        );
        assert_eq!(
            args("SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]"),
            Args::Shell(strs(&["/bin/bash", "-o", "pipefail", "-c"]))
        );
        assert_eq!(
            err("FROM x\nSHELL /bin/bash -c\n").message,
            "SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            err("FROM x\nSHELL []\n").message,
            "SHELL requires at least one argument"
        );
        assert_eq!(
            err("FROM x\nCMD\n").message,
            "CMD requires at least one argument"
        );
        assert_eq!(
            Command::Shell("x".into()).argv(&sh()),
            strs(&["/bin/sh", "-c", "x"])
        );
        assert_eq!(Command::Exec(strs(&["a"])).to_string(), "[\"a\"]");
    }

    #[test]
    fn env_and_label_both_syntaxes() {
        assert_eq!(
            args("ENV MY_NAME=\"John Doe\" MY_DOG=Rex\\ The\\ Dog MY_CAT=fluffy"),
            Args::Env(vec![
                ("MY_NAME".into(), "\"John Doe\"".into()),
                ("MY_DOG".into(), "Rex\\ The\\ Dog".into()),
                ("MY_CAT".into(), "fluffy".into()),
            ])
        );
        assert_eq!(
            args("ENV MY_VAR my-value with  spaces"),
            Args::Env(vec![("MY_VAR".into(), "my-value with  spaces".into())])
        );
        assert_eq!(
            args("ENV EMPTY= B=''"),
            Args::Env(vec![("EMPTY".into(), "".into()), ("B".into(), "''".into())])
        );
        assert_eq!(
            args("LABEL \"com.example.vendor\"=\"ACME Incorporated\" version=1.0"),
            Args::Label(vec![
                (
                    "\"com.example.vendor\"".into(),
                    "\"ACME Incorporated\"".into()
                ),
                ("version".into(), "1.0".into()),
            ])
        );
        assert_eq!(
            args("LABEL description=\"This text illustrates \\\n that label-values can span multiple lines.\""),
            Args::Label(vec![(
                "description".into(),
                "\"This text illustrates  that label-values can span multiple lines.\"".into()
            )])
        );
        // Values come out of expand() as Docker stores them.
        let lookup = env(&[]);
        assert_eq!(expand("\"John Doe\"", &lookup, '\\').unwrap(), "John Doe");
        assert_eq!(
            expand("Rex\\ The\\ Dog", &lookup, '\\').unwrap(),
            "Rex The Dog"
        );
        assert_eq!(expand("''", &lookup, '\\').unwrap(), "");

        assert_eq!(
            err("FROM x\nENV\n").message,
            "ENV requires at least one argument"
        );
        assert_eq!(
            err("FROM x\nENV A\n").message,
            "ENV must have two arguments"
        );
        assert_eq!(
            err("FROM x\nENV A=1 B\n").message,
            "Syntax error - can't find = in \"B\". Must be of the form: name=value"
        );
        assert_eq!(
            err("FROM x\nLABEL =x\n").message,
            "LABEL names can not be blank"
        );
    }

    #[test]
    fn arg_forms() {
        assert_eq!(args("ARG user1"), Args::Arg(vec![("user1".into(), None)]));
        assert_eq!(
            args("ARG buildno=1 \"q=a b\" empty="),
            Args::Arg(vec![
                ("buildno".into(), Some("1".into())),
                ("\"q".into(), Some("a b\"".into())),
                ("empty".into(), Some("".into())),
            ])
        );
        assert_eq!(
            err("FROM x\nARG\n").message,
            "ARG requires at least one argument"
        );
        assert_eq!(
            err("FROM x\nARG =1\n").message,
            "ARG names can not be blank"
        );
    }

    #[test]
    fn copy_and_add() {
        assert_eq!(
            args("COPY --from=build --chown=55:mygroup --chmod=644 --link a b* /dest/"),
            Args::Copy {
                sources: strs(&["a", "b*"]),
                dest: "/dest/".into(),
                from: Some("build".into()),
                chown: Some("55:mygroup".into()),
                chmod: Some("644".into()),
                link: true
            }
        );
        assert_eq!(
            args("COPY [\"file with space\", \"/dest dir/\"]"),
            Args::Copy {
                sources: strs(&["file with space"]),
                dest: "/dest dir/".into(),
                from: None,
                chown: None,
                chmod: None,
                link: false
            }
        );
        assert_eq!(
            args("ADD --checksum=sha256:abc --link=false https://example.com/x.tar.gz /x"),
            Args::Add {
                sources: strs(&["https://example.com/x.tar.gz"]),
                dest: "/x".into(),
                chown: None,
                chmod: None,
                checksum: Some("sha256:abc".into()),
                link: false
            }
        );
        assert_eq!(
            err("FROM x\nCOPY onlyone\n").message,
            "COPY requires at least two arguments, but only one was provided. Destination could \
             not be determined."
        );
        assert_eq!(
            err("FROM x\nADD\n").message,
            "ADD requires at least two arguments"
        );
        assert_eq!(
            err("FROM x\nADD --from=a b c\n").message,
            "unknown flag: from"
        );
        assert_eq!(
            err("FROM x\nCOPY --link=maybe a b\n").message,
            "expecting boolean value for flag link, not: maybe"
        );
    }

    #[test]
    fn heredocs_are_refused() {
        let e = err("FROM x\nRUN <<EOF\necho hi\nEOF\n");
        assert_eq!(e.line, 2);
        assert!(
            e.message
                .starts_with("heredocs are not supported (RUN <<EOF)"),
            "{e}"
        );
        assert!(err("FROM x\nCOPY <<-\"END\" /x\n")
            .message
            .contains("<<END"));
        // Here-strings and shifts are not heredocs.
        one("RUN cat <<< hi");
        one("RUN echo $((1 << 2))");
    }

    #[test]
    fn simple_string_instructions() {
        assert_eq!(
            args("WORKDIR /path/to/$DIRNAME"),
            Args::Workdir("/path/to/$DIRNAME".into())
        );
        assert_eq!(args("WORKDIR /a b"), Args::Workdir("/a b".into()));
        assert_eq!(args("USER patrick:1000"), Args::User("patrick:1000".into()));
        assert_eq!(
            args("STOPSIGNAL SIGKILL"),
            Args::StopSignal("SIGKILL".into())
        );
        assert_eq!(
            args("MAINTAINER Jane <j@example.com>"),
            Args::Maintainer("Jane <j@example.com>".into())
        );
        for kw in ["WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"] {
            assert_eq!(
                err(&format!("FROM x\n{kw}\n")).message,
                format!("{kw} requires exactly one argument")
            );
        }
        assert_eq!(
            args("EXPOSE 80/tcp 80/udp  8080"),
            Args::Expose(strs(&["80/tcp", "80/udp", "8080"]))
        );
        assert_eq!(
            err("FROM x\nEXPOSE\n").message,
            "EXPOSE requires at least one argument"
        );
        assert_eq!(args("VOLUME [\"/data\"]"), Args::Volume(strs(&["/data"])));
        assert_eq!(
            args("VOLUME /var/log /var/db"),
            Args::Volume(strs(&["/var/log", "/var/db"]))
        );
        assert_eq!(
            err("FROM x\nVOLUME\n").message,
            "VOLUME requires at least one argument"
        );
        assert_eq!(
            err("FROM x\nVOLUME [\"\"]\n").message,
            "VOLUME specified can not be an empty string"
        );
        assert_eq!(err("FROM x\nUSER --x=1 me\n").message, "unknown flag: x");
    }

    #[test]
    fn healthcheck() {
        assert_eq!(args("HEALTHCHECK NONE"), Args::Healthcheck(None));
        assert_eq!(args("healthcheck none"), Args::Healthcheck(None));
        let Args::Healthcheck(Some(h)) = args(
            "HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=500ms \
             --retries=3 CMD curl -f http://localhost/ || exit 1",
        ) else {
            panic!()
        };
        assert_eq!(h.interval, Duration::from_secs(300));
        assert_eq!(h.timeout, Duration::from_secs(3));
        assert_eq!(h.start_period, Duration::from_secs(90));
        assert_eq!(h.start_interval, Duration::from_millis(500));
        assert_eq!(h.retries, 3);
        assert_eq!(
            h.test(),
            strs(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"])
        );
        let Args::Healthcheck(Some(h)) = args("HEALTHCHECK CMD [\"/bin/check\", \"-q\"]") else {
            panic!()
        };
        assert_eq!(h.test(), strs(&["CMD", "/bin/check", "-q"]));
        assert_eq!((h.interval, h.retries), (Duration::ZERO, 0));

        for (text, message) in [
            ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
            ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
            (
                "HEALTHCHECK --retries=1 NONE",
                "HEALTHCHECK NONE takes no arguments",
            ),
            ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
            (
                "HEALTHCHECK RUN x",
                "Unknown type \"RUN\" in HEALTHCHECK (try CMD)",
            ),
            (
                "HEALTHCHECK --retries=-1 CMD x",
                "--retries cannot be negative (-1)",
            ),
            (
                "HEALTHCHECK --interval=-1s CMD x",
                "Interval \"interval\" cannot be negative",
            ),
            (
                "HEALTHCHECK --timeout=10us CMD x",
                "Interval \"timeout\" cannot be less than 1ms",
            ),
            (
                "HEALTHCHECK --interval=5 CMD x",
                "time: invalid duration \"5\"",
            ),
            ("HEALTHCHECK --bogus=1 CMD x", "unknown flag: bogus"),
        ] {
            assert_eq!(err(&format!("FROM x\n{text}\n")).message, message, "{text}");
        }
    }

    #[test]
    fn onbuild() {
        assert_eq!(
            args("ONBUILD ADD . /app/src"),
            Args::Onbuild("ADD . /app/src".into())
        );
        assert_eq!(
            args("ONBUILD run --mount=type=cache,target=/c make"),
            Args::Onbuild("run --mount=type=cache,target=/c make".into())
        );
        for (text, message) in [
            ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
            ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
            ("ONBUILD maintainer x", "MAINTAINER isn't allowed as an ONBUILD trigger"),
            ("ONBUILD", "ONBUILD requires at least one argument"),
            ("ONBUILD FROBNICATE", "ONBUILD: unknown instruction: FROBNICATE"),
            ("ONBUILD COPY a", "ONBUILD: COPY requires at least two arguments, but only one was provided. Destination could not be determined."),
        ] {
            assert_eq!(err(&format!("FROM x\n{text}\n")).message, message, "{text}");
        }
        let trigger = parse_instruction("RUN make", 7, '\\').unwrap();
        assert_eq!((trigger.line, trigger.keyword.as_str()), (7, "RUN"));
    }

    #[test]
    fn every_instruction_in_one_file() {
        let text = r#"# syntax=docker/dockerfile:1
ARG BASE=alpine
FROM $BASE AS base
LABEL a=b
MAINTAINER me
RUN echo hi
CMD ["sh"]
ENTRYPOINT ["/init"]
SHELL ["/bin/sh", "-c"]
ENV A=1
ARG B
COPY a /a
ADD b /b
WORKDIR /w
USER u
VOLUME /v
EXPOSE 80
STOPSIGNAL SIGTERM
HEALTHCHECK NONE
ONBUILD RUN x
"#;
        let df = parse(text).unwrap();
        let keywords: Vec<&str> = df.stages[0]
            .instructions
            .iter()
            .map(|i| i.keyword.as_str())
            .collect();
        assert_eq!(
            keywords,
            [
                "LABEL",
                "MAINTAINER",
                "RUN",
                "CMD",
                "ENTRYPOINT",
                "SHELL",
                "ENV",
                "ARG",
                "COPY",
                "ADD",
                "WORKDIR",
                "USER",
                "VOLUME",
                "EXPOSE",
                "STOPSIGNAL",
                "HEALTHCHECK",
                "ONBUILD"
            ]
        );
        let lines: Vec<usize> = df.stages[0].instructions.iter().map(|i| i.line).collect();
        assert_eq!(lines, (4..=20).collect::<Vec<_>>());
    }

    #[test]
    fn env_chain_as_in_docs() {
        // ENV abc=hello / ENV abc=bye def=$abc / ENV ghi=$abc: each instruction sees the env
        // from before it, so def=hello and ghi=bye.
        let mut state: Vec<(String, String)> = Vec::new();
        for line in ["ENV abc=hello", "ENV abc=bye def=$abc", "ENV ghi=$abc"] {
            let Args::Env(kv) = args(line) else { panic!() };
            let before = state.clone();
            let lookup = move |n: &str| {
                before
                    .iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            };
            for (k, v) in kv {
                let v = expand(&v, &lookup, '\\').unwrap();
                state.push((k, v));
            }
        }
        let get = |n: &str| state.iter().rev().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(
            (get("abc"), get("def"), get("ghi")),
            ("bye".into(), "hello".into(), "bye".into())
        );
    }
}
