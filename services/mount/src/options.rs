//! Mount options in OCI/fstab words (`ro`, `rbind`, `nosuid`, `rslave`, `mode=755`…) split into
//! what `mount(2)` takes: flags, propagation changes (applied by a mount call of their own
//! after the mount), and the filesystem-specific data string (every word that is neither).

use nix::mount::MsFlags;

/// Mount options split into what `mount(2)` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes to apply after the mount, in order.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific data (`mode=755,size=65536k`, `lowerdir=…`).
    pub data: String,
}

impl MountOptions {
    /// Whether this is a bind mount (`bind` or `rbind`).
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// The data string as `mount(2)` wants it (None when empty).
    pub fn data(&self) -> Option<&str> {
        if self.data.is_empty() {
            None
        } else {
            Some(&self.data)
        }
    }
}

/// Parses OCI/fstab-style mount options.
pub fn parse_options<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        let o = o.as_ref();
        let (set, clear) = match o {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" | "rro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "private" => {
                propagation.push(MsFlags::MS_PRIVATE);
                continue;
            }
            "rprivate" => {
                propagation.push(MsFlags::MS_PRIVATE | MsFlags::MS_REC);
                continue;
            }
            "shared" => {
                propagation.push(MsFlags::MS_SHARED);
                continue;
            }
            "rshared" => {
                propagation.push(MsFlags::MS_SHARED | MsFlags::MS_REC);
                continue;
            }
            "slave" => {
                propagation.push(MsFlags::MS_SLAVE);
                continue;
            }
            "rslave" => {
                propagation.push(MsFlags::MS_SLAVE | MsFlags::MS_REC);
                continue;
            }
            "unbindable" => {
                propagation.push(MsFlags::MS_UNBINDABLE);
                continue;
            }
            "runbindable" => {
                propagation.push(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC);
                continue;
            }
            other => {
                data.push(other);
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    MountOptions {
        flags,
        propagation,
        data: data.join(","),
    }
}

/// Parses a propagation keyword (`rslave`, `private`, …).
pub fn parse_propagation(s: &str) -> Option<MsFlags> {
    parse_options(&[s]).propagation.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(o.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
        let o = parse_options(&["rbind", "ro", "rprivate"]);
        assert!(o.is_bind());
        assert!(o.flags.contains(MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let o = parse_options(&["ro", "rw"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(o.data(), None);
        assert_eq!(
            parse_propagation("rslave"),
            Some(MsFlags::MS_SLAVE | MsFlags::MS_REC)
        );
    }

    #[test]
    fn flags_and_data_are_split() {
        let o = parse_options(&["ro", "rbind", "lowerdir=a:b"]);
        assert!(o
            .flags
            .contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC));
        assert_eq!(o.data, "lowerdir=a:b");
    }
}
