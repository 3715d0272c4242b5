//! The container's root, made by the init inside its new mount namespace: the propagation of
//! `/`, the `rootfs.json` mounts on the rootfs, the spec's mounts (each mount point resolved
//! inside the rootfs, see [`crate::mounts`]), `/sys/fs/cgroup`, the `/dev` nodes, then
//! `pivot_root` into it; after that, the masked and read-only paths and a read-only `/`.

use crate::container::{sys, InitConfig};
use crate::error::{Context, Error, Result};
use crate::mounts::{bind_mount, do_mount, locked_flags, Kind, Place};
use berth_mount::{parse_options, parse_propagation, MountOptions};
use nix::fcntl::OFlag;
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{Mount, Spec};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// After `pivot_root`: the masked and read-only paths, and `/` read-only when the spec asks.
pub(crate) fn protect_paths(spec: &Spec) -> Result<()> {
    if let Some(l) = spec.linux() {
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
    Ok(())
}

/// Mount propagation, rootfs.json mounts, spec mounts, devices.
pub(crate) fn prepare_rootfs(cfg: &InitConfig<'_>) -> Result<()> {
    let spec = cfg.spec;
    // Before `/` turns slave below: copies of these sources still share the host's peers.
    let shared_trees = shared_bind_sources(spec)?;
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
    for (i, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
        let tree = shared_trees.iter().find(|(at, _)| *at == i).map(|(_, t)| t);
        mount_spec_entry(cfg, root.as_fd(), m, tree)?;
    }
    create_devices(cfg, root.as_fd(), dev_is_tmpfs)?;
    Ok(())
}

/// Detached copies of the sources of the spec's binds with shared propagation (`rshared`,
/// `shared`), by index in the spec's mounts: taken while the new mount namespace's copies are
/// still peers of the host's, so mounts made under them propagate both ways (Docker's
/// `bind-propagation=rshared`, the CRI's Bidirectional). A bind mount made later would be a
/// slave of the host's mount only, as the rest of the container's tree is.
fn shared_bind_sources(spec: &Spec) -> Result<Vec<(usize, std::os::fd::OwnedFd)>> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
        let shared = opts
            .propagation
            .iter()
            .any(|p| p.contains(MsFlags::MS_SHARED));
        if shared && (m.typ().as_deref() == Some("bind") || opts.is_bind()) {
            let source = m.source().clone().unwrap_or_default();
            out.push((i, crate::mounts::detached_copy(&source, &opts)?));
        }
    }
    Ok(out)
}

fn mount_spec_entry(
    cfg: &InitConfig<'_>,
    root: BorrowedFd<'_>,
    m: &Mount,
    shared_tree: Option<&std::os::fd::OwnedFd>,
) -> Result<()> {
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
        return match shared_tree {
            Some(tree) => crate::mounts::attach_tree(tree, &dest, &o),
            None => bind_mount(&source, &dest, &o),
        };
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
            let host =
                host_node(&place.display(), kind, makedev(major, minor)).ok_or_else(|| {
                    Error::io(
                        format!(
                            "mknod {}: not permitted, and the host has no such device to bind",
                            place.display()
                        ),
                        std::io::Error::from_raw_os_error(libc::EPERM),
                    )
                })?;
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

/// The host's node of device `rdev` of `kind`, to bind where mknod is not allowed: at the
/// container's path `preferred` on the host if that is the device, else found under `/dev`.
fn host_node(preferred: &str, kind: SFlag, rdev: libc::dev_t) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let is_it = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            m.rdev() == rdev && (m.mode() & libc::S_IFMT) == kind.bits() & libc::S_IFMT
        })
    };
    if is_it(Path::new(preferred)) {
        return Some(PathBuf::from(preferred));
    }
    fn find(dir: &Path, is_it: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() && !ft.is_symlink() && !path.starts_with("/dev/pts") {
                if let Some(p) = find(&path, is_it) {
                    return Some(p);
                }
            } else if is_it(&path) {
                return Some(path);
            }
        }
        None
    }
    find(Path::new("/dev"), &is_it)
}

pub(crate) fn pivot_root(rootfs: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_node_of_a_device_is_found_by_number() {
        // At the preferred path when that is the device…
        assert_eq!(
            host_node("/dev/null", SFlag::S_IFCHR, makedev(1, 3)),
            Some(PathBuf::from("/dev/null"))
        );
        // …else wherever /dev has it (a mapping to another name).
        assert_eq!(
            host_node("/dev/myzero", SFlag::S_IFCHR, makedev(1, 5)),
            Some(PathBuf::from("/dev/zero"))
        );
        // The type counts, and a device the host lacks is None.
        assert_eq!(host_node("/dev/zero", SFlag::S_IFBLK, makedev(1, 5)), None);
        assert_eq!(
            host_node("/dev/x", SFlag::S_IFCHR, makedev(4095, 4095)),
            None
        );
    }
}
