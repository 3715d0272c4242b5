//! A process of the container, as the init and every `exec` set it up after joining the
//! container: cloned like `fork(2)` ([`clone_process`]), its signals reset, its identity
//! resolved from the container's `/etc/passwd` and `/etc/group`, a pty made inside the
//! container, rlimits, umask, capabilities, `no_new_privs`, the seccomp filter at the right
//! stage, its stdio, and finally the [`Program`] it `execve`s.
//!
//! Everything here runs in a single-threaded child (after `clone`), so it may allocate but
//! never waits on a lock another thread could hold.

use crate::bundle::ANNOTATION_USER;
use crate::container::{msg, sys, InitStdio};
use crate::error::{Error, Result};
use crate::lookup;
use crate::user::ResolvedUser;
use nix::mount::MsFlags;
use nix::sys::socket::MsgFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process, Spec};
use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
pub(crate) fn resolve_identity(spec: &Spec, user: Option<&str>) -> Result<ResolvedUser> {
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
pub(crate) fn apply_limits(process: &Process) -> Result<()> {
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
pub(crate) fn set_no_new_privs(process: &Process) -> Result<()> {
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
    process: &Process,
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
pub(crate) fn apply_identity_and_caps(process: &Process, ident: &ResolvedUser) -> Result<()> {
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

/// Clones this process like `fork(2)`, with `flags` added (namespaces to create,
/// `CLONE_PARENT`): the child runs `child` and ends with the code it returns (1 if it
/// panics), never returning into the caller's code. Returns the child's pid.
///
/// # Safety
///
/// The calling process must be single-threaded: the child continues on a copy of this
/// stack and address space, and a lock held by another thread would stay held in it.
pub(crate) unsafe fn clone_process(
    flags: libc::c_ulong,
    child: impl FnOnce() -> i32,
) -> std::io::Result<Pid> {
    let flags = flags | libc::SIGCHLD as libc::c_ulong;
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
        return Err(std::io::Error::last_os_error());
    }
    if r == 0 {
        // Child. Never return into the caller's code: catch panics and _exit.
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(1);
        // SAFETY: _exit ends the process immediately without running the parent's atexit
        // handlers or flushing its copied stdio buffers, which is what a forked child must do.
        unsafe { libc::_exit(code) }
    }
    Ok(Pid::from_raw(r as i32))
}

/// `process.user.umask`, 022 when absent.
pub(crate) fn set_umask(process: &Process) {
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask as libc::mode_t));
}

/// Changes into the process's working folder (after the identity changed, so that a folder
/// the user cannot enter fails as it would for them).
pub(crate) fn enter_working_folder(cwd: &Path) -> Result<()> {
    sys(nix::unistd::chdir(cwd), || {
        format!(
            "chdir to cwd ({:?}) set in config.json failed",
            cwd.display().to_string()
        )
    })
}

/// `HOME` from the user's passwd entry when the environment has none.
pub(crate) fn add_home(env: &mut Vec<String>, ident: &ResolvedUser) {
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", ident.home));
    }
}

/// What a process `execve`s: the executable found in `PATH` of its environment, and its
/// arguments and environment ready for the call.
#[derive(Debug)]
pub(crate) struct Program {
    exe: PathBuf,
    c_exe: CString,
    c_args: Vec<CString>,
    c_env: Vec<CString>,
}

impl Program {
    /// Looks `args[0]` up in `PATH` of `env` (in the current root: the container's).
    pub(crate) fn resolve(args: &[String], env: Vec<String>) -> Result<Program> {
        let arg0 = args.first().cloned().unwrap_or_default();
        let path_env = lookup::path_from_env(&env).map(str::to_string);
        let exe = lookup::find_executable(&arg0, path_env.as_deref())?;
        let c_exe = CString::new(exe.as_os_str().as_bytes())
            .map_err(|_| Error::Invalid("executable path contains NUL".into()))?;
        Ok(Program {
            exe,
            c_exe,
            c_args: to_cstrings(args)?,
            c_env: to_cstrings(&env)?,
        })
    }

    /// The last step: every descriptor above stdio set to close on exec (the sync socket
    /// included, so the shim reads EOF on success), the seccomp filter when it goes last,
    /// then `execve`. Returns only on failure.
    pub(crate) fn exec(self, seccomp: Option<&crate::seccomp::Filter>, process: &Process) -> Error {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
        }
        if let Err(e) = install_seccomp(seccomp, process, Stage::BeforeExec) {
            return e;
        }
        let err = match nix::unistd::execve(&self.c_exe, &self.c_args, &self.c_env) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        Error::Exec {
            message: format!("exec {}: {}", self.exe.display(), err.desc().to_lowercase()),
            code: lookup::code_for_errno(err as i32),
        }
    }
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
}
