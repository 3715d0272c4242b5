//! Creating the container's init process: clone into new namespaces, then (in the child) the
//! rootfs, mounts, devices, pivot_root, hostname, rlimits, user, capabilities and the executable;
//! the child reports to the shim and waits for `start` before `execve`.
//!
//! Sync protocol on a SOCK_SEQPACKET socketpair (one message per packet):
//! - shim → init: `C` (init is in its cgroup), `S` (start: execve now).
//! - init → shim: `P` + SCM_RIGHTS(pty master), `R` (ready), `E` + code (i32 BE) + message.
//!   A successful `execve` closes init's end (CLOEXEC): the shim reads EOF.

use crate::bundle::{RootfsMount, ANNOTATION_USER};
use crate::cgroup::V1Hierarchy;
use crate::error::{Context, Error, Result};
use crate::lookup;
use crate::mounts::{bind_mount, do_mount, locked_flags, Kind, Place};
use berth_mount::{parse_options, parse_propagation, MountOptions};
use nix::fcntl::OFlag;
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::socket::{recv, send, MsgFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Mount, PosixRlimitType, Spec};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
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
    let flags = cfg.namespaces.clone_flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child gets a copy of the
    // address space and continues on its own copy of this stack, exactly like fork(2). The
    // caller guarantees the process is single-threaded, so no lock can be held by a thread that
    // does not exist in the child.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        return Err(Error::io(
            format!("clone init with {:?}", cfg.namespaces.clone_flags),
            std::io::Error::last_os_error(),
        ));
    }
    if r == 0 {
        // Child. Never return into the shim's code: catch panics and _exit.
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let err = init_main(cfg);
            report_error(cfg.sync, &err);
            err.exit_code()
        }))
        .unwrap_or(1);
        // SAFETY: _exit ends the process immediately without running the parent's atexit
        // handlers or flushing its copied stdio buffers, which is what a forked child must do.
        unsafe { libc::_exit(code) }
    }
    Ok(Pid::from_raw(r as i32))
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

fn init_setup(cfg: &InitConfig<'_>) -> Result<Never> {
    let spec = cfg.spec;
    // Keep only what the init needs.
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

    // Wait until the shim placed us into the cgroup.
    let mut b = [0u8; 16];
    let n = sys(recv(cfg.sync, &mut b, MsgFlags::empty()), || {
        "wait for the shim".into()
    })?;
    if n == 0 || b[0] != msg::CGROUP_DONE {
        return Err(Error::Invalid(
            "shim went away before the cgroup was joined".into(),
        ));
    }

    for (flag, fd) in &cfg.namespaces.join {
        sys(nix::sched::setns(fd, *flag), || format!("setns {flag:?}"))?;
    }
    if cfg.namespaces.new_cgroup {
        sys(nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP), || {
            "unshare cgroup namespace".into()
        })?;
    }

    reset_signals();

    prepare_rootfs(cfg)?;
    pivot_root(&cfg.rootfs)?;

    let linux = spec.linux().as_ref();
    // sysctl (before /proc/sys becomes read-only)
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
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
    }

    if cfg.namespaces.new_uts {
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
    }

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("no process".into()))?;

    // Identity (reads /etc/passwd and /etc/group of the container).
    let user = process.user();
    let ident = resolve_identity(spec, None)?;

    // Terminal: made inside the container so `tty` shows /dev/pts/N of its own devpts.
    // The standard descriptors are switched last, so diagnostics until then go to shim.log.
    let slave = match cfg.stdio {
        InitStdio::Terminal => Some(setup_terminal(cfg.sync, ident.uid, ident.gid, true)?),
        InitStdio::Pipes { .. } => None,
    };

    // Masked and read-only paths, read-only root.
    if let Some(l) = linux {
        for p in l.masked_paths().as_deref().unwrap_or(&[]) {
            mask_path(Path::new(p))?;
        }
        for p in l.readonly_paths().as_deref().unwrap_or(&[]) {
            readonly_path(Path::new(p))?;
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let keep = locked_flags(Path::new("/"));
        do_mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
            None,
        )?;
    }

    apply_limits(process)?;

    // Working folder, created as root before the identity changes.
    let cwd = process.cwd();
    if std::fs::metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd).ctx(|| format!("create working folder {}", cwd.display()))?;
        let _ = nix::unistd::chown(
            cwd,
            Some(Uid::from_raw(ident.uid)),
            Some(Gid::from_raw(ident.gid)),
        );
    }

    // umask
    let umask = user.umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask as libc::mode_t));

    install_seccomp(cfg.seccomp, process, Stage::BeforeCaps)?;
    apply_identity_and_caps(process, &ident)?;

    sys(nix::unistd::chdir(cwd), || {
        format!(
            "chdir to cwd ({:?}) set in config.json failed",
            cwd.display().to_string()
        )
    })?;

    // Environment, HOME from passwd when absent.
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", ident.home));
    }
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args.first().cloned().unwrap_or_default();
    let path_env = lookup::path_from_env(&env).map(str::to_string);
    let exe = lookup::find_executable(&arg0, path_env.as_deref())?;

    set_no_new_privs(process)?;

    let c_exe = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid("executable path contains NUL".into()))?;
    let c_args = to_cstrings(&args)?;
    let c_env = to_cstrings(&env)?;

    attach_stdio(cfg.stdio, slave)?;

    // Ready; wait for start.
    sys(send(cfg.sync, &[msg::READY], MsgFlags::empty()), || {
        "report ready".into()
    })?;
    let n = sys(recv(cfg.sync, &mut b, MsgFlags::empty()), || {
        "wait for start".into()
    })?;
    if n == 0 || b[0] != msg::START {
        // The shim went away or the container is being deleted before start.
        // SAFETY: immediate exit of this child.
        unsafe { libc::_exit(1) }
    }
    // Everything above stdio closes on exec (the sync socket included).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    install_seccomp(cfg.seccomp, process, Stage::BeforeExec)?;
    let err = match nix::unistd::execve(&c_exe, &c_args, &c_env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let code = lookup::code_for_errno(err as i32);
    Err(Error::Exec {
        message: format!("exec {}: {}", exe.display(), err.desc().to_lowercase()),
        code,
    })
}

/// Signals: Rust ignores SIGPIPE and an ignored disposition survives execve; the mask too.
pub(crate) fn reset_signals() {
    // SAFETY: resetting a disposition to default in a single-threaded child.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// The identity of a process of the container, resolved against the `/etc/passwd` and
/// `/etc/group` of the current root (the container's): `user` given (an exec's `--user`)
/// is resolved from scratch (uid/gid 0 as the base, as Docker does); otherwise
/// `process.user` with the `io.berth.user` annotation, as for the init.
pub(crate) fn resolve_identity(
    spec: &Spec,
    user: Option<&str>,
) -> Result<crate::user::ResolvedUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let group = std::fs::read_to_string("/etc/group").ok();
    let r = match user {
        Some(u) => crate::user::resolve(0, 0, &[], Some(u), passwd.as_deref(), group.as_deref()),
        None => {
            let spec_user = spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_USER))
                .map(String::as_str);
            let pu = spec
                .process()
                .as_ref()
                .ok_or_else(|| Error::Invalid("no process".into()))?
                .user();
            crate::user::resolve(
                pu.uid(),
                pu.gid(),
                pu.additional_gids().as_deref().unwrap_or(&[]),
                spec_user,
                passwd.as_deref(),
                group.as_deref(),
            )
        }
    };
    r.map_err(Error::Invalid)
}

/// rlimits (never raising a hard limit: no CAP_SYS_RESOURCE needed) and oom_score_adj.
pub(crate) fn apply_limits(process: &oci_spec::runtime::Process) -> Result<()> {
    for rl in process.rlimits().as_deref().unwrap_or(&[]) {
        set_rlimit(rl.typ(), rl.soft(), rl.hard())?;
    }
    if let Some(adj) = process.oom_score_adj() {
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            // Lowering it needs CAP_SYS_RESOURCE; keep going like runc with a warning.
            crate::log(&format!("oom_score_adj {adj} not set: {e}"));
        }
    }
    Ok(())
}

/// `process.noNewPrivileges`.
pub(crate) fn set_no_new_privs(process: &oci_spec::runtime::Process) -> Result<()> {
    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if r != 0 {
            return Err(Error::io(
                "set no_new_privs",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Where a process's setup stands when it may install its seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Still privileged, about to drop capabilities and change identity.
    BeforeCaps,
    /// Everything done; `execve` is next.
    BeforeExec,
}

/// Installs the filter at the right stage (see [`crate::seccomp`]): the last step before
/// `execve` under `no_new_privs`, else while the process still holds `CAP_SYS_ADMIN`.
pub(crate) fn install_seccomp(
    filter: Option<&crate::seccomp::Filter>,
    process: &oci_spec::runtime::Process,
    stage: Stage,
) -> Result<()> {
    let Some(f) = filter else {
        return Ok(());
    };
    let nnp = process.no_new_privileges() == Some(true);
    if (stage == Stage::BeforeExec) == nnp {
        f.install()?;
    }
    Ok(())
}

pub(crate) fn to_cstrings(v: &[String]) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| Error::Invalid(format!("{s:?} contains NUL")))
        })
        .collect()
}

/// Mount propagation, rootfs.json mounts, spec mounts, devices.
fn prepare_rootfs(cfg: &InitConfig<'_>) -> Result<()> {
    let spec = cfg.spec;
    let root_prop = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(parse_propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    do_mount(None, Path::new("/"), None, root_prop, None)?;

    let rootfs = &cfg.rootfs;
    if cfg.rootfs_mounts.is_empty() {
        do_mount(
            Some(rootfs),
            rootfs,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    }
    for m in cfg.rootfs_mounts {
        let opts = parse_options(&m.options);
        if opts.is_bind() || m.typ == "bind" {
            let mut o = opts.clone();
            o.flags |= MsFlags::MS_BIND;
            bind_mount(Path::new(&m.source), &Place::host(rootfs), &o)?;
        } else {
            do_mount(
                Some(Path::new(&m.source)),
                rootfs,
                Some(&m.typ),
                opts.flags,
                opts.data(),
            )?;
        }
    }
    // pivot_root needs a private (not shared) new root.
    do_mount(None, rootfs, None, MsFlags::MS_PRIVATE, None)?;

    // Every mount point from here on is resolved inside the rootfs by descriptor.
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", rootfs.display()))?;
    let mut dev_is_tmpfs = false;
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
        mount_spec_entry(cfg, root.as_fd(), m)?;
    }
    create_devices(cfg, root.as_fd(), dev_is_tmpfs)?;
    Ok(())
}

fn mount_spec_entry(cfg: &InitConfig<'_>, root: BorrowedFd<'_>, m: &Mount) -> Result<()> {
    let dest = Place::in_root(root, m.destination());
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let source = m.source().clone().unwrap_or_default();
    if typ == "bind" || opts.is_bind() {
        let md =
            std::fs::metadata(&source).ctx(|| format!("bind mount source {}", source.display()))?;
        dest.create(if md.is_dir() { Kind::Dir } else { Kind::File })?;
        let mut o = opts;
        o.flags |= MsFlags::MS_BIND;
        return bind_mount(&source, &dest, &o);
    }
    dest.create(Kind::Dir)?;
    match typ {
        "cgroup" | "cgroup2" => mount_cgroup(cfg, &dest, &opts),
        "sysfs" => {
            let mounted = dest.with(|d| {
                Ok(nix::mount::mount(
                    Some("sysfs"),
                    d,
                    Some("sysfs"),
                    opts.flags,
                    opts.data(),
                ))
            })?;
            match mounted {
                Ok(()) => Ok(()),
                // Without an own network namespace, sysfs cannot be mounted: bind the host's.
                Err(nix::errno::Errno::EPERM) | Err(nix::errno::Errno::EBUSY) => {
                    let mut o = opts.clone();
                    o.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
                    bind_mount(Path::new("/sys"), &dest, &o)
                }
                Err(e) => Err(Error::io(
                    format!("mount sysfs on {}", dest.display()),
                    e.into(),
                )),
            }
        }
        _ => {
            let src = if source.as_os_str().is_empty() {
                PathBuf::from(typ)
            } else {
                source.clone()
            };
            dest.with(|d| do_mount(Some(&src), d, Some(typ), opts.flags, opts.data()))?;
            for p in &opts.propagation {
                dest.with(|d| do_mount(None, d, None, *p, None))?;
            }
            Ok(())
        }
    }
}

/// /sys/fs/cgroup showing only the container's own cgroups, read-only when asked.
fn mount_cgroup(cfg: &InitConfig<'_>, dest: &Place<'_>, opts: &MountOptions) -> Result<()> {
    let base = opts.flags
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let ro_flag = if ro {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if cfg.cgroup_v2 {
        if cfg.namespaces.new_cgroup {
            return dest.with(|d| {
                do_mount(
                    Some(Path::new("cgroup2")),
                    d,
                    Some("cgroup2"),
                    base | ro_flag,
                    None,
                )
            });
        }
        let host = Path::new(crate::cgroup::V2_ROOT).join(&cfg.cgroup_rel);
        let o = MountOptions {
            flags: MsFlags::MS_BIND | MsFlags::MS_REC | base | ro_flag,
            propagation: Vec::new(),
            data: String::new(),
        };
        return bind_mount(&host, dest, &o);
    }
    // v1: a tmpfs with one mount per hierarchy.
    dest.with(|d| {
        do_mount(
            Some(Path::new("cgroup")),
            d,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
    })?;
    for h in &cfg.v1_hierarchies {
        let Some(name) = h.mount_point.file_name() else {
            continue;
        };
        let sub = dest.join(name);
        sub.create(Kind::Dir)?;
        if cfg.namespaces.new_cgroup {
            // In the cgroup namespace the hierarchy's root is the container's cgroup.
            let data = h.controllers.join(",");
            sub.with(|s| {
                do_mount(
                    Some(Path::new("cgroup")),
                    s,
                    Some("cgroup"),
                    base | ro_flag,
                    Some(&data),
                )
            })?;
        } else {
            let host = h.mount_point.join(&cfg.cgroup_rel);
            if !host.exists() {
                continue;
            }
            let o = MountOptions {
                flags: MsFlags::MS_BIND | base | ro_flag,
                propagation: Vec::new(),
                data: String::new(),
            };
            bind_mount(&host, &sub, &o)?;
        }
        // cpu,cpuacct → also reachable as cpu and cpuacct
        let name = name.to_string_lossy();
        if name.contains(',') {
            dest.with(|d| {
                for c in name.split(',') {
                    let link = d.join(c);
                    if std::fs::symlink_metadata(&link).is_err() {
                        std::os::unix::fs::symlink(&*name, &link)
                            .ctx(|| format!("symlink {}", dest.join(c).display()))?;
                    }
                }
                Ok(())
            })?;
        }
    }
    if ro {
        dest.with(|d| {
            do_mount(
                None,
                d,
                None,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
        })?;
    }
    Ok(())
}

/// /dev nodes and symlinks.
fn create_devices(cfg: &InitConfig<'_>, root: BorrowedFd<'_>, dev_is_tmpfs: bool) -> Result<()> {
    let dev = Place::in_root(root, Path::new("/dev"));
    let is_dir = dev.with(|d| Ok(d.is_dir())).unwrap_or(false);
    if !is_dir {
        return Ok(());
    }
    let old = nix::sys::stat::umask(Mode::empty());
    let res = (|| -> Result<()> {
        if dev_is_tmpfs {
            for (name, major, minor) in [
                ("null", 1, 3),
                ("zero", 1, 5),
                ("full", 1, 7),
                ("random", 1, 8),
                ("urandom", 1, 9),
                ("tty", 5, 0),
            ] {
                make_device(&dev.join(name), SFlag::S_IFCHR, major, minor, 0o666, 0, 0)?;
            }
            let kcore = Path::new("/proc/kcore").exists();
            dev.with(|d| {
                for (link, target) in [
                    ("fd", "/proc/self/fd"),
                    ("stdin", "/proc/self/fd/0"),
                    ("stdout", "/proc/self/fd/1"),
                    ("stderr", "/proc/self/fd/2"),
                    ("ptmx", "pts/ptmx"),
                ] {
                    let p = d.join(link);
                    if std::fs::symlink_metadata(&p).is_err() {
                        std::os::unix::fs::symlink(target, &p)
                            .ctx(|| format!("symlink /dev/{link}"))?;
                    }
                }
                if kcore && std::fs::symlink_metadata(d.join("core")).is_err() {
                    let _ = std::os::unix::fs::symlink("/proc/kcore", d.join("core"));
                }
                Ok(())
            })?;
        }
        for d in cfg
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().as_ref())
            .map(|v| v.as_slice())
            .unwrap_or(&[])
        {
            let kind = match d.typ() {
                oci_spec::runtime::LinuxDeviceType::B => SFlag::S_IFBLK,
                oci_spec::runtime::LinuxDeviceType::P => SFlag::S_IFIFO,
                _ => SFlag::S_IFCHR,
            };
            make_device(
                &Place::in_root(root, d.path()),
                kind,
                d.major() as u64,
                d.minor() as u64,
                d.file_mode().unwrap_or(0o666),
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
            )?;
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    res
}

/// Makes a device node, in its folder opened inside the rootfs; never through a symlink.
fn make_device(
    place: &Place<'_>,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    if place.exists() {
        return Ok(());
    }
    let parent = place.parent();
    parent.create(Kind::Dir)?;
    let name = place.file_name();
    let made = parent.with(|p| {
        let node = p.join(name);
        let r = mknod(
            &node,
            kind,
            Mode::from_bits_truncate(mode as libc::mode_t & 0o7777),
            makedev(major, minor),
        );
        if r.is_ok() {
            let _ = std::os::unix::fs::lchown(&node, Some(uid), Some(gid));
        }
        Ok(r)
    })?;
    match made {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            // No mknod here (e.g. restricted by a devices cgroup of the host): bind the host's node.
            let host = Path::new("/dev").join(name);
            place.create(Kind::File)?;
            bind_mount(
                &host,
                place,
                &MountOptions {
                    flags: MsFlags::MS_BIND,
                    propagation: Vec::new(),
                    data: String::new(),
                },
            )
        }
        Err(e) => Err(Error::io(format!("mknod {}", place.display()), e.into())),
    }
}

fn pivot_root(rootfs: &Path) -> Result<()> {
    let new_root = nix::fcntl::open(
        rootfs,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", rootfs.display()))?;
    let old_root = nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /".to_string())?;
    sys(nix::unistd::fchdir(&new_root), || {
        format!("chdir {}", rootfs.display())
    })?;
    sys(nix::unistd::pivot_root(".", "."), || {
        format!("pivot_root into {}", rootfs.display())
    })?;
    // The old root is now mounted on top of "."; detach it without propagating to the host.
    sys(nix::unistd::fchdir(&old_root), || "chdir old root".into())?;
    do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    sys(umount2(".", MntFlags::MNT_DETACH), || {
        "detach the old root".into()
    })?;
    sys(nix::unistd::chdir("/"), || "chdir /".into())?;
    Ok(())
}

fn mask_path(p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => do_mount(
            Some(Path::new("tmpfs")),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        ),
        Ok(_) => do_mount(
            Some(Path::new("/dev/null")),
            p,
            None,
            MsFlags::MS_BIND,
            None,
        ),
    }
}

fn readonly_path(p: &Path) -> Result<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    do_mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    let keep = locked_flags(p);
    do_mount(
        Some(p),
        p,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
        None,
    )
}

/// Opens a pty in the current root's `/dev/ptmx` (the container's devpts), sends the master to
/// the shim (`P` + SCM_RIGHTS) and returns the slave; with `console`, `/dev/console` is bound
/// to it (the init only).
pub(crate) fn setup_terminal(sync: RawFd, uid: u32, gid: u32, console: bool) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let master = sys(
        nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC),
        || "open /dev/ptmx".into(),
    )?;
    sys(nix::pty::grantpt(&master), || "grantpt".into())?;
    sys(nix::pty::unlockpt(&master), || "unlockpt".into())?;
    let name = sys(nix::pty::ptsname_r(&master), || "ptsname".into())?;
    let slave = sys(
        nix::fcntl::open(
            Path::new(&name),
            OFlag::O_RDWR | OFlag::O_NOCTTY,
            Mode::empty(),
        ),
        || format!("open {name}"),
    )?;
    let _ = nix::unistd::fchown(&slave, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    // /dev/console → the pty, as runc does.
    if console {
        let console = Path::new("/dev/console");
        if std::fs::symlink_metadata(console).is_err() {
            let _ = std::fs::File::create(console);
        }
        let _ = nix::mount::mount(
            Some(Path::new(&name)),
            console,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        );
    }

    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    sys(
        nix::sys::socket::sendmsg::<()>(
            sync,
            &[IoSlice::new(&[msg::PTY])],
            &cmsg,
            MsgFlags::empty(),
            None,
        ),
        || "send the pty master to the shim".into(),
    )?;
    drop(master);

    Ok(slave)
}

/// Points fds 0/1/2 at the pty slave (new session, controlling terminal) or the pipes.
pub(crate) fn attach_stdio(stdio: &InitStdio, slave: Option<OwnedFd>) -> Result<()> {
    let _ = nix::unistd::setsid();
    let fds: [RawFd; 3] = match (stdio, &slave) {
        (_, Some(slave)) => {
            // SAFETY: TIOCSCTTY on an open terminal descriptor with an integer argument.
            let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
            if r != 0 {
                return Err(Error::io(
                    "set the controlling terminal",
                    std::io::Error::last_os_error(),
                ));
            }
            [slave.as_raw_fd(); 3]
        }
        (
            InitStdio::Pipes {
                stdin,
                stdout,
                stderr,
            },
            None,
        ) => [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
        (InitStdio::Terminal, None) => return Err(Error::Invalid("terminal without a pty".into())),
    };
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 of an open descriptor onto the standard descriptors of this process.
        let r = unsafe { libc::dup2(*fd, target as RawFd) };
        if r < 0 {
            return Err(Error::io("dup2 stdio", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match t {
        PosixRlimitType::RlimitCpu => R::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => R::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => R::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => R::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => R::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => R::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => R::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => R::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => R::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => R::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => R::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => R::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => R::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => R::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => R::RLIMIT_RTTIME,
    })
}

/// The limits actually applied: the hard limit is clamped to the current hard limit, and the
/// soft limit to the resulting hard limit.
pub fn clamp_rlimit(soft: u64, hard: u64, current_hard: u64) -> (u64, u64) {
    let hard = hard.min(current_hard);
    (soft.min(hard), hard)
}

fn set_rlimit(t: PosixRlimitType, soft: u64, hard: u64) -> Result<()> {
    let Some(res) = rlimit_resource(t) else {
        return Ok(());
    };
    let (_, cur_hard) = sys(nix::sys::resource::getrlimit(res), || {
        format!("getrlimit {t}")
    })?;
    let (s, h) = clamp_rlimit(soft, hard, cur_hard);
    sys(nix::sys::resource::setrlimit(res, s, h), || {
        format!("setrlimit {t} soft={s} hard={h}")
    })
}

fn to_caps(set: Option<&oci_spec::runtime::Capabilities>) -> caps::CapsHashSet {
    let mut out = caps::CapsHashSet::new();
    for c in set.into_iter().flatten() {
        let name = format!("CAP_{c}");
        match name.parse::<caps::Capability>() {
            Ok(cap) => {
                out.insert(cap);
            }
            Err(_) => crate::log(&format!("unknown capability {name} ignored")),
        }
    }
    out
}

fn caps_err(what: &str, e: caps::errors::CapsError) -> Error {
    Error::io(what.to_string(), std::io::Error::other(e.to_string()))
}

/// groups, gid, uid, then the five capability sets.
pub(crate) fn apply_identity_and_caps(
    process: &oci_spec::runtime::Process,
    ident: &crate::user::ResolvedUser,
) -> Result<()> {
    let pcaps = process.capabilities().as_ref();
    let permitted_now =
        caps::read(None, caps::CapSet::Permitted).map_err(|e| caps_err("read capabilities", e))?;
    // Bounding set: drop what the spec does not list (needs CAP_SETPCAP, so before setuid).
    if let Some(pc) = pcaps {
        let bounding = to_caps(pc.bounding().as_ref());
        for c in caps::all() {
            if !bounding.contains(&c)
                && caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(false)
            {
                caps::drop(None, caps::CapSet::Bounding, c)
                    .map_err(|e| caps_err(&format!("drop {c} from the bounding set"), e))?;
            }
        }
    }
    // Keep the permitted set across setuid; it is trimmed right after.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
    }
    let gids: Vec<Gid> = ident
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    sys(nix::unistd::setgroups(&gids), || {
        format!("setgroups {:?}", ident.additional_gids)
    })?;
    sys(
        nix::unistd::setresgid(
            Gid::from_raw(ident.gid),
            Gid::from_raw(ident.gid),
            Gid::from_raw(ident.gid),
        ),
        || format!("setgid {}", ident.gid),
    )?;
    sys(
        nix::unistd::setresuid(
            Uid::from_raw(ident.uid),
            Uid::from_raw(ident.uid),
            Uid::from_raw(ident.uid),
        ),
        || format!("setuid {}", ident.uid),
    )?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    let Some(pc) = pcaps else {
        return Ok(());
    };
    let permitted: caps::CapsHashSet = to_caps(pc.permitted().as_ref())
        .intersection(&permitted_now)
        .copied()
        .collect();
    let effective: caps::CapsHashSet = to_caps(pc.effective().as_ref())
        .intersection(&permitted)
        .copied()
        .collect();
    let inheritable: caps::CapsHashSet = to_caps(pc.inheritable().as_ref())
        .intersection(&permitted_now)
        .copied()
        .collect();
    let ambient: caps::CapsHashSet = to_caps(pc.ambient().as_ref())
        .into_iter()
        .filter(|c| permitted.contains(c) && inheritable.contains(c))
        .collect();
    caps::set(None, caps::CapSet::Inheritable, &inheritable)
        .map_err(|e| caps_err("set inheritable capabilities", e))?;
    caps::set(None, caps::CapSet::Effective, &effective)
        .map_err(|e| caps_err("set effective capabilities", e))?;
    caps::set(None, caps::CapSet::Permitted, &permitted)
        .map_err(|e| caps_err("set permitted capabilities", e))?;
    caps::set(None, caps::CapSet::Ambient, &ambient)
        .map_err(|e| caps_err("set ambient capabilities", e))?;
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
    fn rlimit_clamp() {
        assert_eq!(clamp_rlimit(1024, 4096, 20000), (1024, 4096));
        assert_eq!(clamp_rlimit(1_048_576, 1_048_576, 20000), (20000, 20000));
        assert_eq!(clamp_rlimit(u64::MAX, u64::MAX, 20000), (20000, 20000));
    }

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
