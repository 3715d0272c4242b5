//! The container's cgroup: creation with the spec's resources (cgroups-rs `fs`), membership,
//! OOM detection, killing and removal. Works on cgroup v1 (including hybrid hosts where
//! every controller has its own mount, e.g. separate `cpu` and `cpuacct`) and on pure v2.
//!
//! Device rules: on v1 through the `devices` controller; on v2 as an eBPF program attached to
//! the container's cgroup ([`crate::devices_bpf`]). On a hybrid host (v1 controllers plus a
//! cgroup2 mount such as `/sys/fs/cgroup/unified`) the kernel consults both the v1 devices
//! cgroup and the programs of the process's cgroup2 cgroup, so the container also gets a
//! cgroup at the same path in the cgroup2 hierarchy with the program attached: the same rules
//! enforced twice, and enforced at all where the v1 devices controller is not mounted.
//!
//! Hugepage limits: [`hugepages`] (the v1 or v2 hugetlb files, or on a hybrid host the
//! cgroup2 side when only it has the controller).
//!
//! [`stats`] reads what the cgroup uses (memory, cpu, pids) from either version's files.

mod hugepages;
pub mod stats;

use crate::devices_bpf::{self, DevType, DevicePolicy};
use crate::error::{Context, Error, Result};
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controller, MaxValue};
use cgroups_rs::CgroupPid;
use cgroups_rs::FreezerState;
use oci_spec::runtime::{
    LinuxCpu, LinuxCpuBuilder, LinuxDeviceCgroup, LinuxMemory, LinuxMemoryBuilder, LinuxPids,
    LinuxPidsBuilder, LinuxResources,
};
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

/// Where the cgroup2 hierarchy is mounted: [`V2_ROOT`] on a pure v2 host, usually
/// `/sys/fs/cgroup/unified` on a hybrid one; `None` when it is not mounted.
pub fn cgroup2_mount() -> Option<PathBuf> {
    if is_v2() {
        return Some(PathBuf::from(V2_ROOT));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_cgroup2_mount(&info)
}

/// The first cgroup2 mount of the hierarchy's root, else the first cgroup2 mount.
fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    let mut first = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        if pre.len() < 5 || post.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let point = PathBuf::from(unescape_mountinfo(pre[4]));
        if pre[3] == "/" {
            return Some(point);
        }
        first.get_or_insert(point);
    }
    first
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
    /// Hybrid hosts: the container's cgroup in the cgroup2 hierarchy, holding the device
    /// program.
    unified: Option<Unified>,
    /// The cgroup2 directory where the device program was attached.
    program_dir: Option<PathBuf>,
}

#[derive(Debug)]
struct Unified {
    /// `<cgroup2 mount>/<rel>`
    dir: PathBuf,
    /// Whether the program there is the only enforcement of the device rules (no v1 devices
    /// controller), so that failing to place the init there must fail the create.
    required: bool,
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
        let mut this = ContainerCgroup {
            cg,
            rel: rel.to_string(),
            v2,
            unified: None,
            program_dir: None,
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
        let unified = if v2 {
            None
        } else {
            cgroup2_mount()
                .map(|m| m.join(rel))
                .filter(|d| d.is_dir())
                .map(|dir| Unified {
                    dir,
                    required: false,
                })
        };
        ContainerCgroup {
            cg: Cgroup::load(hier, rel),
            rel: rel.to_string(),
            v2,
            program_dir: unified.as_ref().map(|u| u.dir.clone()),
            unified,
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

    /// Where the container's device program is attached: its v2 cgroup, or on a hybrid host
    /// its cgroup in the cgroup2 hierarchy; `None` when there is no program (no device rules,
    /// or on v1 rules left to the devices controller alone).
    pub fn device_program_dir(&self) -> Option<&Path> {
        self.program_dir.as_deref()
    }

    /// Whether the cgroup exists (in at least one hierarchy).
    pub fn exists(&self) -> bool {
        self.cg.exists()
    }

    /// Applies the spec's resources, one controller after the other.
    fn apply(&mut self, res: &LinuxResources) -> Result<()> {
        if let Some(mem) = res.memory() {
            self.apply_memory(mem)?;
        }
        if let Some(cpu) = res.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(pids) = res.pids() {
            self.apply_pids(pids)?;
        }
        if let Some(devices) = res.devices() {
            self.apply_devices(devices)?;
        }
        if let Some(limits) = res.hugepage_limits() {
            self.apply_hugepages(limits)?;
        }
        Ok(())
    }

    /// New limits of a running container (an `update` request), set by the code that set
    /// them at creation.
    pub fn update(&self, limits: &crate::protocol::Limits) -> Result<()> {
        let rel = self.rel.as_str();
        let bad = |e: oci_spec::OciSpecError| cg_err(rel, "update", e);
        if let Some(m) = limits.memory {
            self.apply_memory(
                &LinuxMemoryBuilder::default()
                    .limit(m)
                    .build()
                    .map_err(bad)?,
            )?;
        }
        let cpu_wanted = limits.cpu_quota.is_some()
            || limits.cpu_period.is_some()
            || limits.cpu_shares.is_some()
            || limits.cpuset_cpus.is_some()
            || limits.cpuset_mems.is_some();
        if cpu_wanted {
            let mut cpu = LinuxCpuBuilder::default();
            if let Some(q) = limits.cpu_quota {
                cpu = cpu.quota(q);
            }
            if let Some(p) = limits.cpu_period {
                cpu = cpu.period(p);
            }
            if let Some(s) = limits.cpu_shares {
                cpu = cpu.shares(s);
            }
            if let Some(c) = &limits.cpuset_cpus {
                cpu = cpu.cpus(c.clone());
            }
            if let Some(m) = &limits.cpuset_mems {
                cpu = cpu.mems(m.clone());
            }
            self.apply_cpu(&cpu.build().map_err(bad)?)?;
        }
        if let Some(p) = limits.pids {
            self.apply_pids(&LinuxPidsBuilder::default().limit(p).build().map_err(bad)?)?;
        }
        Ok(())
    }

    /// Memory limit, swap, reservation, swappiness (v1) and the OOM killer switch (v1).
    fn apply_memory(&self, mem: &LinuxMemory) -> Result<()> {
        let rel = self.rel.as_str();
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
        Ok(())
    }

    /// CPU shares (weight on v2), quota and period; cpuset cpus and mems.
    fn apply_cpu(&self, cpu: &LinuxCpu) -> Result<()> {
        let rel = self.rel.as_str();
        let cc: Option<&CpuController> = self.cg.controller_of();
        let wants_cpu = cpu.shares().is_some() || cpu.quota().is_some() || cpu.period().is_some();
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
            let cs = cs.ok_or_else(|| cg_err(rel, "cpuset", "cpuset controller not available"))?;
            if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                cs.set_cpus(c)
                    .map_err(|e| cg_err(rel, &format!("set cpus {c}"), e))?;
            }
            if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                cs.set_mems(m)
                    .map_err(|e| cg_err(rel, &format!("set mems {m}"), e))?;
            }
        }
        Ok(())
    }

    /// `pids.max`.
    fn apply_pids(&self, pids: &LinuxPids) -> Result<()> {
        let rel = self.rel.as_str();
        let pc: Option<&PidController> = self.cg.controller_of();
        let pc = pc.ok_or_else(|| cg_err(rel, "pids limit", "pids controller not available"))?;
        let v = if pids.limit() > 0 {
            MaxValue::Value(pids.limit())
        } else {
            MaxValue::Max
        };
        pc.set_pid_max(v)
            .map_err(|e| cg_err(rel, &format!("set pids.max {}", pids.limit()), e))?;
        Ok(())
    }

    /// Device rules: the v2 program, or the v1 controller (and on a hybrid host also the
    /// program in the cgroup2 hierarchy).
    fn apply_devices(&mut self, devices: &[LinuxDeviceCgroup]) -> Result<()> {
        let rel = self.rel.clone();
        let rel = rel.as_str();
        // Deny all, then each rule, folded as the v1 controller folds them.
        let policy = DevicePolicy::from_oci(devices).map_err(|e| cg_err(rel, "devices", e))?;
        if self.v2 {
            let dir = Path::new(V2_ROOT).join(rel);
            devices_bpf::apply(&dir, &policy).map_err(|e| cg_err(rel, "devices", e))?;
            self.program_dir = Some(dir);
        } else {
            let dc: Option<&DevicesController> = self.cg.controller_of();
            let v1_enforced = match dc {
                Some(dc) => {
                    apply_device_policy_v1(dc, &policy).map_err(|e| cg_err(rel, "devices", e))?;
                    true
                }
                None => false,
            };
            self.unified = self.hybrid_device_program(&policy, v1_enforced)?;
            self.program_dir = self.unified.as_ref().map(|u| u.dir.clone());
        }
        Ok(())
    }

    /// Hybrid host: creates the container's cgroup in the cgroup2 hierarchy and attaches the
    /// device program there (the init joins it in [`ContainerCgroup::add_process`]). Failures
    /// are fatal only when the v1 devices controller does not enforce the rules already.
    fn hybrid_device_program(
        &self,
        policy: &DevicePolicy,
        v1_enforced: bool,
    ) -> Result<Option<Unified>> {
        let rel = self.rel.as_str();
        if policy.is_allow_all() {
            return Ok(None);
        }
        let Some(mount) = cgroup2_mount() else {
            if !v1_enforced {
                crate::log(&format!(
                    "cgroup /{rel}: device rules are not enforced: no devices controller and no \
                     cgroup2 mount"
                ));
            }
            return Ok(None);
        };
        let dir = mount.join(rel);
        let created = !dir.exists();
        let res = std::fs::create_dir_all(&dir)
            .ctx(|| format!("create {}", dir.display()))
            .and_then(|()| devices_bpf::apply(&dir, policy));
        match res {
            Ok(()) => Ok(Some(Unified {
                dir,
                required: !v1_enforced,
            })),
            Err(e) => {
                if created {
                    let _ = std::fs::remove_dir(&dir);
                }
                if v1_enforced {
                    crate::log(&format!(
                        "cgroup /{rel}: no device program in the cgroup2 hierarchy (the v1 \
                         devices controller enforces the rules): {e}"
                    ));
                    Ok(None)
                } else {
                    Err(cg_err(rel, "devices", e))
                }
            }
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup (on a hybrid host with a device
    /// program, also into the container's cgroup2 cgroup).
    pub fn add_process(&self, pid: i32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| cg_err(&self.rel, &format!("add process {pid}"), e))?;
        if let Some(u) = &self.unified {
            let procs = u.dir.join("cgroup.procs");
            if let Err(e) = std::fs::write(&procs, pid.to_string()) {
                let what = format!("add process {pid} to {}", procs.display());
                if u.required {
                    return Err(cg_err(&self.rel, &what, e));
                }
                crate::log(&format!(
                    "cgroup /{}: {what}: {e} (the v1 devices controller enforces the rules)",
                    self.rel
                ));
            }
        }
        Ok(())
    }

    /// Host pids of every process in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.cg.procs().into_iter().map(|p| p.pid as i32).collect();
        if let Some(u) = &self.unified {
            let listed = std::fs::read_to_string(u.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in listed.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        pids
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

    /// Freezes (`true`) or thaws every process of the cgroup, and waits (up to 5 s) until the
    /// kernel reports it done: v1 `freezer.state`, v2 `cgroup.events`.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let fc: Option<&FreezerController> = self.cg.controller_of();
        let Some(fc) = fc else {
            return Err(cg_err(
                &self.rel,
                "freeze",
                "the freezer controller is not available (mount the freezer cgroup hierarchy)",
            ));
        };
        let what = if frozen { "freeze" } else { "thaw" };
        let set = || if frozen { fc.freeze() } else { fc.thaw() };
        set().map_err(|e| cg_err(&self.rel, what, e))?;
        for i in 0..500 {
            if self.frozen_state(fc) == Some(frozen) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
            // v1 can stay FREEZING while a task is busy in the kernel: ask again.
            if i % 10 == 9 {
                set().map_err(|e| cg_err(&self.rel, what, e))?;
            }
        }
        if frozen {
            let _ = fc.thaw();
        }
        Err(cg_err(
            &self.rel,
            what,
            "the kernel did not finish within 5 s",
        ))
    }

    /// Whether every process of the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        let fc: Option<&FreezerController> = self.cg.controller_of();
        fc.and_then(|fc| self.frozen_state(fc)).unwrap_or(false)
    }

    fn frozen_state(&self, fc: &FreezerController) -> Option<bool> {
        if self.v2 {
            let events = std::fs::read_to_string(fc.path().join("cgroup.events")).ok()?;
            events
                .lines()
                .find_map(|l| l.strip_prefix("frozen "))
                .map(|v| v.trim() == "1")
        } else {
            match fc.state().ok()? {
                FreezerState::Frozen => Some(true),
                FreezerState::Thawed => Some(false),
                FreezerState::Freezing => None,
            }
        }
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
        self.cg
            .delete()
            .map_err(|e| cg_err(&self.rel, "remove", e))?;
        if let Some(u) = &self.unified {
            remove_dir_when_empty(&u.dir)
                .map_err(|e| cg_err(&self.rel, &format!("remove {}", u.dir.display()), e))?;
        }
        Ok(())
    }
}

/// rmdir of a cgroup2 cgroup, waiting up to 2 s for its last processes to be gone (EBUSY).
fn remove_dir_when_empty(dir: &Path) -> std::io::Result<()> {
    let mut last = None;
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("busy")))
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

/// Writes `policy` to the v1 devices controller: the default (`a *:* rwm`, which also drops
/// every exception), then each exception. The kernel ends in the state the policy describes,
/// the same one the v2 program enforces.
fn apply_device_policy_v1(
    dc: &DevicesController,
    policy: &DevicePolicy,
) -> std::result::Result<(), cgroups_rs::fs::error::Error> {
    let all = DevicePermissions::all();
    if policy.default_allow() {
        dc.allow_device(DeviceType::All, -1, -1, &all)?;
    } else {
        dc.deny_device(DeviceType::All, -1, -1, &all)?;
    }
    for (m, access) in policy.exceptions() {
        let typ = match m.typ {
            DevType::Block => DeviceType::Block,
            DevType::Char => DeviceType::Char,
        };
        let perms = DevicePermissions::from_str(&access.to_string())?;
        let major = m.major.map_or(-1, i64::from);
        let minor = m.minor.map_or(-1, i64::from);
        if policy.default_allow() {
            dc.deny_device(typ, major, minor, &perms)?;
        } else {
            dc.allow_device(typ, major, minor, &perms)?;
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
        assert_eq!(
            parse_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A bind of a sub-cgroup does not win over a mount of the root.
        let info = "\
50 31 0:38 /x /mnt/sub rw - cgroup2 cgroup2 rw
41 31 0:38 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            parse_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"),
            None
        );
    }
}
