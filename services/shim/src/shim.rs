//! The shim daemon: daemonize, create the container, serve `shim.sock`, relay stdio, reap.
//!
//! Threads (all started after the container's init was cloned): the accept loop (main
//! thread), one reaper, one relay per output stream, one per connection.
//!
//! Here: the command line, daemonizing, creating the container ([`create`], one function a
//! phase), the relays and the reaper. The requests are answered in [`requests`]; the
//! shim's side of `exec` is [`execs`].

mod execs;
mod requests;

use execs::Execs;
use requests::handle_conn;

use crate::bundle::{
    Bundle, RootfsMount, ANNOTATION_LOG_FORMAT, ANNOTATION_LOG_MAX_SIZE, ANNOTATION_STDIN,
};
use crate::cgroup::{self, ContainerCgroup};
use crate::container::{self, InitConfig, InitStdio, Namespaces};
use crate::error::{Context, Error, Result};
use crate::logfile::{now_rfc3339, LogFormat, LogWriter};
use crate::protocol::{
    self, ExitStatus, SpanRecord, Status, FRAME_EXIT, FRAME_STDERR, FRAME_STDOUT,
};
use crate::trace::Trace;
use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use oci_spec::runtime::Spec;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Command line of `berth-shim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Container id.
    pub id: String,
    /// berth namespace.
    pub namespace: String,
    /// Bundle folder.
    pub bundle: PathBuf,
    /// W3C traceparent of the runtime's span that asked for the container: the shim then
    /// records its `create` work under it (see [`crate::trace`]).
    pub traceparent: Option<String>,
}

impl Options {
    /// Parses `--id ID --namespace NS --bundle DIR` (also `--flag=value`).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> std::result::Result<Self, String> {
        let mut id = None;
        let mut namespace = None;
        let mut bundle = None;
        let mut traceparent = None;
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            let slot = match flag.as_str() {
                "--id" => &mut id,
                "--namespace" | "-n" => &mut namespace,
                "--bundle" => &mut bundle,
                "--traceparent" => &mut traceparent,
                "--help" | "-h" => return Err(usage()),
                other => return Err(format!("unknown argument {other:?}\n{}", usage())),
            };
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?,
            };
            *slot = Some(v);
        }
        Ok(Options {
            id: id.ok_or_else(|| format!("--id is required\n{}", usage()))?,
            namespace: namespace.unwrap_or_else(|| "default".into()),
            bundle: PathBuf::from(
                bundle.ok_or_else(|| format!("--bundle is required\n{}", usage()))?,
            ),
            traceparent,
        })
    }
}

fn usage() -> String {
    "usage: berth-shim --id ID --namespace NS --bundle DIR [--traceparent TRACEPARENT]".into()
}

/// Runs the shim: returns the exit code of the starting process (the daemon lives on).
pub fn run(opts: Options) -> i32 {
    let began = SpanRecord::now_ns();
    let bundle = match Bundle::new(&opts.bundle) {
        Ok(b) => b,
        Err(e) => return fail_early(&e),
    };
    let spec = match bundle.load_spec() {
        Ok(s) => s,
        Err(e) => return fail_early(&e),
    };
    let mounts = match bundle.load_rootfs_mounts() {
        Ok(m) => m,
        Err(e) => return fail_early(&e),
    };

    let (verdict_r, verdict_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail_early(&Error::io("pipe", e.into())),
    };
    // SAFETY: the process is single-threaded here (nothing has spawned a thread yet), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Err(e) => fail_early(&Error::io("fork", e.into())),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(verdict_w);
            let mut buf = Vec::new();
            let _ = File::from(verdict_r).read_to_end(&mut buf);
            parse_verdict(&buf)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(verdict_r);
            daemon(opts, bundle, spec, mounts, File::from(verdict_w), began)
        }
    }
}

fn fail_early(e: &Error) -> i32 {
    eprintln!("berth-shim: {e}");
    e.exit_code()
}

/// Verdict on the startup pipe: `"<code> <message>"`; code 0 = created.
fn parse_verdict(buf: &[u8]) -> i32 {
    let s = String::from_utf8_lossy(buf);
    let Some((code, msg)) = s
        .split_once(' ')
        .or(if s.is_empty() { None } else { Some((&*s, "")) })
    else {
        eprintln!("berth-shim: the shim daemon exited during startup (see shim.log)");
        return 1;
    };
    let code: i32 = code.trim().parse().unwrap_or(1);
    if code != 0 {
        eprintln!("{}", msg.trim_end());
    }
    code
}

fn daemon(
    opts: Options,
    bundle: Bundle,
    spec: Spec,
    mounts: Vec<RootfsMount>,
    mut verdict: File,
    began: u64,
) -> ! {
    let _ = nix::unistd::setsid();
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // One malloc arena: the threads here are light and RSS matters more than contention.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Do not keep the caller's working folder (maybe a mount point) busy.
    let _ = nix::unistd::chdir("/");
    if let Err(e) = redirect_stdio(&bundle) {
        let _ = write!(verdict, "1 {e}");
        std::process::exit(1);
    }
    crate::log(&format!(
        "berth-shim {} starting for {}/{} in {}",
        env!("CARGO_PKG_VERSION"),
        opts.namespace,
        opts.id,
        bundle.dir().display()
    ));
    match create(&opts, bundle, spec, mounts) {
        Ok((shared, listener)) => {
            shared.trace.record(
                "create",
                opts.traceparent.as_deref(),
                began,
                None,
                &[
                    ("process.pid", std::process::id().into()),
                    ("init.pid", shared.init_pid.into()),
                ],
            );
            let _ = write!(verdict, "0 ");
            drop(verdict);
            crate::memory::release_setup_pages();
            serve(shared, listener)
        }
        Err(e) => {
            crate::log(&format!("create failed: {e}"));
            let _ = write!(verdict, "{} {e}", e.exit_code());
            std::process::exit(1)
        }
    }
}

fn redirect_stdio(bundle: &Bundle) -> Result<()> {
    let path = bundle.shim_log_path();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))?;
    let null = container::dev_null()?;
    // SAFETY: dup2 of open descriptors onto this process's standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    Ok(())
}

/// State shared by the shim's threads.
struct Shared {
    id: String,
    bundle: Bundle,
    init_pid: i32,
    pidfd: Option<OwnedFd>,
    cgroup: ContainerCgroup,
    oom_base: u64,
    pty: Option<File>,
    state: Mutex<State>,
    state_cv: Condvar,
    sync: Mutex<Option<OwnedFd>>,
    stdin: Mutex<Option<File>>,
    clients: Mutex<Clients>,
    log: Mutex<LogWriter>,
    streams_open: Mutex<usize>,
    streams_cv: Condvar,
    next_client: AtomicU64,
    execs: Mutex<Execs>,
    /// The traced work not handed over yet.
    trace: Trace,
}

struct State {
    status: Status,
    exit: Option<ExitStatus>,
}

struct Clients {
    list: Vec<(u64, UnixStream)>,
    finished: Option<ExitStatus>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread must not take the whole shim down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())
}

/// The container's cgroup, relative to each hierarchy's root: the spec's
/// `linux.cgroupsPath`, else `/berth/<namespace>/<id>`.
fn cgroup_of(opts: &Options, spec: Option<&Spec>) -> Result<String> {
    let path = spec
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/berth/{}/{}", opts.namespace, opts.id)));
    cgroup::relative_path(&path)
}

/// First argument of `berth-shim delete --id ID --namespace NS --bundle DIR`, which cleans
/// up after a shim that died (so its own `delete` never ran): it kills whatever is left in
/// the container's cgroup and removes the cgroup, as that `delete` does. The runtime runs it
/// for a task whose shim is gone.
pub const DELETE_COMMAND: &str = "delete";

/// `berth-shim delete`: returns the exit code (1 with the reason on stderr).
pub fn delete_after_death(opts: Options) -> i32 {
    let spec = Bundle::new(&opts.bundle).and_then(|b| b.load_spec()).ok();
    let removed = cgroup_of(&opts, spec.as_ref()).and_then(|rel| {
        let cg = ContainerCgroup::load(&rel);
        if cg.exists() {
            cg.remove()
        } else {
            Ok(())
        }
    });
    match removed {
        Ok(()) => 0,
        Err(e) => fail_early(&e).max(1),
    }
}

/// What `create` reads from the bundle before anything is made.
struct Plan {
    /// The container's cgroup, relative to each hierarchy's root.
    cgroup_rel: String,
    namespaces: Namespaces,
    terminal: bool,
    want_stdin: bool,
    rootfs: PathBuf,
    seccomp: Option<crate::seccomp::Filter>,
    log: LogWriter,
}

impl Plan {
    fn read(opts: &Options, bundle: &Bundle, spec: &Spec) -> Result<Plan> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        let cgroup_rel = cgroup_of(opts, Some(spec))?;
        let namespaces = Namespaces::from_spec(spec)?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let want_stdin = annotations
            .get(ANNOTATION_STDIN)
            .map(|v| v == "true")
            .unwrap_or(false);
        let log_max = annotations
            .get(ANNOTATION_LOG_MAX_SIZE)
            .and_then(|v| v.trim().parse::<u64>().ok());
        let rootfs = bundle.rootfs_dir(spec);
        if !rootfs.is_dir() {
            return Err(Error::Invalid(format!(
                "rootfs {} is not a folder",
                rootfs.display()
            )));
        }
        let seccomp = crate::seccomp::Filter::load(bundle.dir(), spec)?;
        let log_path = bundle.container_log_path(spec)?;
        let format_name = annotations
            .get(ANNOTATION_LOG_FORMAT)
            .map(String::as_str)
            .unwrap_or("");
        let format = LogFormat::parse(format_name).ok_or_else(|| {
            Error::Invalid(format!(
                "annotation {ANNOTATION_LOG_FORMAT} {format_name:?} is not a log format (json-file or cri)"
            ))
        })?;
        let log = LogWriter::open(&log_path, log_max)
            .map_err(|e| Error::io("container log", e))?
            .with_format(format);
        Ok(Plan {
            cgroup_rel,
            namespaces,
            terminal,
            want_stdin,
            rootfs,
            seccomp,
            log,
        })
    }
}

/// The shim's ends of the init's stdio pipes (none with a terminal: the pty comes later).
#[derive(Default)]
struct ShimStdio {
    stdin: Option<File>,
    outputs: Vec<(File, u8)>,
}

/// The init's stdio and the shim's ends of it.
fn make_stdio(plan: &Plan) -> Result<(InitStdio, ShimStdio)> {
    if plan.terminal {
        return Ok((InitStdio::Terminal, ShimStdio::default()));
    }
    let mut ends = ShimStdio::default();
    let stdin = if plan.want_stdin {
        let (r, w) = pipe()?;
        ends.stdin = Some(File::from(w));
        r
    } else {
        container::dev_null()?
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    ends.outputs.push((File::from(out_r), FRAME_STDOUT));
    ends.outputs.push((File::from(err_r), FRAME_STDERR));
    let stdio = InitStdio::Pipes {
        stdin,
        stdout: out_w,
        stderr: err_w,
    };
    Ok((stdio, ends))
}

/// The init cloned, not yet ready: until [`StartingInit::ready`] it is killed and its
/// cgroup removed on failure.
struct StartingInit {
    pid: nix::unistd::Pid,
    cgroup: ContainerCgroup,
}

impl StartingInit {
    /// Creates the cgroup, joins the spec's pid namespace (for the init: it affects the
    /// children of this process only) and clones the init. The shim is still single-threaded.
    fn clone(
        plan: &Plan,
        spec: &Spec,
        mounts: &[RootfsMount],
        stdio: &InitStdio,
        init_sync: OwnedFd,
    ) -> Result<StartingInit> {
        let linux = spec.linux().as_ref();
        let cg =
            ContainerCgroup::create(&plan.cgroup_rel, linux.and_then(|l| l.resources().as_ref()))?;
        let v2 = cg.is_v2();
        let fail = |e: Error| -> Error {
            let _ = cg.remove();
            e
        };
        // Joining a pid namespace changes only where the shim's children go; while it differs
        // from the shim's own, the kernel refuses new threads (EINVAL), so the shim's own is
        // taken back once the init is cloned.
        let own_pid_ns = match &plan.namespaces.join_pid {
            Some(fd) => {
                let own = File::open("/proc/self/ns/pid")
                    .map_err(|e| fail(Error::io("open /proc/self/ns/pid", e)))?;
                if let Err(e) = nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWPID) {
                    return Err(fail(Error::io("setns pid namespace", e.into())));
                }
                Some(own)
            }
            None => None,
        };
        let cfg = InitConfig {
            spec,
            rootfs: plan.rootfs.clone(),
            rootfs_mounts: mounts,
            cgroup_rel: plan.cgroup_rel.clone(),
            cgroup_v2: v2,
            v1_hierarchies: if v2 {
                Vec::new()
            } else {
                cgroup::v1_hierarchies()
            },
            namespaces: &plan.namespaces,
            stdio,
            sync: init_sync.as_raw_fd(),
            seccomp: plan.seccomp.as_ref(),
        };
        let spawned = container::spawn_init(&cfg);
        if let Some(own) = own_pid_ns {
            if let Err(e) = nix::sched::setns(own, nix::sched::CloneFlags::CLONE_NEWPID) {
                // Threads could not be made any more: the shim cannot serve this container.
                if let Ok(pid) = &spawned {
                    let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(*pid, None);
                }
                return Err(fail(Error::io(
                    "setns back to the shim's pid namespace",
                    e.into(),
                )));
            }
        }
        let pid = spawned.map_err(fail)?;
        drop(cfg);
        drop(init_sync);
        Ok(StartingInit { pid, cgroup: cg })
    }

    /// Kills the init, reaps it, removes the cgroup: `e` is what failed.
    fn abort(&self, e: Error) -> Error {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        self.reap(e)
    }

    /// Reaps an init that ends by itself, removes the cgroup: `e` is what failed.
    fn reap(&self, e: Error) -> Error {
        let _ = nix::sys::wait::waitpid(self.pid, None);
        let _ = self.cgroup.remove();
        e
    }

    /// Places the init into its cgroup, tells it so, and waits for its verdict: ready (with
    /// the pty master when it has a terminal) or its error.
    fn wait_ready(&self, shim_sync: &OwnedFd, terminal: bool) -> Result<Option<File>> {
        if let Err(e) = self.cgroup.add_process(self.pid.as_raw()) {
            return Err(self.abort(e));
        }
        if let Err(e) = send(
            shim_sync.as_raw_fd(),
            &[container::msg::CGROUP_DONE],
            MsgFlags::empty(),
        ) {
            return Err(self.abort(Error::io("signal the container init", e.into())));
        }
        let mut pty: Option<File> = None;
        loop {
            let mut buf = [0u8; 4096];
            let (n, fd) = container::recv_with_fd(shim_sync.as_raw_fd(), &mut buf)
                .map_err(|e| self.abort(e))?;
            if n == 0 {
                let status = nix::sys::wait::waitpid(self.pid, None);
                let _ = self.cgroup.remove();
                return Err(Error::Invalid(format!(
                    "container init exited during setup ({status:?}); see shim.log"
                )));
            }
            match buf[0] {
                container::msg::PTY => pty = fd.map(File::from),
                container::msg::READY => break,
                container::msg::ERROR => return Err(self.reap(container::decode_error(&buf[..n]))),
                other => {
                    return Err(self.abort(Error::Invalid(format!(
                        "unexpected message {other} from init"
                    ))))
                }
            }
        }
        if terminal && pty.is_none() {
            return Err(self.abort(Error::Invalid("the container init sent no pty".into())));
        }
        Ok(pty)
    }

    /// Writes `shim.pid` and `init.pid` and listens on `shim.sock` (mode 0600).
    fn publish(&self, bundle: &Bundle) -> Result<UnixListener> {
        let wr = |path: PathBuf, v: String| -> Result<()> {
            crate::bundle::write_atomic(&path, v.as_bytes())
        };
        if let Err(e) = wr(bundle.shim_pid_path(), std::process::id().to_string())
            .and_then(|_| wr(bundle.init_pid_path(), self.pid.as_raw().to_string()))
        {
            return Err(self.abort(e));
        }
        let sock = bundle.socket_path();
        let _ = std::fs::remove_file(&sock);
        let listener = bind_long(&sock)
            .map_err(|e| self.abort(Error::io(format!("listen on {}", sock.display()), e)))?;
        let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
        Ok(listener)
    }
}

/// A pidfd of our own unreaped child, when the kernel has `pidfd_open` (5.3).
fn open_pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open with a pid of our own unreaped child and no flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd >= 0 {
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as i32) })
    } else {
        None
    }
}

/// Creates the container, one phase after the other: read the bundle, make the stdio, clone
/// the init into its cgroup, wait until it is ready, publish the pid files and the socket;
/// then the shared state and the relay and reaper threads.
fn create(
    opts: &Options,
    bundle: Bundle,
    spec: Spec,
    mounts: Vec<RootfsMount>,
) -> Result<(Arc<Shared>, UnixListener)> {
    let plan = Plan::read(opts, &bundle, &spec)?;
    let (stdio, shim_stdio) = make_stdio(&plan)?;
    let (shim_sync, init_sync) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "socketpair".into())?;
    let init = StartingInit::clone(&plan, &spec, &mounts, &stdio, init_sync)?;
    drop(stdio);
    let oom_base = init.cgroup.oom_kill_count();
    let pty = init.wait_ready(&shim_sync, plan.terminal)?;
    if let (Some(p), Some(size)) = (&pty, spec.process().as_ref().and_then(|p| p.console_size())) {
        set_winsize(p, size.width() as u32, size.height() as u32);
    }
    let init_pid = init.pid.as_raw();
    let pidfd = open_pidfd(init_pid);
    let listener = init.publish(&bundle)?;
    let stdin = match &pty {
        Some(p) => p.try_clone().ok(),
        None => shim_stdio.stdin,
    };
    let outputs: Vec<(File, u8)> = match &pty {
        Some(p) => match p.try_clone() {
            Ok(f) => vec![(f, FRAME_STDOUT)],
            Err(e) => return Err(init.abort(Error::io("dup pty master", e))),
        },
        None => shim_stdio.outputs,
    };
    let shared = Arc::new(Shared {
        id: opts.id.clone(),
        bundle,
        init_pid,
        pidfd,
        cgroup: init.cgroup,
        oom_base,
        pty,
        state: Mutex::new(State {
            status: Status::Created,
            exit: None,
        }),
        state_cv: Condvar::new(),
        sync: Mutex::new(Some(shim_sync)),
        stdin: Mutex::new(stdin),
        clients: Mutex::new(Clients {
            list: Vec::new(),
            finished: None,
        }),
        log: Mutex::new(plan.log),
        streams_open: Mutex::new(outputs.len()),
        streams_cv: Condvar::new(),
        next_client: AtomicU64::new(1),
        execs: Mutex::new(Execs::default()),
        trace: Trace::default(),
    });
    start_threads(&shared, outputs);
    let devices = match shared.cgroup.device_program_dir() {
        Some(dir) => format!(", device program in {}", dir.display()),
        None => String::new(),
    };
    crate::log(&format!(
        "container created: init pid {init_pid}, cgroup /{}{devices}",
        plan.cgroup_rel
    ));
    Ok((shared, listener))
}

/// The relay of each output stream and the reaper: the shim is multi-threaded from here on.
fn start_threads(shared: &Arc<Shared>, outputs: Vec<(File, u8)>) {
    for (file, kind) in outputs {
        let s = shared.clone();
        spawn("relay", 64 * 1024, move || relay(s, file, kind));
    }
    let s = shared.clone();
    spawn("reaper", 64 * 1024, move || reaper(s));
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, stack: usize, f: F) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(f)
    {
        crate::log(&format!("spawn {name} thread: {e}"));
    }
}

fn set_winsize(pty: &File, width: u32, height: u32) {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the duration of the call.
    let r = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r != 0 {
        crate::log(&format!("resize pty: {}", std::io::Error::last_os_error()));
    }
}

/// Copies one output stream to container.log and the attached clients until EOF.
fn relay(s: Arc<Shared>, mut file: File, kind: u8) {
    let name = if kind == FRAME_STDERR {
        "stderr"
    } else {
        "stdout"
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO on a pty master: every slave is closed.
            Err(_) => break,
        };
        lock(&s.log).write(name, &buf[..n]);
        broadcast(&s, kind, &buf[..n]);
    }
    let mut open = lock(&s.streams_open);
    *open = open.saturating_sub(1);
    s.streams_cv.notify_all();
}

fn broadcast(s: &Shared, kind: u8, data: &[u8]) {
    let frame = protocol::encode_frame(kind, data);
    let mut clients = lock(&s.clients);
    clients
        .list
        .retain_mut(|(_, c)| c.write_all(&frame).is_ok());
}

/// Reaps every child (the shim is a subreaper) and records the init's exit.
fn reaper(s: Arc<Shared>) {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid with a valid pointer to a local status word.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: nothing to reap right now; orphans may still be reparented to us.
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let Some(exit) = ExitStatus::from_wait_status(status, now_rfc3339()) else {
            continue;
        };
        if r == s.init_pid {
            init_exited(&s, exit);
        } else {
            // An exec'd process (or its helper, or an orphan of the container).
            lock(&s.execs).reaped(r, exit);
        }
    }
}

fn init_exited(s: &Shared, mut exit: ExitStatus) {
    let began = SpanRecord::now_ns();
    // All output first: the pipes/pty reach EOF once every process of the container is gone.
    {
        let open = lock(&s.streams_open);
        let _ = s
            .streams_cv
            .wait_timeout_while(open, Duration::from_secs(5), |n| *n > 0);
    }
    lock(&s.log).flush_partial();
    exit.oom_killed = s.cgroup.oom_kill_count() > s.oom_base;
    if let Err(e) = s.bundle.write_exit(&exit) {
        crate::log(&format!("write exit.json: {e}"));
    }
    crate::log(&format!(
        "init exited: code {} signal {:?} oom {}",
        exit.exit_code, exit.signal, exit.oom_killed
    ));
    // Before the status says stopped: the answer to a delete, which needs that, carries it.
    s.trace.record(
        "exit",
        s.trace.start_parent().as_deref(),
        began,
        None,
        &[
            ("exit_code", exit.exit_code.into()),
            ("signal", exit.signal.unwrap_or(0).into()),
            ("oom_killed", exit.oom_killed.into()),
        ],
    );
    {
        let mut st = lock(&s.state);
        st.status = Status::Stopped;
        st.exit = Some(exit.clone());
        s.state_cv.notify_all();
    }
    let payload = serde_json::to_vec(&exit).unwrap_or_default();
    let frame = protocol::encode_frame(FRAME_EXIT, &payload);
    let mut clients = lock(&s.clients);
    clients.finished = Some(exit);
    for (_, c) in clients.list.drain(..) {
        let mut c = c;
        let _ = c.write_all(&frame);
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
}

fn serve(shared: Arc<Shared>, listener: UnixListener) -> ! {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let s = shared.clone();
                spawn("conn", 256 * 1024, move || {
                    handle_conn(s, stream);
                    // Requests fault code back in (64 KiB at a time); give it back.
                    crate::memory::release_setup_pages();
                });
            }
            Err(e) => {
                crate::log(&format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    std::process::exit(0)
}

/// Binds a unix socket, also when its path is longer than `sun_path` holds (a long state
/// folder or namespace): through `/proc/self/fd/<dir>/<name>`, as the runtime connects.
fn bind_long(path: &Path) -> std::io::Result<UnixListener> {
    const SUN_PATH_MAX: usize = 107;
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if path.as_os_str().len() > SUN_PATH_MAX => {
            let dir = File::open(dir)?;
            let short = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
            UnixListener::bind(short)
        }
        _ => UnixListener::bind(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let o = Options::parse(
            ["--id", "abc", "--namespace", "ns1", "--bundle", "/b"]
                .iter()
                .map(|s| s.to_string()),
        )
        .unwrap();
        assert_eq!(o.id, "abc");
        assert_eq!(o.namespace, "ns1");
        assert_eq!(o.bundle, PathBuf::from("/b"));
        assert_eq!(o.traceparent, None);
        let o = Options::parse(["--id=x", "--bundle=/y"].iter().map(|s| s.to_string())).unwrap();
        assert_eq!((o.id.as_str(), o.namespace.as_str()), ("x", "default"));
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let o = Options::parse(
            ["--id=x", "--bundle=/y", "--traceparent", tp]
                .iter()
                .map(|s| s.to_string()),
        )
        .unwrap();
        assert_eq!(o.traceparent.as_deref(), Some(tp));
        assert!(Options::parse(["--id", "x"].iter().map(|s| s.to_string())).is_err());
        assert!(Options::parse(["--bogus"].iter().map(|s| s.to_string())).is_err());
    }

    #[test]
    fn verdicts() {
        assert_eq!(parse_verdict(b"0 "), 0);
        assert_eq!(
            parse_verdict(b"127 exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(parse_verdict(b""), 1);
        assert_eq!(parse_verdict(b"1 boom"), 1);
    }
}
