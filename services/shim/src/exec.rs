//! `exec`: another process in a running container (the helper side; the shim side is
//! `op_exec` in [`crate::shim`]).
//!
//! The shim is multi-threaded, and joining a mount namespace needs a single-threaded caller,
//! so it runs its own binary again as a helper: `berth-shim --exec-helper --bundle DIR
//! --pid INIT`, a fresh single-threaded process with these descriptors:
//! `0` /dev/null, `1`/`2` the shim's (`shim.log`), [`FD_SYNC`] the sync socket (SEQPACKET),
//! [`FD_REQUEST`] a pipe carrying the `exec` request line, [`FD_STDIN`]/[`FD_STDOUT`]/
//! [`FD_STDERR`] the process's stdio (pipes or /dev/null; absent with a terminal).
//!
//! 1. The helper reads the request and `config.json`, opens `/proc/INIT/ns/{ipc,uts,net,pid,
//!    mnt,cgroup}` (those that differ from its own), and waits for `C`: the shim has moved it
//!    into the container's cgroup(s) ([`crate::cgroup::ContainerCgroup::add_process`]).
//! 2. It joins the namespaces in that order (never the user namespace), then clones the
//!    process with `CLONE_PARENT`: a child of the shim (which reaps it) in the container's
//!    pid namespace and cgroups. It sends `I` + the host pid (i32 BE) and exits.
//! 3. The process waits for `G` (the shim has registered its pid with the reaper), then does
//!    what the init does (the same functions of [`crate::container`]): user and groups from
//!    the container's `/etc/passwd` and `/etc/group`, a pty inside the container (`P` +
//!    master), rlimits, umask, the seccomp filter, capabilities, cwd, env, `PATH` lookup,
//!    no_new_privs, stdio; then `execve`. A failure is sent as `E` + code + message; success closes the socket
//!    (CLOEXEC), the shim reads EOF.

use crate::bundle::Bundle;
use crate::container::{self, InitStdio};
use crate::error::{Context, Error, Result};
use crate::process::{self, Program, Stage};
use crate::protocol::Request;
use nix::sched::CloneFlags;
use nix::sys::socket::{recv, send, MsgFlags};
use oci_spec::runtime::Spec;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// First argument that makes `berth-shim` run as the exec helper.
pub const HELPER_FLAG: &str = "--exec-helper";
/// Helper descriptor: the sync socket.
pub const FD_SYNC: RawFd = 3;
/// Helper descriptor: the request line (read to EOF).
pub const FD_REQUEST: RawFd = 4;
/// Helper descriptor: the process's stdin (pipes mode).
pub const FD_STDIN: RawFd = 5;
/// Helper descriptor: the process's stdout (pipes mode).
pub const FD_STDOUT: RawFd = 6;
/// Helper descriptor: the process's stderr (pipes mode).
pub const FD_STDERR: RawFd = 7;

/// Message tags of the exec sync protocol (besides [`container::msg`]'s `C`, `P`, `E`).
pub mod msg {
    /// helper → shim: the process's host pid follows (i32 BE).
    pub const PID: u8 = b'I';
    /// shim → process: the pid is registered with the reaper; go on.
    pub const GO: u8 = b'G';
}

/// The namespaces joined, in this order.
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
];

/// What the exec'd process runs (the fields of [`Request::Exec`]).
#[derive(Debug, Clone)]
struct ExecProcess {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: String,
    terminal: bool,
}

/// Entry point of `berth-shim --exec-helper --bundle DIR --pid N`; returns the exit code.
pub fn helper_main(args: &[String]) -> i32 {
    // SAFETY: fcntl on descriptors the shim set up for this process.
    unsafe {
        libc::fcntl(FD_SYNC, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(FD_REQUEST, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let mut bundle = None;
    let mut pid = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" => bundle = it.next().map(PathBuf::from),
            "--pid" => pid = it.next().and_then(|p| p.parse::<i32>().ok()),
            _ => {}
        }
    }
    let res = match (bundle, pid) {
        (Some(b), Some(p)) => helper(&b, p),
        _ => Err(Error::Invalid(
            "usage: berth-shim --exec-helper --bundle DIR --pid N".into(),
        )),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            container::report_error(FD_SYNC, &e);
            1
        }
    }
}

fn read_request() -> Result<ExecProcess> {
    // SAFETY: FD_REQUEST was set up by the shim for this process, nothing else owns it.
    let mut f = unsafe { std::fs::File::from_raw_fd(FD_REQUEST) };
    let mut line = String::new();
    f.read_to_string(&mut line)
        .ctx(|| "read the exec request".into())?;
    match Request::from_line(&line) {
        Ok(Request::Exec {
            args,
            env,
            cwd,
            user,
            terminal,
            ..
        }) => Ok(ExecProcess {
            args,
            env,
            cwd,
            user,
            terminal,
        }),
        Ok(other) => Err(Error::Invalid(format!("not an exec request: {other:?}"))),
        Err(e) => Err(Error::Invalid(e.to_string())),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn helper(bundle: &Path, init_pid: i32) -> Result<()> {
    let exec = read_request()?;
    let spec = Bundle::new(bundle)?.load_spec()?;
    let seccomp = crate::seccomp::Filter::load(bundle, &spec)?;

    // Open every namespace first: after joining the mount namespace /proc is the container's.
    let mut joins: Vec<(CloneFlags, OwnedFd)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let target = PathBuf::from(format!("/proc/{init_pid}/ns/{name}"));
        if same_file(&target, Path::new(&format!("/proc/self/ns/{name}"))) {
            continue; // shared with the host
        }
        let f = std::fs::File::open(&target).ctx(|| format!("open {}", target.display()))?;
        joins.push((flag, OwnedFd::from(f)));
    }

    container::wait_for_cgroup(FD_SYNC)?;
    container::join_namespaces(&joins)?;
    drop(joins);

    // The process: forked after setns(pid) so that it is in the container's pid namespace;
    // CLONE_PARENT makes it a child of the shim, whose reaper collects its status.
    // SAFETY: the helper is a single-threaded process.
    let cloned = unsafe {
        process::clone_process(libc::CLONE_PARENT as libc::c_ulong, || {
            let err = match process_setup(&spec, &exec, seccomp.as_ref()) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            container::report_error(FD_SYNC, &err);
            err.exit_code()
        })
    };
    let pid = cloned.map_err(|e| Error::io("clone the exec process", e))?;
    let mut m = vec![msg::PID];
    m.extend_from_slice(&pid.as_raw().to_be_bytes());
    container::sys(send(FD_SYNC, &m, MsgFlags::empty()), || {
        "report the exec pid".into()
    })?;
    Ok(())
}

enum Never {}

/// `process.env` overridden (by key) and extended by `extra`.
pub fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = base.to_vec();
    for e in extra {
        let k = key(e);
        match out.iter_mut().find(|o| key(o) == k) {
            Some(o) => o.clone_from(e),
            None => out.push(e.clone()),
        }
    }
    out
}

fn process_setup(
    spec: &Spec,
    exec: &ExecProcess,
    seccomp: Option<&crate::seccomp::Filter>,
) -> Result<Never> {
    let mut b = [0u8; 16];
    let n = container::sys(recv(FD_SYNC, &mut b, MsgFlags::empty()), || {
        "wait for the shim".into()
    })?;
    if n == 0 || b[0] != msg::GO {
        // SAFETY: immediate exit of this child: the shim gave up on this exec.
        unsafe { libc::_exit(1) }
    }
    let mut keep = vec![FD_SYNC];
    if !exec.terminal {
        keep.extend([FD_STDIN, FD_STDOUT, FD_STDERR]);
    }
    container::close_other_fds(&keep);
    process::reset_signals();

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("no process".into()))?;
    let user = Some(exec.user.trim()).filter(|u| !u.is_empty());
    let ident = process::resolve_identity(spec, user)?;
    let slave = if exec.terminal {
        Some(process::setup_terminal(
            FD_SYNC, ident.uid, ident.gid, false,
        )?)
    } else {
        None
    };
    process::apply_limits(process)?;
    process::set_umask(process);
    process::install_seccomp(seccomp, process, Stage::BeforeCaps)?;
    process::apply_identity_and_caps(process, &ident)?;
    if exec.cwd.is_empty() {
        process::enter_working_folder(process.cwd())?;
    } else {
        process::enter_working_folder(Path::new(&exec.cwd))?;
    }

    let mut env = merge_env(process.env().as_deref().unwrap_or(&[]), &exec.env);
    process::add_home(&mut env, &ident);
    if exec.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let program = Program::resolve(&exec.args, env)?;
    process::set_no_new_privs(process)?;

    let stdio = if exec.terminal {
        InitStdio::Terminal
    } else {
        // SAFETY: the shim set these descriptors up for this process; nothing else owns them.
        unsafe {
            InitStdio::Pipes {
                stdin: OwnedFd::from_raw_fd(FD_STDIN),
                stdout: OwnedFd::from_raw_fd(FD_STDOUT),
                stderr: OwnedFd::from_raw_fd(FD_STDERR),
            }
        }
    };
    process::attach_stdio(&stdio, slave)?;
    Err(program.exec(seccomp, process))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string(), "B".to_string()];
        let extra = vec!["A=2".to_string(), "C=3".to_string(), "B=x".to_string()];
        assert_eq!(
            merge_env(&base, &extra),
            vec!["PATH=/bin", "A=2", "B=x", "C=3"]
        );
        assert_eq!(merge_env(&base, &[]), base);
    }
}
