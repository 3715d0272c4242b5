//! What the shim answers on `shim.sock`: one connection, one request ([`handle_conn`]
//! dispatches it), one function per request. `attach` and `exec` keep their connection for
//! frames.

use super::execs::op_exec;
use super::{lock, set_winsize, Shared};
use crate::container;
use crate::protocol::{
    self, ExitStatus, Request, Response, SpanRecord, Status, FRAME_CLOSE_STDIN, FRAME_EXIT,
    FRAME_RESIZE, FRAME_STDIN,
};
use nix::sys::socket::{send, MsgFlags};
use std::io::{BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Reads one request from a connection and answers it.
pub(super) fn handle_conn(s: Arc<Shared>, stream: UnixStream) {
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
        Request::Pause => op_freeze(&s, true),
        Request::Resume => op_freeze(&s, false),
        Request::Pids => op_pids(&s),
        Request::Update(limits) => op_update(&s, &limits),
        Request::Stats => op_stats(&s),
        Request::ReopenLog => op_reopen_log(&s),
        Request::Delete => return op_delete(&s, out),
        Request::Attach { stdin } => return op_attach(&s, out, reader, stdin),
        req @ Request::Exec { .. } => return op_exec(&s, out, reader, req),
    };
    let _ = out.write_all(resp.to_line().as_bytes());
}

/// `reopenlog`: the log's path opened anew, so that a file the kubelet moved away stops
/// growing and the path gets what follows.
fn op_reopen_log(s: &Shared) -> Response {
    match lock(&s.log).reopen() {
        Ok(()) => Response::ok(),
        Err(e) => Response::error(format!("reopen the container log: {e}"), None),
    }
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

/// `pause` / `resume`: the container's cgroup frozen or thawed (the shim is outside it).
fn op_freeze(s: &Shared, frozen: bool) -> Response {
    match s.cgroup.set_frozen(frozen) {
        Ok(()) => Response::ok(),
        Err(e) => Response::error(e.to_string(), None),
    }
}

/// `update`: new limits on the container's cgroup, set as they are at creation.
fn op_update(s: &Shared, limits: &crate::protocol::Limits) -> Response {
    match s.cgroup.update(limits) {
        Ok(()) => Response::ok(),
        Err(e) => Response::error(e.to_string(), None),
    }
}

/// `pids`: every process of the container's cgroup (a created task's init included).
fn op_pids(s: &Shared) -> Response {
    let mut r = Response::ok();
    r.pids = Some(s.cgroup.procs());
    r
}

/// `stats`: what the container's cgroup uses now, and where it is.
fn op_stats(s: &Shared) -> Response {
    let mut r = Response::ok();
    r.stats = Some(Box::new(s.cgroup.stats()));
    r.cgroup = Some(s.cgroup.rel_path().to_string());
    r
}

pub(super) fn wait_exit(s: &Shared) -> ExitStatus {
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
