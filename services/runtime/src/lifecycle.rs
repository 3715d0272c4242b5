//! A container's life beyond one task: its state in the metadata database, the monitor that
//! waits on its shim and records each exit, restart policies with Docker's back-off, and
//! finding everything again when berthd starts. Tasks themselves (create, start, stop,
//! delete) are [`crate::tasks`].
//!
//! Every change to a container's task (create, start, delete, recording an exit, a restart)
//! happens under that container's lock (`Runtime::lock`), so a monitor and a request never
//! act on the same task at once. A monitor identifies its task by the init pid it watches: if
//! the bundle now holds another task, the exit was already handled by whoever replaced it.

use crate::bundle::RootfsMount;
use crate::error::{Error, Result};
use crate::shim::{ExitStatus, Request as ShimRequest, Status as ShimStatus};
use crate::tasks::exit_to_api;
use crate::Runtime;
use berth_api::containers::v1::{Container, ContainerState, RestartPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
/// An exit within this long after a user's `kill` counts as stopped by the user.
const KILL_WINDOW: Duration = Duration::from_secs(30);

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

fn elapsed_since(t: Option<&prost_types::Timestamp>) -> Duration {
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

/// What the monitor does after an exit that its policy restarts.
#[derive(Debug)]
struct Restart {
    mounts: Option<Vec<RootfsMount>>,
    ran_for: Duration,
}

impl Runtime {
    /// The lock of one container.
    pub(crate) async fn lock(&self, ns: &str, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(format!("{ns}/{id}")).or_default().clone()
        };
        lock.lock_owned().await
    }

    pub(crate) fn forget_lock(&self, ns: &str, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(&format!("{ns}/{id}"));
    }

    /// Remembers that a user signalled the container.
    pub(crate) fn note_user_kill(&self, ns: &str, id: &str) {
        let mut kills = self.user_kills.lock().unwrap_or_else(|e| e.into_inner());
        kills.insert(format!("{ns}/{id}"), Instant::now());
    }

    /// Remembers that a client attached to the container's current run.
    pub(crate) fn note_attach(&self, ns: &str, id: &str) {
        let mut a = self.attached_runs.lock().unwrap_or_else(|e| e.into_inner());
        a.insert(format!("{ns}/{id}"));
    }

    fn take_attach(&self, ns: &str, id: &str) -> bool {
        let mut a = self.attached_runs.lock().unwrap_or_else(|e| e.into_inner());
        a.remove(&format!("{ns}/{id}"))
    }

    fn take_user_kill(&self, ns: &str, id: &str) -> bool {
        let mut kills = self.user_kills.lock().unwrap_or_else(|e| e.into_inner());
        kills
            .remove(&format!("{ns}/{id}"))
            .is_some_and(|t| t.elapsed() < KILL_WINDOW)
    }

    /// Changes the state of a container (no-op when the record is gone).
    pub(crate) fn update_state(
        &self,
        ns: &str,
        id: &str,
        mut change: impl FnMut(&mut ContainerState),
    ) -> Result<Option<Container>> {
        self.store.update(ns, id, |c| {
            let mut st = state_of(c);
            change(&mut st);
            c.state = Some(st);
        })
    }

    /// The exit the state records, when the container is not running.
    pub(crate) fn recorded_exit(&self, ns: &str, id: &str) -> Option<ExitStatus> {
        let c = self.store.get(ns, id).ok().flatten()?;
        let st = c.state?;
        if st.status != STATUS_EXITED && st.status != STATUS_DEAD && st.status != STATUS_RESTARTING
        {
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
    pub(crate) fn record_start(&self, ns: &str, id: &str, pid: u32, by_user: bool) -> Result<()> {
        self.update_state(ns, id, |st| {
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

    /// Starts the monitor of a running task.
    pub(crate) fn spawn_monitor(&self, ns: &str, id: &str, pid: u32) {
        let Some(me) = self.me.upgrade() else { return };
        let (ns, id) = (ns.to_string(), id.to_string());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { me.monitor(ns, id, pid).await });
        }
    }

    /// Waits for each exit of a container's task, records it and applies the restart policy.
    async fn monitor(self: Arc<Self>, ns: String, id: String, mut pid: u32) {
        let mut delay: Option<Duration> = None;
        loop {
            let (exit, shim_died) = self.wait_exit(&ns, &id).await;
            let plan = match self.handle_exit(&ns, &id, pid, exit, shim_died, true).await {
                Ok(Some(plan)) => plan,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot record the exit of a container");
                    return;
                }
            };
            let d = next_delay(delay, plan.ran_for);
            delay = Some(d);
            tracing::info!(container = %id, delay_ms = d.as_millis() as u64, "restarting container");
            tokio::time::sleep(d).await;
            match self.restart(&ns, &id, plan.mounts.as_deref()).await {
                Ok(Some(new_pid)) => pid = new_pid,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot restart container");
                    let message = e.to_string();
                    let _ = self.update_state(&ns, &id, |st| {
                        if st.status == STATUS_RESTARTING {
                            st.status = STATUS_EXITED.to_string();
                            st.error = message.clone();
                        }
                    });
                    return;
                }
            }
        }
    }

    /// Blocks until the task's init exits; the exit and whether the shim died without
    /// recording one.
    async fn wait_exit(&self, ns: &str, id: &str) -> (ExitStatus, bool) {
        let shim = self.shim(ns, id);
        loop {
            match shim.call(&ShimRequest::Wait).await {
                Ok(Some(answer)) if answer.ok => {
                    if let Some(exit) = answer.exit_status() {
                        return (exit.clone(), false);
                    }
                }
                Ok(None) => {}
                other => {
                    if let Err(e) = other {
                        tracing::debug!(container = %id, error = %e, "wait on the shim failed");
                    }
                    // A broken connection to a shim that still runs: ask again.
                    if matches!(
                        self.task_state(ns, id).await,
                        Ok(Some(t)) if t.shim_alive && t.status != ShimStatus::Stopped
                    ) {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            // The shim is gone (or answered without an exit): what did it leave?
            let bundle = self.bundle(ns, id);
            if let Some(pid) = bundle.shim_pid() {
                crate::tasks::reap(pid);
            }
            return match bundle.exit_status() {
                Ok(Some(exit)) => (exit, false),
                _ => {
                    let (id, pid) = (id.to_string(), bundle.init_pid());
                    let _ = tokio::task::spawn_blocking(move || end_orphaned_init(&id, pid)).await;
                    (crate::tasks::unknown_exit(), true)
                }
            };
        }
    }

    /// Records the exit of the task whose init was `pid`, deletes that task and says whether
    /// the restart policy brings the container back (`apply_policy`; recovery applies its own
    /// rules). `None`: nothing more to do.
    async fn handle_exit(
        &self,
        ns: &str,
        id: &str,
        pid: u32,
        exit: ExitStatus,
        shim_died: bool,
        apply_policy: bool,
    ) -> Result<Option<Restart>> {
        let _guard = self.lock(ns, id).await;
        let bundle = self.bundle(ns, id);
        let same = bundle.exists() && (pid == 0 || bundle.init_pid().unwrap_or(0) == pid);
        let Some(container) = self.store.get(ns, id)? else {
            if same {
                self.delete_task_quietly(ns, id).await;
            }
            return Ok(None);
        };
        let st = state_of(&container);
        if !same {
            // Someone else deleted or replaced the task. If they deleted it without a new
            // one, the exit is still ours to record.
            if bundle.exists() || st.status != STATUS_RUNNING || st.pid != pid {
                return Ok(None);
            }
        }
        let stopped_by_user = st.stopped_by_user || self.take_user_kill(ns, id);
        let attached = self.take_attach(ns, id);
        let ran_for = elapsed_since(st.started_at.as_ref());
        let finished = exit_to_api(&exit).exited_at.unwrap_or_else(now);
        self.update_state(ns, id, |s| {
            s.status = STATUS_EXITED.to_string();
            s.paused = false;
            s.exit_code = exit.exit_code;
            s.pid = 0;
            s.finished_at = Some(finished);
            s.oom_killed = exit.oom_killed;
            s.stopped_by_user = stopped_by_user;
            if shim_died {
                s.error = "the shim of the container died; its exit status is unknown".into();
            }
        })?;
        tracing::info!(container = %id, exit_code = exit.exit_code, "container exited");
        if exit.oom_killed {
            self.publish_container(ns, id, "oom", &[]);
        }
        self.publish_container(ns, id, "die", &[("exitCode", exit.exit_code.to_string())]);

        let mounts = if same {
            let mounts = std::fs::read(bundle.dir().join("rootfs.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<RootfsMount>>(&b).ok());
            self.delete_task_quietly(ns, id).await;
            mounts
        } else {
            None
        };
        if !apply_policy {
            return Ok(None);
        }
        let config = container.config.clone().unwrap_or_default();
        let policy = Policy::of(config.restart_policy.as_ref());
        if policy.should_restart(exit.exit_code, st.restart_count, stopped_by_user) {
            self.update_state(ns, id, |s| {
                s.status = STATUS_RESTARTING.to_string();
                s.restart_count += 1;
            })?;
            return Ok(Some(Restart { mounts, ran_for }));
        }
        // A client attached to this run (foreground `run --rm`) removes the container itself
        // once it has read the exit.
        if config.auto_remove && !attached {
            if let Err(e) = self.delete_container_locked(ns, &container, true).await {
                tracing::warn!(container = %id, error = %e, "cannot auto-remove container");
            }
        }
        Ok(None)
    }

    async fn delete_task_quietly(&self, ns: &str, id: &str) {
        match self.task_state(ns, id).await {
            Ok(Some(t)) => {
                if let Err(e) = self.delete_task_of(ns, id, &t).await {
                    tracing::warn!(container = %id, error = %e, "cannot delete the task of an exited container");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "cannot read task state"),
        }
    }

    /// The restart after the back-off: `None` when the container was removed, stopped or
    /// started by someone else meanwhile.
    async fn restart(
        &self,
        ns: &str,
        id: &str,
        mounts: Option<&[RootfsMount]>,
    ) -> Result<Option<u32>> {
        let _guard = self.lock(ns, id).await;
        let Some(container) = self.store.get(ns, id)? else {
            return Ok(None);
        };
        let st = state_of(&container);
        if st.status != STATUS_RESTARTING || st.stopped_by_user {
            return Ok(None);
        }
        let (pid, _) = self.start_locked(ns, &container, mounts).await?;
        self.record_start(ns, id, pid, false)?;
        self.publish_container(ns, id, "start", &[]);
        Ok(Some(pid))
    }

    /// After a start of berthd: monitors for the tasks that still run, exits recorded for the
    /// ones whose shim is gone (their bundles cleaned), then `always` and `unless-stopped`
    /// containers that are not running are started again.
    pub async fn recover(&self) {
        let namespaces = match self.store.namespaces() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot list containers to recover");
                return;
            }
        };
        for ns in &namespaces {
            let containers = self.store.list(ns).unwrap_or_default();
            for c in &containers {
                if let Err(e) = self.recover_one(ns, c).await {
                    tracing::warn!(container = %c.id, error = %e, "cannot recover container");
                }
            }
            for c in self.store.list(ns).unwrap_or_default() {
                let st = state_of(&c);
                if st.status == STATUS_RUNNING || st.status == STATUS_CREATED {
                    continue;
                }
                let policy = Policy::of(c.config.as_ref().and_then(|c| c.restart_policy.as_ref()));
                let wanted = policy == Policy::Always
                    || (policy == Policy::UnlessStopped && !st.stopped_by_user);
                if !wanted {
                    continue;
                }
                tracing::info!(container = %c.id, "starting container again (restart policy)");
                let started = || async {
                    let _guard = self.lock(ns, &c.id).await;
                    let (pid, started) = self.start_locked(ns, &c, None).await?;
                    if started {
                        self.record_start(ns, &c.id, pid, false)?;
                        self.publish_container(ns, &c.id, "start", &[]);
                        self.spawn_monitor(ns, &c.id, pid);
                    }
                    Ok::<_, Error>(())
                };
                // The services it needs may still be coming up in this very berthd.
                let mut attempt = 0;
                loop {
                    match started().await {
                        Ok(()) => break,
                        Err(e) if e.code() == tonic::Code::Unavailable && attempt < 20 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            tracing::warn!(container = %c.id, error = %e, "cannot start container again");
                            let message = e.to_string();
                            let _ = self.update_state(ns, &c.id, |s| s.error = message.clone());
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn recover_one(&self, ns: &str, c: &Container) -> Result<()> {
        let id = c.id.as_str();
        let st = state_of(c);
        match self.task_state(ns, id).await? {
            Some(t) if t.shim_alive && t.status == ShimStatus::Running => {
                if st.status != STATUS_RUNNING || st.pid != t.pid {
                    self.update_state(ns, id, |s| {
                        s.status = STATUS_RUNNING.to_string();
                        s.pid = t.pid;
                    })?;
                }
                self.spawn_monitor(ns, id, t.pid);
            }
            Some(t) if t.shim_alive && t.status == ShimStatus::Created => {}
            Some(t) => {
                // Exited while berthd was away, or its shim died.
                let shim_died = !t.shim_alive && self.bundle(ns, id).exit_status()?.is_none();
                if shim_died {
                    let (idc, pid) = (id.to_string(), self.bundle(ns, id).init_pid());
                    let _ = tokio::task::spawn_blocking(move || end_orphaned_init(&idc, pid)).await;
                }
                let exit = t.exit.clone().unwrap_or_else(crate::tasks::unknown_exit);
                let pid = self.bundle(ns, id).init_pid().unwrap_or(0);
                self.handle_exit(ns, id, pid, exit, shim_died, false)
                    .await?;
            }
            None => {
                if c.network_settings.is_some() {
                    self.detach_network(ns, id, c.network_settings.clone())
                        .await;
                }
                if st.status == STATUS_RUNNING || st.status == STATUS_RESTARTING {
                    self.update_state(ns, id, |s| {
                        s.status = STATUS_EXITED.to_string();
                        if st.status == STATUS_RUNNING {
                            s.exit_code = crate::tasks::UNKNOWN_EXIT_CODE;
                            s.error = "the task of the container is gone".into();
                            s.finished_at = Some(now());
                        }
                        s.pid = 0;
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// A shim that died leaves its container's init running without anyone to carry its stdio
/// or record its exit: end it (killing a pid namespace's init ends every process in it), and
/// reap it when it became our child (berthd is a child subreaper). The pid must still be in a
/// cgroup named after the container, so a recycled pid is never hit.
pub(crate) fn end_orphaned_init(id: &str, init_pid: Option<u32>) {
    let Some(pid) = init_pid
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)
    else {
        return;
    };
    let ours = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| c.contains(id))
        .unwrap_or(false);
    if !ours {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    tracing::warn!(container = %id, %pid, "the shim died: killing the container's init");
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    for _ in 0..100 {
        if crate::tasks::shim_gone(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
