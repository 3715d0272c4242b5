//! What a container may do, from Docker's flags: its capabilities (Docker's default set,
//! `--cap-add`, `--cap-drop`), `--privileged`, and `--security-opt` (`seccomp=unconfined`,
//! `seccomp=<profile JSON>`, `no-new-privileges`).
//!
//! The seccomp profile follows the capabilities, as Docker's does: the calls a capability
//! governs are allowed when the container holds it ([`crate::seccomp`]). `--privileged` gives
//! every capability the host knows, no seccomp filter, every host device, and `/sys` and
//! `/proc/sys` writable with nothing masked.

use crate::error::{Error, Result};
use crate::seccomp::{default_profile, Host, Profile};
use berth_api::containers::v1::ContainerConfig;
use oci_spec::runtime::{Capability, LinuxDevice, LinuxSeccomp};
use std::collections::{BTreeSet, HashSet};

/// Docker's default capabilities.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability by its number in the kernel (`capability.h`).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// What the host offers, read once per berthd.
#[derive(Debug, Clone)]
pub struct HostSecurity {
    /// The architecture and kernel seccomp profiles are resolved for.
    pub seccomp: Host,
    /// The capabilities this kernel knows (`/proc/sys/kernel/cap_last_cap`).
    pub capabilities: Vec<&'static str>,
}

impl HostSecurity {
    /// This host.
    pub fn current() -> HostSecurity {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(ALL_CAPABILITIES.len() - 1);
        HostSecurity {
            seccomp: Host::current(),
            capabilities: ALL_CAPABILITIES.iter().take(last + 1).copied().collect(),
        }
    }
}

/// A container's security settings, resolved.
#[derive(Debug, Clone)]
pub struct Security {
    /// Its capabilities (bounding, permitted and effective for root).
    pub capabilities: BTreeSet<String>,
    /// `no_new_privs` (`--security-opt no-new-privileges`; off by default, as with Docker).
    pub no_new_privileges: bool,
    /// The OCI seccomp profile; None when unconfined or privileged.
    pub seccomp: Option<LinuxSeccomp>,
    pub privileged: bool,
}

/// How the request names a seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SeccompOpt {
    Default,
    Unconfined,
    Json(String),
}

impl Security {
    /// Resolves the request's `cap_add`, `cap_drop`, `privileged` and `security_opt`.
    pub fn of(config: &ContainerConfig, host: &HostSecurity) -> Result<Security> {
        let mut seccomp = SeccompOpt::Default;
        let mut no_new_privileges = false;
        for opt in &config.security_opt {
            let (key, value) = split_opt(opt);
            match key {
                "seccomp" => {
                    seccomp = match value {
                        Some("unconfined") => SeccompOpt::Unconfined,
                        Some("builtin") | Some("default") => SeccompOpt::Default,
                        Some(v) if v.trim_start().starts_with('{') => {
                            SeccompOpt::Json(v.to_string())
                        }
                        Some(v) => {
                            return Err(Error::InvalidArgument(format!(
                                "invalid --security-opt seccomp={v}: give unconfined, or the \
                                 profile's JSON (the berth CLI reads a profile file for you)"
                            )))
                        }
                        None => {
                            return Err(Error::InvalidArgument(
                                "invalid --security-opt seccomp: expected seccomp=PROFILE".into(),
                            ))
                        }
                    }
                }
                "no-new-privileges" => {
                    no_new_privileges = match value {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(v) => {
                            return Err(Error::InvalidArgument(format!(
                                "invalid --security-opt no-new-privileges={v}: expected true or \
                                 false"
                            )))
                        }
                    }
                }
                "apparmor" | "label" | "systempaths" | "mask" | "unmask" => {
                    return Err(Error::InvalidArgument(format!(
                        "--security-opt {key} is not supported by berth"
                    )))
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid --security-opt {opt:?}: berth takes seccomp=unconfined, \
                         seccomp=PROFILE and no-new-privileges"
                    )))
                }
            }
        }

        let capabilities = if config.privileged {
            host.capabilities.iter().map(|c| c.to_string()).collect()
        } else {
            capabilities(&config.cap_add, &config.cap_drop, host)?
        };
        if !config.seccomp_profile_path.is_empty() {
            if seccomp != SeccompOpt::Default {
                return Err(Error::InvalidArgument(format!(
                    "seccomp profile {}: give either a profile path or --security-opt seccomp=…, not both",
                    config.seccomp_profile_path
                )));
            }
            seccomp = SeccompOpt::Json(read_profile(&config.seccomp_profile_path)?);
        }
        let seccomp = if config.privileged {
            None
        } else {
            let held: HashSet<String> = capabilities.iter().cloned().collect();
            match seccomp {
                SeccompOpt::Unconfined => None,
                SeccompOpt::Default => Some(default_profile().resolve(&held, &host.seccomp)?),
                SeccompOpt::Json(j) => {
                    let named = |e: Error| match e {
                        Error::InvalidArgument(m) if !config.seccomp_profile_path.is_empty() => {
                            Error::InvalidArgument(format!(
                                "seccomp profile {}: {m}",
                                config.seccomp_profile_path
                            ))
                        }
                        e => e,
                    };
                    let profile = Profile::from_json(&j).map_err(named)?;
                    Some(profile.resolve(&held, &host.seccomp).map_err(named)?)
                }
            }
        };
        Ok(Security {
            capabilities,
            no_new_privileges,
            seccomp,
            privileged: config.privileged,
        })
    }

    /// The capabilities as the OCI spec takes them.
    pub fn oci_capabilities(&self) -> Result<HashSet<Capability>> {
        self.capabilities
            .iter()
            .map(|c| parse_capability(c))
            .collect()
    }
}

/// The text of the seccomp profile file at `path` (absolute, on this host).
fn read_profile(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "seccomp profile {path:?}: the path must be absolute"
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("seccomp profile {path}: cannot read it: {e}")))
}

/// `seccomp=x`, `seccomp:x` (Docker's older form) or a bare key.
fn split_opt(opt: &str) -> (&str, Option<&str>) {
    match opt.find(['=', ':']) {
        Some(i) => (&opt[..i], Some(&opt[i + 1..])),
        None => (opt, None),
    }
}

/// `net_admin`, `NET_ADMIN` or `CAP_NET_ADMIN` as `CAP_NET_ADMIN`.
fn normalize(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") || upper == "ALL" {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

fn parse_capability(name: &str) -> Result<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| Error::InvalidArgument(format!("unknown capability: {name:?}")))
}

/// Docker's default set with `add` and `drop` applied (`ALL` in `add` starts from every
/// capability the host knows, `ALL` in `drop` from none; a capability in both is added).
fn capabilities(add: &[String], drop: &[String], host: &HostSecurity) -> Result<BTreeSet<String>> {
    let add: Vec<String> = add.iter().map(|c| normalize(c)).collect();
    let drop: Vec<String> = drop.iter().map(|c| normalize(c)).collect();
    for c in add.iter().chain(&drop).filter(|c| *c != "ALL") {
        if !ALL_CAPABILITIES.contains(&c.as_str()) {
            return Err(Error::InvalidArgument(format!("unknown capability: {c:?}")));
        }
    }
    let mut caps: BTreeSet<String> = if add.iter().any(|c| c == "ALL") {
        host.capabilities.iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    for c in &drop {
        caps.remove(c);
    }
    for c in add.into_iter().filter(|c| c != "ALL") {
        caps.insert(c);
    }
    Ok(caps)
}

/// The host's device nodes, for `--privileged` (every one under `/dev` but the ones each
/// container has its own of: `pts`, `shm`, `mqueue`, the console).
pub fn host_devices() -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    walk_devices(std::path::Path::new("/dev"), &mut out);
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

fn walk_devices(dir: &std::path::Path, out: &mut Vec<LinuxDevice>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if [
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/dev/console",
            "/dev/ptmx",
        ]
        .iter()
        .any(|p| path == std::path::Path::new(p))
        {
            continue;
        }
        let Ok(ft) = e.file_type() else {
            continue;
        };
        if ft.is_dir() {
            walk_devices(&path, out);
        } else if !ft.is_symlink() {
            out.extend(crate::devices::node(&path, &path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostSecurity {
        HostSecurity {
            seccomp: Host {
                arch: "amd64",
                scmp_arch: "SCMP_ARCH_X86_64",
                kernel: (6, 1),
            },
            capabilities: ALL_CAPABILITIES.to_vec(),
        }
    }

    fn config(f: impl FnOnce(&mut ContainerConfig)) -> ContainerConfig {
        let mut c = ContainerConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn seccomp_profile_from_a_file() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("deny-mkdir.json");
        std::fs::write(
            &file,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let path = file.to_str().unwrap().to_string();
        let s = Security::of(&config(|c| c.seccomp_profile_path = path.clone()), &host()).unwrap();
        let profile = serde_json::to_string(&s.seccomp.unwrap()).unwrap();
        assert!(profile.contains("mkdirat"), "{profile}");

        let missing = d.path().join("absent.json");
        let e = Security::of(
            &config(|c| c.seccomp_profile_path = missing.to_str().unwrap().into()),
            &host(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("absent.json")),
            "{e}"
        );
        std::fs::write(&file, "{not json").unwrap();
        let e =
            Security::of(&config(|c| c.seccomp_profile_path = path.clone()), &host()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("deny-mkdir.json")),
            "{e}"
        );
        let e = Security::of(
            &config(|c| c.seccomp_profile_path = "relative.json".into()),
            &host(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)));
        let both = config(|c| {
            c.seccomp_profile_path = path.clone();
            c.security_opt = vec!["seccomp=unconfined".into()];
        });
        assert!(Security::of(&both, &host()).is_err());
    }

    #[test]
    fn capabilities_follow_docker() {
        let s = Security::of(&ContainerConfig::default(), &host()).unwrap();
        assert_eq!(s.capabilities.len(), 14);
        assert!(!s.no_new_privileges && !s.privileged);
        assert!(s.seccomp.is_some());
        let c = config(|c| {
            c.cap_add = vec!["net_admin".into(), "CAP_SYS_TIME".into()];
            c.cap_drop = vec!["MKNOD".into(), "cap_chown".into()];
        });
        let s = Security::of(&c, &host()).unwrap();
        assert!(
            s.capabilities.contains("CAP_NET_ADMIN") && s.capabilities.contains("CAP_SYS_TIME")
        );
        assert!(!s.capabilities.contains("CAP_MKNOD") && !s.capabilities.contains("CAP_CHOWN"));
        assert_eq!(s.oci_capabilities().unwrap().len(), 14);
        let c = config(|c| {
            c.cap_drop = vec!["ALL".into()];
            c.cap_add = vec!["KILL".into()];
        });
        let s = Security::of(&c, &host()).unwrap();
        assert_eq!(s.capabilities.iter().collect::<Vec<_>>(), ["CAP_KILL"]);
        let c = config(|c| c.cap_add = vec!["ALL".into()]);
        assert_eq!(Security::of(&c, &host()).unwrap().capabilities.len(), 41);
        let c = config(|c| c.cap_add = vec!["CAP_FLY".into()]);
        let e = Security::of(&c, &host()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("CAP_FLY"), "{e}");
    }

    #[test]
    fn security_options() {
        let c = config(|c| c.security_opt = vec!["seccomp=unconfined".into()]);
        assert!(Security::of(&c, &host()).unwrap().seccomp.is_none());
        let c = config(|c| c.security_opt = vec!["no-new-privileges".into()]);
        assert!(Security::of(&c, &host()).unwrap().no_new_privileges);
        let c = config(|c| c.security_opt = vec!["no-new-privileges:false".into()]);
        assert!(!Security::of(&c, &host()).unwrap().no_new_privileges);
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#;
        let c = config(|c| c.security_opt = vec![format!("seccomp={json}")]);
        let s = Security::of(&c, &host()).unwrap().seccomp.unwrap();
        assert_eq!(
            s.syscalls().as_ref().unwrap()[0].names(),
            &vec!["mkdir".to_string()]
        );
        for bad in [
            "seccomp=/etc/profile.json",
            "seccomp={",
            "apparmor=unconfined",
            "no-new-privileges=maybe",
            "nonsense",
        ] {
            let c = config(|c| c.security_opt = vec![bad.into()]);
            let e = Security::of(&c, &host()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let c = config(|c| {
            c.privileged = true;
            c.security_opt = vec!["seccomp=builtin".into()];
        });
        let s = Security::of(&c, &host()).unwrap();
        assert!(s.seccomp.is_none() && s.privileged);
        assert_eq!(s.capabilities.len(), 41);
    }

    #[test]
    fn host_devices_are_listed() {
        let d = host_devices();
        assert!(d
            .iter()
            .any(|d| d.path() == std::path::Path::new("/dev/null")
                && d.major() == 1
                && d.minor() == 3));
        assert!(!d.iter().any(|d| d.path().starts_with("/dev/pts")));
    }
}
