//! What a container's cgroup uses right now — memory, cpu, pids, block I/O — for
//! `berth task metrics` and Docker's `stats`.
//!
//! v1 (and hybrid hosts) read each controller's own files where its hierarchy is mounted
//! (`memory.usage_in_bytes`, `cpuacct.usage`, `cpu.stat`, `pids.current`, …); v2 reads the
//! unified files of the one cgroup folder (`memory.current`, `cpu.stat`, `pids.current`, …).
//! Both come out as one [`Stats`] in the same units (bytes, nanoseconds), so callers never
//! look at the cgroup version except to name the kernel's files as `ctr` does. A controller
//! that is not there (not mounted, not enabled for the subtree) gives `None`, never zeroes.
//! The types are the shim protocol's: the answer to `stats` carries them.

use super::{ContainerCgroup, V2_ROOT};
pub use crate::protocol::{BlkioDevice, Cpu, Memory, Pids, Stats};
use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::Controller;
use std::path::Path;

impl ContainerCgroup {
    /// What the cgroup uses now. Controllers that are missing are `None`.
    pub fn stats(&self) -> Stats {
        if self.v2 {
            return v2_stats(&Path::new(V2_ROOT).join(&self.rel));
        }
        let dir = |p: Option<&Path>| p.map(Path::to_path_buf).filter(|d| d.is_dir());
        let mem: Option<&MemController> = self.cg.controller_of();
        let acct: Option<&CpuAcctController> = self.cg.controller_of();
        let cpu: Option<&CpuController> = self.cg.controller_of();
        let pids: Option<&PidController> = self.cg.controller_of();
        let blkio: Option<&BlkIoController> = self.cg.controller_of();
        Stats {
            v2: false,
            memory: dir(mem.map(|c| c.path())).and_then(|d| v1_memory(&d)),
            cpu: dir(acct.map(|c| c.path()))
                .and_then(|d| v1_cpu(&d, dir(cpu.map(|c| c.path())).as_deref(), clock_ticks())),
            pids: dir(pids.map(|c| c.path())).and_then(|d| read_pids(&d)),
            blkio: dir(blkio.map(|c| c.path()))
                .and_then(|d| read(&d, "blkio.throttle.io_service_bytes_recursive"))
                .map(|text| v1_blkio(&text)),
        }
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// A file holding one number (`max` reads as `u64::MAX`).
fn number(dir: &Path, file: &str) -> Option<u64> {
    parse_number(&read(dir, file)?)
}

fn parse_number(s: &str) -> Option<u64> {
    match s.trim() {
        "max" => Some(u64::MAX),
        // v1 limits are signed in some kernels' views (-1: none).
        v if v.starts_with('-') => Some(u64::MAX),
        v => v.parse().ok(),
    }
}

/// The value of `key` in a flat keyed file (`key value` lines: `memory.stat`, `cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// USER_HZ: the unit of `cpuacct.stat`.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf with a constant name reads a value and has no other effect.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn v1_memory(dir: &Path) -> Option<Memory> {
    let stat = read(dir, "memory.stat").unwrap_or_default();
    Some(Memory {
        usage: number(dir, "memory.usage_in_bytes")?,
        limit: number(dir, "memory.limit_in_bytes").unwrap_or(u64::MAX),
        max_usage: number(dir, "memory.max_usage_in_bytes").unwrap_or(0),
        cache: keyed(&stat, "total_cache")
            .or_else(|| keyed(&stat, "cache"))
            .unwrap_or(0),
        swap_usage: number(dir, "memory.memsw.usage_in_bytes").unwrap_or(0),
        swap_limit: number(dir, "memory.memsw.limit_in_bytes").unwrap_or(0),
    })
}

/// `acct` is the cpuacct folder, `cpu` the cpu controller's (throttling), `ticks` USER_HZ.
fn v1_cpu(acct: &Path, cpu: Option<&Path>, ticks: u64) -> Option<Cpu> {
    let stat = read(acct, "cpuacct.stat").unwrap_or_default();
    let ns_per_tick = 1_000_000_000 / ticks.max(1);
    let throttling = cpu.and_then(|d| read(d, "cpu.stat")).unwrap_or_default();
    Some(Cpu {
        usage: number(acct, "cpuacct.usage")?,
        user: keyed(&stat, "user").unwrap_or(0) * ns_per_tick,
        system: keyed(&stat, "system").unwrap_or(0) * ns_per_tick,
        per_cpu: read(acct, "cpuacct.usage_percpu")
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        nr_periods: keyed(&throttling, "nr_periods").unwrap_or(0),
        nr_throttled: keyed(&throttling, "nr_throttled").unwrap_or(0),
        throttled: keyed(&throttling, "throttled_time").unwrap_or(0),
    })
}

fn read_pids(dir: &Path) -> Option<Pids> {
    Some(Pids {
        current: number(dir, "pids.current")?,
        limit: match number(dir, "pids.max") {
            Some(u64::MAX) | None => 0,
            Some(n) => n,
        },
    })
}

/// `major:minor` of a device.
fn device(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The entry of device `(major, minor)` in `devices`, added when missing.
fn entry(devices: &mut Vec<BlkioDevice>, (major, minor): (u32, u32)) -> &mut BlkioDevice {
    let at = match devices
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(at) => at,
        None => {
            devices.push(BlkioDevice {
                major,
                minor,
                ..Default::default()
            });
            devices.len() - 1
        }
    };
    &mut devices[at]
}

/// v1 `blkio.throttle.io_service_bytes_recursive`: `8:0 Read 4096` lines (and `Sync`,
/// `Async`, `Total` ones, and a last `Total N`, which are left out).
fn v1_blkio(text: &str) -> Vec<BlkioDevice> {
    let mut devices = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(dev), Some(op), Some(value)) = (
            words.next().and_then(device),
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        match op {
            "Read" => entry(&mut devices, dev).read_bytes = value,
            "Write" => entry(&mut devices, dev).write_bytes = value,
            _ => {}
        }
    }
    devices
}

/// v2 `io.stat`: `8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0` lines.
fn v2_blkio(text: &str) -> Vec<BlkioDevice> {
    let mut devices = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(dev) = words.next().and_then(device) else {
            continue;
        };
        let d = entry(&mut devices, dev);
        for (key, value) in words.filter_map(|w| w.split_once('=')) {
            let value = value.parse().unwrap_or(0);
            match key {
                "rbytes" => d.read_bytes = value,
                "wbytes" => d.write_bytes = value,
                _ => {}
            }
        }
    }
    devices
}

fn v2_stats(dir: &Path) -> Stats {
    let usec = |text: &str, key: &str| keyed(text, key).unwrap_or(0).saturating_mul(1000);
    let memory = number(dir, "memory.current").map(|usage| {
        let stat = read(dir, "memory.stat").unwrap_or_default();
        Memory {
            usage,
            limit: number(dir, "memory.max").unwrap_or(u64::MAX),
            max_usage: number(dir, "memory.peak").unwrap_or(0),
            cache: keyed(&stat, "file").unwrap_or(0),
            swap_usage: number(dir, "memory.swap.current").unwrap_or(0),
            swap_limit: number(dir, "memory.swap.max").unwrap_or(0),
        }
    });
    let cpu = read(dir, "cpu.stat").map(|stat| Cpu {
        usage: usec(&stat, "usage_usec"),
        user: usec(&stat, "user_usec"),
        system: usec(&stat, "system_usec"),
        per_cpu: Vec::new(),
        nr_periods: keyed(&stat, "nr_periods").unwrap_or(0),
        nr_throttled: keyed(&stat, "nr_throttled").unwrap_or(0),
        throttled: usec(&stat, "throttled_usec"),
    });
    Stats {
        v2: true,
        memory,
        cpu,
        pids: read_pids(dir),
        blkio: read(dir, "io.stat").map(|text| v2_blkio(&text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn numbers_and_keyed_files() {
        assert_eq!(parse_number("42\n"), Some(42));
        assert_eq!(parse_number("max\n"), Some(u64::MAX));
        assert_eq!(parse_number("-1"), Some(u64::MAX));
        assert_eq!(parse_number("x"), None);
        let stat = "cache 5\ntotal_cache 7\nuser_usec 3\n";
        assert_eq!(keyed(stat, "cache"), Some(5));
        assert_eq!(keyed(stat, "total_cache"), Some(7));
        assert_eq!(keyed(stat, "user"), None);
    }

    #[test]
    fn block_io_by_device() {
        let v1 = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 4608\n8:0 Total 4608\n\
                  8:16 Read 1\n8:16 Write 2\nTotal 4611\n";
        let dev = |major, minor, read_bytes, write_bytes| BlkioDevice {
            major,
            minor,
            read_bytes,
            write_bytes,
        };
        assert_eq!(v1_blkio(v1), [dev(8, 0, 4096, 512), dev(8, 16, 1, 2)]);
        let v2 = "8:0 rbytes=4096 wbytes=512 rios=1 wios=1 dbytes=0 dios=0\n\
                  253:1 rbytes=7 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        assert_eq!(v2_blkio(v2), [dev(8, 0, 4096, 512), dev(253, 1, 7, 0)]);
        assert!(v1_blkio("Total 0\n").is_empty() && v2_blkio("").is_empty());
    }

    #[test]
    fn v1_files() {
        let mem = folder(&[
            ("memory.usage_in_bytes", "1048576\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.max_usage_in_bytes", "2097152\n"),
            ("memory.stat", "cache 10\nrss 20\ntotal_cache 4096\n"),
        ]);
        assert_eq!(
            v1_memory(mem.path()).unwrap(),
            Memory {
                usage: 1_048_576,
                limit: 9_223_372_036_854_771_712,
                max_usage: 2_097_152,
                cache: 4096,
                swap_usage: 0,
                swap_limit: 0,
            }
        );
        let acct = folder(&[
            ("cpuacct.usage", "5000000000\n"),
            ("cpuacct.usage_percpu", "3000000000 2000000000 \n"),
            ("cpuacct.stat", "user 300\nsystem 150\n"),
        ]);
        let cpu = folder(&[(
            "cpu.stat",
            "nr_periods 8\nnr_throttled 2\nthrottled_time 1234\n",
        )]);
        assert_eq!(
            v1_cpu(acct.path(), Some(cpu.path()), 100).unwrap(),
            Cpu {
                usage: 5_000_000_000,
                user: 3_000_000_000,
                system: 1_500_000_000,
                per_cpu: vec![3_000_000_000, 2_000_000_000],
                nr_periods: 8,
                nr_throttled: 2,
                throttled: 1234,
            }
        );
        // Without the cpu controller's folder: no throttling figures, the rest stays.
        assert_eq!(v1_cpu(acct.path(), None, 100).unwrap().nr_periods, 0);
        let pids = folder(&[("pids.current", "3\n"), ("pids.max", "max\n")]);
        assert_eq!(
            read_pids(pids.path()),
            Some(Pids {
                current: 3,
                limit: 0
            })
        );
        std::fs::write(pids.path().join("pids.max"), "8\n").unwrap();
        assert_eq!(read_pids(pids.path()).unwrap().limit, 8);
        // A folder without the files: no figures rather than zeroes.
        let empty = folder(&[]);
        assert_eq!(v1_memory(empty.path()), None);
        assert_eq!(v1_cpu(empty.path(), None, 100), None);
        assert_eq!(read_pids(empty.path()), None);
    }

    #[test]
    fn v2_files() {
        let d = folder(&[
            ("memory.current", "8192\n"),
            ("memory.max", "max\n"),
            ("memory.stat", "anon 100\nfile 4096\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "max\n"),
            (
                "cpu.stat",
                "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n",
            ),
            ("pids.current", "2\n"),
            ("pids.max", "16\n"),
        ]);
        let s = v2_stats(d.path());
        assert!(s.v2);
        assert_eq!(
            s.memory.unwrap(),
            Memory {
                usage: 8192,
                limit: u64::MAX,
                max_usage: 0,
                cache: 4096,
                swap_usage: 0,
                swap_limit: u64::MAX,
            }
        );
        let cpu = s.cpu.unwrap();
        assert_eq!(
            (cpu.usage, cpu.user, cpu.system, cpu.throttled),
            (2_500_000, 2_000_000, 500_000, 7000)
        );
        assert!(cpu.per_cpu.is_empty());
        assert_eq!(
            s.pids.unwrap(),
            Pids {
                current: 2,
                limit: 16
            }
        );
        // memory not enabled for the subtree: no memory figures.
        let d = folder(&[("cpu.stat", "usage_usec 1\n")]);
        let s = v2_stats(d.path());
        assert_eq!((s.memory, s.pids), (None, None));
        assert_eq!(s.cpu.unwrap().usage, 1000);
    }
}
