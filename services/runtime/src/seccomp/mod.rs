//! Seccomp profiles: what a container may ask of the kernel.
//!
//! - [`Profile`]: a profile in Docker's JSON format (`--security-opt seccomp=FILE.json`), a
//!   superset of the OCI runtime spec's `linux.seccomp`: rules may be limited to
//!   architectures, capabilities the container holds and kernel versions (`includes`,
//!   `excludes`), and `archMap` lists the architectures with their sub-architectures.
//! - [`default_profile`]: berth's default, equivalent to Docker's: an allow-list (everything
//!   else fails with `EPERM`), the calls that need a capability allowed only to a container
//!   that holds it, `clone` refused the flags that make namespaces without `CAP_SYS_ADMIN`
//!   (and `clone3`, whose flags a filter cannot read, answered `ENOSYS` so libc falls back to
//!   `clone`), `personality` limited to the harmless personas; `keyctl`, `add_key`, `bpf`,
//!   `mount`, `unshare`, `ptrace` of other processes' memory and their like are refused.
//! - [`Profile::resolve`]: the profile for one container — its capabilities, this host's
//!   architecture and kernel — as the OCI `linux.seccomp` that goes into `config.json`.
//! - [`compile`]: `linux.seccomp` to the BPF program the shim installs (libseccomp), cached
//!   by content so that each distinct profile is compiled once per berthd.

mod bpf;
mod default;

pub use bpf::{compile, Compiled};
pub use default::default_profile;

use crate::error::{Error, Result};
use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A profile in Docker's format (also the OCI shape: `architectures` instead of `archMap`,
/// no `includes`/`excludes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch_map: Vec<ArchMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Seccomp user notification is not supported: a profile that sets it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
}

/// An architecture and the ones its kernel also runs (x86_64: x86 and x32).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Vec<String>,
}

/// One rule: what happens to these calls (when its arguments match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The older form: one name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub includes: Filter,
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub excludes: Filter,
}

/// A condition on one argument of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// Where a rule applies: architectures (Go's names: amd64, 386, x32, arm64…), capabilities
/// the container holds (all of them), the smallest kernel version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.arches.is_empty() && self.caps.is_empty() && self.min_kernel.is_none()
    }
}

/// The host a profile is resolved for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Go's name of the architecture (`amd64`, `arm64`, …).
    pub arch: &'static str,
    /// libseccomp's name of it (`SCMP_ARCH_X86_64`, …).
    pub scmp_arch: &'static str,
    /// The running kernel's (major, minor).
    pub kernel: (u32, u32),
}

impl Host {
    /// This machine.
    pub fn current() -> Host {
        let (arch, scmp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
            "x86" => ("386", "SCMP_ARCH_X86"),
            "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
            "arm" => ("arm", "SCMP_ARCH_ARM"),
            "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
            "s390x" => ("s390x", "SCMP_ARCH_S390X"),
            "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
            "loongarch64" => ("loong64", "SCMP_ARCH_LOONGARCH64"),
            _ => ("", "SCMP_ARCH_NATIVE"),
        };
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| parse_kernel(&u.release().to_string_lossy()))
            .unwrap_or((0, 0));
        Host {
            arch,
            scmp_arch,
            kernel,
        }
    }
}

/// `6.1.0-18-amd64` → (6, 1).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Profile {
    /// Reads a profile in Docker's (or the OCI) JSON format.
    pub fn from_json(json: &str) -> Result<Profile> {
        let p: Profile = serde_json::from_str(json).map_err(|e| {
            Error::InvalidArgument(format!(
                "the seccomp profile is not valid JSON in Docker's format: {e}"
            ))
        })?;
        if p.listener_path.is_some() {
            return Err(Error::InvalidArgument(
                "the seccomp profile sets listenerPath: seccomp user notification is not \
                 supported by berth"
                    .into(),
            ));
        }
        if !p.architectures.is_empty() && !p.arch_map.is_empty() {
            return Err(Error::InvalidArgument(
                "the seccomp profile sets both architectures and archMap: use one".into(),
            ));
        }
        Ok(p)
    }

    /// The profile for a container holding `caps` (names as `CAP_SYS_ADMIN`) on `host`, as
    /// the OCI spec carries it. Unknown actions, operators and architectures are refused here,
    /// so that a bad profile fails `create`, not the container's start.
    pub fn resolve(&self, caps: &HashSet<String>, host: &Host) -> Result<LinuxSeccomp> {
        let architectures: Vec<&str> = if self.arch_map.is_empty() {
            self.architectures.iter().map(String::as_str).collect()
        } else {
            self.arch_map
                .iter()
                .filter(|m| m.architecture == host.scmp_arch)
                .flat_map(|m| {
                    std::iter::once(m.architecture.as_str())
                        .chain(m.sub_architectures.iter().map(String::as_str))
                })
                .collect()
        };
        let mut syscalls = Vec::new();
        for rule in &self.syscalls {
            if !rule.applies(caps, host) {
                continue;
            }
            let mut names = rule.names.clone();
            names.extend(rule.name.clone());
            if names.is_empty() {
                continue;
            }
            let mut s = serde_json::json!({"names": names, "action": rule.action});
            if let Some(e) = rule.errno_ret {
                s["errnoRet"] = e.into();
            }
            if !rule.args.is_empty() {
                s["args"] = rule
                    .args
                    .iter()
                    .map(|a| {
                        serde_json::json!({"index": a.index, "value": a.value,
                            "valueTwo": a.value_two, "op": a.op})
                    })
                    .collect();
            }
            syscalls.push(s);
        }
        let mut oci = serde_json::json!({
            "defaultAction": self.default_action,
            "architectures": architectures,
            "syscalls": syscalls,
        });
        if let Some(e) = self.default_errno_ret {
            oci["defaultErrnoRet"] = e.into();
        }
        if !self.flags.is_empty() {
            oci["flags"] = serde_json::json!(self.flags);
        }
        serde_json::from_value(oci).map_err(|e| {
            Error::InvalidArgument(format!(
                "the seccomp profile has an unknown action, operator, architecture or flag: {e}"
            ))
        })
    }
}

impl Rule {
    /// Whether the rule applies to a container with `caps` on `host` (Docker's rules).
    fn applies(&self, caps: &HashSet<String>, host: &Host) -> bool {
        let (inc, exc) = (&self.includes, &self.excludes);
        if exc.arches.iter().any(|a| a == host.arch) || exc.caps.iter().any(|c| caps.contains(c)) {
            return false;
        }
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == host.arch) {
            return false;
        }
        if !inc.caps.iter().all(|c| caps.contains(c)) {
            return false;
        }
        if let Some(min) = inc.min_kernel.as_deref().and_then(parse_kernel) {
            if host.kernel < min {
                return false;
            }
        }
        if let Some(max) = exc.min_kernel.as_deref().and_then(parse_kernel) {
            if host.kernel >= max {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Arch, LinuxSeccompAction};

    fn amd64() -> Host {
        Host {
            arch: "amd64",
            scmp_arch: "SCMP_ARCH_X86_64",
            kernel: (6, 1),
        }
    }

    fn names_of(s: &LinuxSeccomp) -> HashSet<String> {
        s.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn the_default_follows_capabilities_and_architecture() {
        let p = default_profile();
        let caps: HashSet<String> = ["CAP_CHOWN".to_string()].into();
        let s = p.resolve(&caps, &amd64()).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(libc::EPERM as u32));
        assert_eq!(
            s.architectures().as_ref().unwrap(),
            &vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let allowed = names_of(&s);
        // What a shell, libc and Go's runtime call.
        for n in [
            "read",
            "execve",
            "clock_gettime",
            "arch_prctl",
            "ptrace",
            "socket",
            "pipe",
            "pipe2",
            "wait4",
            "epoll_pwait",
            "rt_sigaction",
            "sched_yield",
            "getrandom",
            "dup3",
            "statx",
            "prlimit64",
            "sigaltstack",
            "madvise",
            "futex",
            "openat",
            "newfstatat",
        ] {
            assert!(allowed.contains(n), "{n} refused by default");
        }
        for n in [
            "mount", "unshare", "setns", "keyctl", "add_key", "bpf", "reboot", "chroot",
        ] {
            assert!(!allowed.contains(n), "{n} allowed by default");
        }
        // clone only with the namespace flags masked out; clone3 answers ENOSYS.
        let rules = s.syscalls().as_ref().unwrap();
        let clone = rules
            .iter()
            .find(|r| r.names().iter().any(|n| n == "clone"))
            .unwrap();
        assert_eq!(clone.args().as_ref().unwrap()[0].value(), 0x7E02_0000);
        let clone3 = rules
            .iter()
            .find(|r| r.names().iter().any(|n| n == "clone3"))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));

        let admin: HashSet<String> = ["CAP_SYS_ADMIN".to_string(), "CAP_SYS_CHROOT".into()].into();
        let s = p.resolve(&admin, &amd64()).unwrap();
        let allowed = names_of(&s);
        for n in ["mount", "unshare", "setns", "clone", "chroot"] {
            assert!(allowed.contains(n), "{n} refused with its capability");
        }
        assert!(!s.syscalls().as_ref().unwrap().iter().any(|r| r
            .names()
            .iter()
            .any(|n| n == "clone3")
            && r.action() == LinuxSeccompAction::ScmpActErrno));
        // arm64: no x86 calls.
        let arm = Host {
            arch: "arm64",
            scmp_arch: "SCMP_ARCH_AARCH64",
            kernel: (6, 1),
        };
        let s = p.resolve(&caps, &arm).unwrap();
        assert!(!names_of(&s).contains("arch_prctl"));
        // An old kernel: no ptrace (as Docker before 4.8).
        let old = Host {
            kernel: (4, 4),
            ..amd64()
        };
        assert!(!names_of(&p.resolve(&caps, &old).unwrap()).contains("ptrace"));
    }

    #[test]
    fn docker_format_profiles_are_read_and_checked() {
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
            {"name":"chmod","action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_NET_ADMIN"]}}]}"#;
        let p = Profile::from_json(json).unwrap();
        let s = p.resolve(&HashSet::new(), &amd64()).unwrap();
        let rules = s.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].names(),
            &vec!["mkdir".to_string(), "mkdirat".into()]
        );
        assert!(Profile::from_json("{").is_err());
        assert!(Profile::from_json(r#"{"defaultAction":"SCMP_ACT_ALLOW","bogus":1}"#).is_err());
        let bad = Profile::from_json(r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#).unwrap();
        let e = bad.resolve(&HashSet::new(), &amd64()).unwrap_err();
        assert!(e.to_string().contains("unknown action"), "{e}");
        let listener = r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x"}"#;
        assert!(Profile::from_json(listener).is_err());
        assert_eq!(parse_kernel("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
    }
}
