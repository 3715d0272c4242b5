//! A task's bundle folder, `<state>/tasks/<namespace>/<id>/`: what the runtime writes for the
//! shim (`config.json`, `rootfs.json`) and what it reads back (`exit.json`, `init.pid`,
//! `shim.sock`). See `docs/shim.md`.

use crate::error::{Error, Result};
use crate::shim::ExitStatus;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One entry of `rootfs.json` (the shim's own type).
pub use berth_shim::bundle::RootfsMount;

/// The snapshot service's mount, as `rootfs.json` takes it.
pub fn rootfs_mount(m: berth_api::types::v1::Mount) -> RootfsMount {
    RootfsMount {
        typ: m.r#type,
        source: m.source,
        options: m.options,
    }
}

/// The bundle folder of one task.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
}

/// `<state>/tasks/<namespace>`: the bundles of one namespace.
pub fn namespace_dir(state: &Path, namespace: &str) -> PathBuf {
    state.join("tasks").join(namespace)
}

impl Bundle {
    pub fn new(state: &Path, namespace: &str, id: &str) -> Bundle {
        Bundle {
            dir: namespace_dir(state, namespace).join(id),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }

    /// Creates the folder (mode 0700) and writes `config.json`, `rootfs.json`, the compiled
    /// seccomp filter when the spec has a profile (`seccomp.bpf`, see
    /// [`berth_shim::seccomp`]) and an empty `rootfs/` for the shim to mount on.
    pub fn write(&self, spec_json: &[u8], mounts: &[RootfsMount]) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Linux {
            seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
        }
        #[derive(serde::Deserialize)]
        struct SpecSeccomp {
            linux: Option<Linux>,
        }
        let profile = serde_json::from_slice::<SpecSeccomp>(spec_json)
            .map_err(|e| Error::Spec(format!("config.json: {e}")))?
            .linux
            .and_then(|l| l.seccomp);
        let filter = profile.as_ref().map(crate::seccomp::compile).transpose()?;
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("cannot create folder", parent, e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io("cannot create bundle folder", &self.dir, e))?;
        if let Some(f) = filter {
            write_atomic(&self.dir.join(berth_shim::seccomp::FILTER_FILE), &f)?;
        }
        write_atomic(&self.dir.join("config.json"), spec_json)?;
        let rootfs = serde_json::to_vec_pretty(mounts)
            .map_err(|e| Error::io("cannot encode", self.dir.join("rootfs.json"), e.into()))?;
        write_atomic(&self.dir.join("rootfs.json"), &rootfs)?;
        let rootfs_dir = self.dir.join("rootfs");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&rootfs_dir)
            .map_err(|e| Error::io("cannot create folder", &rootfs_dir, e))?;
        Ok(())
    }

    /// The exit status the shim recorded, if the container's init has exited.
    pub fn exit_status(&self) -> Result<Option<ExitStatus>> {
        let path = self.dir.join("exit.json");
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| Error::io("cannot read", path, e.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read", path, e)),
        }
    }

    fn read_pid(&self, file: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|p: &i32| *p > 0)
    }

    /// Host pid of the container's init, as the shim recorded it.
    pub fn init_pid(&self) -> Option<u32> {
        self.read_pid("init.pid").map(|p| p as u32)
    }

    /// The task's `linux.cgroupsPath`, from its `config.json`.
    pub fn cgroups_path(&self) -> Option<PathBuf> {
        let spec = std::fs::read(self.dir().join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&spec).ok()?;
        v["linux"]["cgroupsPath"].as_str().map(PathBuf::from)
    }

    /// Pid of the shim process.
    pub fn shim_pid(&self) -> Option<i32> {
        self.read_pid("shim.pid")
    }

    /// Removes the folder. Refuses while `rootfs/` is a mount point: the rootfs is mounted only
    /// inside the container's mount namespace, and deleting through a host mount would delete
    /// the container's files.
    pub fn remove(&self) -> Result<()> {
        let rootfs = self.dir.join("rootfs");
        if is_mount_point(&rootfs) {
            return Err(Error::FailedPrecondition(format!(
                "{} is still mounted on the host; unmount it before deleting the task",
                rootfs.display()
            )));
        }
        // The shim may still be removing its own files as it exits: retry briefly.
        let mut last = None;
        for _ in 0..10 {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(Error::io(
            "cannot remove bundle",
            &self.dir,
            last.unwrap_or_else(|| std::io::Error::other("unknown error")),
        ))
    }
}

/// The ids that have a bundle in a namespace.
pub fn list(state: &Path, namespace: &str) -> Result<Vec<String>> {
    let dir = namespace_dir(state, namespace);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read", dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot read", &dir, e))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

/// Writes a file whole or not at all: a temporary file, fsynced, renamed over.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("cannot write", path, e)
    })
}

/// Whether `path` is a mount point in our mount namespace: on another device than its parent,
/// or listed in `/proc/self/mountinfo` (bind mounts of the same filesystem).
fn is_mount_point(path: &Path) -> bool {
    let (Ok(meta), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    if let Ok(parent_meta) = std::fs::metadata(parent) {
        if meta.dev() != parent_meta.dev() {
            return true;
        }
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == wanted)
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_what_the_shim_reads() {
        let state = tempfile::tempdir().unwrap();
        let b = Bundle::new(state.path(), "default", "abc");
        assert!(!b.exists());
        let mounts = vec![RootfsMount {
            typ: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "lowerdir=/a:/b".into(),
                "upperdir=/u".into(),
                "workdir=/w".into(),
            ],
        }];
        b.write(br#"{"ociVersion":"1.1.0"}"#, &mounts).unwrap();
        assert!(b.exists());
        assert_eq!(b.dir(), state.path().join("tasks/default/abc"));
        let mode = std::fs::metadata(b.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            std::fs::read(b.dir().join("config.json")).unwrap(),
            br#"{"ociVersion":"1.1.0"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.dir().join("rootfs.json")).unwrap()).unwrap();
        assert_eq!(v[0]["type"], "overlay");
        assert_eq!(v[0]["source"], "overlay");
        assert_eq!(v[0]["options"][1], "upperdir=/u");
        assert!(b.dir().join("rootfs").is_dir());
        assert!(!b.dir().join("config.tmp").exists());
        assert_eq!(list(state.path(), "default").unwrap(), ["abc"]);
        assert!(list(state.path(), "other").unwrap().is_empty());

        // A second write refuses to overwrite a live bundle.
        assert!(b.write(b"{}", &[]).is_err());

        assert_eq!(b.exit_status().unwrap(), None);
        std::fs::write(
            b.dir().join("exit.json"),
            r#"{"exit_code":3,"signal":null,"exited_at":"2024-05-06T07:08:09.123456789Z","oom_killed":false}"#,
        )
        .unwrap();
        assert_eq!(b.exit_status().unwrap().unwrap().exit_code, 3);
        std::fs::write(b.dir().join("init.pid"), "1234\n").unwrap();
        assert_eq!(b.init_pid(), Some(1234));

        b.remove().unwrap();
        assert!(!b.exists());
        b.remove().unwrap();
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/x\\"), r"/x\\");
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
    }
}
