//! Signal names as Docker takes them, in one parser for every front and service.
//!
//! [`parse`] reads `SIGTERM`, `TERM`, `term`, `15`, and the real-time signals as `RTMIN`,
//! `RTMIN+n`, `RTMAX` and `RTMAX-n` (with or without `SIG`), and gives the signal's number on
//! this host. Each caller words its own refusal ([`InvalidSignal`] only says which text was
//! refused), since the CLI and the runtime have always answered in their own words.
//!
//! ```
//! use berth_core::signal;
//! assert_eq!(signal::parse("SIGKILL"), Ok(9));
//! assert_eq!(signal::parse("term"), Ok(15));
//! assert!(signal::parse("NOPE").is_err());
//! ```

/// The highest signal number `kill` may be given as a number.
const MAX_SIGNAL: i32 = 64;

/// The standard signals by name, without their `SIG` prefix.
const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// A text that names no signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal: {0}")]
pub struct InvalidSignal(pub String);

/// The number of the signal `s` names: a name with or without `SIG` in any case, a number
/// from 1 to 64, or a real-time signal (`RTMIN+n`, `RTMAX-n`). Spaces around it are ignored.
pub fn parse(s: &str) -> Result<i32, InvalidSignal> {
    let invalid = || InvalidSignal(s.to_string());
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=MAX_SIGNAL).contains(&n) {
            Ok(n)
        } else {
            Err(invalid())
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(n) = real_time(name) {
        return Ok(n);
    }
    NAMES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, n)| *n)
        .ok_or_else(invalid)
}

/// `RTMIN`, `RTMIN+n`, `RTMAX`, `RTMAX-n` (no `SIG`) as a number within this host's range.
fn real_time(name: &str) -> Option<i32> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        rest.strip_prefix(sign)?.parse::<i32>().ok()
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        min.checked_add(offset(rest, '+')?)?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        max.checked_sub(offset(rest, '-')?)?
    } else {
        return None;
    };
    (min..=max).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_and_without_sig() {
        assert_eq!(parse("KILL"), Ok(libc::SIGKILL));
        assert_eq!(parse("SIGKILL"), Ok(libc::SIGKILL));
        assert_eq!(parse("sigterm"), Ok(libc::SIGTERM));
        assert_eq!(parse("hup"), Ok(libc::SIGHUP));
        assert_eq!(parse(" quit "), Ok(libc::SIGQUIT));
        assert_eq!(parse("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse("SIGWINCH"), Ok(libc::SIGWINCH));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("1"), Ok(1));
        assert_eq!(parse("64"), Ok(64));
        assert!(parse("0").is_err());
        assert!(parse("65").is_err());
        assert!(parse("99").is_err());
        assert!(parse("-9").is_err());
    }

    #[test]
    fn real_time_signals() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(parse("RTMIN"), Ok(min));
        assert_eq!(parse("SIGRTMIN+1"), Ok(min + 1));
        assert_eq!(parse("rtmin+3"), Ok(min + 3));
        assert_eq!(parse("RTMAX"), Ok(max));
        assert_eq!(parse("SIGRTMAX-2"), Ok(max - 2));
        assert_eq!(parse(&format!("RTMIN+{}", max - min)), Ok(max));
        assert!(parse(&format!("RTMIN+{}", max - min + 1)).is_err());
        assert!(parse(&format!("RTMAX-{}", max - min + 1)).is_err());
        assert!(parse("RTMIN-1").is_err());
        assert!(parse("RTMAX+1").is_err());
        assert!(parse("RTMIN+").is_err());
        assert!(parse("RTMIN+x").is_err());
    }

    #[test]
    fn bad_input() {
        assert_eq!(parse("NOPE"), Err(InvalidSignal("NOPE".into())));
        assert!(parse("SIGNOPE").is_err());
        assert!(parse("").is_err());
        assert!(parse("SIG").is_err());
        assert!(parse("SIGSIGKILL").is_err());
        assert_eq!(
            parse("bogus").unwrap_err().to_string(),
            "invalid signal: bogus"
        );
    }
}
