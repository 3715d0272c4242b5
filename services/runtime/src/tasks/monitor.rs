//! The monitor of each run of a container, restarts and recovery: a monitor per running task
//! waits on its shim, records the exit in the container's state ([`crate::lifecycle`]),
//! publishes `die`/`oom`, deletes the task and applies the restart policy (Docker's back-off)
//! or `auto_remove`; [`Tasks::recover`] finds everything again when berthd starts.
//!
//! A monitor identifies its task by the init pid it watches: if the bundle now holds another
//! task, the exit was already handled by whoever replaced it.

use super::{exit_to_api, reap, shim_gone, unknown_exit, Tasks, UNKNOWN_EXIT_CODE};
use crate::bundle::RootfsMount;
use crate::error::{Error, Result};
use crate::lifecycle::{
    elapsed_since, next_delay, now, record_start, state_of, update_state, Policy, STATUS_CREATED,
    STATUS_EXITED, STATUS_RESTARTING, STATUS_RUNNING,
};
use crate::shim::{ExitStatus, Request as ShimRequest, Status as ShimStatus};
use berth_api::containers::v1::Container;
use std::sync::Arc;
use std::time::Duration;

/// What the monitor does after an exit that its policy restarts.
#[derive(Debug)]
struct Restart {
    mounts: Option<Vec<RootfsMount>>,
    ran_for: Duration,
}

impl Tasks {
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
                    let _ = update_state(&self.store, &ns, &id, |st| {
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
                reap(pid);
            }
            return match bundle.exit_status() {
                Ok(Some(exit)) => (exit, false),
                _ => {
                    let (id, pid) = (id.to_string(), bundle.init_pid());
                    let _ = tokio::task::spawn_blocking(move || end_orphaned_init(&id, pid)).await;
                    (unknown_exit(), true)
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
        let _guard = self.locks.lock(ns, id).await;
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
        update_state(&self.store, ns, id, |s| {
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
        self.exits_recorded.notify_waiters();
        if exit.oom_killed {
            self.events.publish_container(ns, id, "oom", &[]);
        }
        self.events
            .publish_container(ns, id, "die", &[("exitCode", exit.exit_code.to_string())]);

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
            update_state(&self.store, ns, id, |s| {
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
        let _guard = self.locks.lock(ns, id).await;
        let Some(container) = self.store.get(ns, id)? else {
            return Ok(None);
        };
        let st = state_of(&container);
        if st.status != STATUS_RESTARTING || st.stopped_by_user {
            return Ok(None);
        }
        let (pid, _) = self.start_locked(ns, &container, mounts).await?;
        record_start(&self.store, ns, id, pid, false)?;
        self.events.publish_container(ns, id, "start", &[]);
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
                    let _guard = self.locks.lock(ns, &c.id).await;
                    let (pid, started) = self.start_locked(ns, &c, None).await?;
                    if started {
                        record_start(&self.store, ns, &c.id, pid, false)?;
                        self.events.publish_container(ns, &c.id, "start", &[]);
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
                            let _ =
                                update_state(&self.store, ns, &c.id, |s| s.error = message.clone());
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
                    update_state(&self.store, ns, id, |s| {
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
                let exit = t.exit.clone().unwrap_or_else(unknown_exit);
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
                    update_state(&self.store, ns, id, |s| {
                        s.status = STATUS_EXITED.to_string();
                        if st.status == STATUS_RUNNING {
                            s.exit_code = UNKNOWN_EXIT_CODE;
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
        if shim_gone(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
