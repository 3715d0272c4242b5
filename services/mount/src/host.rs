//! Mounting a list of [`Mount`]s (a snapshotter's answer, in `mount(8)` terms: `type`,
//! `source`, `options`) in order on one target of the host, and unmounting it.
//!
//! Options become flags and data as [`crate::options`] splits them; propagation words are
//! applied after the mount. A read-only bind is made the way the kernel requires, by a bind
//! and then a read-only remount. An overlay whose options exceed the page-size limit of
//! mount(2) is mounted from a forked child that changes into the folder the layer paths share
//! and passes them relative to it.

use crate::options::parse_options;
use nix::mount::{MntFlags, MsFlags};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One mount, in `mount(8)` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    /// The filesystem type (`overlay`, `bind`, `tmpfs`…).
    pub fstype: String,
    /// What is mounted (a folder for a bind, a name for the others).
    pub source: String,
    /// Options, as [`crate::options::parse_options`] reads them.
    pub options: Vec<String>,
}

/// mount(2) copies at most a page of option data, NUL included.
const MAX_DATA: usize = 4095;

/// Mounts `mounts`, in order, on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> io::Result<()> {
    for m in mounts {
        mount_one(m, target)?;
    }
    Ok(())
}

/// Unmounts `target` (one mount).
pub fn unmount(target: &Path) -> io::Result<()> {
    nix::mount::umount2(target, MntFlags::empty())?;
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> io::Result<()> {
    let opts = parse_options(&m.options);
    mount_flags_and_data(m, opts.flags, &opts.data, target)?;
    for p in &opts.propagation {
        nix::mount::mount(None::<&str>, target, None::<&str>, *p, None::<&str>)?;
    }
    Ok(())
}

fn mount_flags_and_data(m: &Mount, flags: MsFlags, data: &str, target: &Path) -> io::Result<()> {
    if flags.contains(MsFlags::MS_BIND) {
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )?;
        let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            // A bind ignores other flags; they need a remount of the bind.
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra,
                None::<&str>,
            )?;
        }
        return Ok(());
    }
    if data.len() <= MAX_DATA {
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            Some(m.fstype.as_str()),
            flags,
            Some(data),
        )?;
        return Ok(());
    }
    if m.fstype != "overlay" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} mount options are {} bytes, more than mount(2) takes",
                m.fstype,
                data.len()
            ),
        ));
    }
    let (dir, relative) = relative_overlay_data(data)?;
    if relative.len() > MAX_DATA {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "overlay options are {} bytes even with relative paths; too many layers",
                relative.len()
            ),
        ));
    }
    mount_in_dir(&dir, &m.source, target, &m.fstype, flags, &relative)
}

/// Rewrites overlay options with paths relative to the longest folder they all share.
fn relative_overlay_data(data: &str) -> io::Result<(PathBuf, String)> {
    let mut paths: Vec<&str> = Vec::new();
    for o in data.split(',') {
        if let Some((k, v)) = o.split_once('=') {
            match k {
                "lowerdir" => paths.extend(v.split(':')),
                "upperdir" | "workdir" => paths.push(v),
                _ => {}
            }
        }
    }
    let mut common: Option<PathBuf> = None;
    for p in &paths {
        let parent = Path::new(p)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        common = Some(match common {
            None => parent,
            Some(c) => c
                .components()
                .zip(parent.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    let common = common
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "overlay without layers"))?;
    let rel = |p: &str| -> String {
        Path::new(p)
            .strip_prefix(&common)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    let rewritten: Vec<String> = data
        .split(',')
        .map(|o| match o.split_once('=') {
            Some(("lowerdir", v)) => format!(
                "lowerdir={}",
                v.split(':').map(rel).collect::<Vec<_>>().join(":")
            ),
            Some((k @ ("upperdir" | "workdir"), v)) => format!("{k}={}", rel(v)),
            _ => o.to_string(),
        })
        .collect();
    Ok((common, rewritten.join(",")))
}

/// Mounts from a child process whose working folder is `dir`, so relative layer paths resolve
/// there without changing the working folder of this (threaded) process.
fn mount_in_dir(
    dir: &Path,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> io::Result<()> {
    let target = std::path::absolute(target)?;
    let cstr = |b: &[u8]| {
        CString::new(b)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a mount argument"))
    };
    let c_dir = cstr(dir.as_os_str().as_bytes())?;
    let c_source = cstr(source.as_bytes())?;
    let c_target = cstr(target.as_os_str().as_bytes())?;
    let c_type = cstr(fstype.as_bytes())?;
    let c_data = cstr(data.as_bytes())?;
    // SAFETY: after fork the child runs only chdir, mount and _exit — all async-signal-safe —
    // on memory prepared before the fork, so a lock held by another thread cannot block it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the pointers are valid NUL-terminated strings owned by this frame.
        unsafe {
            if libc::chdir(c_dir.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let r = libc::mount(
                c_source.as_ptr(),
                c_target.as_ptr(),
                c_type.as_ptr(),
                flags.bits(),
                c_data.as_ptr().cast(),
            );
            libc::_exit(if r == 0 { 0 } else { *libc::__errno_location() });
        }
    }
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, errno) => Err(io::Error::from_raw_os_error(errno)),
        other => Err(io::Error::other(format!(
            "mount helper process ended with {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_become_relative_to_the_shared_folder() {
        let (dir, data) = relative_overlay_data(
            "index=off,workdir=/r/snapshots/9/work,upperdir=/r/snapshots/9/fs,lowerdir=/r/snapshots/3/fs:/r/snapshots/12/fs",
        )
        .unwrap();
        assert_eq!(dir, Path::new("/r/snapshots"));
        assert_eq!(
            data,
            "index=off,workdir=9/work,upperdir=9/fs,lowerdir=3/fs:12/fs"
        );
    }
}
