//! A task's life, in one room: create (bundle, network, shim), start (a created task, or a
//! stopped one created again), kill, stop (stop signal, timeout, SIGKILL), wait, resize,
//! delete, and its state; deleting a container (its task first); the monitor of each run,
//! restarts and recovery (`monitor`); a task's network (`network`); pause (`pause`) and
//! what a task uses (`usage`). The gRPC shell over it is [`crate::grpc::tasks`].
//!
//! [`Tasks`] owns the per-container bookkeeping of runs (who killed it, who attached, the last
//! rootfs mounts), the state folder with the bundles and the shims it starts. It writes each
//! container's recorded state through [`crate::lifecycle`] (which calls nothing here), removes
//! deleted containers through [`Containers`], and holds the containers' locks it shares with
//! [`crate::connections`].
//!
//! The runtime keeps no task state in memory: the bundle folder says whether a task exists,
//! its shim says how it is, and when the shim is gone `exit.json` says how it ended (exit code
//! 255 when even that is missing). A task is therefore never reported running after its shim
//! died, and a berthd that restarts finds every task again.
//!
//! Every change to a container's task (create, start, delete, recording an exit, a restart)
//! happens under that container's lock, so a monitor and a request never act on the same task
//! at once.

pub mod files;
mod host_figures;
mod joined;
mod log_rotation;
pub(crate) mod monitor;
mod network;
mod pause;
mod ps;
mod update;
mod usage;

use crate::bundle::{self, Bundle, RootfsMount};
use crate::containers::Containers;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::lifecycle::{
    now, parse_signal, record_start, recorded_exit, spec_annotation, state_of, update_state,
    DEFAULT_STOP_TIMEOUT, STATUS_CREATED, STATUS_DEAD, STATUS_EXITED, STATUS_RESTARTING,
    STATUS_RUNNING,
};
use crate::locks::ContainerLocks;
use crate::logs::Logs;
use crate::metadata::Store;
use crate::network::Networks;
use crate::shim::{self, ExitStatus, Request as ShimRequest, Shim, Status as ShimStatus};
use berth_api::containers::v1::Container;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::snapshots::v1::SnapshotKey;
use berth_api::tasks::v1 as api;
use berth_core::grpc::request;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The exit code of a task whose shim vanished without recording one.
pub(crate) const UNKNOWN_EXIT_CODE: i32 = 255;
/// The signal `kill` sends when none is given.
const DEFAULT_SIGNAL: i32 = libc::SIGTERM;
/// An exit within this long after a user's `kill` counts as stopped by the user.
const KILL_WINDOW: Duration = Duration::from_secs(30);

/// What the runtime knows of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub status: ShimStatus,
    /// Host pid of the container's init; 0 when unknown.
    pub pid: u32,
    /// Set once the init process has exited.
    pub exit: Option<ExitStatus>,
    /// Whether the shim answered (a stopped task may still have its shim).
    pub shim_alive: bool,
}

pub(crate) fn unknown_exit() -> ExitStatus {
    ExitStatus {
        exit_code: UNKNOWN_EXIT_CODE,
        signal: None,
        exited_at: String::new(),
        oom_killed: false,
    }
}

/// The exit status as the API carries it.
pub fn exit_to_api(exit: &ExitStatus) -> api::ExitStatus {
    let exited_at = chrono::DateTime::parse_from_rfc3339(&exit.exited_at)
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        });
    api::ExitStatus {
        exit_code: exit.exit_code,
        exited_at,
        oom_killed: exit.oom_killed,
    }
}

pub(crate) fn not_running(id: &str) -> Error {
    Error::FailedPrecondition(format!("Container {id} is not running"))
}

/// The task lifecycle of every container of this runtime.
#[derive(Debug)]
pub struct Tasks {
    /// These tasks themselves, for the monitors they spawn.
    me: Weak<Tasks>,
    /// The volatile state folder: bundles under `<state>/tasks/<ns>/<id>`.
    state: PathBuf,
    shim_binary: PathBuf,
    store: Store,
    /// For the rootfs mounts of a container's snapshot.
    snapshots: SnapshotsClient<Channel>,
    containers: Arc<Containers>,
    networks: Arc<Networks>,
    logs: Logs,
    events: Arc<Events>,
    locks: Arc<ContainerLocks>,
    /// `<ns>/<id>` → when a user last sent it a signal with `kill` (an exit soon after counts
    /// as stopped by the user).
    user_kills: Mutex<HashMap<String, Instant>>,
    /// `<ns>/<id>` → the rootfs mounts of the container's last task, for a start while the
    /// snapshot service cannot be reached (berthd starting up).
    last_mounts: Mutex<HashMap<String, Vec<RootfsMount>>>,
    /// `<ns>/<id>` of containers a client attached to during their current run: their
    /// client (a foreground `run --rm`) removes them, not `auto_remove`.
    attached_runs: Mutex<HashSet<String>>,
    /// Woken each time a monitor has recorded an exit in a container's state.
    exits_recorded: tokio::sync::Notify,
}

/// What [`Tasks`] works with, owned elsewhere.
#[derive(Debug)]
pub struct TaskParts {
    /// The volatile state folder (bundles go under `<state>/tasks`).
    pub state: PathBuf,
    /// The `berth-shim` binary to start.
    pub shim_binary: PathBuf,
    pub store: Store,
    pub snapshots: SnapshotsClient<Channel>,
    pub containers: Arc<Containers>,
    pub networks: Arc<Networks>,
    pub logs: Logs,
    pub events: Arc<Events>,
    pub locks: Arc<ContainerLocks>,
}

impl Tasks {
    /// The task lifecycle over `parts`, with no run noted yet.
    pub fn new(parts: TaskParts) -> Arc<Tasks> {
        Arc::new_cyclic(|me| Tasks {
            me: me.clone(),
            state: parts.state,
            shim_binary: parts.shim_binary,
            store: parts.store,
            snapshots: parts.snapshots,
            containers: parts.containers,
            networks: parts.networks,
            logs: parts.logs,
            events: parts.events,
            locks: parts.locks,
            user_kills: Default::default(),
            last_mounts: Default::default(),
            attached_runs: Default::default(),
            exits_recorded: tokio::sync::Notify::new(),
        })
    }

    /// The container records.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The containers' folders and logs.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Where the runtime publishes its events.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Remembers that a user signalled the container.
    fn note_user_kill(&self, ns: &str, id: &str) {
        let mut kills = self.user_kills.lock().unwrap_or_else(|e| e.into_inner());
        kills.insert(format!("{ns}/{id}"), Instant::now());
    }

    /// Whether a user signalled the container shortly before (and forgets it).
    fn take_user_kill(&self, ns: &str, id: &str) -> bool {
        let mut kills = self.user_kills.lock().unwrap_or_else(|e| e.into_inner());
        kills
            .remove(&format!("{ns}/{id}"))
            .is_some_and(|t| t.elapsed() < KILL_WINDOW)
    }

    /// Remembers that a client attached to the container's current run.
    pub(crate) fn note_attach(&self, ns: &str, id: &str) {
        let mut a = self.attached_runs.lock().unwrap_or_else(|e| e.into_inner());
        a.insert(format!("{ns}/{id}"));
    }

    /// Returns once the exit of the run whose init was `pid` is in the container's state (its
    /// monitor recorded it), or after at most 5 s: a client told of an exit by the shim (stop,
    /// wait, attach) reads the state next, and must find the exit there, as with Docker.
    pub(crate) async fn await_recorded_exit(&self, ns: &str, id: &str, pid: u32) -> Result<()> {
        const AT_MOST: Duration = Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + AT_MOST;
        loop {
            let woken = self.exits_recorded.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let recorded = match self.store.get(ns, id)? {
                Some(c) => {
                    let st = state_of(&c);
                    st.pid != pid || st.status != STATUS_RUNNING
                }
                None => true,
            };
            if recorded || tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Whether a client attached to the run that ended (and forgets it).
    fn take_attach(&self, ns: &str, id: &str) -> bool {
        let mut a = self.attached_runs.lock().unwrap_or_else(|e| e.into_inner());
        a.remove(&format!("{ns}/{id}"))
    }

    pub(crate) fn bundle(&self, ns: &str, id: &str) -> Bundle {
        Bundle::new(&self.state, ns, id)
    }

    pub(crate) fn shim(&self, ns: &str, id: &str) -> Shim {
        Shim::new(id, self.bundle(ns, id).socket())
    }

    /// The id of the task a request names: a container by id, prefix or name; or the full id of
    /// a task whose container record is already gone.
    pub(crate) fn task_id(&self, ns: &str, reference: &str) -> Result<String> {
        match self.store.resolve(ns, reference) {
            Ok(c) => Ok(c.id),
            Err(Error::NoSuchContainer(r))
                if r.len() == 64
                    && r.bytes().all(|b| b.is_ascii_hexdigit())
                    && self.bundle(ns, &r).exists() =>
            {
                Ok(r)
            }
            Err(e) => Err(e),
        }
    }

    /// A task whose shim is gone: stopped, with the exit status the shim left behind.
    fn stopped_without_shim(&self, ns: &str, id: &str, bundle: &Bundle) -> Result<TaskState> {
        // The monitor may be removing the bundle right now: the recorded exit then tells.
        Ok(TaskState {
            status: ShimStatus::Stopped,
            pid: bundle.init_pid().unwrap_or(0),
            exit: Some(self.fallback_exit(ns, id)),
            shim_alive: false,
        })
    }

    /// How a task ended when its bundle cannot say (any more): `exit.json`, else the exit the
    /// container's state records, else unknown (255).
    pub(crate) fn fallback_exit(&self, ns: &str, id: &str) -> ExitStatus {
        self.bundle(ns, id)
            .exit_status()
            .ok()
            .flatten()
            .or_else(|| recorded_exit(&self.store, ns, id))
            .unwrap_or_else(unknown_exit)
    }

    /// The state of the task of container `id`; `None` when it has no task.
    pub async fn task_state(&self, ns: &str, id: &str) -> Result<Option<TaskState>> {
        let bundle = self.bundle(ns, id);
        if !bundle.exists() {
            return Ok(None);
        }
        let answer = match self.shim(ns, id).call_ok(&ShimRequest::State).await? {
            Some(a) => a,
            None => {
                // A shim that died is reaped here, so no zombie is left behind.
                if let Some(pid) = bundle.shim_pid() {
                    shim_gone(nix::unistd::Pid::from_raw(pid));
                }
                return self.stopped_without_shim(ns, id, &bundle).map(Some);
            }
        };
        let status = answer.status.unwrap_or(ShimStatus::Running);
        let mut exit = answer.exit_status().cloned();
        if status == ShimStatus::Stopped && exit.is_none() {
            exit = Some(bundle.exit_status()?.unwrap_or_else(unknown_exit));
        }
        Ok(Some(TaskState {
            status,
            pid: shim::pid_of(&answer).max(bundle.init_pid().unwrap_or(0)),
            exit,
            shim_alive: true,
        }))
    }

    /// Creates the task of a container: its bundle from the stored spec and the snapshot's
    /// mounts, then its shim. The process is created but waits for `start`. Returns its pid.
    pub async fn create_task(&self, ns: &str, reference: &str) -> Result<u32> {
        let container = self.store.resolve(ns, reference)?;
        let _guard = self.locks.lock(ns, &container.id).await;
        self.create_task_locked(ns, &container, None).await
    }

    fn remember_mounts(&self, ns: &str, id: &str, mounts: Vec<RootfsMount>) {
        let mut m = self.last_mounts.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(format!("{ns}/{id}"), mounts);
    }

    fn remembered_mounts(&self, ns: &str, id: &str) -> Option<Vec<RootfsMount>> {
        let m = self.last_mounts.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&format!("{ns}/{id}")).cloned()
    }

    pub(crate) fn forget_mounts(&self, ns: &str, id: &str) {
        let mut m = self.last_mounts.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&format!("{ns}/{id}"));
    }

    /// The rootfs mounts of a container's snapshot.
    async fn snapshot_mounts(&self, ns: &str, container: &Container) -> Result<Vec<RootfsMount>> {
        let mounts = self
            .snapshots
            .clone()
            .mounts(request(
                ns,
                SnapshotKey {
                    snapshotter: container.snapshotter.clone(),
                    key: container.snapshot_key.clone(),
                },
            ))
            .await
            .map_err(|s| Error::service("snapshots", s))?
            .into_inner()
            .mounts;
        if mounts.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "the snapshot {} of container {} has no mounts",
                container.snapshot_key, container.id
            )));
        }
        Ok(mounts.into_iter().map(bundle::rootfs_mount).collect())
    }

    /// [`Tasks::create_task`] with the rootfs mounts already known.
    pub async fn create_task_with_mounts(
        &self,
        ns: &str,
        container: &Container,
        mounts: &[RootfsMount],
    ) -> Result<u32> {
        let _guard = self.locks.lock(ns, &container.id).await;
        self.create_task_locked(ns, container, Some(mounts)).await
    }

    /// Creates the task of a container whose lock is held; `mounts` or, when `None`, the
    /// snapshot's mounts make its rootfs.
    pub(crate) async fn create_task_locked(
        &self,
        ns: &str,
        container: &Container,
        mounts: Option<&[RootfsMount]>,
    ) -> Result<u32> {
        let id = container.id.as_str();
        let fetched;
        let mounts = match mounts {
            Some(m) => m,
            None => {
                fetched = match self.snapshot_mounts(ns, container).await {
                    Ok(m) => m,
                    Err(e) if e.code() == tonic::Code::Unavailable => {
                        // The snapshot service is not up (yet): the last task's rootfs.
                        self.remembered_mounts(ns, id).ok_or(e)?
                    }
                    Err(e) => return Err(e),
                };
                &fetched
            }
        };
        if let Some(state) = self.task_state(ns, id).await? {
            if state.status != ShimStatus::Stopped {
                return Err(Error::TaskExists(id.to_string()));
            }
            // A stopped task is only a record of how it ended: make room for the new one.
            self.delete_task_of(ns, id, &state).await?;
        }
        let bundle = self.bundle(ns, id);
        let spec = self.logs.task_spec(ns, container)?;
        let spec = self.join_namespaces(ns, container, spec).await?;
        let attached = self.attach_network(ns, container, &spec).await?;
        let spec = match crate::network::apply_to_spec(&spec, &attached) {
            Ok(s) => s,
            Err(e) => {
                self.detach_network(ns, id, Some(attached.settings)).await;
                return Err(e);
            }
        };
        match bundle.write(&spec, mounts) {
            Ok(()) => {}
            Err(e) => {
                if !matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
                {
                    let _ = remove_bundle(bundle).await;
                }
                self.detach_network(ns, id, Some(attached.settings)).await;
                return match e {
                    Error::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Err(Error::TaskExists(id.to_string()))
                    }
                    e => Err(e),
                };
            }
        }
        if let Err(e) = shim::spawn(&self.shim_binary, id, ns, bundle.dir()).await {
            if let Err(re) = remove_bundle(bundle).await {
                tracing::warn!(container = %id, error = %re, "cannot remove the bundle of a shim that failed");
            }
            self.detach_network(ns, id, Some(attached.settings)).await;
            return Err(e);
        }
        let settings = attached.settings;
        self.store.update(ns, id, |c| {
            c.network_settings = Some(settings.clone());
        })?;
        let pid = match bundle.init_pid() {
            Some(pid) => pid,
            None => self.task_state(ns, id).await?.map(|s| s.pid).unwrap_or(0),
        };
        tracing::info!(container = %id, pid, "task created");
        Ok(pid)
    }

    /// Starts the task of a container whose lock is held: a created task is started, a
    /// stopped one (or none) is created again first, with `mounts` when given (else from the
    /// snapshot service). A running one is left alone. Returns the pid and whether it started.
    pub(crate) async fn start_locked(
        &self,
        ns: &str,
        container: &Container,
        mounts: Option<&[RootfsMount]>,
    ) -> Result<(u32, bool)> {
        let id = container.id.as_str();
        match self.task_state(ns, id).await? {
            Some(t) if t.status == ShimStatus::Running => return Ok((t.pid, false)),
            Some(t) if t.status == ShimStatus::Created && t.shim_alive => {}
            Some(t) => {
                self.delete_task_of(ns, id, &t).await?;
                self.create_task_locked(ns, container, mounts).await?;
            }
            None => {
                self.create_task_locked(ns, container, mounts).await?;
            }
        }
        match self
            .shim(ns, id)
            .call_ok(&crate::shim::start_request())
            .await
        {
            Ok(Some(answer)) => Ok((crate::shim::pid_of(&answer), true)),
            Ok(None) => Err(Error::FailedPrecondition(format!(
                "the shim of container {id} went away before it started"
            ))),
            Err(e) => {
                // Docker records a failed start as an exit with the code (126/127) and error.
                let code = match &e {
                    Error::Shim { exit_code, .. } => *exit_code,
                    _ => 128,
                };
                let message = e.to_string();
                let _ = update_state(&self.store, ns, id, |st| {
                    st.status = STATUS_EXITED.to_string();
                    st.exit_code = code;
                    st.pid = 0;
                    st.error = message.clone();
                    st.finished_at = Some(now());
                });
                // An attach opened before this start heard the init's end from the shim.
                self.exits_recorded.notify_waiters();
                // Nothing runs in it: its address, veth and published ports go now, not at
                // its next start or removal.
                self.release_network(ns, id).await;
                Err(e)
            }
        }
    }

    /// Tasks.Start: starts a container whether it was created, has exited (a new task on the
    /// same rw snapshot) or is waiting to restart; a running one is left alone. Returns the
    /// pid.
    pub async fn start_container(&self, ns: &str, reference: &str) -> Result<u32> {
        let id = self.task_id(ns, reference)?;
        let _guard = self.locks.lock(ns, &id).await;
        let Some(container) = self.store.get(ns, &id)? else {
            // A task whose container record is gone: only its created process can start.
            let answer = self
                .shim(ns, &id)
                .call_ok(&crate::shim::start_request())
                .await?
                .ok_or_else(|| Error::NoTask(id.clone()))?;
            return Ok(crate::shim::pid_of(&answer));
        };
        let (pid, started) = self.start_locked(ns, &container, None).await?;
        if started {
            record_start(&self.store, ns, &id, pid, true)?;
            self.events.publish_container(ns, &id, "start", &[]);
            self.spawn_monitor(ns, &id, pid);
        }
        Ok(pid)
    }

    /// Tasks.Stop: the stop signal, `timeout` seconds, then SIGKILL to every process. The
    /// container is marked stopped by the user, so its restart policy leaves it stopped. A
    /// container that is not running is left as it is.
    pub async fn stop_container(
        &self,
        ns: &str,
        reference: &str,
        timeout: Option<i32>,
    ) -> Result<ExitStatus> {
        let container = self.store.resolve(ns, reference)?;
        let id = container.id.clone();
        update_state(&self.store, ns, &id, |st| {
            st.stopped_by_user = true;
            if st.status == STATUS_RESTARTING {
                st.status = STATUS_EXITED.to_string();
            }
        })?;
        let task = self.task_state(ns, &id).await?;
        let Some(task) = task.filter(|t| t.status == ShimStatus::Running) else {
            return Ok(recorded_exit(&self.store, ns, &id)
                .unwrap_or_else(|| ExitStatus::exited(0, String::new())));
        };
        let config = container.config.clone().unwrap_or_default();
        let signal = if !config.stop_signal.is_empty() {
            parse_signal(&config.stop_signal)?
        } else {
            spec_annotation(&container.spec, crate::spec::ANNOTATION_STOP_SIGNAL)
                .and_then(|s| parse_signal(&s).ok())
                .unwrap_or(libc::SIGTERM)
        };
        let seconds = timeout.unwrap_or(if config.stop_timeout > 0 {
            config.stop_timeout
        } else {
            DEFAULT_STOP_TIMEOUT
        });
        let shim = self.shim(ns, &id);
        self.events
            .publish_container(ns, &id, "kill", &[("signal", signal.to_string())]);
        if let Err(e) = shim
            .call_ok(&ShimRequest::Kill { signal, all: false })
            .await
        {
            tracing::debug!(container = %id, error = %e, "stop signal refused");
        }
        self.thaw_if_paused(ns, &id).await;
        let waited = if seconds < 0 {
            Some(shim.call(&ShimRequest::Wait).await)
        } else {
            tokio::time::timeout(
                Duration::from_secs(seconds as u64),
                shim.call(&ShimRequest::Wait),
            )
            .await
            .ok()
        };
        let mut exit = waited
            .and_then(|r| r.ok().flatten())
            .and_then(|a| a.exit_status().cloned());
        if exit.is_none() {
            tracing::info!(container = %id, seconds, "container did not stop in time: SIGKILL");
            let _ = shim
                .call_ok(&ShimRequest::Kill {
                    signal: libc::SIGKILL,
                    all: true,
                })
                .await;
            exit = tokio::time::timeout(Duration::from_secs(30), shim.call(&ShimRequest::Wait))
                .await
                .ok()
                .and_then(|r| r.ok().flatten())
                .and_then(|a| a.exit_status().cloned());
        }
        self.await_recorded_exit(ns, &id, task.pid).await?;
        self.events.publish_container(ns, &id, "stop", &[]);
        Ok(exit
            .or_else(|| recorded_exit(&self.store, ns, &id))
            .unwrap_or_else(crate::tasks::unknown_exit))
    }

    /// Sends `signal` (SIGTERM when 0) to the init process, or to every process of the
    /// container with `all`.
    pub async fn kill_task(&self, ns: &str, reference: &str, signal: u32, all: bool) -> Result<()> {
        let id = self.task_id(ns, reference)?;
        let pid = match self.task_state(ns, &id).await? {
            Some(t) if t.status != ShimStatus::Stopped => t.pid,
            _ => return Err(not_running(&id)),
        };
        let signal = if signal == 0 {
            DEFAULT_SIGNAL
        } else {
            i32::try_from(signal)
                .ok()
                .filter(|s| *s < 65)
                .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal}")))?
        };
        match self
            .shim(ns, &id)
            .call_ok(&ShimRequest::Kill { signal, all })
            .await
        {
            Ok(Some(_)) => {
                self.thaw_if_paused(ns, &id).await;
                self.note_user_kill(ns, &id);
                self.events
                    .publish_container(ns, &id, "kill", &[("signal", signal.to_string())]);
                // As Docker's kill does for SIGKILL: return once the container is stopped.
                if signal == libc::SIGKILL {
                    self.await_recorded_exit(ns, &id, pid).await?;
                }
                Ok(())
            }
            Ok(None) => Err(not_running(&id)),
            // The init exited between the state and the signal.
            Err(Error::Shim { .. }) if matches!(self.task_state(ns, &id).await, Ok(Some(t)) if t.status == ShimStatus::Stopped) => {
                Err(not_running(&id))
            }
            Err(e) => Err(e),
        }
    }

    /// Blocks until the init process has exited.
    pub async fn wait_task(&self, ns: &str, reference: &str) -> Result<ExitStatus> {
        let id = self.task_id(ns, reference)?;
        let bundle = self.bundle(ns, &id);
        if !bundle.exists() {
            // Its monitor recorded the exit and deleted the task.
            return recorded_exit(&self.store, ns, &id).ok_or(Error::NoTask(id));
        }
        let pid = bundle.init_pid().unwrap_or(0);
        let answer = self.shim(ns, &id).call_ok(&ShimRequest::Wait).await?;
        if let Some(exit) = answer.as_ref().and_then(|a| a.exit_status()) {
            self.await_recorded_exit(ns, &id, pid).await?;
            return Ok(exit.clone());
        }
        Ok(self.fallback_exit(ns, &id))
    }

    /// Resizes the container's terminal.
    pub async fn resize_task(
        &self,
        ns: &str,
        reference: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let id = self.task_id(ns, reference)?;
        if !self.bundle(ns, &id).exists() {
            return Err(not_running(&id));
        }
        match self
            .shim(ns, &id)
            .call_ok(&ShimRequest::Resize { width, height })
            .await?
        {
            Some(_) => Ok(()),
            None => Err(not_running(&id)),
        }
    }

    /// Deletes a task that is not running: the shim removes the cgroup and exits, the runtime
    /// removes the bundle. Returns how the task ended.
    pub async fn delete_task(&self, ns: &str, reference: &str) -> Result<ExitStatus> {
        let id = self.task_id(ns, reference)?;
        let _guard = self.locks.lock(ns, &id).await;
        let Some(state) = self.task_state(ns, &id).await? else {
            // The monitor already recorded the exit and deleted the task.
            return recorded_exit(&self.store, ns, &id).ok_or(Error::NoTask(id));
        };
        self.delete_task_of(ns, &id, &state).await
    }

    pub(crate) async fn delete_task_of(
        &self,
        ns: &str,
        id: &str,
        state: &TaskState,
    ) -> Result<ExitStatus> {
        let bundle = self.bundle(ns, id);
        if let Some(mounts) = std::fs::read(bundle.dir().join("rootfs.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<RootfsMount>>(&b).ok())
        {
            self.remember_mounts(ns, id, mounts);
        }
        let mut exit = state.exit.clone();
        if state.shim_alive {
            let shim = self.shim(ns, id);
            match state.status {
                ShimStatus::Running => {
                    return Err(Error::FailedPrecondition(format!(
                        "the task of container {id} is running: stop or kill it before deleting it"
                    )))
                }
                ShimStatus::Created => {
                    // Never started: end the waiting process first.
                    shim.call_ok(&ShimRequest::Kill {
                        signal: libc::SIGKILL,
                        all: true,
                    })
                    .await?;
                    let waited = tokio::time::timeout(
                        Duration::from_secs(10),
                        shim.call(&ShimRequest::Wait),
                    )
                    .await;
                    if let Ok(Ok(Some(answer))) = waited {
                        exit = answer.exit_status().cloned().or(exit);
                    }
                }
                ShimStatus::Stopped => {}
            }
            let shim_pid = bundle.shim_pid();
            if let Some(answer) = shim.call_ok(&ShimRequest::Delete).await? {
                exit = answer.exit_status().cloned().or(exit);
            }
            if let Some(pid) = shim_pid {
                wait_for_exit(pid).await;
            }
        } else {
            // A shim that died could not remove the container's cgroup: do it in its place.
            remove_cgroup_of(&self.shim_binary, ns, id, &bundle).await;
        }
        let exit = match exit {
            Some(e) => e,
            None => self.fallback_exit(ns, id),
        };
        self.release_network(ns, id).await;
        remove_bundle(bundle).await?;
        tracing::info!(container = %id, exit_code = exit.exit_code, "task deleted");
        Ok(exit)
    }

    /// Deletes a container: its stopped task, its snapshot, its log, its record (and its
    /// anonymous volumes with `remove_volumes`). A running container is refused, unless
    /// `force`, which kills it first.
    pub async fn delete_container(
        &self,
        ns: &str,
        reference: &str,
        force: bool,
        remove_volumes: bool,
    ) -> Result<()> {
        let container = self.store.resolve(ns, reference)?;
        let id = container.id.clone();
        let _guard = self.locks.lock(ns, &id).await;
        if let Some(task) = self.task_state(ns, &id).await? {
            if task.status == ShimStatus::Running {
                if !force {
                    return Err(Error::FailedPrecondition(format!(
                        "You cannot remove a running container {id}. Stop the container before \
                         attempting removal or force remove"
                    )));
                }
                let shim = self.shim(ns, &id);
                shim.call_ok(&ShimRequest::Kill {
                    signal: libc::SIGKILL,
                    all: true,
                })
                .await?;
                self.thaw_if_paused(ns, &id).await;
                self.events
                    .publish_container(ns, &id, "kill", &[("signal", "9".to_string())]);
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    shim.call(&ShimRequest::Wait),
                )
                .await;
            }
        }
        self.delete_container_locked(ns, &container, remove_volumes)
            .await?;
        drop(_guard);
        self.locks.forget(ns, &id);
        self.forget_mounts(ns, &id);
        Ok(())
    }

    /// Deletes a container whose lock is held and whose task is not running: its task, then
    /// what the container leaves behind ([`Containers::remove`]).
    pub(crate) async fn delete_container_locked(
        &self,
        ns: &str,
        container: &Container,
        remove_volumes: bool,
    ) -> Result<()> {
        let id = container.id.as_str();
        if let Some(task) = self.task_state(ns, id).await? {
            self.delete_task_of(ns, id, &task).await?;
        }
        self.containers.remove(ns, container, remove_volumes).await
    }

    /// Deletes every container that is not running (created, exited, dead). Returns their
    /// ids.
    pub async fn prune_containers(&self, ns: &str) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        for c in self.store.list(ns)? {
            let st = state_of(&c);
            if ![STATUS_CREATED, STATUS_EXITED, STATUS_DEAD].contains(&st.status.as_str()) {
                continue;
            }
            match self.delete_container(ns, &c.id, false, false).await {
                Ok(()) => deleted.push(c.id),
                Err(e) => tracing::info!(container = %c.id, error = %e, "prune: container kept"),
            }
        }
        Ok(deleted)
    }

    /// Every task of a namespace.
    pub async fn list_tasks(&self, ns: &str) -> Result<Vec<(String, TaskState)>> {
        let mut out = Vec::new();
        for id in bundle::list(&self.state, ns)? {
            if let Some(state) = self.task_state(ns, &id).await? {
                out.push((id, state));
            }
        }
        Ok(out)
    }
}

/// Removes the cgroup of a task whose shim is gone (killing whatever is left in it), as the
/// shim does on Delete: `berth-shim delete` does it, the shim owning the cgroup.
async fn remove_cgroup_of(shim_binary: &Path, ns: &str, id: &str, bundle: &Bundle) {
    if let Err(e) = shim::delete_after_death(shim_binary, id, ns, bundle.dir()).await {
        tracing::warn!(container = %id, error = %e, "cannot remove the cgroup of a dead shim");
    }
}

/// Removes a bundle folder off the async threads (it may retry while a shim exits).
async fn remove_bundle(bundle: Bundle) -> Result<()> {
    let dir = bundle.dir().to_path_buf();
    tokio::task::spawn_blocking(move || bundle.remove())
        .await
        .map_err(|e| Error::io("cannot remove bundle", dir, std::io::Error::other(e)))?
}

/// Waits (briefly) until process `pid` is gone, so its files can be removed after it.
async fn wait_for_exit(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    for _ in 0..400 {
        if shim_gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a shim process has ended. berthd is a child subreaper, so a shim it started is
/// its child and is reaped here; a shim from before a restart of berthd belongs to another
/// parent, and counts as gone once it is a zombie.
pub(crate) fn shim_gone(pid: nix::unistd::Pid) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(_) => match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state follows the command name in parentheses.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        },
    }
}

/// Reaps a shim process that ended (no zombie is left); see [`shim_gone`].
pub(crate) fn reap(pid: i32) {
    shim_gone(nix::unistd::Pid::from_raw(pid));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_converts() {
        let e = ExitStatus {
            exit_code: 137,
            signal: Some(9),
            exited_at: "2024-05-06T07:08:09.123456789Z".into(),
            oom_killed: true,
        };
        let a = exit_to_api(&e);
        assert_eq!((a.exit_code, a.oom_killed), (137, true));
        let t = a.exited_at.unwrap();
        assert_eq!(t.nanos, 123_456_789);
        assert_eq!(t.seconds, 1_714_979_289);
        assert!(exit_to_api(&unknown_exit()).exited_at.is_none());
    }
}
