//! The container's cgroup: creation with the spec's resources (cgroups-rs `fs`), membership,
//! OOM detection, killing and removal. Works on cgroup v1 (including hybrid hosts where
//! every controller has its own mount, e.g. separate `cpu` and `cpuacct`) and on pure v2.

use crate::error::{Error, Result};
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controller, MaxValue};
use cgroups_rs::CgroupPid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where cgroup2 is mounted on a pure v2 host.
pub const V2_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup v1 hierarchy mounted on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/cpu`.
    pub mount_point: PathBuf,
    /// The hierarchy's root inside the mount (usually `/`).
    pub mount_root: PathBuf,
    /// The controller options to mount it again, e.g. `cpu` or `name=systemd` or `cpu,cpuacct`.
    pub controllers: Vec<String>,
}

/// Whether the host runs the pure cgroup v2 layout (cgroup2 on `/sys/fs/cgroup`).
pub fn is_v2() -> bool {
    hierarchies::is_cgroup2_unified_mode()
}

/// The cgroup v1 hierarchies of this host, from `/proc/self/mountinfo`.
pub fn v1_hierarchies() -> Vec<V1Hierarchy> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    parse_v1_hierarchies(&info)
}

fn parse_v1_hierarchies(mountinfo: &str) -> Vec<V1Hierarchy> {
    let mut out: Vec<V1Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 || post[0] != "cgroup" {
            continue;
        }
        let controllers: Vec<String> = post[2]
            .split(',')
            .filter(|o| {
                !matches!(*o, "rw" | "ro") && !o.contains("xattr") && *o != "clone_children"
            })
            .filter(|o| !o.starts_with("release_agent="))
            .map(str::to_string)
            .collect();
        if controllers.is_empty() {
            continue;
        }
        let mount_point = PathBuf::from(unescape_mountinfo(pre[4]));
        // The same hierarchy can be mounted twice; keep the first.
        if out.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        out.push(V1Hierarchy {
            mount_point,
            mount_root: PathBuf::from(unescape_mountinfo(pre[3])),
            controllers,
        });
    }
    out
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let v = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = v {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Normalizes `linux.cgroupsPath` to a relative path without `..`.
pub fn relative_path(cgroups_path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in cgroups_path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Invalid(format!(
                    "linux.cgroupsPath {cgroups_path:?} must not contain \"..\""
                )))
            }
        }
    }
    if parts.is_empty() {
        return Err(Error::Invalid(format!(
            "linux.cgroupsPath {cgroups_path:?} names the root cgroup"
        )));
    }
    if parts.iter().any(|p| p.contains(':')) {
        return Err(Error::Invalid(format!(
            "linux.cgroupsPath {cgroups_path:?}: systemd-style paths are not supported"
        )));
    }
    Ok(parts.join("/"))
}

/// The container's cgroup.
#[derive(Debug)]
pub struct ContainerCgroup {
    cg: Cgroup,
    rel: String,
    v2: bool,
}

fn cg_err(path: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cgroup {
        path: format!("/{path}"),
        message: format!("{what}: {e}"),
    }
}

impl ContainerCgroup {
    /// Creates the cgroup at `rel` (see [`relative_path`]) in every hierarchy and applies
    /// `resources`.
    pub fn create(rel: &str, resources: Option<&LinuxResources>) -> Result<Self> {
        let hier = hierarchies::auto();
        let v2 = hier.v2();
        let cg = Cgroup::new(hier, rel).map_err(|e| cg_err(rel, "create", e))?;
        let this = ContainerCgroup {
            cg,
            rel: rel.to_string(),
            v2,
        };
        if let Some(res) = resources {
            if let Err(e) = this.apply(res) {
                let _ = this.remove();
                return Err(e);
            }
        }
        Ok(this)
    }

    /// Loads an existing cgroup (no creation).
    pub fn load(rel: &str) -> Self {
        let hier = hierarchies::auto();
        let v2 = hier.v2();
        ContainerCgroup {
            cg: Cgroup::load(hier, rel),
            rel: rel.to_string(),
            v2,
        }
    }

    /// The path relative to each hierarchy's root, without leading `/`.
    pub fn rel_path(&self) -> &str {
        &self.rel
    }

    /// Whether this is a cgroup v2 (unified) cgroup.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// Whether the cgroup exists (in at least one hierarchy).
    pub fn exists(&self) -> bool {
        self.cg.exists()
    }

    fn apply(&self, res: &LinuxResources) -> Result<()> {
        let rel = self.rel.as_str();
        if let Some(mem) = res.memory() {
            let mc: Option<&MemController> = self.cg.controller_of();
            match mc {
                Some(mc) => {
                    if let Some(limit) = mem.limit() {
                        mc.set_limit(limit)
                            .map_err(|e| cg_err(rel, &format!("set memory limit {limit}"), e))?;
                    }
                    if let Some(swap) = mem.swap() {
                        // memory+swap; absent when the kernel does not account swap.
                        if let Err(e) = mc.set_memswap_limit(swap) {
                            crate::log(&format!("cgroup /{rel}: memory swap limit not set: {e}"));
                        }
                    }
                    if let Some(r) = mem.reservation() {
                        if let Err(e) = mc.set_soft_limit(r) {
                            crate::log(&format!("cgroup /{rel}: memory reservation not set: {e}"));
                        }
                    }
                    if let (Some(s), false) = (mem.swappiness(), self.v2) {
                        if s <= 100 {
                            let _ = mc.set_swappiness(s);
                        }
                    }
                    if mem.disable_oom_killer() == Some(true) && !self.v2 {
                        mc.disable_oom_killer()
                            .map_err(|e| cg_err(rel, "disable OOM killer", e))?;
                    }
                }
                None if mem.limit().is_some() => {
                    return Err(cg_err(
                        rel,
                        "memory limit",
                        "memory controller not available",
                    ))
                }
                None => {}
            }
        }
        if let Some(cpu) = res.cpu() {
            let cc: Option<&CpuController> = self.cg.controller_of();
            let wants_cpu =
                cpu.shares().is_some() || cpu.quota().is_some() || cpu.period().is_some();
            match cc {
                Some(cc) => {
                    if let Some(shares) = cpu.shares() {
                        let value = if self.v2 {
                            shares_to_weight(shares)
                        } else {
                            shares
                        };
                        cc.set_shares(value)
                            .map_err(|e| cg_err(rel, &format!("set cpu shares {shares}"), e))?;
                    }
                    if cpu.quota().is_some() || cpu.period().is_some() {
                        // v1 refuses a quota below the current period, so the period goes first.
                        if let Some(p) = cpu.period() {
                            cc.set_cfs_quota_and_period(None, Some(p))
                                .map_err(|e| cg_err(rel, &format!("set cpu period {p}"), e))?;
                        }
                        if let Some(q) = cpu.quota() {
                            cc.set_cfs_quota_and_period(Some(q), None)
                                .map_err(|e| cg_err(rel, &format!("set cpu quota {q}"), e))?;
                        }
                    }
                }
                None if wants_cpu => {
                    return Err(cg_err(rel, "cpu limits", "cpu controller not available"))
                }
                None => {}
            }
            if cpu.cpus().is_some() || cpu.mems().is_some() {
                let cs: Option<&CpuSetController> = self.cg.controller_of();
                let cs =
                    cs.ok_or_else(|| cg_err(rel, "cpuset", "cpuset controller not available"))?;
                if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                    cs.set_cpus(c)
                        .map_err(|e| cg_err(rel, &format!("set cpus {c}"), e))?;
                }
                if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                    cs.set_mems(m)
                        .map_err(|e| cg_err(rel, &format!("set mems {m}"), e))?;
                }
            }
        }
        if let Some(pids) = res.pids() {
            let pc: Option<&PidController> = self.cg.controller_of();
            let pc =
                pc.ok_or_else(|| cg_err(rel, "pids limit", "pids controller not available"))?;
            let v = if pids.limit() > 0 {
                MaxValue::Value(pids.limit())
            } else {
                MaxValue::Max
            };
            pc.set_pid_max(v)
                .map_err(|e| cg_err(rel, &format!("set pids.max {}", pids.limit()), e))?;
        }
        if let Some(devices) = res.devices() {
            if self.v2 {
                // The v2 device controller is an eBPF program; not implemented.
                if !devices.is_empty() {
                    crate::log(&format!(
                        "cgroup /{rel}: device rules are not enforced on cgroup v2"
                    ));
                }
            } else {
                let dc: Option<&DevicesController> = self.cg.controller_of();
                if let Some(dc) = dc {
                    apply_device_rules(dc, devices).map_err(|e| cg_err(rel, "devices", e))?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| cg_err(&self.rel, &format!("add process {pid}"), e))
    }

    /// Host pids of every process in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        self.cg.procs().into_iter().map(|p| p.pid as i32).collect()
    }

    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        for pid in self.procs() {
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(cg_err(&self.rel, &format!("signal {signal} to {pid}"), e)),
            }
        }
        Ok(())
    }

    /// The number of OOM kills recorded for the cgroup (v1 `memory.oom_control`,
    /// v2 `memory.events`), 0 when unknown.
    pub fn oom_kill_count(&self) -> u64 {
        let mc: Option<&MemController> = self.cg.controller_of();
        let Some(mc) = mc else { return 0 };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(mc.path().join(file))
            .map(|s| parse_oom_kill(&s))
            .unwrap_or(0)
    }

    /// Kills every process left in the cgroup and removes it.
    pub fn remove(&self) -> Result<()> {
        for _ in 0..100 {
            if self.procs().is_empty() {
                break;
            }
            let _ = self.signal_all(nix::sys::signal::Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.cg.delete().map_err(|e| cg_err(&self.rel, "remove", e))
    }
}

/// cgroup v1 `cpu.shares` → v2 `cpu.weight` (the conversion runc and crun use).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let shares = shares.clamp(2, 262144);
    1 + ((shares - 2) * 9999) / 262142
}

fn parse_oom_kill(s: &str) -> u64 {
    s.lines()
        .find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn apply_device_rules(
    dc: &DevicesController,
    rules: &[LinuxDeviceCgroup],
) -> std::result::Result<(), cgroups_rs::fs::error::Error> {
    // Deny everything, then apply the spec's rules in order.
    dc.deny_device(DeviceType::All, -1, -1, &DevicePermissions::all())?;
    for r in rules {
        let typ = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceType::All,
            LinuxDeviceType::B => DeviceType::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceType::Char,
            LinuxDeviceType::P => continue, // FIFOs are not subject to the device cgroup
        };
        let access = r.access().as_deref().unwrap_or("rwm");
        let perms = if access.is_empty() {
            DevicePermissions::all()
        } else {
            DevicePermissions::from_str(access)?
        };
        let major = r.major().unwrap_or(-1);
        let minor = r.minor().unwrap_or(-1);
        if r.allow() {
            dc.allow_device(typ, major, minor, &perms)?;
        } else {
            dc.deny_device(typ, major, minor, &perms)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_path() {
        assert_eq!(
            relative_path(Path::new("/berth/default/x")).unwrap(),
            "berth/default/x"
        );
        assert_eq!(relative_path(Path::new("a/b")).unwrap(), "a/b");
        assert!(relative_path(Path::new("/a/../b")).is_err());
        assert!(relative_path(Path::new("/")).is_err());
        assert!(relative_path(Path::new("system.slice:berth:x")).is_err());
    }

    #[test]
    fn weight() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262144), 10000);
    }

    #[test]
    fn oom_kill_parse() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn hierarchies_parse() {
        let info = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
        let h = parse_v1_hierarchies(info);
        let names: Vec<_> = h.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(
            names,
            vec!["cpu", "cpuacct", "memory", "name=systemd", "cpu,cpuacct"]
        );
        assert_eq!(h[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
