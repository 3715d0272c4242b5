//! A container's life as its record tells it: the statuses, the state in the metadata
//! database and the functions that change it (a start, an exit recorded, a pause), restart
//! policies with Docker's back-off, and how signals are named.
//!
//! This is the recorded-state store the task lifecycle ([`crate::tasks`], whose monitor
//! records each exit and applies the policies here) writes to and every other room reads; it
//! calls nothing of theirs. The state lives in the container's record, so it survives berthd
//! and is the same for every service that reads the store.

use crate::error::{Error, Result};
use crate::metadata::Store;
use crate::shim::ExitStatus;
use berth_api::containers::v1::{Container, ContainerState, RestartPolicy};
use std::time::{Duration, SystemTime};

pub const STATUS_CREATED: &str = "created";
pub const STATUS_RUNNING: &str = "running";
pub const STATUS_RESTARTING: &str = "restarting";
pub const STATUS_EXITED: &str = "exited";
pub const STATUS_DEAD: &str = "dead";

/// The first restart back-off; doubled for every consecutive restart.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// A run at least this long resets the back-off (Docker's rule).
const RESET_AFTER: Duration = Duration::from_secs(10);
/// The longest back-off (Docker caps it at one minute).
const MAX_DELAY: Duration = Duration::from_secs(60);
/// The stop timeout when neither the request nor the container gives one.
pub const DEFAULT_STOP_TIMEOUT: i32 = 10;

/// What a restart policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    No,
    Always,
    UnlessStopped,
    OnFailure(i32),
}

impl Policy {
    pub fn of(p: Option<&RestartPolicy>) -> Policy {
        let Some(p) = p else { return Policy::No };
        match p.name.as_str() {
            "always" => Policy::Always,
            "unless-stopped" => Policy::UnlessStopped,
            "on-failure" => Policy::OnFailure(p.maximum_retry_count.max(0)),
            _ => Policy::No,
        }
    }

    /// Checks a policy as given in a create request.
    pub fn validate(p: Option<&RestartPolicy>) -> Result<()> {
        let Some(p) = p else { return Ok(()) };
        match p.name.as_str() {
            "" | "no" | "always" | "unless-stopped" if p.maximum_retry_count == 0 => Ok(()),
            "" | "no" | "always" | "unless-stopped" => Err(Error::InvalidArgument(format!(
                "maximum retry count cannot be used with restart policy '{}'",
                p.name
            ))),
            "on-failure" if p.maximum_retry_count >= 0 => Ok(()),
            "on-failure" => Err(Error::InvalidArgument(
                "maximum retry count cannot be negative".into(),
            )),
            other => Err(Error::InvalidArgument(format!(
                "invalid restart policy '{other}'"
            ))),
        }
    }

    /// Whether a container that just exited with `exit_code` is started again.
    pub fn should_restart(self, exit_code: i32, restart_count: i32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            Policy::No => false,
            Policy::Always | Policy::UnlessStopped => true,
            Policy::OnFailure(max) => exit_code != 0 && (max == 0 || restart_count < max),
        }
    }
}

/// Docker's back-off: 100 ms, doubled for every consecutive restart, back to 100 ms once a run
/// lasted 10 s.
pub fn next_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        Some(d) if ran_for < RESET_AFTER => (d * 2).min(MAX_DELAY),
        _ => FIRST_DELAY,
    }
}

/// Parses a signal the way Docker takes it: `SIGTERM`, `TERM`, `15`, `RTMIN+1`
/// ([`berth_core::signal::parse`]).
pub fn parse_signal(s: &str) -> Result<i32> {
    berth_core::signal::parse(s)
        .map_err(|_| Error::InvalidArgument(format!("Invalid signal: {}", s.trim())))
}

pub(crate) fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

pub(crate) fn elapsed_since(t: Option<&prost_types::Timestamp>) -> Duration {
    let Some(t) = t else { return Duration::ZERO };
    let Ok(start) = SystemTime::try_from(*t) else {
        return Duration::ZERO;
    };
    SystemTime::now().duration_since(start).unwrap_or_default()
}

/// The container's state, `created` when the record has none yet.
pub fn state_of(c: &Container) -> ContainerState {
    c.state.clone().unwrap_or_else(|| ContainerState {
        status: STATUS_CREATED.to_string(),
        ..Default::default()
    })
}

/// Changes the state of a container (no-op when the record is gone).
pub(crate) fn update_state(
    store: &Store,
    ns: &str,
    id: &str,
    mut change: impl FnMut(&mut ContainerState),
) -> Result<Option<Container>> {
    store.update(ns, id, |c| {
        let mut st = state_of(c);
        change(&mut st);
        c.state = Some(st);
    })
}

/// The exit the state records, when the container is not running.
pub(crate) fn recorded_exit(store: &Store, ns: &str, id: &str) -> Option<ExitStatus> {
    let c = store.get(ns, id).ok().flatten()?;
    let st = c.state?;
    if st.status != STATUS_EXITED && st.status != STATUS_DEAD && st.status != STATUS_RESTARTING {
        return None;
    }
    let exited_at = st
        .finished_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default();
    Some(ExitStatus {
        exit_code: st.exit_code,
        signal: None,
        exited_at,
        oom_killed: st.oom_killed,
    })
}

/// Records a start: running with `pid`; a start by a user also clears `stopped_by_user`
/// and the restart count.
pub(crate) fn record_start(
    store: &Store,
    ns: &str,
    id: &str,
    pid: u32,
    by_user: bool,
) -> Result<()> {
    update_state(store, ns, id, |st| {
        st.status = STATUS_RUNNING.to_string();
        st.pid = pid;
        st.paused = false;
        st.started_at = Some(now());
        st.error.clear();
        st.oom_killed = false;
        st.exit_code = 0;
        if by_user {
            st.stopped_by_user = false;
            st.restart_count = 0;
        }
    })?;
    Ok(())
}

/// Whether a container is paused (exec is refused then, as Docker does).
pub(crate) fn is_paused(store: &Store, ns: &str, id: &str) -> bool {
    matches!(store.get(ns, id), Ok(Some(c)) if state_of(&c).paused)
}

/// An annotation of a stored OCI spec.
pub fn spec_annotation(spec: &[u8], key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(spec).ok()?;
    v.get("annotations")?.get(key)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        let p = |name: &str, n: i32| {
            Policy::of(Some(&RestartPolicy {
                name: name.into(),
                maximum_retry_count: n,
            }))
        };
        assert_eq!(Policy::of(None), Policy::No);
        assert_eq!(p("", 0), Policy::No);
        assert!(!p("no", 0).should_restart(1, 0, false));
        assert!(p("always", 0).should_restart(0, 5, false));
        assert!(!p("always", 0).should_restart(0, 5, true));
        assert!(p("unless-stopped", 0).should_restart(0, 0, false));
        assert!(!p("unless-stopped", 0).should_restart(0, 0, true));
        let f = p("on-failure", 2);
        assert!(!f.should_restart(0, 0, false));
        assert!(f.should_restart(1, 0, false));
        assert!(f.should_restart(1, 1, false));
        assert!(!f.should_restart(1, 2, false));
        assert!(p("on-failure", 0).should_restart(3, 100, false));

        let v = |name: &str, n: i32| {
            Policy::validate(Some(&RestartPolicy {
                name: name.into(),
                maximum_retry_count: n,
            }))
        };
        v("always", 0).unwrap();
        v("on-failure", 3).unwrap();
        assert_eq!(
            v("sometimes", 0).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(v("always", 2).is_err());
    }

    #[test]
    fn back_off_doubles_and_resets() {
        let short = Duration::from_secs(1);
        let d1 = next_delay(None, short);
        assert_eq!(d1, Duration::from_millis(100));
        let d2 = next_delay(Some(d1), short);
        assert_eq!(d2, Duration::from_millis(200));
        assert_eq!(next_delay(Some(d2), short), Duration::from_millis(400));
        assert_eq!(
            next_delay(Some(d2), Duration::from_secs(11)),
            Duration::from_millis(100)
        );
        assert_eq!(
            next_delay(Some(Duration::from_secs(50)), short),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("quit").unwrap(), libc::SIGQUIT);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(parse_signal("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(
            parse_signal(" NOPE ").unwrap_err().to_string(),
            Error::InvalidArgument("Invalid signal: NOPE".into()).to_string()
        );
    }

    #[test]
    fn annotations_are_read_from_the_spec() {
        let spec = br#"{"annotations":{"io.berth.stop-signal":"SIGQUIT"}}"#;
        assert_eq!(
            spec_annotation(spec, "io.berth.stop-signal").as_deref(),
            Some("SIGQUIT")
        );
        assert_eq!(spec_annotation(spec, "x"), None);
        assert_eq!(spec_annotation(b"not json", "x"), None);
    }
}
