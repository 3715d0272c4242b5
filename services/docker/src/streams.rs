//! Docker's shapes of a container's streams, for `berth attach|logs` and the gateway's
//! attach, logs and exec: the 8-byte multiplexed framing ([`frame`]), detach keys
//! ([`DetachKeys`], parsed from Docker's `"ctrl-p,ctrl-q"` and matched in the input by
//! [`DetachMatcher`]), and what `logs` shows ([`log_timestamp`], [`parse_tail`], the
//! [`LogWindow`] of `since`/`until`).
//!
//! ```
//! let keys = berth_docker::DetachKeys::parse("ctrl-p,ctrl-q").unwrap();
//! let mut m = berth_docker::DetachMatcher::new(&keys);
//! assert_eq!(m.feed(b"ls\x10"), (b"ls".to_vec(), false));
//! assert_eq!(m.feed(b"\x11"), (vec![], true));
//! ```

use berth_api::prost_types::Timestamp;

/// The multiplexed stream's number of stdout.
pub const STDOUT: u8 = 1;
/// The multiplexed stream's number of stderr.
pub const STDERR: u8 = 2;

/// One frame of Docker's multiplexed stream (a container without a TTY): `[stream, 0, 0, 0]`,
/// the payload's length as a big-endian u32, then the payload. A payload over 4 GiB is cut
/// into several frames; an empty one makes none.
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    for chunk in payload.chunks(u32::MAX as usize) {
        out.extend_from_slice(&[stream, 0, 0, 0]);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// The key sequence that detaches a client from a container, without stopping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(Vec<u8>);

impl DetachKeys {
    /// Docker's default, ctrl-p then ctrl-q.
    pub fn docker_default() -> DetachKeys {
        DetachKeys(vec![0x10, 0x11])
    }

    /// Docker's format: keys separated by commas, each one character (`a`) or `ctrl-X` with X
    /// a letter or one of `@[\]^_`. The error names the key it cannot read.
    pub fn parse(spec: &str) -> Result<DetachKeys, String> {
        let mut keys = Vec::new();
        for key in spec.split(',') {
            let lower = key.to_ascii_lowercase();
            let byte = match lower.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                    b @ b'a'..=b'z' => b - b'a' + 1,
                    b'@' => 0,
                    b @ b'['..=b'_' => b - b'[' + 27,
                    _ => return Err(format!("Unknown character: '{key}'")),
                },
                _ if key.len() == 1 => key.as_bytes()[0],
                _ => return Err(format!("Unknown character: '{key}'")),
            };
            keys.push(byte);
        }
        Ok(DetachKeys(keys))
    }

    /// The given keys, or Docker's default when none (or an empty string) is given.
    pub fn parse_or_default(spec: Option<&str>) -> Result<DetachKeys, String> {
        match spec {
            Some(s) if !s.is_empty() => DetachKeys::parse(s),
            _ => Ok(DetachKeys::docker_default()),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Finds the detach keys in a client's input as it comes, in pieces: bytes that may begin the
/// sequence are held back until it is complete (the client detaches; they are never sent) or
/// broken (they are passed on).
#[derive(Debug, Clone)]
pub struct DetachMatcher {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    pub fn new(keys: &DetachKeys) -> DetachMatcher {
        DetachMatcher {
            keys: keys.0.clone(),
            matched: 0,
        }
    }

    /// The bytes of `input` to pass on, and whether the sequence is complete (what follows
    /// it in `input` is dropped with the connection).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b != self.keys[self.matched] && self.matched > 0 {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// A log line's time as `docker logs -t` and `docker events` print it: RFC 3339 with exactly
/// nine digits of fraction, in UTC.
pub use crate::time::rfc3339_nano_fixed as log_timestamp;

/// A log line as `logs -t` shows it: its time, a space, then the line.
pub fn timestamped(t: Option<&Timestamp>, line: Vec<u8>) -> Vec<u8> {
    let mut out = log_timestamp(t).into_bytes();
    out.push(b' ');
    out.extend(line);
    out
}

/// `--tail`/`tail=`: "all" (or a negative number, or nothing) is every line, else the last N;
/// as the `(tail, has_tail)` pair of Tasks.Logs.
pub fn parse_tail(tail: Option<&str>) -> Result<(i64, bool), String> {
    match tail {
        None | Some("all") | Some("") => Ok((0, false)),
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n < 0 => Ok((0, false)),
            Ok(n) => Ok((n, true)),
            Err(_) => Err(format!("invalid --tail {n:?}: use a number or all")),
        },
    }
}

/// The `since`/`until` of a logs request: the lines whose time falls in it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogWindow {
    since: Option<(i64, u32)>,
    until: Option<(i64, u32)>,
}

impl LogWindow {
    /// Docker's values: unix seconds with an optional fraction ("1700000000.123456789");
    /// empty or "0" is no bound.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<LogWindow, String> {
        Ok(LogWindow {
            since: unix_time(since)?,
            until: unix_time(until)?,
        })
    }

    /// Whether a line at `t` is too old for the window.
    pub fn before(&self, t: Option<&Timestamp>) -> bool {
        self.since.is_some_and(|s| key(t) < s)
    }

    /// Whether a line at `t` is past the window (and so is every line after it).
    pub fn after(&self, t: Option<&Timestamp>) -> bool {
        self.until.is_some_and(|u| key(t) > u)
    }
}

fn key(t: Option<&Timestamp>) -> (i64, u32) {
    t.map(|t| (t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_default()
}

/// "1700000000.5" → (1700000000, 500000000); None for no bound.
fn unix_time(v: Option<&str>) -> Result<Option<(i64, u32)>, String> {
    let v = match v {
        None | Some("") | Some("0") => return Ok(None),
        Some(v) => v,
    };
    let bad = || format!("invalid value for time {v:?}: use unix seconds (e.g. 1700000000.5)");
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    Ok(Some((secs, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_stream_and_big_endian_length() {
        assert_eq!(frame(STDOUT, b"hi\n"), b"\x01\0\0\0\0\0\0\x03hi\n");
        assert!(frame(STDERR, b"").is_empty(), "no empty frames");
        let big = vec![b'x'; 300];
        let f = frame(STDOUT, &big);
        assert_eq!(&f[..8], &[1, 0, 0, 0, 0, 0, 1, 44]);
        assert_eq!(f.len(), 308);
    }

    #[test]
    fn detach_keys_in_dockers_format() {
        assert_eq!(
            DetachKeys::parse("ctrl-p,ctrl-q").unwrap().bytes(),
            [16, 17]
        );
        assert_eq!(DetachKeys::parse("a,ctrl-x").unwrap().bytes(), [b'a', 24]);
        assert_eq!(
            DetachKeys::parse("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_,CTRL-A")
                .unwrap()
                .bytes(),
            [0, 27, 28, 29, 30, 31, 1]
        );
        assert_eq!(
            DetachKeys::parse("ctrl-pp").unwrap_err(),
            "Unknown character: 'ctrl-pp'"
        );
        assert!(DetachKeys::parse("").is_err());
        assert!(DetachKeys::parse("ab").is_err());
        assert!(DetachKeys::parse("ctrl-1").is_err());
        assert_eq!(
            DetachKeys::parse_or_default(None).unwrap(),
            DetachKeys::docker_default()
        );
        assert_eq!(
            DetachKeys::parse_or_default(Some("")).unwrap(),
            DetachKeys::docker_default()
        );
    }

    #[test]
    fn the_matcher_holds_back_a_partial_sequence() {
        let mut m = DetachMatcher::new(&DetachKeys::docker_default());
        assert_eq!(m.feed(b"echo\x10"), (b"echo".to_vec(), false));
        // Broken: the held ctrl-p goes on, with what broke it.
        assert_eq!(m.feed(b"x"), (b"\x10x".to_vec(), false));
        // ctrl-p ctrl-p ctrl-q: the first is passed on, the next two detach.
        assert_eq!(m.feed(b"\x10\x10\x11rest"), (b"\x10".to_vec(), true));
        let mut one = DetachMatcher::new(&DetachKeys::parse("a").unwrap());
        assert_eq!(one.feed(b"xya"), (b"xy".to_vec(), true));
    }

    #[test]
    fn timestamps_have_nine_digits() {
        let t = Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000,
        };
        assert_eq!(log_timestamp(Some(&t)), "2023-11-14T22:13:20.000005000Z");
        assert_eq!(log_timestamp(None), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            timestamped(Some(&t), b"hi\n".to_vec()),
            b"2023-11-14T22:13:20.000005000Z hi\n"
        );
    }

    #[test]
    fn tails() {
        assert_eq!(parse_tail(None), Ok((0, false)));
        assert_eq!(parse_tail(Some("all")), Ok((0, false)));
        assert_eq!(parse_tail(Some("-1")), Ok((0, false)));
        assert_eq!(parse_tail(Some("0")), Ok((0, true)));
        assert_eq!(parse_tail(Some("3")), Ok((3, true)));
        assert!(parse_tail(Some("x")).is_err());
    }

    #[test]
    fn windows_of_unix_seconds() {
        let w = LogWindow::parse(Some("100.5"), Some("200")).unwrap();
        let at = |seconds, nanos| Some(Timestamp { seconds, nanos });
        assert!(w.before(at(100, 499_999_999).as_ref()));
        assert!(!w.before(at(100, 500_000_000).as_ref()));
        assert!(!w.after(at(200, 0).as_ref()));
        assert!(w.after(at(200, 1).as_ref()));
        let open = LogWindow::parse(Some("0"), None).unwrap();
        assert_eq!(open, LogWindow::default());
        assert!(!open.before(None) && !open.after(at(i64::MAX, 0).as_ref()));
        for bad in ["x", "1.x", "1.1234567890", "-"] {
            assert!(LogWindow::parse(Some(bad), None).is_err(), "{bad}");
        }
    }
}
