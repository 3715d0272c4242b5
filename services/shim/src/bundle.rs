//! The bundle folder shared by the runtime and the shim (docs/shim.md, "Bundle").

use crate::error::{Context, Error, Result};
use crate::protocol::ExitStatus;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Annotation: `"true"` makes the container's stdin a pipe fed by attach clients.
pub const ANNOTATION_STDIN: &str = "io.berth.stdin";
/// Annotation: the `--user` string when it names a user or group.
pub const ANNOTATION_USER: &str = "io.berth.user";
/// Annotation: bytes after which `container.log` rotates to `container.log.1`.
pub const ANNOTATION_LOG_MAX_SIZE: &str = "io.berth.log-max-size";
/// Annotation: absolute path of the json-file log, used instead of `<bundle>/container.log`
/// (appended to, parent folders created), so that it outlives the bundle and covers every
/// run of the container.
pub const ANNOTATION_LOG_PATH: &str = "io.berth.log-path";
/// Annotation: the format of that log, `json-file` (the default) or `cri`.
pub const ANNOTATION_LOG_FORMAT: &str = "io.berth.log-format";

/// One entry of `rootfs.json`: a mount that makes (part of) the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMount {
    /// Filesystem type: `overlay`, `bind`, …
    #[serde(rename = "type")]
    pub typ: String,
    /// Source: a path for bind mounts, a name (`overlay`) otherwise.
    pub source: String,
    /// Mount options (`ro`, `rbind`, `lowerdir=…`, …).
    #[serde(default)]
    pub options: Vec<String>,
}

/// A bundle folder and the names of the files in it.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    /// A bundle at `dir` (made absolute against the current directory).
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .ctx(|| "current directory".to_string())?
                .join(dir)
        };
        Ok(Bundle { dir })
    }

    /// The bundle folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `config.json`
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `rootfs.json`
    pub fn rootfs_json_path(&self) -> PathBuf {
        self.dir.join("rootfs.json")
    }
    /// `shim.pid`
    pub fn shim_pid_path(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    /// `init.pid`
    pub fn init_pid_path(&self) -> PathBuf {
        self.dir.join("init.pid")
    }
    /// `shim.sock`
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }
    /// `exit.json`
    pub fn exit_path(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// `container.log`
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// Where the container's json-file log goes: the `io.berth.log-path` annotation when
    /// present (it must be absolute), else [`Bundle::log_path`].
    pub fn container_log_path(&self, spec: &Spec) -> Result<PathBuf> {
        let annotated = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_LOG_PATH))
            .filter(|p| !p.is_empty());
        match annotated {
            None => Ok(self.log_path()),
            Some(p) if Path::new(p).is_absolute() => Ok(PathBuf::from(p)),
            Some(p) => Err(Error::Invalid(format!(
                "annotation {ANNOTATION_LOG_PATH} {p:?} is not an absolute path"
            ))),
        }
    }
    /// `shim.log`
    pub fn shim_log_path(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    /// The rootfs folder: `root.path` of the spec, relative to the bundle unless absolute.
    pub fn rootfs_dir(&self, spec: &Spec) -> PathBuf {
        let p = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        if p.is_absolute() {
            p
        } else {
            self.dir.join(p)
        }
    }

    /// Reads and validates `config.json`.
    pub fn load_spec(&self) -> Result<Spec> {
        let path = self.config_path();
        let data = std::fs::read(&path).ctx(|| format!("read {}", path.display()))?;
        let spec: Spec = serde_json::from_slice(&data)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        validate_spec(&spec)?;
        Ok(spec)
    }

    /// Reads `rootfs.json`.
    pub fn load_rootfs_mounts(&self) -> Result<Vec<RootfsMount>> {
        let path = self.rootfs_json_path();
        let data = std::fs::read(&path).ctx(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Reads `exit.json` if it exists.
    pub fn read_exit(&self) -> Result<Option<ExitStatus>> {
        let path = self.exit_path();
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Writes `exit.json` atomically (tmp file, fsync, rename).
    pub fn write_exit(&self, exit: &ExitStatus) -> Result<()> {
        let data = serde_json::to_vec(exit)
            .map_err(|e| Error::Invalid(format!("encode exit status: {e}")))?;
        write_atomic(&self.exit_path(), &data)
    }
}

/// Writes `data` to `path` through `path.tmp` + rename, so readers never see half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("rename {} to {}", tmp.display(), path.display()))
}

/// Checks what the shim needs from a spec before anything is created.
pub fn validate_spec(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config.json has no process".into()))?;
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return Err(Error::Invalid("process.args is empty".into())),
    }
    if !process.cwd().is_absolute() {
        return Err(Error::Invalid(format!(
            "process.cwd {:?} is not an absolute path",
            process.cwd()
        )));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config.json has no linux section".into()))?;
    let namespaces = linux.namespaces().as_deref().unwrap_or(&[]);
    use oci_spec::runtime::LinuxNamespaceType as T;
    let mount = namespaces.iter().find(|n| n.typ() == T::Mount);
    match mount {
        None => {
            return Err(Error::Invalid(
                "a mount namespace is required (linux.namespaces has no \"mount\")".into(),
            ))
        }
        Some(ns) if ns.path().is_some() => {
            return Err(Error::Invalid(
                "joining an existing mount namespace is not supported".into(),
            ))
        }
        _ => {}
    }
    for ns in namespaces {
        if matches!(ns.typ(), T::User | T::Time) {
            return Err(Error::Invalid(format!(
                "{} namespaces are not supported by berth-shim",
                ns.typ()
            )));
        }
    }
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if !m.destination().is_absolute() {
            return Err(Error::Invalid(format!(
                "mount destination {:?} is not absolute",
                m.destination()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_json_parses() {
        let m: Vec<RootfsMount> = serde_json::from_str(
            r#"[{"type":"overlay","source":"overlay","options":["lowerdir=/a:/b","upperdir=/u","workdir=/w"]},
                {"type":"bind","source":"/x","options":["rbind","rw"]}]"#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].typ, "overlay");
        assert_eq!(m[1].options, vec!["rbind", "rw"]);
    }

    #[test]
    fn exit_json_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bundle::new(dir.path()).unwrap();
        assert_eq!(b.read_exit().unwrap(), None);
        let e = ExitStatus::exited(3, "2024-01-01T00:00:00.000000000Z".into());
        b.write_exit(&e).unwrap();
        assert_eq!(b.read_exit().unwrap(), Some(e));
        assert!(!dir.path().join("exit.json.tmp").exists());
    }

    #[test]
    fn validate_rejects_missing_mount_ns() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},
                "root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"}]}}"#,
        )
        .unwrap();
        let err = validate_spec(&spec).unwrap_err().to_string();
        assert!(err.contains("mount namespace"), "{err}");
    }
}
