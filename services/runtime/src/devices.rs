//! Host devices given to a container (`--device HOST[:CONTAINER[:PERMS]]`, Docker's
//! `HostConfig.Devices`, the CRI's `devices`), resolved when the container is created.
//!
//! Each mapping's host path must be a character or block device, or a folder: then every
//! device under it is given, at the same relative place under the container path (as Docker
//! does). A symlink is followed. Each device becomes an entry of the spec's `linux.devices`
//! (type, major/minor, file mode and owner of the host node; the shim makes the node) and a
//! device cgroup rule allowing the mapping's permissions (`r`, `w`, `m`; `rwm` by default).
//! [`node`] reads one host node; the `--privileged` walk of `/dev` shares it.

use crate::error::{Error, Result};
use berth_api::containers::v1::DeviceMapping;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};
use std::path::{Component, Path, PathBuf};

/// The devices of a container's mappings: nodes for the spec and cgroup rules allowing them.
#[derive(Debug, Default)]
pub struct Resolved {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// Resolves `mappings` against the host's device nodes.
pub fn resolve(mappings: &[DeviceMapping]) -> Result<Resolved> {
    let mut out = Resolved::default();
    for m in mappings {
        let on_host = absolute(&m.path_on_host, "path on the host")?;
        let in_container = if m.path_in_container.is_empty() {
            on_host.clone()
        } else {
            absolute(&m.path_in_container, "path in the container")?
        };
        let access = permissions(&m.cgroup_permissions)?;
        let gathering = |why: String| {
            Error::InvalidArgument(format!(
                "error gathering device information while adding custom device {:?}: {why}",
                m.path_on_host
            ))
        };
        let meta = std::fs::metadata(&on_host).map_err(|e| gathering(e.to_string()))?;
        let mut found = Vec::new();
        if meta.is_dir() {
            walk(&on_host, &in_container, &mut found);
            if found.is_empty() {
                return Err(gathering("no devices found in the folder".to_string()));
            }
        } else {
            let dev = node(&on_host, &in_container)
                .ok_or_else(|| gathering("not a character or block device".to_string()))?;
            found.push(dev);
        }
        for dev in found {
            out.rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(dev.typ())
                    .major(dev.major())
                    .minor(dev.minor())
                    .access(access.clone())
                    .build()
                    .map_err(|e| Error::Spec(e.to_string()))?,
            );
            // A later mapping to the same container path wins, as in Docker.
            out.devices.retain(|d| d.path() != dev.path());
            out.devices.push(dev);
        }
    }
    Ok(out)
}

/// The character or block device at `host` (symlinks followed), as the spec lists it at
/// `in_container`; `None` for anything else.
pub fn node(host: &Path, in_container: &Path) -> Option<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(host).ok()?;
    let typ = if m.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if m.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    LinuxDeviceBuilder::default()
        .path(in_container)
        .typ(typ)
        .major(nix::sys::stat::major(m.rdev()) as i64)
        .minor(nix::sys::stat::minor(m.rdev()) as i64)
        .file_mode(m.mode() & 0o7777)
        .uid(m.uid())
        .gid(m.gid())
        .build()
        .ok()
}

/// Every device under the host folder `dir`, listed under `in_container`; symlinks inside
/// are not followed (as Docker walks).
fn walk(dir: &Path, in_container: &Path, out: &mut Vec<LinuxDevice>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        let target = in_container.join(e.file_name());
        if ft.is_dir() {
            walk(&e.path(), &target, out);
        } else if !ft.is_symlink() {
            out.extend(node(&e.path(), &target));
        }
    }
}

fn absolute(path: &str, what: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    let clean = p.is_absolute()
        && p.components().all(|c| !matches!(c, Component::ParentDir))
        && p != Path::new("/");
    if !clean {
        return Err(Error::InvalidArgument(format!(
            "device {what} {path:?} must be an absolute path (without \"..\")"
        )));
    }
    Ok(p.to_path_buf())
}

/// The cgroup permissions of a mapping: letters of `r`, `w`, `m`, each once; "" = `rwm`.
fn permissions(given: &str) -> Result<String> {
    if given.is_empty() {
        return Ok("rwm".to_string());
    }
    let mut seen = String::new();
    for c in given.chars() {
        if !"rwm".contains(c) || seen.contains(c) {
            return Err(Error::InvalidArgument(format!(
                "invalid device cgroup permissions {given:?}: use the letters r, w and m, each once"
            )));
        }
        seen.push(c);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host: &str, container: &str, perms: &str) -> DeviceMapping {
        DeviceMapping {
            path_on_host: host.into(),
            path_in_container: container.into(),
            cgroup_permissions: perms.into(),
        }
    }

    #[test]
    fn a_char_device_is_listed_with_its_rule() {
        let r = resolve(&[mapping("/dev/zero", "/dev/myzero", "r")]).unwrap();
        assert_eq!(r.devices.len(), 1);
        let d = &r.devices[0];
        assert_eq!(d.path(), Path::new("/dev/myzero"));
        assert_eq!(d.typ(), LinuxDeviceType::C);
        assert_eq!((d.major(), d.minor()), (1, 5));
        let rule = &r.rules[0];
        assert!(rule.allow());
        assert_eq!(rule.access().as_deref(), Some("r"));
        assert_eq!((rule.major(), rule.minor()), (Some(1), Some(5)));
    }

    #[test]
    fn defaults_are_the_host_path_and_rwm() {
        let r = resolve(&[mapping("/dev/null", "", "")]).unwrap();
        assert_eq!(r.devices[0].path(), Path::new("/dev/null"));
        assert_eq!(r.rules[0].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn a_folder_gives_every_device_under_it() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("skipped-link")).unwrap();
        std::fs::write(dir.path().join("plain"), b"x").unwrap();
        // No mknod here (unprivileged test runs): the folder has no device, which is refused.
        let err = resolve(&[mapping(dir.path().to_str().unwrap(), "/dev/x", "")]).unwrap_err();
        assert!(err.to_string().contains("no devices found"), "{err}");
        // /dev itself has devices; they land under the container path.
        let r = resolve(&[mapping("/dev", "/dev/host", "rw")]).unwrap();
        assert!(r
            .devices
            .iter()
            .any(|d| d.path() == Path::new("/dev/host/null")));
        assert_eq!(r.devices.len(), r.rules.len());
    }

    #[test]
    fn bad_input_is_refused_by_name() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let file = file.path().to_str().unwrap().to_string();
        for (m, words) in [
            (mapping("/dev/nope-none", "", ""), "\"/dev/nope-none\""),
            (
                mapping(&file, "/dev/f", ""),
                "not a character or block device",
            ),
            (mapping("dev/zero", "", ""), "must be an absolute path"),
            (mapping("/dev/zero", "z", ""), "must be an absolute path"),
            (
                mapping("/dev/zero", "/dev/../etc/z", ""),
                "must be an absolute path",
            ),
            (
                mapping("/dev/zero", "", "rx"),
                "invalid device cgroup permissions",
            ),
            (
                mapping("/dev/zero", "", "rr"),
                "invalid device cgroup permissions",
            ),
        ] {
            let err = resolve(&[m]).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains(words), "{err} lacks {words}");
        }
    }
}
