//! The container limits beyond `--memory`, `--cpus` and `--pids-limit`: CPU shares,
//! CFS quota and period, cpuset cpus and mems (Docker's `--cpu-shares`, `--cpu-quota`,
//! `--cpu-period`, `--cpuset-cpus`, `--cpuset-mems`), the cgroup parent
//! (`--cgroup-parent`, cgroupfs paths), the OOM score (`--oom-score-adj`) and hugepage
//! limits (the CRI's, each page size one the host has), each checked
//! as Docker checks it and written into the OCI spec the shim applies. `docker update`
//! (Containers.Update) changes the CPU ones live through the shim's `update` request.

use crate::error::{Error, Result};
use berth_api::containers::v1::ContainerConfig;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxHugepageLimitBuilder, LinuxResources};

/// The kernel's bounds of `cpu.shares`.
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;

/// Docker's bounds of the CFS period and the least quota, in microseconds.
const MIN_PERIOD: i64 = 1_000;
const MAX_PERIOD: i64 = 1_000_000;
const MIN_QUOTA: i64 = 1_000;

fn invalid(what: impl Into<String>) -> Error {
    Error::InvalidArgument(what.into())
}

/// `--cpu-shares`, checked; `None` for the default (0).
pub fn cpu_shares(shares: i64) -> Result<Option<u64>> {
    match shares {
        0 => Ok(None),
        s if s < 0 => Err(invalid(format!(
            "invalid CPU shares {s}: it cannot be negative"
        ))),
        // The kernel takes anything and clamps it; so does Docker.
        s => Ok(Some(s.clamp(MIN_SHARES, MAX_SHARES) as u64)),
    }
}

/// `--cpu-quota` and `--cpu-period`, checked; `(None, None)` for neither.
pub fn cfs(quota: i64, period: i64, nano_cpus: i64) -> Result<(Option<i64>, Option<u64>)> {
    if nano_cpus != 0 && (quota != 0 || period != 0) {
        return Err(invalid(
            "Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set",
        ));
    }
    if period != 0 && !(MIN_PERIOD..=MAX_PERIOD).contains(&period) {
        return Err(invalid(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ));
    }
    if quota > 0 && quota < MIN_QUOTA {
        return Err(invalid(
            "CPU cfs quota can not be less than 1ms (i.e. 1000)",
        ));
    }
    let quota = match quota {
        0 => None,
        q if q < 0 => Some(-1),
        q => Some(q),
    };
    Ok((quota, (period != 0).then_some(period as u64)))
}

/// A cpuset list (`0-2,4`), checked for its form; `None` for empty (all).
pub fn cpuset(list: &str, what: &str) -> Result<Option<String>> {
    let list = list.trim();
    if list.is_empty() {
        return Ok(None);
    }
    let number = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = list.split(',').all(|part| match part.split_once('-') {
        Some((a, b)) => number(a) && number(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok(),
        None => number(part),
    });
    if ok {
        Ok(Some(list.to_string()))
    } else {
        Err(invalid(format!(
            "invalid value {list:?} for {what}: use numbers and ranges, e.g. 0-2,4"
        )))
    }
}

/// The spec's CPU limits: `base` (from `--cpus`) with the shares, quota/period and cpusets
/// of `config`.
pub fn cpu(config: &ContainerConfig, base: Option<LinuxCpu>) -> Result<Option<LinuxCpu>> {
    let shares = cpu_shares(config.cpu_shares)?;
    let (quota, period) = cfs(config.cpu_quota, config.cpu_period, config.nano_cpus)?;
    let cpus = cpuset(&config.cpuset_cpus, "cpuset-cpus")?;
    let mems = cpuset(&config.cpuset_mems, "cpuset-mems")?;
    if shares.is_none() && quota.is_none() && period.is_none() && cpus.is_none() && mems.is_none() {
        return Ok(base);
    }
    let mut cpu = base.unwrap_or_default();
    if shares.is_some() {
        cpu.set_shares(shares);
    }
    if quota.is_some() {
        cpu.set_quota(quota);
    }
    if period.is_some() {
        cpu.set_period(period);
    }
    if cpus.is_some() {
        cpu.set_cpus(cpus);
    }
    if mems.is_some() {
        cpu.set_mems(mems);
    }
    Ok(Some(cpu))
}

/// Adds the CPU and hugepage limits of `config` to `res` (see [`cpu`], [`hugepages`]).
pub fn apply(config: &ContainerConfig, res: &mut LinuxResources) -> Result<()> {
    let cpu = cpu(config, res.cpu().clone())?;
    res.set_cpu(cpu);
    if !config.hugepage_limits.is_empty() {
        let limits = hugepages(&config.hugepage_limits, &host_hugepage_sizes())?;
        res.set_hugepage_limits(Some(limits));
    }
    Ok(())
}

/// The hugepage sizes of this host as the hugetlb files name them (`2MB`, `1GB`), from
/// `/sys/kernel/mm/hugepages/hugepages-<N>kB`.
pub fn host_hugepage_sizes() -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(hugetlb_size_name(kb))
        })
        .collect();
    sizes.sort();
    sizes
}

/// The hugetlb name of a page of `kb` KiB: the largest unit that divides it (2048 -> 2MB).
fn hugetlb_size_name(kb: u64) -> String {
    match kb {
        kb if kb >= 1 << 20 && kb % (1 << 20) == 0 => format!("{}GB", kb >> 20),
        kb if kb >= 1 << 10 && kb % (1 << 10) == 0 => format!("{}MB", kb >> 10),
        kb => format!("{kb}KB"),
    }
}

/// Hugepage limits (page size -> bytes), each size checked against the host's `sizes`.
pub fn hugepages(
    limits: &std::collections::HashMap<String, u64>,
    sizes: &[String],
) -> Result<Vec<LinuxHugepageLimit>> {
    let mut out = Vec::new();
    let mut page_sizes: Vec<&String> = limits.keys().collect();
    page_sizes.sort();
    for size in page_sizes {
        if !sizes.contains(size) {
            return Err(invalid(format!(
                "hugepage size {size:?} is not available on this host (it has {}): ask for \
                 a page size the node has",
                if sizes.is_empty() {
                    "no hugepages".to_string()
                } else {
                    sizes.join(", ")
                }
            )));
        }
        let limit = LinuxHugepageLimitBuilder::default()
            .page_size(size.clone())
            .limit(limits[size].min(i64::MAX as u64) as i64)
            .build()
            .map_err(|e| invalid(format!("hugepage limit {size}: {e}")))?;
        out.push(limit);
    }
    Ok(out)
}

/// `linux.cgroupsPath` of a container: under `--cgroup-parent` when given, else
/// `/berth/<namespace>-<id>`.
pub fn cgroups_path(config: &ContainerConfig, namespace: &str, id: &str) -> Result<String> {
    let parent = config.cgroup_parent.trim();
    if parent.is_empty() {
        return Ok(format!("/berth/{namespace}-{id}"));
    }
    if parent.contains(':') || parent.ends_with(".slice") {
        return Err(invalid(format!(
            "cgroup parent {parent:?}: berth manages cgroups with the cgroupfs driver; give a \
             cgroupfs path such as /kubepods/pod123, not a systemd slice"
        )));
    }
    let parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(invalid(format!(
            "cgroup parent {parent:?}: give a path without \".\" or \"..\" below the root cgroup"
        )));
    }
    Ok(format!("/{}/{id}", parts.join("/")))
}

/// `--oom-score-adj`, checked; `None` for 0 (the runtime's own value stays).
pub fn oom_score_adj(adj: i32) -> Result<Option<i32>> {
    match adj {
        0 => Ok(None),
        a if !(-1000..=1000).contains(&a) => Err(invalid(format!(
            "Invalid value {a}, range for oom score adj is [-1000, 1000]"
        ))),
        a => Ok(Some(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limits_are_checked_and_merged() {
        assert_eq!(cpu_shares(0).unwrap(), None);
        assert_eq!(cpu_shares(1).unwrap(), Some(2));
        assert_eq!(cpu_shares(512).unwrap(), Some(512));
        assert!(cpu_shares(-1).is_err());
        assert!(cfs(50_000, 0, 1_000_000_000).is_err());
        assert!(cfs(0, 999, 0).is_err());
        assert!(cfs(500, 0, 0).is_err());
        assert_eq!(cfs(-1, 0, 0).unwrap(), (Some(-1), None));
        assert_eq!(
            cfs(20_000, 50_000, 0).unwrap(),
            (Some(20_000), Some(50_000))
        );
        assert_eq!(cpuset(" 0-1,3 ", "x").unwrap().as_deref(), Some("0-1,3"));
        assert!(cpuset("1-0", "x").is_err());
        assert!(cpuset("a", "x").is_err());
        assert!(cpuset("0,,1", "x").is_err());
        let config = ContainerConfig {
            cpu_shares: 512,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let c = cpu(&config, None).unwrap().unwrap();
        assert_eq!((c.shares(), c.cpus().as_deref()), (Some(512), Some("0")));
        assert_eq!(cpu(&ContainerConfig::default(), None).unwrap(), None);
    }

    #[test]
    fn cgroup_parents_and_oom_scores() {
        let c = |p: &str| ContainerConfig {
            cgroup_parent: p.into(),
            ..Default::default()
        };
        assert_eq!(
            cgroups_path(&c(""), "k8s.io", "ab").unwrap(),
            "/berth/k8s.io-ab"
        );
        assert_eq!(
            cgroups_path(&c("/kubepods/pod1/"), "k8s.io", "ab").unwrap(),
            "/kubepods/pod1/ab"
        );
        assert!(cgroups_path(&c("/a/../b"), "n", "ab").is_err());
        assert!(cgroups_path(&c("system.slice:berth:x"), "n", "ab").is_err());
        assert_eq!(oom_score_adj(0).unwrap(), None);
        assert_eq!(oom_score_adj(-998).unwrap(), Some(-998));
        assert!(oom_score_adj(1001).is_err());
    }

    #[test]
    fn hugepage_sizes_are_named_and_checked() {
        assert_eq!(hugetlb_size_name(2048), "2MB");
        assert_eq!(hugetlb_size_name(1 << 20), "1GB");
        assert_eq!(hugetlb_size_name(64), "64KB");
        let host = vec!["1GB".to_string(), "2MB".to_string()];
        let asked = std::collections::HashMap::from([("2MB".to_string(), 4u64 << 20)]);
        let limits = hugepages(&asked, &host).unwrap();
        assert_eq!(limits.len(), 1);
        assert_eq!(
            (limits[0].page_size().as_str(), limits[0].limit()),
            ("2MB", 4 << 20)
        );
        let asked = std::collections::HashMap::from([("16GB".to_string(), 1u64)]);
        let err = hugepages(&asked, &host).unwrap_err().to_string();
        assert!(err.contains("16GB") && err.contains("2MB"), "{err}");
        assert!(hugepages(&asked, &[])
            .unwrap_err()
            .to_string()
            .contains("no hugepages"));
    }
}
