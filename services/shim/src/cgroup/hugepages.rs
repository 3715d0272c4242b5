//! Hugepage limits of a container's cgroup (the spec's `linux.resources.hugepageLimits`):
//! `hugetlb.<size>.limit_in_bytes` on cgroup v1, `hugetlb.<size>.max` on v2 (cgroups-rs'
//! [`HugeTlbController`] names either). A hybrid host whose v1 side has no hugetlb hierarchy
//! but whose cgroup2 mount offers the controller gets the limit there: the controller is
//! enabled down the container's path (`+hugetlb` in each ancestor's `cgroup.subtree_control`)
//! and the container's init joins that cgroup (see [`ContainerCgroup::add_process`]).

use super::{cg_err, cgroup2_mount, ContainerCgroup, Unified};
use crate::error::Result;
use cgroups_rs::fs::hugetlb::HugeTlbController;
use oci_spec::runtime::LinuxHugepageLimit;
use std::path::{Path, PathBuf};

impl ContainerCgroup {
    /// Sets every limit of `limits`; a host with no hugetlb controller at all refuses them.
    pub(super) fn apply_hugepages(&mut self, limits: &[LinuxHugepageLimit]) -> Result<()> {
        let rel = self.rel.clone();
        if let Some(hc) = self.cg.controller_of::<HugeTlbController>() {
            for l in limits {
                let size = l.page_size();
                if !hc.size_supported(size) {
                    return Err(cg_err(
                        &rel,
                        "hugepage limit",
                        format!("no {size} pages on this host"),
                    ));
                }
                hc.set_limit_in_bytes(size, l.limit().max(0) as u64)
                    .map_err(|e| cg_err(&rel, &format!("set the {size} hugepage limit"), e))?;
            }
            return Ok(());
        }
        let mount = (!self.v2)
            .then(cgroup2_mount)
            .flatten()
            .filter(|m| controllers(m).iter().any(|c| c == "hugetlb"))
            .ok_or_else(|| {
                cg_err(
                    &rel,
                    "hugepage limits",
                    "the host has no hugetlb cgroup controller: remove the limits",
                )
            })?;
        let dir = mount.join(&rel);
        enable_down_to(&mount, &dir).map_err(|e| cg_err(&rel, "enable hugetlb in cgroup2", e))?;
        for l in limits {
            let file = dir.join(format!("hugetlb.{}.max", l.page_size()));
            std::fs::write(&file, l.limit().max(0).to_string())
                .map_err(|e| cg_err(&rel, &format!("write {}", file.display()), e))?;
        }
        // The limit binds only processes in that cgroup: placing the init there is required.
        match &mut self.unified {
            Some(u) => u.required = true,
            None => {
                self.unified = Some(Unified {
                    dir,
                    required: true,
                })
            }
        }
        Ok(())
    }
}

/// The controllers a cgroup2 cgroup offers (`cgroup.controllers`).
fn controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Creates `dir` under cgroup2 `mount` and enables hugetlb in the subtree of `mount` and of
/// every folder between them, so that `dir` has the controller's files.
fn enable_down_to(mount: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut at = PathBuf::from(mount);
    let below = dir.strip_prefix(mount).unwrap_or(dir);
    for part in below.components() {
        let control = at.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control).unwrap_or_default();
        if !enabled.split_whitespace().any(|c| c == "hugetlb") {
            std::fs::write(&control, "+hugetlb")?;
        }
        at.push(part);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugetlb_is_enabled_down_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path();
        std::fs::write(mount.join("cgroup.subtree_control"), "memory").unwrap();
        std::fs::create_dir_all(mount.join("kubepods")).unwrap();
        std::fs::write(mount.join("kubepods/cgroup.subtree_control"), "hugetlb").unwrap();
        std::fs::write(mount.join("cgroup.controllers"), "cpu hugetlb pids").unwrap();
        let dir = mount.join("kubepods/pod1/c1");
        enable_down_to(mount, &dir).unwrap();
        assert!(dir.is_dir());
        // A plain file takes what is written: the kernel would add it to the list.
        let read = |p: &str| std::fs::read_to_string(mount.join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+hugetlb");
        assert_eq!(read("kubepods/cgroup.subtree_control"), "hugetlb");
        assert_eq!(read("kubepods/pod1/cgroup.subtree_control"), "+hugetlb");
        assert!(controllers(mount).contains(&"hugetlb".to_string()));
        assert!(controllers(&dir).is_empty());
    }
}
