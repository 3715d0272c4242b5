//! Compiling the OCI `linux.seccomp` to the classic BPF program the kernel runs, with
//! libseccomp (Debian's libseccomp2, through the `libseccomp` crate): it knows every
//! architecture's syscall numbers by name, handles the x86_64/x86/x32 multiplexing and builds
//! a binary tree of the allowed calls, which a hand-written compiler would have to redo.
//!
//! Each distinct profile is compiled once per berthd: the programs are kept by the SHA-256 of
//! the profile's JSON (a handful of entries in practice — one per set of capabilities).

use crate::error::{Error, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

/// A compiled program: `struct sock_filter` entries in native byte order.
pub type Compiled = Arc<Vec<u8>>;

/// Programs kept at most; past it the cache starts again (profiles differ by capabilities, so
/// a berthd sees a few).
const CACHE_ENTRIES: usize = 64;

fn cache() -> &'static Mutex<HashMap<[u8; 32], Compiled>> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Compiled>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The BPF program of `profile`, compiled or from the cache.
pub fn compile(profile: &LinuxSeccomp) -> Result<Compiled> {
    let json = serde_json::to_vec(profile).map_err(|e| Error::Spec(e.to_string()))?;
    let key: [u8; 32] = Sha256::digest(&json).into();
    if let Some(c) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let program = Arc::new(build(profile)?);
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= CACHE_ENTRIES {
        c.clear();
    }
    c.insert(key, program.clone());
    Ok(program)
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("cannot compile the seccomp profile: {what}"))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(0) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(bad("SCMP_ACT_NOTIFY (user notification) is not supported"))
        }
    })
}

fn compare(arg: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let index = arg.index() as u32;
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // Docker's and the OCI's MASKED_EQ: `value` is the mask, `valueTwo` what must remain.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    ScmpArgCompare::new(index, op, datum)
}

fn build(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(bad)?;
    for arch in profile.architectures().as_deref().unwrap_or(&[]) {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let a = ScmpArch::from_str(&name).map_err(|_| bad(format!("architecture {name}")))?;
        if !ctx.is_arch_present(a).map_err(bad)? {
            ctx.add_arch(a).map_err(bad)?;
        }
    }
    // A binary tree of the calls instead of a list (libseccomp 2.5).
    let _ = ctx.set_ctl_optimize(2);
    for rule in profile.syscalls().as_deref().unwrap_or(&[]) {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args: Vec<ScmpArgCompare> = rule
            .args()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(compare)
            .collect();
        for name in rule.names() {
            // Calls this libseccomp does not know (newer, or of no listed architecture) are
            // left to the default action.
            let Ok(call) = ScmpSyscall::from_name(name) else {
                continue;
            };
            // Several conditions on one argument cannot all hold: each is a rule of its own
            // (any of them allows), as runc reads such profiles.
            let mut indexes: Vec<u32> = rule
                .args()
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|a| a.index() as u32)
                .collect();
            indexes.sort_unstable();
            let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
            let result = if args.is_empty() {
                ctx.add_rule(act, call)
            } else if repeated {
                args.iter()
                    .try_for_each(|a| ctx.add_rule_conditional(act, call, &[*a]).map(drop))
                    .map(|()| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, call, &args)
            };
            result.map_err(|e| bad(format!("rule for {name}: {e}")))?;
        }
    }
    let mut out = memfd()?;
    ctx.export_bpf(&out).map_err(bad)?;
    let mut bytes = Vec::new();
    out.rewind()
        .and_then(|_| out.read_to_end(&mut bytes))
        .map_err(|e| bad(format!("reading the program back: {e}")))?;
    Ok(bytes)
}

/// An anonymous file for libseccomp to write the program into.
fn memfd() -> Result<std::fs::File> {
    let fd =
        nix::sys::memfd::memfd_create(c"berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| bad(format!("memfd_create: {e}")))?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{default_profile, Host};
    use std::collections::HashSet;

    #[test]
    fn the_default_compiles_once() {
        let caps: HashSet<String> = ["CAP_CHOWN".to_string()].into();
        let oci = default_profile().resolve(&caps, &Host::current()).unwrap();
        let a = compile(&oci).unwrap();
        assert!(
            !a.is_empty() && a.len().is_multiple_of(8) && a.len() / 8 <= 4096,
            "{}",
            a.len()
        );
        let b = compile(&oci).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "compiled twice");
    }
}
