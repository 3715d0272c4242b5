//! The shim daemon: daemonize, create the container, serve `shim.sock`, relay stdio, reap.
//!
//! Threads (all started after the container's init was cloned): the accept loop (main
//! thread), one reaper, one relay per output stream, one per connection.

use crate::bundle::{Bundle, RootfsMount, ANNOTATION_LOG_MAX_SIZE, ANNOTATION_STDIN};
use crate::cgroup::{self, ContainerCgroup};
use crate::container::{self, InitConfig, InitStdio, Namespaces};
use crate::error::{Context, Error, Result};
use crate::logfile::{now_rfc3339, LogWriter};
use crate::protocol::{
    self, ExitStatus, Request, Response, SpanRecord, Status, FRAME_CLOSE_STDIN, FRAME_EXIT,
    FRAME_RESIZE, FRAME_STDERR, FRAME_STDIN, FRAME_STDOUT,
};
use crate::trace::Trace;
use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use oci_spec::runtime::Spec;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The exec'd processes (children of the shim) whose status a connection waits for.
#[derive(Default)]
struct Execs {
    /// exec requests between spawning the helper and registering the process's pid.
    pending: usize,
    /// Registered pids → where their status goes.
    running: HashMap<i32, Arc<ExecSlot>>,
    /// Statuses reaped while an exec was pending, before its pid was registered.
    unclaimed: HashMap<i32, ExitStatus>,
}

#[derive(Default)]
struct ExecSlot {
    exit: Mutex<Option<ExitStatus>>,
    cv: Condvar,
}

impl ExecSlot {
    fn set(&self, exit: ExitStatus) {
        *lock(&self.exit) = Some(exit);
        self.cv.notify_all();
    }

    fn wait(&self) -> ExitStatus {
        let mut g = lock(&self.exit);
        loop {
            if let Some(e) = &*g {
                return e.clone();
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Counts an exec as pending while it lives (see [`Execs::unclaimed`]).
struct PendingExec<'a>(&'a Shared);

impl<'a> PendingExec<'a> {
    fn new(s: &'a Shared) -> Self {
        lock(&s.execs).pending += 1;
        PendingExec(s)
    }

    /// Registers the exec'd process: its status goes to the returned slot.
    fn register(&self, pid: i32) -> Arc<ExecSlot> {
        let slot = Arc::new(ExecSlot::default());
        let mut ex = lock(&self.0.execs);
        match ex.unclaimed.remove(&pid) {
            Some(exit) => slot.set(exit),
            None => {
                ex.running.insert(pid, slot.clone());
            }
        }
        slot
    }
}

impl Drop for PendingExec<'_> {
    fn drop(&mut self) {
        let mut ex = lock(&self.0.execs);
        ex.pending = ex.pending.saturating_sub(1);
        if ex.pending == 0 {
            ex.unclaimed.clear();
        }
    }
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

fn create(
    opts: &Options,
    bundle: Bundle,
    spec: Spec,
    mounts: Vec<RootfsMount>,
) -> Result<(Arc<Shared>, UnixListener)> {
    let annotations = spec.annotations().clone().unwrap_or_default();
    let linux = spec.linux().as_ref();
    let cg_path = linux
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/berth/{}/{}", opts.namespace, opts.id)));
    let rel = cgroup::relative_path(&cg_path)?;
    let namespaces = Namespaces::from_spec(&spec)?;
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
    let rootfs = bundle.rootfs_dir(&spec);
    if !rootfs.is_dir() {
        return Err(Error::Invalid(format!(
            "rootfs {} is not a folder",
            rootfs.display()
        )));
    }
    let seccomp = crate::seccomp::Filter::load(bundle.dir(), &spec)?;
    let log_path = bundle.container_log_path(&spec)?;
    let log = LogWriter::open(&log_path, log_max).map_err(|e| Error::io("container log", e))?;

    // stdio: init ends + shim ends
    let mut shim_stdin: Option<File> = None;
    let mut shim_out: Vec<(File, u8)> = Vec::new();
    let stdio = if terminal {
        InitStdio::Terminal
    } else {
        let stdin = if want_stdin {
            let (r, w) = pipe()?;
            shim_stdin = Some(File::from(w));
            r
        } else {
            container::dev_null()?
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        shim_out.push((File::from(out_r), FRAME_STDOUT));
        shim_out.push((File::from(err_r), FRAME_STDERR));
        InitStdio::Pipes {
            stdin,
            stdout: out_w,
            stderr: err_w,
        }
    };
    let (shim_sync, init_sync) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "socketpair".into())?;

    let cg = ContainerCgroup::create(&rel, linux.and_then(|l| l.resources().as_ref()))?;
    let oom_base = cg.oom_kill_count();
    let v2 = cg.is_v2();
    let fail = |cg: &ContainerCgroup, e: Error| -> Error {
        let _ = cg.remove();
        e
    };
    if let Some(fd) = &namespaces.join_pid {
        // Joining affects the children of this process only: the init.
        if let Err(e) = nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWPID) {
            return Err(fail(&cg, Error::io("setns pid namespace", e.into())));
        }
    }
    let cfg = InitConfig {
        spec: &spec,
        rootfs,
        rootfs_mounts: &mounts,
        cgroup_rel: rel.clone(),
        cgroup_v2: v2,
        v1_hierarchies: if v2 {
            Vec::new()
        } else {
            cgroup::v1_hierarchies()
        },
        namespaces: &namespaces,
        stdio: &stdio,
        sync: init_sync.as_raw_fd(),
        seccomp: seccomp.as_ref(),
    };
    // The shim is still single-threaded here.
    let pid = match container::spawn_init(&cfg) {
        Ok(p) => p,
        Err(e) => return Err(fail(&cg, e)),
    };
    drop(cfg);
    drop(init_sync);
    drop(stdio);
    let init_pid = pid.as_raw();
    let abort = |cg: &ContainerCgroup, e: Error| -> Error {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        let _ = cg.remove();
        e
    };
    if let Err(e) = cg.add_process(init_pid) {
        return Err(abort(&cg, e));
    }
    if let Err(e) = send(
        shim_sync.as_raw_fd(),
        &[container::msg::CGROUP_DONE],
        MsgFlags::empty(),
    ) {
        return Err(abort(&cg, Error::io("signal the container init", e.into())));
    }

    // Wait for the init's verdict (and the pty master).
    let mut pty: Option<File> = None;
    loop {
        let mut buf = [0u8; 4096];
        let (n, fd) = match container::recv_with_fd(shim_sync.as_raw_fd(), &mut buf) {
            Ok(v) => v,
            Err(e) => return Err(abort(&cg, e)),
        };
        if n == 0 {
            let status = nix::sys::wait::waitpid(pid, None);
            let _ = cg.remove();
            return Err(Error::Invalid(format!(
                "container init exited during setup ({status:?}); see shim.log"
            )));
        }
        match buf[0] {
            container::msg::PTY => pty = fd.map(File::from),
            container::msg::READY => break,
            container::msg::ERROR => {
                let e = container::decode_error(&buf[..n]);
                let _ = nix::sys::wait::waitpid(pid, None);
                let _ = cg.remove();
                return Err(e);
            }
            other => {
                return Err(abort(
                    &cg,
                    Error::Invalid(format!("unexpected message {other} from init")),
                ))
            }
        }
    }
    if terminal && pty.is_none() {
        return Err(abort(
            &cg,
            Error::Invalid("the container init sent no pty".into()),
        ));
    }
    if let (Some(p), Some(size)) = (&pty, spec.process().as_ref().and_then(|p| p.console_size())) {
        set_winsize(p, size.width() as u32, size.height() as u32);
    }

    // SAFETY: pidfd_open with a pid of our own unreaped child and no flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, init_pid, 0) };
    let pidfd = if pidfd >= 0 {
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as i32) })
    } else {
        None
    };

    let wr = |path: PathBuf, v: String| -> Result<()> {
        crate::bundle::write_atomic(&path, v.as_bytes())
    };
    if let Err(e) = wr(bundle.shim_pid_path(), std::process::id().to_string())
        .and_then(|_| wr(bundle.init_pid_path(), init_pid.to_string()))
    {
        return Err(abort(&cg, e));
    }
    let sock = bundle.socket_path();
    let _ = std::fs::remove_file(&sock);
    let listener = match bind_long(&sock) {
        Ok(l) => l,
        Err(e) => {
            return Err(abort(
                &cg,
                Error::io(format!("listen on {}", sock.display()), e),
            ))
        }
    };
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));

    let stdin = match (&pty, shim_stdin) {
        (Some(p), _) => p.try_clone().ok(),
        (None, s) => s,
    };
    let outputs: Vec<(File, u8)> = match &pty {
        Some(p) => match p.try_clone() {
            Ok(f) => vec![(f, FRAME_STDOUT)],
            Err(e) => return Err(abort(&cg, Error::io("dup pty master", e))),
        },
        None => shim_out,
    };
    let shared = Arc::new(Shared {
        id: opts.id.clone(),
        bundle,
        init_pid,
        pidfd,
        cgroup: cg,
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
        log: Mutex::new(log),
        streams_open: Mutex::new(outputs.len()),
        streams_cv: Condvar::new(),
        next_client: AtomicU64::new(1),
        execs: Mutex::new(Execs::default()),
        trace: Trace::default(),
    });

    // Threads from here on.
    for (file, kind) in outputs {
        let s = shared.clone();
        spawn("relay", 64 * 1024, move || relay(s, file, kind));
    }
    let s = shared.clone();
    spawn("reaper", 64 * 1024, move || reaper(s));
    let devices = match shared.cgroup.device_program_dir() {
        Some(dir) => format!(", device program in {}", dir.display()),
        None => String::new(),
    };
    crate::log(&format!(
        "container created: init pid {init_pid}, cgroup /{rel}{devices}"
    ));
    Ok((shared, listener))
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
            let mut ex = lock(&s.execs);
            if let Some(slot) = ex.running.remove(&r) {
                slot.set(exit);
            } else if ex.pending > 0 {
                ex.unclaimed.insert(r, exit);
            }
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

fn handle_conn(s: Arc<Shared>, stream: UnixStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    let line = match protocol::read_line(&mut reader) {
        Ok(Some(l)) => l,
        _ => return,
    };
    let req = match Request::from_line(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = out.write_all(Response::error(e.to_string(), None).to_line().as_bytes());
            return;
        }
    };
    let resp = match req {
        Request::State => op_state(&s),
        Request::Start { traceparent } => op_start(&s, traceparent),
        Request::Kill { signal, all } => op_kill(&s, signal, all),
        Request::Wait => op_wait(&s),
        Request::Resize { width, height } => {
            if let Some(p) = &s.pty {
                set_winsize(p, width, height);
            }
            Response::ok()
        }
        Request::Delete => return op_delete(&s, out),
        Request::Attach { stdin } => return op_attach(&s, out, reader, stdin),
        req @ Request::Exec { .. } => return op_exec(&s, out, reader, req),
    };
    let _ = out.write_all(resp.to_line().as_bytes());
}

fn op_state(s: &Shared) -> Response {
    let st = lock(&s.state);
    let mut r = Response::ok();
    r.status = Some(st.status);
    r.pid = Some(s.init_pid);
    r.exit = Some(st.exit.clone());
    s.trace.hand_over(&mut r);
    r
}

/// `start`, recorded as a span when the request carries a traceparent (which the `exit` span
/// goes under too).
fn op_start(s: &Shared, traceparent: Option<String>) -> Response {
    let began = SpanRecord::now_ns();
    let mut r = start_init(s, traceparent.clone());
    s.trace.record(
        "start",
        traceparent.as_deref(),
        began,
        r.error.as_deref(),
        &[],
    );
    s.trace.hand_over(&mut r);
    r
}

fn start_init(s: &Shared, traceparent: Option<String>) -> Response {
    let mut st = lock(&s.state);
    if st.status != Status::Created {
        return Response::error(
            format!("cannot start a container in state {:?}", st.status).to_lowercase(),
            None,
        );
    }
    let Some(sync) = lock(&s.sync).take() else {
        return Response::error("container was already started", None);
    };
    // Before the init is told to go: it may exit at once.
    s.trace.set_start_parent(traceparent);
    if let Err(e) = send(
        sync.as_raw_fd(),
        &[container::msg::START],
        MsgFlags::empty(),
    ) {
        return Response::error(format!("start: signal the container init: {e}"), None);
    }
    let mut buf = [0u8; 4096];
    match nix::sys::socket::recv(sync.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        Ok(0) => {
            st.status = Status::Running;
            let mut r = Response::ok();
            r.pid = Some(s.init_pid);
            r
        }
        Ok(n) if buf[0] == container::msg::ERROR => {
            let e = container::decode_error(&buf[..n]);
            Response::error(
                e.to_string(),
                Some(e.exit_code()).filter(|c| *c == 126 || *c == 127),
            )
        }
        Ok(_) => Response::error("start: unexpected answer from the container init", None),
        Err(e) => Response::error(format!("start: {e}"), None),
    }
}

fn op_kill(s: &Shared, signal: i32, all: bool) -> Response {
    let sig = match nix::sys::signal::Signal::try_from(signal) {
        Ok(sig) => sig,
        Err(_) => return Response::error(format!("invalid signal {signal}"), None),
    };
    if all {
        return match s.cgroup.signal_all(sig) {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(e.to_string(), None),
        };
    }
    let st = lock(&s.state);
    if st.status == Status::Stopped {
        return Response::error("container init has already exited", None);
    }
    // Holding the state lock: the reaper cannot publish the exit while we signal, and the
    // pidfd makes the signal safe against pid reuse anyway.
    let r = match &s.pidfd {
        Some(fd) => {
            // SAFETY: pidfd_send_signal with an owned pidfd, a valid signal and no siginfo.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        None => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.init_pid), sig).map_err(Into::into)
        }
    };
    drop(st);
    match r {
        Ok(()) => Response::ok(),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Response::ok(),
        Err(e) => Response::error(format!("kill {}: {e}", s.init_pid), None),
    }
}

fn wait_exit(s: &Shared) -> ExitStatus {
    let mut st = lock(&s.state);
    loop {
        if let Some(e) = &st.exit {
            return e.clone();
        }
        st = s.state_cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

fn op_wait(s: &Shared) -> Response {
    let exit = wait_exit(s);
    let mut r = Response::ok();
    r.exit = Some(Some(exit));
    r
}

fn op_delete(s: &Shared, mut out: UnixStream) {
    let status = lock(&s.state).status;
    match status {
        Status::Running => {
            let _ = out.write_all(
                Response::error("cannot delete a running container: kill it first", None)
                    .to_line()
                    .as_bytes(),
            );
            return;
        }
        Status::Created => {
            // Never started: the init waits for start; end it.
            if let Some(sync) = lock(&s.sync).take() {
                drop(sync);
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(s.init_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        Status::Stopped => {}
    }
    let exit = wait_exit(s);
    if let Err(e) = s.cgroup.remove() {
        let _ = out.write_all(Response::error(e.to_string(), None).to_line().as_bytes());
        return;
    }
    let _ = std::fs::remove_file(s.bundle.socket_path());
    crate::log("deleted; exiting");
    let mut r = Response::ok();
    r.exit = Some(Some(exit));
    s.trace.hand_over(&mut r);
    let _ = out.write_all(r.to_line().as_bytes());
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Write);
    std::process::exit(0)
}

fn op_attach(s: &Shared, mut out: UnixStream, mut reader: BufReader<UnixStream>, stdin: bool) {
    let Ok(writer) = out.try_clone() else {
        return;
    };
    let _ = writer.set_write_timeout(Some(Duration::from_secs(30)));
    let id = s.next_client.fetch_add(1, Ordering::Relaxed);
    {
        let mut clients = lock(&s.clients);
        // The answer is written and the client listed under one lock: the runtime starts the
        // task as soon as it has the answer (run, start -a), so output written after that
        // must find the client listed. Answering first and listing after lost a fast
        // container's first lines when this thread was descheduled in between (a busy machine).
        if out.write_all(Response::ok().to_line().as_bytes()).is_err() {
            return;
        }
        if let Some(exit) = &clients.finished {
            let payload = serde_json::to_vec(exit).unwrap_or_default();
            let _ = protocol::write_frame(&mut out, FRAME_EXIT, &payload);
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        clients.list.push((id, writer));
    }
    while let Ok(Some(frame)) = protocol::read_frame(&mut reader) {
        match frame.kind {
            FRAME_STDIN if stdin => {
                let mut guard = lock(&s.stdin);
                if let Some(f) = guard.as_mut() {
                    if f.write_all(&frame.payload).is_err() {
                        // The container closed its stdin.
                        *guard = None;
                    }
                }
            }
            FRAME_CLOSE_STDIN if stdin && s.pty.is_none() => {
                lock(&s.stdin).take();
            }
            FRAME_RESIZE => {
                if let (Some(p), Some((w, h))) =
                    (&s.pty, protocol::parse_resize_payload(&frame.payload))
                {
                    set_winsize(p, w, h);
                }
            }
            _ => {}
        }
    }
    lock(&s.clients).list.retain(|(cid, _)| *cid != id);
}

/// The shim's ends of an exec'd process's stdio.
#[derive(Default)]
struct ExecIo {
    /// Write end of the stdin pipe, or the pty master.
    stdin: Option<File>,
    /// Read ends of stdout/stderr, or the pty master (stdout).
    outputs: Vec<(File, u8)>,
    pty: Option<File>,
}

struct StartedExec {
    pid: i32,
    slot: Arc<ExecSlot>,
    io: ExecIo,
}

fn op_exec(s: &Arc<Shared>, mut out: UnixStream, mut reader: BufReader<UnixStream>, req: Request) {
    let Request::Exec {
        args,
        terminal,
        stdin,
        detach,
        ..
    } = &req
    else {
        return;
    };
    let (terminal, want_stdin, detach) = (*terminal && !*detach, *stdin && !*detach, *detach);
    let refuse = |out: &mut UnixStream, r: Response| {
        let _ = out.write_all(r.to_line().as_bytes());
    };
    if args.first().is_none_or(|a| a.is_empty()) {
        return refuse(&mut out, Response::error("exec: no command given", None));
    }
    if lock(&s.state).status != Status::Running {
        return refuse(
            &mut out,
            Response::error(format!("container {} is not running", s.id), None),
        );
    }
    let started = match start_exec(s, &req, terminal, want_stdin, detach) {
        Ok(st) => st,
        Err(r) => {
            crate::log(&format!(
                "exec {:?} failed: {}",
                args,
                r.error.as_deref().unwrap_or("")
            ));
            return refuse(&mut out, r);
        }
    };
    let StartedExec { pid, slot, mut io } = started;
    crate::log(&format!("exec {args:?}: pid {pid}"));
    let mut r = Response::ok();
    r.pid = Some(pid);
    let _ = out.write_all(r.to_line().as_bytes());
    if detach {
        return;
    }

    // Frames: output and, after the process exited and its output reached EOF, the exit.
    let _ = out.set_write_timeout(Some(Duration::from_secs(30)));
    let writer = Arc::new(Mutex::new(out));
    let open = Arc::new((Mutex::new(io.outputs.len()), Condvar::new()));
    for (mut file, kind) in std::mem::take(&mut io.outputs) {
        let (w, open) = (writer.clone(), open.clone());
        spawn("exec-relay", 64 * 1024, move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut client_gone = false;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // EIO on a pty master: every slave is closed
                };
                // Keep draining after the client left, so the process never blocks on output.
                if !client_gone {
                    client_gone = protocol::write_frame(&mut *lock(&w), kind, &buf[..n]).is_err();
                }
            }
            let mut n = lock(&open.0);
            *n = n.saturating_sub(1);
            open.1.notify_all();
        });
    }
    {
        let w = writer.clone();
        spawn("exec-wait", 64 * 1024, move || {
            let exit = slot.wait();
            {
                let n = lock(&open.0);
                let _ = open
                    .1
                    .wait_timeout_while(n, Duration::from_secs(5), |n| *n > 0);
            }
            crate::log(&format!(
                "exec pid {pid} exited: code {} signal {:?}",
                exit.exit_code, exit.signal
            ));
            let payload = serde_json::to_vec(&exit).unwrap_or_default();
            let mut w = lock(&w);
            let _ = protocol::write_frame(&mut *w, FRAME_EXIT, &payload);
            let _ = w.shutdown(std::net::Shutdown::Both);
        });
    }
    while let Ok(Some(frame)) = protocol::read_frame(&mut reader) {
        match frame.kind {
            FRAME_STDIN if want_stdin => {
                if let Some(f) = io.stdin.as_mut() {
                    if f.write_all(&frame.payload).is_err() {
                        io.stdin = None;
                    }
                }
            }
            FRAME_CLOSE_STDIN if want_stdin && io.pty.is_none() => io.stdin = None,
            FRAME_RESIZE => {
                if let (Some(p), Some((w, h))) =
                    (&io.pty, protocol::parse_resize_payload(&frame.payload))
                {
                    set_winsize(p, w, h);
                }
            }
            _ => {}
        }
    }
}

/// Runs the exec helper ([`crate::exec`]) and follows it until the process runs (or failed).
fn start_exec(
    s: &Shared,
    req: &Request,
    terminal: bool,
    want_stdin: bool,
    detach: bool,
) -> std::result::Result<StartedExec, Response> {
    use crate::exec::{self, FD_REQUEST, FD_STDERR, FD_STDIN, FD_STDOUT, FD_SYNC};
    use std::os::unix::process::CommandExt;
    let fail = |e: Error| Response::error(e.to_string(), None);
    let pending = PendingExec::new(s);
    let mut io = ExecIo::default();
    // The process's ends, in the order stdin, stdout, stderr (none with a terminal).
    let mut child_fds: Vec<OwnedFd> = Vec::new();
    if detach {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| fail(Error::io("open /dev/null", e)))?;
        for _ in 0..3 {
            let f = null
                .try_clone()
                .map_err(|e| fail(Error::io("dup /dev/null", e)))?;
            child_fds.push(f.into());
        }
    } else if !terminal {
        if want_stdin {
            let (r, w) = pipe().map_err(fail)?;
            child_fds.push(r);
            io.stdin = Some(File::from(w));
        } else {
            child_fds.push(container::dev_null().map_err(fail)?);
        }
        for kind in [FRAME_STDOUT, FRAME_STDERR] {
            let (r, w) = pipe().map_err(fail)?;
            child_fds.push(w);
            io.outputs.push((File::from(r), kind));
        }
    }
    let (shim_sync, helper_sync) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| fail(Error::io("socketpair", e.into())))?;
    let _ = nix::sys::socket::setsockopt(
        &shim_sync,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(60, 0),
    );
    let (req_r, req_w) = pipe().map_err(fail)?;

    let mut maps: Vec<(i32, i32)> = vec![
        (helper_sync.as_raw_fd(), FD_SYNC),
        (req_r.as_raw_fd(), FD_REQUEST),
    ];
    for (fd, target) in child_fds.iter().zip([FD_STDIN, FD_STDOUT, FD_STDERR]) {
        maps.push((fd.as_raw_fd(), target));
    }
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg(exec::HELPER_FLAG)
        .arg("--bundle")
        .arg(s.bundle.dir())
        .arg("--pid")
        .arg(s.init_pid.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit());
    // SAFETY: the closure runs in the forked child before execve and only calls fcntl and
    // dup2 (async-signal-safe), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut tmp = [0i32; 8];
            for (i, (src, _)) in maps.iter().enumerate() {
                // Out of the way first, so that no target clobbers a source.
                let t = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 64);
                if t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp[i] = t;
            }
            for (i, (_, dst)) in maps.iter().enumerate() {
                if libc::dup2(tmp[i], *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| fail(Error::io("run the exec helper", e)))?;
    let helper_pid = child.id() as i32;
    // The reaper collects the helper; `Child` is never waited for.
    drop(child);
    drop(helper_sync);
    drop(req_r);
    drop(child_fds);
    let kill = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };

    let mut line = req.clone();
    if let Request::Exec {
        terminal: t,
        stdin: i,
        ..
    } = &mut line
    {
        *t = terminal;
        *i = want_stdin;
    }
    if let Err(e) = File::from(req_w).write_all(line.to_line().as_bytes()) {
        kill(helper_pid);
        return Err(fail(Error::io("send the exec request to the helper", e)));
    }
    if let Err(e) = s.cgroup.add_process(helper_pid) {
        kill(helper_pid);
        return Err(fail(e));
    }
    // A helper that failed already has its error queued; read it below.
    let _ = send(
        shim_sync.as_raw_fd(),
        &[container::msg::CGROUP_DONE],
        MsgFlags::empty(),
    );

    let mut registered: Option<(i32, Arc<ExecSlot>)> = None;
    loop {
        let mut buf = [0u8; 4096];
        let (n, fd) = match container::recv_with_fd(shim_sync.as_raw_fd(), &mut buf) {
            Ok(v) => v,
            Err(e) => {
                kill(helper_pid);
                if let Some((pid, _)) = &registered {
                    kill(*pid);
                }
                return Err(fail(e));
            }
        };
        if n == 0 {
            break;
        }
        match buf[0] {
            exec::msg::PID if n >= 5 && registered.is_none() => {
                let pid = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                registered = Some((pid, pending.register(pid)));
                let _ = send(shim_sync.as_raw_fd(), &[exec::msg::GO], MsgFlags::empty());
            }
            container::msg::PTY => io.pty = fd.map(File::from),
            container::msg::ERROR => {
                let e = container::decode_error(&buf[..n]);
                // Failing in the container is Docker's "OCI runtime exec failed": 126
                // unless the executable was not found (127).
                let code = match &e {
                    Error::Exec { code, .. } => *code,
                    _ => 126,
                };
                return Err(Response::error(e.to_string(), Some(code)));
            }
            other => {
                crate::log(&format!("exec: unexpected message {other} from the helper"));
            }
        }
    }
    let Some((pid, slot)) = registered else {
        return Err(Response::error(
            "exec: the helper exited during setup; see shim.log",
            Some(126),
        ));
    };
    if terminal {
        let Some(pty) = io.pty.take() else {
            kill(pid);
            return Err(Response::error("exec: no pty was made", Some(126)));
        };
        let (Ok(r), Ok(w)) = (pty.try_clone(), pty.try_clone()) else {
            kill(pid);
            return Err(Response::error("exec: dup the pty master", None));
        };
        io.outputs.push((r, FRAME_STDOUT));
        io.stdin = Some(w);
        io.pty = Some(pty);
    }
    drop(pending);
    Ok(StartedExec { pid, slot, io })
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
