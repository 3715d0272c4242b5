//! The shim's side of `exec` (the helper's side is [`crate::exec`]): a request starts the
//! helper, follows it until the process runs, registers its pid with the reaper, then
//! relays the process's stdio and exit over the client's connection.
//!
//! An exec is counted as pending while its pid is not registered yet: the reaper keeps
//! statuses it cannot place meanwhile ([`Execs::unclaimed`]), so a process that exits at
//! once is not lost.

use super::{lock, pipe, set_winsize, spawn, Shared};
use crate::container;
use crate::error::Error;
use crate::exec::{self, FD_REQUEST, FD_STDERR, FD_STDIN, FD_STDOUT, FD_SYNC};
use crate::protocol::{
    self, ExitStatus, Request, Response, Status, FRAME_CLOSE_STDIN, FRAME_EXIT, FRAME_RESIZE,
    FRAME_STDERR, FRAME_STDIN, FRAME_STDOUT,
};
use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The exec'd processes (children of the shim) whose status a connection waits for.
#[derive(Default)]
pub(super) struct Execs {
    /// exec requests between spawning the helper and registering the process's pid.
    pending: usize,
    /// Registered pids → where their status goes.
    running: HashMap<i32, Arc<ExecSlot>>,
    /// Statuses reaped while an exec was pending, before its pid was registered.
    unclaimed: HashMap<i32, ExitStatus>,
}

impl Execs {
    /// A child other than the init was reaped: an exec'd process (its status goes to its
    /// connection), its helper, or an orphan of the container.
    pub(super) fn reaped(&mut self, pid: i32, exit: ExitStatus) {
        if let Some(slot) = self.running.remove(&pid) {
            slot.set(exit);
        } else if self.pending > 0 {
            self.unclaimed.insert(pid, exit);
        }
    }
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

/// What the client asked for, with `detach` taking precedence over a terminal and stdin.
#[derive(Clone, Copy)]
struct ExecMode {
    terminal: bool,
    want_stdin: bool,
    detach: bool,
}

/// `exec`: answers with the pid once the process runs, then (unless detached) relays its
/// output and exit to the connection and the connection's stdin and resizes to it.
pub(super) fn op_exec(
    s: &Arc<Shared>,
    mut out: UnixStream,
    reader: BufReader<UnixStream>,
    req: Request,
) {
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
    let mode = ExecMode {
        terminal: *terminal && !*detach,
        want_stdin: *stdin && !*detach,
        detach: *detach,
    };
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
    let started = match start_exec(s, &req, mode) {
        Ok(st) => st,
        Err(r) => {
            crate::log(&format!("exec {:?} failed: {}", args, r.message));
            return refuse(&mut out, Response::error(r.message, r.code));
        }
    };
    let StartedExec { pid, slot, mut io } = started;
    crate::log(&format!("exec {args:?}: pid {pid}"));
    let mut r = Response::ok();
    r.pid = Some(pid);
    let _ = out.write_all(r.to_line().as_bytes());
    if mode.detach {
        return;
    }
    relay_exec_output(out, pid, slot, std::mem::take(&mut io.outputs));
    forward_exec_input(reader, io, mode.want_stdin);
}

/// Frames to the client: output and, after the process exited and its output reached EOF,
/// the exit.
fn relay_exec_output(out: UnixStream, pid: i32, slot: Arc<ExecSlot>, outputs: Vec<(File, u8)>) {
    let _ = out.set_write_timeout(Some(Duration::from_secs(30)));
    let writer = Arc::new(Mutex::new(out));
    let open = Arc::new((Mutex::new(outputs.len()), Condvar::new()));
    for (mut file, kind) in outputs {
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
        let mut w = lock(&writer);
        let _ = protocol::write_frame(&mut *w, FRAME_EXIT, &payload);
        let _ = w.shutdown(std::net::Shutdown::Both);
    });
}

/// Frames from the client: stdin, close of stdin, resizes; until it closes the connection.
fn forward_exec_input(mut reader: BufReader<UnixStream>, mut io: ExecIo, want_stdin: bool) {
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

/// Why an exec did not start: the answer's message and exit code hint.
struct Refused {
    message: String,
    code: Option<i32>,
}

impl Refused {
    fn new(message: impl Into<String>, code: Option<i32>) -> Refused {
        Refused {
            message: message.into(),
            code,
        }
    }
}

fn fail(e: Error) -> Refused {
    Refused::new(e.to_string(), None)
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Runs the exec helper ([`crate::exec`]) and follows it until the process runs (or failed).
fn start_exec(s: &Shared, req: &Request, mode: ExecMode) -> Result<StartedExec, Refused> {
    let pending = PendingExec::new(s);
    let (child_fds, mut io) = exec_stdio(mode)?;
    let mut helper = spawn_helper(s, child_fds)?;
    helper.hand_over(s, req, mode)?;
    let (pid, slot) = helper.follow(&pending, &mut io)?;
    if mode.terminal {
        let Some(pty) = io.pty.take() else {
            kill(pid);
            return Err(Refused::new("exec: no pty was made", Some(126)));
        };
        let (Ok(r), Ok(w)) = (pty.try_clone(), pty.try_clone()) else {
            kill(pid);
            return Err(Refused::new("exec: dup the pty master", None));
        };
        io.outputs.push((r, FRAME_STDOUT));
        io.stdin = Some(w);
        io.pty = Some(pty);
    }
    drop(pending);
    Ok(StartedExec { pid, slot, io })
}

/// The process's ends of its stdio, in the order stdin, stdout, stderr (none with a
/// terminal: the process makes its pty), and the shim's ends.
fn exec_stdio(mode: ExecMode) -> Result<(Vec<OwnedFd>, ExecIo), Refused> {
    let mut io = ExecIo::default();
    let mut child_fds: Vec<OwnedFd> = Vec::new();
    if mode.detach {
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
    } else if !mode.terminal {
        if mode.want_stdin {
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
    Ok((child_fds, io))
}

/// A running exec helper: its pid, the shim's end of its sync socket, and the pipe that
/// carries the request to it.
struct Helper {
    pid: i32,
    sync: OwnedFd,
    /// Taken (and closed) once the request is written: the helper reads to EOF.
    request: Option<OwnedFd>,
}

/// Runs `berth-shim --exec-helper` with its descriptors in place (see [`crate::exec`]).
fn spawn_helper(s: &Shared, child_fds: Vec<OwnedFd>) -> Result<Helper, Refused> {
    use std::os::unix::process::CommandExt;
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
    let pid = child.id() as i32;
    // The reaper collects the helper; `Child` is never waited for.
    drop(child);
    drop(helper_sync);
    drop(req_r);
    drop(child_fds);
    Ok(Helper {
        pid,
        sync: shim_sync,
        request: Some(req_w),
    })
}

impl Helper {
    /// Sends the request (with the mode as decided here; closing the pipe after it), moves
    /// the helper into the container's cgroup and tells it so.
    fn hand_over(&mut self, s: &Shared, req: &Request, mode: ExecMode) -> Result<(), Refused> {
        let mut line = req.clone();
        if let Request::Exec {
            terminal, stdin, ..
        } = &mut line
        {
            *terminal = mode.terminal;
            *stdin = mode.want_stdin;
        }
        let written = match self.request.take() {
            Some(fd) => File::from(fd).write_all(line.to_line().as_bytes()),
            None => Ok(()),
        };
        if let Err(e) = written {
            kill(self.pid);
            return Err(fail(Error::io("send the exec request to the helper", e)));
        }
        if let Err(e) = s.cgroup.add_process(self.pid) {
            kill(self.pid);
            return Err(fail(e));
        }
        // A helper that failed already has its error queued; read it below.
        let _ = send(
            self.sync.as_raw_fd(),
            &[container::msg::CGROUP_DONE],
            MsgFlags::empty(),
        );
        Ok(())
    }

    /// Reads the helper's messages until it exits: the process's pid (registered with the
    /// reaper before the process is told to go on), its pty master, or its error.
    fn follow(
        &self,
        pending: &PendingExec<'_>,
        io: &mut ExecIo,
    ) -> Result<(i32, Arc<ExecSlot>), Refused> {
        let mut registered: Option<(i32, Arc<ExecSlot>)> = None;
        loop {
            let mut buf = [0u8; 4096];
            let (n, fd) = match container::recv_with_fd(self.sync.as_raw_fd(), &mut buf) {
                Ok(v) => v,
                Err(e) => {
                    kill(self.pid);
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
                    let _ = send(self.sync.as_raw_fd(), &[exec::msg::GO], MsgFlags::empty());
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
                    return Err(Refused::new(e.to_string(), Some(code)));
                }
                other => {
                    crate::log(&format!("exec: unexpected message {other} from the helper"));
                }
            }
        }
        registered.ok_or_else(|| {
            Refused::new(
                "exec: the helper exited during setup; see shim.log",
                Some(126),
            )
        })
    }
}
