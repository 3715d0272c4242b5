//! Volumes: folders under `<root>/volumes/<ns>/<name>/_data` that outlive containers, and the
//! container's `-v SRC:DST[:ro|rw]` binds.
//!
//! A bind whose source is absolute is a bind mount of that host path (which must exist);
//! otherwise the source names a volume, created on first use. Every `VOLUME` of the image not
//! covered by a bind gets an anonymous volume (a 64-hex name). All of them reach the shim as
//! `rbind` mounts in the spec and show in `Container.mounts`.
//!
//! A volume that is empty when a container is created with it is filled with what the image
//! has at its destination (Docker's copy-up), read from the snapshot's layer folders: bottom
//! layer first, overlay whiteouts and opaque folders honoured, never following a symlink out of
//! a layer.
//!
//! [`Volumes`] owns `<root>/volumes` and the volume records; the gRPC shell over it is
//! [`crate::grpc::volumes`].

use crate::error::{Error, Result};
use crate::events::Events;
use crate::metadata::Store;
use berth_api::containers::v1::{Container, MountPoint};
use berth_api::volumes::v1::Volume;
use oci_spec::runtime::{MountBuilder, Spec};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One `-v` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// A host path (absolute), a volume name, or empty for an anonymous volume.
    pub source: String,
    pub destination: String,
    pub rw: bool,
    /// Mount propagation (`rprivate` when empty); only for host paths.
    pub propagation: String,
}

/// The mount propagation modes a bind takes (Docker's `bind-propagation`).
pub const PROPAGATIONS: [&str; 6] = [
    "rprivate", "private", "rslave", "slave", "rshared", "shared",
];

impl Bind {
    pub fn is_host_path(&self) -> bool {
        self.source.starts_with('/')
    }
}

/// Checks a volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, as Docker allows.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "\"{name}\" includes invalid characters for a local volume name, only \
             \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host \
             directory, use absolute path"
        )))
    }
}

/// Parses `SRC:DST[:OPTIONS]` (or `DST` alone: an anonymous volume); OPTIONS is Docker's
/// comma-separated list of `ro` or `rw` and, for a host path, one propagation mode
/// (`/src:/dst:ro,rslave`).
pub fn parse_bind(spec: &str) -> Result<Bind> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!("invalid volume specification: '{spec}': {why}"))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [dst] => ("", *dst, None),
        [src, dst] => (*src, *dst, None),
        [src, dst, mode] => (*src, *dst, Some(*mode)),
        _ => return Err(bad("expected SRC:DST[:ro|rw]")),
    };
    if !destination.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    if clean(destination) == "/" {
        return Err(bad("the destination cannot be /"));
    }
    let mut rw = None;
    let mut propagation = None;
    for option in mode.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        let (slot, value) = match option {
            "rw" => (&mut rw, true),
            "ro" => (&mut rw, false),
            p if PROPAGATIONS.contains(&p) => {
                if propagation.replace(p).is_some() {
                    return Err(bad("more than one propagation mode"));
                }
                continue;
            }
            m => return Err(bad(&format!("invalid mode: {m}"))),
        };
        if slot.replace(value).is_some() {
            return Err(bad("ro and rw are exclusive"));
        }
    }
    if !source.is_empty() && !source.starts_with('/') {
        validate_volume_name(source)?;
    }
    if propagation.is_some() && !source.starts_with('/') {
        return Err(bad(
            "a propagation mode applies to a bind of a host path only",
        ));
    }
    Ok(Bind {
        source: source.to_string(),
        destination: clean(destination),
        rw: rw.unwrap_or(true),
        propagation: propagation.unwrap_or_default().to_string(),
    })
}

/// A shared bind needs its source on a shared mount (else nothing would propagate back to
/// the host), a slave one on a shared or slave mount, as Docker and containerd check.
/// `mountinfo` is the text of `/proc/self/mountinfo` of the runtime, on the containers' host.
fn check_propagation(b: &Bind, mountinfo: &str) -> Result<()> {
    let wants_shared = b.propagation.ends_with("shared");
    if !wants_shared && !b.propagation.ends_with("slave") {
        return Ok(());
    }
    let source = std::fs::canonicalize(&b.source).unwrap_or_else(|_| PathBuf::from(&b.source));
    // The mount holding the source: the longest mount point above it, the last one listed
    // when several are stacked there.
    let mut holder: Option<(PathBuf, bool, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        let point = PathBuf::from(crate::bundle::unescape_mountinfo(point));
        if !source.starts_with(&point) {
            continue;
        }
        if holder
            .as_ref()
            .is_some_and(|(h, _, _)| h.components().count() > point.components().count())
        {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let (mut shared, mut slave) = (false, false);
        for f in optional {
            shared |= f.starts_with("shared:");
            slave |= f.starts_with("master:");
        }
        holder = Some((point, shared, slave));
    }
    let Some((point, shared, slave)) = holder else {
        return Ok(());
    };
    let what = if wants_shared {
        "shared"
    } else {
        "shared or slave"
    };
    if shared || (!wants_shared && slave) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "bind {} with propagation {}: the path is on mount {} which is not a {what} mount \
         (make it one: mount --make-rshared {})",
        b.source,
        b.propagation,
        point.display(),
        point.display()
    )))
}

/// One `--tmpfs DST[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub destination: String,
    /// Mount options: Docker's `noexec,nosuid,nodev`, then the given ones (which may undo
    /// them: `exec`).
    pub options: Vec<String>,
}

/// Parses `DST[:OPTIONS]`; the destination is cleaned like a bind's, options are checked
/// against what a tmpfs takes.
pub fn parse_tmpfs(spec: &str) -> Result<Tmpfs> {
    let bad =
        |why: &str| Error::InvalidArgument(format!("invalid tmpfs specification: '{spec}': {why}"));
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !dst.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    let destination = clean(dst);
    if destination == "/" {
        return Err(bad("the destination cannot be /"));
    }
    let mut options: Vec<String> = ["noexec", "nosuid", "nodev"].map(String::from).to_vec();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let key = o.split_once('=').map_or(o, |(k, _)| k);
        let known = matches!(
            key,
            "size" | "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks" | "huge" | "mpol"
        ) && o.contains('=')
            || matches!(
                o,
                "ro" | "rw"
                    | "exec"
                    | "noexec"
                    | "suid"
                    | "nosuid"
                    | "dev"
                    | "nodev"
                    | "atime"
                    | "noatime"
                    | "diratime"
                    | "nodiratime"
                    | "relatime"
                    | "norelatime"
                    | "strictatime"
                    | "sync"
                    | "async"
                    | "dirsync"
            );
        if !known {
            return Err(bad(&format!("unknown option {o:?}")));
        }
        options.push(o.to_string());
    }
    Ok(Tmpfs {
        destination,
        options,
    })
}

/// Adds the tmpfs mounts to the spec, replacing a default one on the same destination.
pub fn add_tmpfs_to_spec(spec: &mut Spec, tmpfs: &[Tmpfs]) -> Result<()> {
    let mut all = spec.mounts().clone().unwrap_or_default();
    for t in tmpfs {
        all.retain(|x| x.destination() != Path::new(&t.destination));
        all.push(
            MountBuilder::default()
                .destination(&t.destination)
                .typ("tmpfs")
                .source("tmpfs")
                .options(t.options.clone())
                .build()
                .map_err(|e| Error::Spec(e.to_string()))?,
        );
    }
    spec.set_mounts(Some(all));
    Ok(())
}

/// Parses every `-v` entry; two on the same destination are refused.
pub fn parse_binds(binds: &[String]) -> Result<Vec<Bind>> {
    let mut out: Vec<Bind> = Vec::new();
    for b in binds {
        let bind = parse_bind(b)?;
        if out.iter().any(|o| o.destination == bind.destination) {
            return Err(Error::InvalidArgument(format!(
                "Duplicate mount point: {}",
                bind.destination
            )));
        }
        out.push(bind);
    }
    Ok(out)
}

/// An absolute path inside the container, cleaned lexically from the container's `/` as
/// Docker does (Go's `filepath.Clean`): no `.`, no doubled or trailing slashes, and `..` never
/// climbs above `/` (`/../../etc` is `/etc`). Every destination from a flag, an API client or
/// an image config goes through here, so none can name a place outside the container's root.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Adds the container's mounts to its spec, as `rbind` mounts (read-only when asked).
pub fn add_to_spec(spec: &mut Spec, mounts: &[MountPoint]) -> Result<()> {
    let mut all = spec.mounts().clone().unwrap_or_default();
    for m in mounts {
        // A mount on the same destination as a default one replaces it.
        all.retain(|x| x.destination() != Path::new(&m.destination));
        let propagation = if m.propagation.is_empty() {
            "rprivate"
        } else {
            &m.propagation
        };
        let options = vec![
            "rbind".to_string(),
            propagation.to_string(),
            if m.rw { "rw" } else { "ro" }.to_string(),
        ];
        all.push(
            MountBuilder::default()
                .destination(&m.destination)
                .typ("bind")
                .source(&m.source)
                .options(options)
                .build()
                .map_err(|e| Error::Spec(e.to_string()))?,
        );
    }
    spec.set_mounts(Some(all));
    Ok(())
}

/// The volumes of this runtime: their folders, their records, their users.
#[derive(Debug)]
pub struct Volumes {
    /// The runtime's persistent folder (volumes are under `<root>/volumes`).
    root: PathBuf,
    store: Store,
    events: Arc<Events>,
}

impl Volumes {
    /// The volumes under `root` (the runtime's folder), recorded in `store`.
    pub fn new(root: &Path, store: Store, events: Arc<Events>) -> Volumes {
        Volumes {
            root: root.to_path_buf(),
            store,
            events,
        }
    }

    /// The records the volumes are kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `<root>/volumes/<ns>/<name>`.
    fn volume_dir(&self, ns: &str, name: &str) -> PathBuf {
        self.root.join("volumes").join(ns).join(name)
    }

    /// Creates a volume (its folder, then its record). An existing one is returned as it is.
    pub fn create_volume(
        &self,
        ns: &str,
        name: &str,
        labels: HashMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume> {
        validate_volume_name(name)?;
        if let Some(v) = self.store.get_volume(ns, name)? {
            return Ok(v);
        }
        let data = self.volume_dir(ns, name).join("_data");
        // The folders above `_data` are root's alone (0700): the host's other users cannot
        // reach a volume's files whatever modes the container gives them.
        let volumes = self.root.join("volumes");
        for dir in [volumes.clone(), volumes.join(ns), self.volume_dir(ns, name)] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| Error::io("cannot create volume", &dir, e))?;
        }
        std::fs::create_dir_all(&data).map_err(|e| Error::io("cannot create volume", &data, e))?;
        let volume = Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: data.display().to_string(),
            created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            labels,
            anonymous,
            ref_count: 0,
            size: -1,
        };
        if !self.store.create_volume(ns, &volume)? {
            // Created meanwhile by another request: that one stands.
            if let Some(v) = self.store.get_volume(ns, name)? {
                return Ok(v);
            }
        }
        tracing::info!(volume = %name, "volume created");
        self.events.publish(
            ns,
            "volume",
            "create",
            name,
            [("driver".to_string(), "local".to_string())].into(),
        );
        Ok(volume)
    }

    /// The mounts of a new container: its binds (creating named volumes on first use), then an
    /// anonymous volume for each of the image's volumes that no bind covers.
    pub fn container_mounts(
        &self,
        ns: &str,
        binds: &[Bind],
        image_volumes: &[String],
    ) -> Result<Vec<MountPoint>> {
        let mut out = Vec::new();
        for b in binds {
            if b.is_host_path() {
                if !Path::new(&b.source).exists() {
                    return Err(Error::InvalidArgument(format!(
                        "invalid mount config for type \"bind\": bind source path does not \
                         exist: {}",
                        b.source
                    )));
                }
                if !b.propagation.is_empty() {
                    let info = std::fs::read_to_string("/proc/self/mountinfo")
                        .map_err(|e| Error::io("cannot read", "/proc/self/mountinfo", e))?;
                    check_propagation(b, &info)?;
                }
                out.push(MountPoint {
                    r#type: "bind".into(),
                    name: String::new(),
                    source: b.source.clone(),
                    destination: b.destination.clone(),
                    rw: b.rw,
                    propagation: if b.propagation.is_empty() {
                        "rprivate".into()
                    } else {
                        b.propagation.clone()
                    },
                });
                continue;
            }
            let (name, anonymous) = if b.source.is_empty() {
                (crate::containers::new_id()?, true)
            } else {
                (b.source.clone(), false)
            };
            let v = self.create_volume(ns, &name, HashMap::new(), anonymous)?;
            out.push(MountPoint {
                r#type: "volume".into(),
                name: v.name,
                source: v.mountpoint,
                destination: b.destination.clone(),
                rw: b.rw,
                propagation: String::new(),
            });
        }
        for dst in image_volumes {
            let dst = clean(dst);
            if dst == "/" {
                return Err(Error::InvalidArgument(format!(
                    "the image declares VOLUME {dst:?}, which is the container's root: a volume \
                     cannot be mounted on /"
                )));
            }
            if out.iter().any(|m: &MountPoint| m.destination == dst) {
                continue;
            }
            let v = self.create_volume(ns, &crate::containers::new_id()?, HashMap::new(), true)?;
            out.push(MountPoint {
                r#type: "volume".into(),
                name: v.name,
                source: v.mountpoint,
                destination: dst,
                rw: true,
                propagation: String::new(),
            });
        }
        Ok(out)
    }

    /// The containers that use volume `name`.
    fn volume_users(&self, ns: &str, name: &str) -> Result<Vec<String>> {
        Ok(self
            .store
            .list(ns)?
            .into_iter()
            .filter(|c| {
                c.mounts
                    .iter()
                    .any(|m| m.r#type == "volume" && m.name == name)
            })
            .map(|c| c.id)
            .collect())
    }

    /// Removes a volume; refused while a container uses it, unless `force`.
    pub fn remove_volume(&self, ns: &str, name: &str, force: bool) -> Result<()> {
        if self.store.get_volume(ns, name)?.is_none() {
            return Err(Error::NotFound(format!("get {name}: no such volume")));
        }
        let users = self.volume_users(ns, name)?;
        if !users.is_empty() && !force {
            return Err(Error::FailedPrecondition(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        let dir = self.volume_dir(ns, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove volume", dir, e)),
        }
        self.store.delete_volume(ns, name)?;
        tracing::info!(volume = %name, "volume removed");
        self.events
            .publish(ns, "volume", "destroy", name, HashMap::new());
        Ok(())
    }

    /// Removes the anonymous volumes of a container that is being deleted (those no other
    /// container uses).
    pub(crate) fn remove_anonymous_volumes(&self, ns: &str, container: &Container) {
        for m in container.mounts.iter().filter(|m| m.r#type == "volume") {
            let anonymous =
                matches!(self.store.get_volume(ns, &m.name), Ok(Some(v)) if v.anonymous);
            if !anonymous {
                continue;
            }
            let users = self.volume_users(ns, &m.name).unwrap_or_default();
            if users.iter().any(|u| *u != container.id) {
                continue;
            }
            if let Err(e) = self.remove_volume(ns, &m.name, true) {
                tracing::warn!(volume = %m.name, error = %e, "cannot remove anonymous volume");
            }
        }
    }

    /// The volumes of `ns` with how many containers use each (`ref_count`), and with `usage`
    /// the bytes in each (`size`; -1 without).
    pub fn list_with_usage(&self, ns: &str, usage: bool) -> Result<Vec<Volume>> {
        let containers = self.store.list(ns)?;
        let mut volumes = self.store.list_volumes(ns)?;
        for v in &mut volumes {
            v.ref_count = ref_count(&containers, &v.name);
            v.size = if usage {
                dir_size(&self.volume_dir(ns, &v.name)) as i64
            } else {
                -1
            };
        }
        Ok(volumes)
    }

    /// One volume with its `ref_count`.
    pub fn get_volume(&self, ns: &str, name: &str) -> Result<Volume> {
        let mut v = self
            .store
            .get_volume(ns, name)?
            .ok_or_else(|| Error::NotFound(format!("get {name}: no such volume")))?;
        v.ref_count = ref_count(&self.store.list(ns)?, name);
        v.size = -1;
        Ok(v)
    }

    /// Removes the volumes of `ns` no container uses: anonymous ones, or all with `all`,
    /// that pass the label `filters` (`label=K[=V]`, `label!=K[=V]`; `all=true` as `all`).
    /// Gives their names and the bytes freed.
    pub fn prune_volumes(
        &self,
        ns: &str,
        all: bool,
        filters: &[String],
    ) -> Result<(Vec<String>, u64)> {
        let mut all = all;
        let mut label_tests = Vec::new();
        for f in filters {
            let test = match f.split_once('=') {
                Some(("all", v)) => {
                    all |= matches!(v, "true" | "1");
                    continue;
                }
                Some(("label", v)) => (true, v),
                Some(("label!", v)) => (false, v),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid filter {f:?} (volume prune filters: label=K[=V], label!=K[=V], all=true)"
                    )))
                }
            };
            label_tests.push(test);
        }
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for v in self.list_with_usage(ns, false)? {
            let labelled = |want: &str| match want.split_once('=') {
                Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
                None => v.labels.contains_key(want),
            };
            let unused = v.ref_count == 0 && (all || v.anonymous);
            if !unused || !label_tests.iter().all(|(has, want)| labelled(want) == *has) {
                continue;
            }
            let size = dir_size(&self.volume_dir(ns, &v.name));
            match self.remove_volume(ns, &v.name, false) {
                Ok(()) => {
                    reclaimed += size;
                    deleted.push(v.name);
                }
                // Taken into use meanwhile: not unused any more.
                Err(Error::FailedPrecondition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, reclaimed))
    }
}

/// How many of `containers` mount volume `name`.
fn ref_count(containers: &[Container], name: &str) -> u32 {
    containers
        .iter()
        .filter(|c| {
            c.mounts
                .iter()
                .any(|m| m.r#type == "volume" && m.name == name)
        })
        .count() as u32
}

/// The bytes of the regular files under `dir` (symlinks not followed); 0 if unreadable.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse() {
        assert_eq!(
            parse_bind("/host/dir:/data:ro").unwrap(),
            Bind {
                source: "/host/dir".into(),
                destination: "/data".into(),
                rw: false,
                propagation: String::new(),
            }
        );
        let b = parse_bind("/host/dir:/data:rshared,ro").unwrap();
        assert_eq!((b.rw, b.propagation.as_str()), (false, "rshared"));
        assert_eq!(parse_bind("/h:/d:rslave").unwrap().propagation, "rslave");
        let b = parse_bind("myvol:/var/lib/x/").unwrap();
        assert_eq!(
            (b.source.as_str(), b.destination.as_str(), b.rw),
            ("myvol", "/var/lib/x", true)
        );
        assert!(!b.is_host_path());
        assert_eq!(parse_bind("/data").unwrap().source, "");
        assert_eq!(parse_bind("v1:/../../x/./y/..").unwrap().destination, "/x");
        assert_eq!(clean("/../../../../etc//passwd/"), "/etc/passwd");
        assert_eq!(clean("relative/../../x"), "/x");
        for bad in [
            "a:b",
            "vol:/x:rx",
            "-bad:/x",
            "v:/",
            "v:/a/../..",
            "a:b:c:d",
            "x:/y",
            "/h:/d:ro,rw",
            "/h:/d:rshared,rslave",
            "vol:/d:rshared",
            "/h:/d:bogus",
        ] {
            let e = parse_bind(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        assert!(parse_binds(&["a1:/x".into(), "b1:/x/".into()]).is_err());
    }

    #[test]
    fn propagation_needs_a_shared_source() {
        let info = "21 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
                    30 21 8:1 /v /srv/vol rw,relatime shared:5 - ext4 /dev/vda rw\n\
                    31 21 8:1 /w /srv/slave rw,relatime master:5 - ext4 /dev/vda rw\n";
        let bind = |src: &str, p: &str| Bind {
            source: src.into(),
            destination: "/d".into(),
            rw: true,
            propagation: p.into(),
        };
        assert!(check_propagation(&bind("/srv/vol/x", "rshared"), info).is_ok());
        assert!(check_propagation(&bind("/srv/slave", "rslave"), info).is_ok());
        assert!(check_propagation(&bind("/srv/other", "rprivate"), info).is_ok());
        let e = check_propagation(&bind("/srv/slave/x", "rshared"), info).unwrap_err();
        assert!(e.to_string().contains("/srv/slave"), "{e}");
        let e = check_propagation(&bind("/srv/other", "rslave"), info).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn tmpfs_specs_parse() {
        let t = parse_tmpfs("/../run//x/:size=64m,mode=1777,exec").unwrap();
        assert_eq!(t.destination, "/run/x");
        assert_eq!(
            t.options,
            ["noexec", "nosuid", "nodev", "size=64m", "mode=1777", "exec"]
        );
        assert_eq!(parse_tmpfs("/t").unwrap().options.len(), 3);
        for bad in ["t", "/", "/a/..", "/x:bogus", "/x:size", "/x:mode=1,loop"] {
            let e = parse_tmpfs(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn spec_gets_rbind_mounts() {
        let mut spec = Spec::default();
        add_to_spec(
            &mut spec,
            &[MountPoint {
                r#type: "volume".into(),
                name: "v".into(),
                source: "/var/lib/berth/runtime/volumes/default/v/_data".into(),
                destination: "/data".into(),
                rw: false,
                propagation: String::new(),
            }],
        )
        .unwrap();
        let m = spec.mounts().as_ref().unwrap();
        let last = m.last().unwrap();
        assert_eq!(last.destination(), Path::new("/data"));
        assert_eq!(
            last.options().as_ref().unwrap(),
            &vec!["rbind".to_string(), "rprivate".into(), "ro".into()]
        );
    }

    #[tokio::test]
    async fn volumes_are_created_used_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events = Arc::new(Events::new(Default::default(), store.clone()));
        let rt = Volumes::new(dir.path(), store.clone(), events);
        let binds = parse_binds(&["data:/data".into(), "/tmp:/host:ro".into()]).unwrap();
        let mounts = rt
            .container_mounts("default", &binds, &["/data".into(), "/cache".into()])
            .unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            (mounts[0].r#type.as_str(), mounts[0].name.as_str()),
            ("volume", "data")
        );
        assert!(Path::new(&mounts[0].source).is_dir());
        assert!(mounts[0].source.ends_with("volumes/default/data/_data"));
        assert_eq!((mounts[1].r#type.as_str(), mounts[1].rw), ("bind", false));
        assert_eq!(mounts[2].destination, "/cache");
        assert_eq!(mounts[2].name.len(), 64);
        let anon = store
            .get_volume("default", &mounts[2].name)
            .unwrap()
            .unwrap();
        assert!(anon.anonymous);

        let missing = parse_binds(&["/no/such/dir:/x".into()]).unwrap();
        assert_eq!(
            rt.container_mounts("default", &missing, &[])
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );

        let c = Container {
            id: "c1".into(),
            name: "c1".into(),
            mounts: mounts.clone(),
            ..Default::default()
        };
        store.create("default", &c).unwrap();
        let e = rt.remove_volume("default", "data", false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("volume is in use"));
        rt.remove_anonymous_volumes("default", &c);
        assert!(store
            .get_volume("default", &mounts[2].name)
            .unwrap()
            .is_none());
        assert!(store.get_volume("default", "data").unwrap().is_some());
        store.delete("default", "c1").unwrap();
        rt.remove_volume("default", "data", false).unwrap();
        assert!(!Path::new(&mounts[0].source).exists());
        assert_eq!(
            rt.remove_volume("default", "data", false)
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
    }

    #[tokio::test]
    async fn prune_takes_unused_volumes_anonymous_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events = Arc::new(Events::new(Default::default(), store.clone()));
        let rt = Volumes::new(dir.path(), store.clone(), events);
        let labelled = [("keep".to_string(), "1".to_string())].into();
        let named = rt
            .create_volume("default", "named", labelled, false)
            .unwrap();
        std::fs::write(Path::new(&named.mountpoint).join("f"), b"12345").unwrap();
        rt.create_volume("default", "anon", HashMap::new(), true)
            .unwrap();
        rt.create_volume("default", "used", HashMap::new(), true)
            .unwrap();
        let used = parse_binds(&["used:/u".into()]).unwrap();
        let c = Container {
            id: "c1".into(),
            mounts: rt.container_mounts("default", &used, &[]).unwrap(),
            ..Default::default()
        };
        store.create("default", &c).unwrap();
        let listed = rt.list_with_usage("default", true).unwrap();
        let by_name = |n: &str| listed.iter().find(|v| v.name == n).unwrap().clone();
        assert_eq!((by_name("used").ref_count, by_name("named").size), (1, 5));
        assert_eq!(rt.get_volume("default", "used").unwrap().ref_count, 1);

        let (deleted, _) = rt.prune_volumes("default", false, &[]).unwrap();
        assert_eq!(
            deleted,
            ["anon"],
            "only unused anonymous volumes without all"
        );
        let (deleted, _) = rt
            .prune_volumes("default", true, &["label!=keep".into()])
            .unwrap();
        assert!(deleted.is_empty(), "the label filter keeps named");
        let (deleted, bytes) = rt
            .prune_volumes(
                "default",
                false,
                &["all=true".into(), "label=keep=1".into()],
            )
            .unwrap();
        assert_eq!((deleted, bytes), (vec!["named".to_string()], 5));
        assert!(rt
            .prune_volumes("default", true, &["size=1".into()])
            .is_err());
        assert!(store.get_volume("default", "used").unwrap().is_some());
    }
}
