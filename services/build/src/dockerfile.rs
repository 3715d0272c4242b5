//! The Dockerfile front end: parser, variable substitution and history text. Pure code, no I/O.
//!
//! - [`parse`] turns Dockerfile text into a [`Dockerfile`]: parser directives, the global
//!   `ARG`s before the first `FROM`, and one [`Stage`] per `FROM`, each a list of
//!   [`Instruction`]s whose [`Args`] are typed but **unexpanded**: words keep the quotes and
//!   escapes Docker's parser leaves in them.
//! - [`expand`] / [`expand_words`] do Docker's variable substitution (`$VAR`, `${VAR:-x}`, quotes,
//!   escapes). The executor calls them at execution time, with the stage's env and build args,
//!   for the instructions Docker substitutes in: ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER
//!   VOLUME WORKDIR ARG (not RUN CMD ENTRYPOINT SHELL HEALTHCHECK ONBUILD). [`expand`] also
//!   removes quotes and escapes, so ENV/LABEL/ARG values must go through it even when they hold
//!   no variable.
//! - [`history_text`] / [`history_text_with_args`] give the `created_by` text of Docker's
//!   classic builder.

use std::fmt;
use std::time::Duration;

/// A parse error, naming the 1-based line of the instruction's first line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile:{line}: {message}")]
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

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` said otherwise).
    pub escape: char,
    /// The `# syntax=` directive, if any (recorded, not acted on).
    pub syntax: Option<String>,
    /// The `ARG` instructions before the first `FROM` (each with [`Args::Arg`]).
    pub global_args: Vec<Instruction>,
    /// One stage per `FROM`, in order.
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
    /// The `FROM` instruction itself (with [`Args::From`]), for messages and history.
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
    /// The instruction as written, continuation lines joined (escape char and newline removed).
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
        todo!()
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
    /// Exec form only.
    Shell(Vec<String>),
    /// `(key, value)`; both raw (quotes/escapes kept) — run them through [`expand`].
    Env(Vec<(String, String)>),
    /// `(key, value)`; both raw (quotes/escapes kept) — run them through [`expand`].
    Label(Vec<(String, String)>),
    /// `(name, default)`; both raw.
    Arg(Vec<(String, Option<String>)>),
    Copy {
        sources: Vec<String>,
        dest: String,
        /// `--from=stage|index|image`.
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
        link: bool,
    },
    Add {
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
    /// The trigger as written (e.g. `RUN make`); [`parse_instruction`] parses it.
    Onbuild(String),
    Maintainer(String),
}

impl Dockerfile {
    /// The index of the stage named `name_or_index` (case-insensitive AS name, or a number
    /// below the number of stages).
    pub fn stage_index(&self, name_or_index: &str) -> Option<usize> {
        let _ = name_or_index;
        todo!()
    }
}

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let _ = text;
    todo!()
}

/// Parses one instruction's text (continuations already joined), e.g. an ONBUILD trigger
/// taken from a base image's config. `line` is used for errors.
pub fn parse_instruction(text: &str, line: usize, escape: char) -> Result<Instruction, ParseError> {
    let _ = (text, line, escape);
    todo!()
}

/// Expands one word as Docker's shell-word lexer does: `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR:+alt}`, `${VAR-default}`, `${VAR+alt}`; `escape` followed by a character keeps the
/// character literally; single quotes suppress expansion, double quotes allow it; quotes are
/// removed. Unset variables expand to the empty string.
pub fn expand(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, String> {
    let _ = (word, lookup, escape);
    todo!()
}

/// Like [`expand`], then splits the result into words at unquoted whitespace (whitespace that
/// comes from a variable's value also splits, as in Docker).
pub fn expand_words(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, String> {
    let _ = (word, lookup, escape);
    todo!()
}

/// Docker classic builder's `created_by` for `inst`, run with the stage's `shell`
/// (`["/bin/sh", "-c"]` by default). See [`history_text_with_args`].
pub fn history_text(inst: &Instruction, shell: &[String]) -> String {
    history_text_with_args(inst, shell, &[])
}

/// Docker classic builder's `created_by`, with the build args in effect for RUN
/// (`|N K=V … ` prefix). The executor passes an instruction whose args it has already expanded
/// where Docker records expanded values (ENV, LABEL, WORKDIR as resolved, …); for COPY/ADD it
/// replaces `sources` with Docker's description (`file:<hash>`, `dir:<hash>`, `multi:<hash>`).
pub fn history_text_with_args(
    inst: &Instruction,
    shell: &[String],
    build_args: &[(String, String)],
) -> String {
    let _ = (inst, shell, build_args);
    todo!()
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Shell(s) => f.write_str(s),
            Command::Exec(v) => f.write_str(&serde_json::to_string(v).unwrap_or_default()),
        }
    }
}
