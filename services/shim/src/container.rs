//! Creating the container's init process: clone into new namespaces, then (in the child) one
//! phase after the other ([`init_setup`]): join the cgroup and namespaces, the root
//! ([`crate::rootfs`]), sysctl and host names, then the process itself ([`crate::process`]:
//! identity, terminal, limits, capabilities, the program); the child reports to the shim and
//! waits for `start` before `execve`.
//!
//! Sync protocol on a SOCK_SEQPACKET socketpair (one message per packet):
//! - shim → init: `C` (init is in its cgroup), `S` (start: execve now).
//! - init → shim: `P` + SCM_RIGHTS(pty master), `R` (ready), `E` + code (i32 BE) + message.
//!   A successful `execve` closes init's end (CLOEXEC): the shim reads EOF.

use crate::bundle::RootfsMount;
use crate::cgroup::V1Hierarchy;
use crate::error::{Context, Error, Result};
use crate::process::{
    add_home, apply_identity_and_caps, apply_limits, attach_stdio, clone_process,
    enter_working_folder, install_seccomp, reset_signals, resolve_identity, set_no_new_privs,
    set_umask, setup_terminal, Program, Stage,
};
use crate::rootfs;
use nix::sched::CloneFlags;
use nix::sys::socket::{recv, send, MsgFlags};
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Message tags of the sync protocol.
pub mod msg {
    /// shim → init: placed into the cgroup.
    pub const CGROUP_DONE: u8 = b'C';
    /// shim → init: exec now.
    pub const START: u8 = b'S';
    /// init → shim: the pty master travels with this message.
    pub const PTY: u8 = b'P';
    /// init → shim: set up, waiting for start.
    pub const READY: u8 = b'R';
    /// init → shim: failure (code + message).
    pub const ERROR: u8 = b'E';
}

/// The namespaces the init gets.
#[derive(Debug)]
pub struct Namespaces {
    /// Namespaces created by `clone` (types in the spec without a path).
    pub clone_flags: CloneFlags,
    /// Namespaces joined with `setns` in the child (types with a path), pid excluded.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// A pid namespace to join: the shim joins it (for its children) before cloning.
    pub join_pid: Option<OwnedFd>,
    /// Whether a new cgroup namespace is made after joining the cgroup.
    pub new_cgroup: bool,
    /// Whether a new UTS namespace is made (hostname is only set then).
    pub new_uts: bool,
    /// Whether the container has its own network namespace (new or joined).
    pub own_net: bool,
    /// Whether the container has its own IPC namespace (new or joined).
    pub own_ipc: bool,
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

impl Namespaces {
    /// From `linux.namespaces`: a type with a path is joined, a type without one is created,
    /// a type absent from the spec is shared with the host. Opens the paths to join.
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let mut out = Namespaces {
            clone_flags: CloneFlags::empty(),
            join: Vec::new(),
            join_pid: None,
            new_cgroup: false,
            new_uts: false,
            own_net: false,
            own_ipc: false,
        };
        let list = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .map(|v| v.as_slice())
            .unwrap_or(&[]);
        for ns in list {
            let flag = ns_flag(ns.typ());
            match ns.typ() {
                LinuxNamespaceType::Network => out.own_net = true,
                LinuxNamespaceType::Ipc => out.own_ipc = true,
                _ => {}
            }
            match ns.path() {
                Some(p) => {
                    let f = std::fs::File::open(p)
                        .ctx(|| format!("open {} namespace {}", ns.typ(), p.display()))?;
                    let fd = OwnedFd::from(f);
                    if ns.typ() == LinuxNamespaceType::Pid {
                        out.join_pid = Some(fd);
                    } else {
                        out.join.push((flag, fd));
                    }
                }
                None => match ns.typ() {
                    LinuxNamespaceType::Cgroup => out.new_cgroup = true,
                    t => {
                        if t == LinuxNamespaceType::Uts {
                            out.new_uts = true;
                        }
                        out.clone_flags |= flag;
                    }
                },
            }
        }
        Ok(out)
    }
}

/// The init's stdio.
#[derive(Debug)]
pub enum InitStdio {
    /// Pipes (or /dev/null for stdin), init's ends.
    Pipes {
        /// Read end of the stdin pipe, or /dev/null.
        stdin: OwnedFd,
        /// Write end of the stdout pipe.
        stdout: OwnedFd,
        /// Write end of the stderr pipe.
        stderr: OwnedFd,
    },
    /// A pty made inside the container; the master is sent to the shim.
    Terminal,
}

/// Everything the init needs; built by the shim before `clone`.
#[derive(Debug)]
pub struct InitConfig<'a> {
    /// The spec.
    pub spec: &'a Spec,
    /// Absolute rootfs folder (`<bundle>/rootfs`).
    pub rootfs: PathBuf,
    /// `rootfs.json`.
    pub rootfs_mounts: &'a [RootfsMount],
    /// The container's cgroup path relative to each hierarchy root.
    pub cgroup_rel: String,
    /// Whether the host uses cgroup v2.
    pub cgroup_v2: bool,
    /// The host's cgroup v1 hierarchies (empty on v2).
    pub v1_hierarchies: Vec<V1Hierarchy>,
    /// Namespaces.
    pub namespaces: &'a Namespaces,
    /// Stdio.
    pub stdio: &'a InitStdio,
    /// Init's end of the sync socketpair (CLOEXEC).
    pub sync: RawFd,
    /// The seccomp filter to install, compiled by the runtime.
    pub seccomp: Option<&'a crate::seccomp::Filter>,
}

/// Clones the init process. Must be called while the calling process is single-threaded.
/// Returns the init's host pid.
pub fn spawn_init(cfg: &InitConfig<'_>) -> Result<Pid> {
    if let Some(n) = thread_count() {
        if n != 1 {
            return Err(Error::Invalid(format!(
                "refusing to clone the container init from a process with {n} threads"
            )));
        }
    }
    let flags = cfg.namespaces.clone_flags.bits() as libc::c_ulong;
    // SAFETY: the process is single-threaded (checked above; the caller guarantees it).
    let cloned = unsafe {
        clone_process(flags, || {
            let err = init_main(cfg);
            report_error(cfg.sync, &err);
            err.exit_code()
        })
    };
    cloned.map_err(|e| {
        Error::io(
            format!("clone init with {:?}", cfg.namespaces.clone_flags),
            e,
        )
    })
}

fn thread_count() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn report_error(sync: RawFd, err: &Error) {
    let mut buf = vec![msg::ERROR];
    buf.extend_from_slice(&err.exit_code().to_be_bytes());
    let mut m = err.to_string();
    m.truncate(3000);
    buf.extend_from_slice(m.as_bytes());
    let _ = send(sync, &buf, MsgFlags::empty());
}

/// Decodes an `E` message into an error.
pub fn decode_error(buf: &[u8]) -> Error {
    if buf.len() < 5 {
        return Error::Invalid("container init reported a malformed error".into());
    }
    let code = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let message = String::from_utf8_lossy(&buf[5..]).into_owned();
    if code == 126 || code == 127 {
        Error::Exec { message, code }
    } else {
        Error::Io {
            context: "create container".into(),
            source: std::io::Error::other(message),
        }
    }
}

pub(crate) fn sys<T>(r: nix::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.ctx(what)
}

/// The init: returns only on failure (success ends in execve).
fn init_main(cfg: &InitConfig<'_>) -> Error {
    match init_setup(cfg) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

pub(crate) fn close_other_fds(keep: &[RawFd]) {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing descriptors inherited from the shim that the init does not use;
            // nothing in this process refers to them any more (the read_dir handle is dropped).
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// The init's phases, in order; each failure is reported to the shim by [`spawn_init`].
fn init_setup(cfg: &InitConfig<'_>) -> Result<Never> {
    let spec = cfg.spec;
    join_container(cfg)?;
    reset_signals();
    rootfs::prepare_rootfs(cfg)?;
    rootfs::pivot_root(&cfg.rootfs)?;
    // Before /proc/sys becomes read-only.
    apply_sysctl(cfg)?;
    set_host_names(cfg)?;

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("no process".into()))?;
    // Identity (reads /etc/passwd and /etc/group of the container).
    let ident = resolve_identity(spec, None)?;
    // Terminal: made inside the container so `tty` shows /dev/pts/N of its own devpts.
    // The standard descriptors are switched last, so diagnostics until then go to shim.log.
    let slave = match cfg.stdio {
        InitStdio::Terminal => Some(setup_terminal(cfg.sync, ident.uid, ident.gid, true)?),
        InitStdio::Pipes { .. } => None,
    };
    rootfs::protect_paths(spec)?;
    apply_limits(process)?;
    make_working_folder(process.cwd(), &ident)?;
    set_umask(process);
    install_seccomp(cfg.seccomp, process, Stage::BeforeCaps)?;
    apply_identity_and_caps(process, &ident)?;
    enter_working_folder(process.cwd())?;

    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    add_home(&mut env, &ident);
    let program = Program::resolve(process.args().as_deref().unwrap_or(&[]), env)?;
    set_no_new_privs(process)?;
    attach_stdio(cfg.stdio, slave)?;
    wait_for_start(cfg.sync)?;
    Err(program.exec(cfg.seccomp, process))
}

/// Keeps only the descriptors the init needs, waits until the shim placed it into the
/// cgroup, then joins the namespaces the spec names by path and makes the cgroup namespace
/// (after the cgroup, so that the namespace's root is the container's cgroup).
fn join_container(cfg: &InitConfig<'_>) -> Result<()> {
    let mut keep = vec![cfg.sync];
    if let InitStdio::Pipes {
        stdin,
        stdout,
        stderr,
    } = cfg.stdio
    {
        keep.extend([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()]);
    }
    keep.extend(cfg.namespaces.join.iter().map(|(_, fd)| fd.as_raw_fd()));
    close_other_fds(&keep);
    wait_for_cgroup(cfg.sync)?;
    join_namespaces(&cfg.namespaces.join)?;
    if cfg.namespaces.new_cgroup {
        sys(nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP), || {
            "unshare cgroup namespace".into()
        })?;
    }
    Ok(())
}

/// Waits for the shim's `C`: this process is in the container's cgroup(s).
pub(crate) fn wait_for_cgroup(sync: RawFd) -> Result<()> {
    let mut b = [0u8; 16];
    let n = sys(recv(sync, &mut b, MsgFlags::empty()), || {
        "wait for the shim".into()
    })?;
    if n == 0 || b[0] != msg::CGROUP_DONE {
        return Err(Error::Invalid(
            "shim went away before the cgroup was joined".into(),
        ));
    }
    Ok(())
}

/// `setns` into each namespace, in order.
pub(crate) fn join_namespaces(joins: &[(CloneFlags, OwnedFd)]) -> Result<()> {
    for (flag, fd) in joins {
        sys(nix::sched::setns(fd, *flag), || format!("setns {flag:?}"))?;
    }
    Ok(())
}

/// `linux.sysctl`, refused for a key that is not in a namespace of the container's own.
fn apply_sysctl(cfg: &InitConfig<'_>) -> Result<()> {
    let Some(sysctl) = cfg.spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (k, v) in sysctl {
        let namespaced = (k.starts_with("net.") && cfg.namespaces.own_net)
            || ((k.starts_with("kernel.msg")
                || k.starts_with("kernel.sem")
                || k.starts_with("kernel.shm")
                || k.starts_with("fs.mqueue."))
                && cfg.namespaces.own_ipc)
            || ((k == "kernel.hostname" || k == "kernel.domainname") && cfg.namespaces.new_uts);
        if !namespaced {
            return Err(Error::Invalid(format!(
                "sysctl {k:?} is not in a separate kernel namespace"
            )));
        }
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).ctx(|| format!("write sysctl {path}"))?;
    }
    Ok(())
}

/// The spec's hostname and domainname, in a UTS namespace of the container's own.
fn set_host_names(cfg: &InitConfig<'_>) -> Result<()> {
    if !cfg.namespaces.new_uts {
        return Ok(());
    }
    let spec = cfg.spec;
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        sys(nix::unistd::sethostname(h), || format!("sethostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        let c = CString::new(d).map_err(|_| Error::Invalid("bad domainname".into()))?;
        // SAFETY: `c` is a valid buffer of the given length for the duration of the call.
        let r = unsafe { libc::setdomainname(c.as_ptr(), d.len()) };
        if r != 0 {
            return Err(Error::io(
                format!("setdomainname {d:?}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// The working folder, created as root (and given to the process's user) before the
/// identity changes.
fn make_working_folder(cwd: &Path, ident: &crate::user::ResolvedUser) -> Result<()> {
    if std::fs::metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd).ctx(|| format!("create working folder {}", cwd.display()))?;
        let _ = nix::unistd::chown(
            cwd,
            Some(Uid::from_raw(ident.uid)),
            Some(Gid::from_raw(ident.gid)),
        );
    }
    Ok(())
}

/// Tells the shim the init is ready and waits for `start`; a shim that goes away (or
/// deletes the container before starting it) ends the init here.
fn wait_for_start(sync: RawFd) -> Result<()> {
    sys(send(sync, &[msg::READY], MsgFlags::empty()), || {
        "report ready".into()
    })?;
    let mut b = [0u8; 16];
    let n = sys(recv(sync, &mut b, MsgFlags::empty()), || {
        "wait for start".into()
    })?;
    if n == 0 || b[0] != msg::START {
        // SAFETY: immediate exit of this child.
        unsafe { libc::_exit(1) }
    }
    Ok(())
}

/// Receives the pty master sent with a `P` message (`buf` holds the message on return).
pub fn recv_with_fd(sync: RawFd, buf: &mut [u8]) -> Result<(usize, Option<OwnedFd>)> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let m = sys(
        nix::sys::socket::recvmsg::<()>(
            sync,
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ),
        || "receive from the container init".into(),
    )?;
    let mut fd = None;
    if let Ok(cmsgs) = m.cmsgs() {
        for c in cmsgs {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: the kernel just installed `f` in our table for us; we own it.
                    let owned = unsafe { OwnedFd::from_raw_fd(f) };
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
    }
    Ok((m.bytes, fd))
}

/// Opens `/dev/null` for the init's stdin.
pub fn dev_null() -> Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .ctx(|| "open /dev/null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_from_spec() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},
                "root":{"path":"rootfs"},
                "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"cgroup"},
                                       {"type":"network","path":"/proc/self/ns/net"}]}}"#,
        )
        .unwrap();
        let ns = Namespaces::from_spec(&spec).unwrap();
        assert_eq!(
            ns.clone_flags,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS
        );
        assert!(ns.new_cgroup && ns.new_uts && ns.own_net && !ns.own_ipc);
        assert_eq!(ns.join.len(), 1);
        assert_eq!(ns.join[0].0, CloneFlags::CLONE_NEWNET);
    }

    #[test]
    fn error_decoding() {
        let mut b = vec![msg::ERROR];
        b.extend_from_slice(&127i32.to_be_bytes());
        b.extend_from_slice(b"exec: \"x\": executable file not found in $PATH");
        match decode_error(&b) {
            Error::Exec { code, message } => {
                assert_eq!(code, 127);
                assert!(message.starts_with("exec: "));
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(decode_error(&[msg::ERROR]).exit_code(), 1);
    }
}
