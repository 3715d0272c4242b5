//! The streaming requests waiting for their client: what `Exec`, `Attach` and `PortForward`
//! granted, each under a random single-use token (the last part of the URL they answered)
//! that expires after [`TOKEN_TTL`], as the kubelet's request cache does. At most
//! [`MAX_IN_FLIGHT`] wait at once; more is ResourceExhausted, so a client that asks without
//! ever connecting cannot grow the table without bound.

use base64::Engine as _;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Status;

/// How long a granted URL stays valid (the kubelet's `CacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Requests waiting at once (the kubelet's `maxInFlight`).
pub const MAX_IN_FLIGHT: usize = 1000;
/// Random bytes of a token (URL-safe base64 of them in the URL).
const TOKEN_BYTES: usize = 16;

/// What a token grants, taken from the CRI request that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    /// Run `cmd` in container `container_id` with these streams.
    Exec {
        container_id: String,
        cmd: Vec<String>,
        streams: Streams,
    },
    /// Attach to the running process of container `container_id`.
    Attach {
        container_id: String,
        streams: Streams,
    },
    /// Forward connections to ports in the network namespace of sandbox `sandbox_id`.
    PortForward { sandbox_id: String },
}

/// The stdio an exec or attach asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Granted requests by token.
#[derive(Debug, Default)]
pub struct Tokens {
    waiting: Mutex<HashMap<String, (Granted, Instant)>>,
}

impl Tokens {
    /// Files `granted` under a new token, and returns the token.
    pub fn grant(&self, granted: Granted) -> Result<String, Status> {
        self.grant_at(granted, Instant::now())
    }

    fn grant_at(&self, granted: Granted, now: Instant) -> Result<String, Status> {
        let token = new_token()?;
        let mut waiting = self.lock();
        waiting.retain(|_, (_, since)| now.duration_since(*since) < TOKEN_TTL);
        if waiting.len() >= MAX_IN_FLIGHT {
            return Err(Status::resource_exhausted(format!(
                "{MAX_IN_FLIGHT} streaming requests are already waiting for their client; try again when some were used or expired ({}s)",
                TOKEN_TTL.as_secs()
            )));
        }
        waiting.insert(token.clone(), (granted, now));
        Ok(token)
    }

    /// The request of `token`, which is used up; `None` when unknown, used or expired.
    pub fn take(&self, token: &str) -> Option<Granted> {
        self.take_at(token, Instant::now())
    }

    fn take_at(&self, token: &str, now: Instant) -> Option<Granted> {
        let (granted, since) = self.lock().remove(token)?;
        (now.duration_since(since) < TOKEN_TTL).then_some(granted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Granted, Instant)>> {
        // The table holds no invariant a panic could break halfway.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn new_token() -> Result<String, Status> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| {
        Status::internal(format!(
            "no random bytes for a streaming token from the system: {e}"
        ))
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(id: &str) -> Granted {
        Granted::PortForward {
            sandbox_id: id.into(),
        }
    }

    #[test]
    fn a_token_is_used_once() {
        let tokens = Tokens::default();
        let a = tokens.grant(forward("a")).unwrap();
        let b = tokens.grant(forward("b")).unwrap();
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(tokens.take(&b), Some(forward("b")));
        assert_eq!(tokens.take(&b), None);
        assert_eq!(tokens.take(&a), Some(forward("a")));
        assert_eq!(tokens.take("made-up"), None);
    }

    #[test]
    fn tokens_expire_after_a_minute() {
        let tokens = Tokens::default();
        let then = Instant::now();
        let old = tokens.grant_at(forward("old"), then).unwrap();
        let fresh = tokens.grant_at(forward("fresh"), then).unwrap();
        assert_eq!(tokens.take_at(&old, then + TOKEN_TTL), None);
        assert_eq!(
            tokens.take_at(&fresh, then + TOKEN_TTL - Duration::from_secs(1)),
            Some(forward("fresh"))
        );
    }

    #[test]
    fn in_flight_requests_are_bounded() {
        let tokens = Tokens::default();
        let then = Instant::now();
        for _ in 0..MAX_IN_FLIGHT {
            tokens.grant_at(forward("x"), then).unwrap();
        }
        let full = tokens.grant_at(forward("x"), then).unwrap_err();
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        // expired ones make room
        assert!(tokens.grant_at(forward("x"), then + TOKEN_TTL).is_ok());
    }
}
