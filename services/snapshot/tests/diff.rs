//! Diff round trips: change a snapshot the way a container does, Diff it, Apply the tar onto
//! the same parent, and compare the two trees entry by entry. Needs root (overlay mounts,
//! devices, owners); run with `cargo test -p berth-snapshot`.

use berth_core::Digest;
use berth_snapshot::{chain_name, Kind, Layer, Snapshots};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const NS: &str = "default";

/// One entry of a tree, as compared.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    content: Option<Digest>,
    target: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in walk order) of the same inode, for hard links.
    linked_to: Option<PathBuf>,
}

/// Every entry under `root` (not `root` itself), never following symlinks. Sockets are left
/// out: a layer cannot hold them.
fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    for p in paths {
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        if ft.is_socket() {
            continue;
        }
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "fifo"
        };
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let linked_to = if ft.is_dir() {
            None
        } else {
            let first = inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone())
                .clone();
            (first != rel).then_some(first)
        };
        let mut xattrs = BTreeMap::new();
        for name in xattr::list(&p).unwrap() {
            let n = name.to_string_lossy().into_owned();
            if n.starts_with("trusted.overlay.") || n == "security.selinux" {
                continue;
            }
            xattrs.insert(n, xattr::get(&p, &name).unwrap().unwrap_or_default());
        }
        out.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                size: if ft.is_file() { md.size() } else { 0 },
                content: ft
                    .is_file()
                    .then(|| Digest::sha256_of(&fs::read(&p).unwrap())),
                target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                rdev: md.rdev(),
                xattrs,
                linked_to,
            },
        );
    }
    out
}

fn assert_same_tree(want: &BTreeMap<PathBuf, Entry>, got: &BTreeMap<PathBuf, Entry>) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (path, w) in want {
        assert_eq!(w, &got[path], "{}", path.display());
    }
}

/// A tar built entry by entry.
struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    fn new() -> TarBuilder {
        TarBuilder(tar::Builder::new(Vec::new()))
    }
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h
    }
    fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }
    fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }
    fn owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(uid);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }
    fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = Self::header(kind, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }
    fn device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }
    fn xattr(mut self, path: &str, key: &str, value: &[u8], data: &[u8]) -> Self {
        let k = format!("SCHILY.xattr.{key}");
        self.0.append_pax_extensions([(k.as_str(), value)]).unwrap();
        self.file(path, data)
    }
    fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The image the tests change: one layer of every kind of entry.
fn base_tar() -> Vec<u8> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hello", b"hello\n")
        .file("etc/passwd", b"root:x:0:0\n")
        .file("gone.txt", b"deleted later\n")
        .dir("olddir", 0o755)
        .file("olddir/a", b"a")
        .dir("olddir/b", 0o700)
        .file("olddir/b/c", b"c")
        .dir("bin", 0o755)
        .file("bin/busybox", b"\x7fELF busybox")
        .link(tar::EntryType::Link, "bin/sh", "bin/busybox")
        .link(tar::EntryType::Symlink, "bin/ls", "busybox")
        .dir("dev", 0o755)
        .device("dev/null", 1, 3)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .owned("usr/bin/su", b"su", 0o4755, 1000)
        .xattr("noted", "user.note", b"kept", b"with an xattr")
        .file("big", &big)
        .dir("keep", 0o755)
        .file("keep/samesize.txt", b"AAAA")
        .tar()
}

fn layer(name: Option<String>, parent: Option<&str>, diff_id: Option<Digest>) -> Layer {
    Layer {
        name,
        parent: parent.map(str::to_string),
        media_type: String::new(),
        diff_id,
        labels: BTreeMap::new(),
    }
}

/// Applies the base layer; returns its chain id.
fn apply_base(s: &Snapshots, sn: &str) -> String {
    let tar = base_tar();
    let diff_id = Digest::sha256_of(&tar);
    let applied = s
        .apply(
            sn,
            NS,
            &layer(Some(diff_id.to_string()), None, Some(diff_id.clone())),
            &tar[..],
        )
        .unwrap();
    assert!(!applied.existed);
    applied.name
}

/// What a container does to its root: every kind of change a layer can express.
fn change(root: &Path) {
    let p = |s: &str| root.join(s);
    fs::write(p("new.txt"), b"new file\n").unwrap();
    fs::create_dir_all(p("newdir/deep")).unwrap();
    fs::write(p("newdir/deep/x"), b"x").unwrap();
    // Longer than ustar's 100 + 155 bytes, with a 240-byte name.
    let long = p(&format!("long/{}", "n".repeat(200)));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("f".repeat(240)), b"long name").unwrap();
    let mut hello = fs::read(p("etc/hello")).unwrap();
    hello.extend_from_slice(b"changed\n");
    fs::write(p("etc/hello"), hello).unwrap();
    fs::remove_file(p("gone.txt")).unwrap();
    // Replaced folder: overlay makes it opaque; native sees deletions.
    fs::remove_dir_all(p("olddir")).unwrap();
    fs::create_dir(p("olddir")).unwrap();
    fs::write(p("olddir/fresh"), b"fresh").unwrap();
    fs::set_permissions(p("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(p("etc/passwd"), Some(1), Some(1)).unwrap();
    xattr::set(p("etc/passwd"), "user.x", b"y").unwrap();
    fs::hard_link(p("new.txt"), p("new-link.txt")).unwrap();
    fs::hard_link(p("bin/busybox"), p("bin/bb2")).unwrap();
    fs::remove_file(p("bin/ls")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../etc", p("newdir/deep/up")).unwrap();
    nix::unistd::mkfifo(&p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    nix::sys::stat::mknod(
        &p("dev/zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    fs::rename(p("usr/bin/su"), p("usr/bin/su2")).unwrap();
    // Ids past ustar's octal fields.
    std::os::unix::fs::lchown(p("new.txt"), Some(3_000_000), Some(3_000_001)).unwrap();
    // Same size, same mtime, other bytes.
    let same = p("keep/samesize.txt");
    let before = fs::metadata(&same).unwrap();
    fs::write(&same, b"BBBB").unwrap();
    filetime::set_file_mtime(
        &same,
        filetime::FileTime::from_last_modification_time(&before),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
}

fn diff(s: &Snapshots, sn: &str, key: &str) -> Vec<u8> {
    let mut tar = Vec::new();
    s.diff(sn, NS, key, &mut tar).unwrap();
    tar
}

/// PAX records of one entry.
type Records = Vec<(String, Vec<u8>)>;

/// Names and kinds of the entries of a tar, and its PAX records by entry.
fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, Records)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type();
            let pax = e
                .pax_extensions()
                .unwrap()
                .map(|x| {
                    x.map(|x| {
                        let x = x.unwrap();
                        (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                    })
                    .collect()
                })
                .unwrap_or_default();
            (name, kind, pax)
        })
        .collect()
}

fn with_mount<T>(
    mounts: &[berth_api::types::v1::Mount],
    at: &Path,
    f: impl FnOnce(&Path) -> T,
) -> T {
    fs::create_dir_all(at).unwrap();
    berth_snapshot::mount::mount_all(mounts, at).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(at)));
    berth_snapshot::mount::unmount(at).unwrap();
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn check_tar_shape(tar: &[u8]) {
    let list = entries(tar);
    let names: Vec<&str> = list.iter().map(|(n, _, _)| n.as_str()).collect();
    for want in [
        ".wh.gone.txt",
        "bin/.wh.ls",
        "usr/bin/.wh.su",
        "usr/bin/su2",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("sock")),
        "sockets are left out"
    );
    assert!(names.contains(&"newdir/"), "parents are written as folders");
    let mut sorted = names.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "each name once");
    for (name, _, pax) in &list {
        for (k, _) in pax {
            assert!(!k.contains("trusted.overlay"), "{name}: {k}");
        }
    }
    let new = list.iter().find(|(n, _, _)| n == "new.txt").unwrap();
    assert!(new.2.iter().any(|(k, v)| k == "uid" && v == b"3000000"));
    let links = list
        .iter()
        .filter(|(_, k, _)| *k == tar::EntryType::Link)
        .count();
    assert!(links >= 2, "hard links are written as links: {names:?}");
    let long = list
        .iter()
        .find(|(n, _, _)| n.ends_with(&"f".repeat(240)))
        .unwrap();
    assert!(long.2.iter().any(|(k, _)| k == "path"));
}

#[test]
fn overlay_diff_round_trips_through_apply() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshots::open(&dir.path().join("snapshot"), "overlayfs").unwrap();
    if s.default_snapshotter() != "overlayfs" {
        return berth_core::testing::skip("overlayfs does not work here");
    }
    let base = apply_base(&s, "overlayfs");
    let mounts = s
        .prepare("overlayfs", NS, "rw", Some(&base), BTreeMap::new())
        .unwrap();
    let want = with_mount(&mounts, &dir.path().join("m"), |at| {
        change(at);
        // A root older than the apply below: its time must not reach the root's whiteouts.
        filetime::set_file_mtime(at, filetime::FileTime::from_unix_time(1_000_000_000, 0)).unwrap();
        tree(at)
    });
    assert!(want.contains_key(Path::new("olddir/fresh")));

    let tar = diff(&s, "overlayfs", "rw");
    assert_eq!(
        tar,
        diff(&s, "overlayfs", "rw"),
        "the same change gives the same tar"
    );
    assert_eq!(tar.len() % 512, 0);
    check_tar_shape(&tar);
    let names: Vec<String> = entries(&tar).into_iter().map(|(n, _, _)| n).collect();
    assert!(
        names.contains(&"olddir/.wh..wh..opq".to_string()),
        "{names:?}"
    );

    let applied = s
        .apply("overlayfs", NS, &layer(None, Some(&base), None), &tar[..])
        .unwrap();
    assert!(!applied.existed);
    assert_eq!(applied.diff_id, Digest::sha256_of(&tar));
    assert_eq!(applied.name, chain_name(Some(&base), &applied.diff_id));
    let info = s.stat("overlayfs", NS, &applied.name).unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::Committed, Some(base.as_str()))
    );

    let view = s
        .view(
            "overlayfs",
            NS,
            "check",
            Some(&applied.name),
            BTreeMap::new(),
        )
        .unwrap();
    let got = with_mount(&view, &dir.path().join("v"), tree);
    assert_same_tree(&want, &got);

    // The committed layer diffs to the same tar; applying it again changes nothing.
    assert_eq!(diff(&s, "overlayfs", &applied.name), tar);
    let again = s
        .apply("overlayfs", NS, &layer(None, Some(&base), None), &tar[..])
        .unwrap();
    assert!(again.existed);
    assert_eq!(again.name, applied.name);
}

#[test]
fn native_diff_round_trips_through_apply() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshots::open(&dir.path().join("snapshot"), "native").unwrap();
    let base = apply_base(&s, "native");
    let mounts = s
        .prepare("native", NS, "rw", Some(&base), BTreeMap::new())
        .unwrap();
    let rw = PathBuf::from(&mounts[0].source);
    change(&rw);
    let want = tree(&rw);

    let tar = diff(&s, "native", "rw");
    assert_eq!(tar, diff(&s, "native", "rw"));
    check_tar_shape(&tar);
    let names: Vec<String> = entries(&tar).into_iter().map(|(n, _, _)| n).collect();
    assert!(
        names.contains(&"keep/samesize.txt".to_string()),
        "same size and mtime, other bytes: {names:?}"
    );
    assert!(names.contains(&"olddir/.wh.a".to_string()), "{names:?}");
    assert!(
        !names.contains(&"big".to_string()),
        "unchanged files stay out: {names:?}"
    );
    assert!(!names.contains(&"./".to_string()));

    let applied = s
        .apply("native", NS, &layer(None, Some(&base), None), &tar[..])
        .unwrap();
    let view = s
        .view("native", NS, "check", Some(&applied.name), BTreeMap::new())
        .unwrap();
    let got = tree(Path::new(&view[0].source));
    assert_same_tree(&want, &got);
    assert_eq!(
        fs::read(Path::new(&view[0].source).join("keep/samesize.txt")).unwrap(),
        b"BBBB"
    );

    // An unchanged copy has an empty diff: just the end marker.
    s.prepare("native", NS, "untouched", Some(&base), BTreeMap::new())
        .unwrap();
    assert_eq!(diff(&s, "native", "untouched"), vec![0u8; 1024]);
    // So has a view.
    assert_eq!(diff(&s, "native", "check"), vec![0u8; 1024]);
}

#[test]
fn a_snapshot_without_parent_diffs_to_all_of_it() {
    for sn in ["native", "overlayfs"] {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::open(&dir.path().join("snapshot"), sn).unwrap();
        if s.default_snapshotter() != sn {
            continue;
        }
        let base = apply_base(&s, sn);
        let tar = diff(&s, sn, &base);
        let applied = s
            .apply(sn, "other", &layer(None, None, None), &tar[..])
            .unwrap();
        let root = |ns: &str, name: &str, key: &str| {
            let v = s.view(sn, ns, key, Some(name), BTreeMap::new()).unwrap();
            PathBuf::from(&v[0].source)
        };
        assert_same_tree(
            &tree(&root(NS, &base, "v1")),
            &tree(&root("other", &applied.name, "v2")),
        );
        assert_eq!(diff(&s, sn, &base), tar, "{sn}");
    }
}

#[test]
fn symlinks_are_never_followed_out_of_the_snapshot() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"host secret").unwrap();
    for sn in ["native", "overlayfs"] {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::open(&dir.path().join("snapshot"), sn).unwrap();
        if s.default_snapshotter() != sn {
            continue;
        }
        let mounts = s.prepare(sn, NS, "rw", None, BTreeMap::new()).unwrap();
        let rw = PathBuf::from(&mounts[0].source);
        std::os::unix::fs::symlink(outside.path(), rw.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), rw.join("file")).unwrap();
        let tar = diff(&s, sn, "rw");
        let list = entries(&tar);
        assert_eq!(
            list.len(),
            2,
            "{sn}: {:?}",
            list.iter().map(|e| &e.0).collect::<Vec<_>>()
        );
        assert!(list.iter().all(|(_, k, _)| *k == tar::EntryType::Symlink));
        assert!(!tar.windows(11).any(|w| w == b"host secret"));
    }
}

#[test]
fn diff_of_a_missing_snapshot_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshots::open(&dir.path().join("snapshot"), "native").unwrap();
    let e = s.diff("", NS, "nope", &mut Vec::new()).unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[test]
fn big_files_and_non_utf8_names_survive() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshots::open(&dir.path().join("snapshot"), "native").unwrap();
    let mounts = s
        .prepare("native", NS, "rw", None, BTreeMap::new())
        .unwrap();
    let rw = PathBuf::from(&mounts[0].source);
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    fs::write(rw.join("five-mb"), &data).unwrap();
    fs::write(rw.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name").unwrap();
    let tar = diff(&s, "native", "rw");
    let applied = s
        .apply("native", NS, &layer(None, None, None), &tar[..])
        .unwrap();
    let v = s
        .view("native", NS, "v", Some(&applied.name), BTreeMap::new())
        .unwrap();
    assert_same_tree(&tree(&rw), &tree(Path::new(&v[0].source)));
    let mut f = fs::File::open(Path::new(&v[0].source).join("five-mb")).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert!(back == data);
}

#[test]
fn a_snapshot_changing_under_the_diff_gives_well_formed_tars_and_never_the_host() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"host secret").unwrap();
    for sn in ["native", "overlayfs"] {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::open(&dir.path().join("snapshot"), sn).unwrap();
        if s.default_snapshotter() != sn {
            continue;
        }
        let mounts = s.prepare(sn, NS, "rw", None, BTreeMap::new()).unwrap();
        let rw = PathBuf::from(&mounts[0].source);
        fs::create_dir(rw.join("d")).unwrap();
        for i in 0..50 {
            fs::write(rw.join("d").join(format!("f{i}")), vec![b'a'; 1000 + i]).unwrap();
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (mut ok, mut failed) = (0, 0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // A folder swapped for a link to the host, and back; a file that changes size.
                    fs::rename(rw.join("d"), rw.join("saved")).unwrap();
                    std::os::unix::fs::symlink(outside.path(), rw.join("d")).unwrap();
                    fs::write(rw.join("grows"), vec![b'g'; n % 200_000]).unwrap();
                    fs::remove_file(rw.join("d")).unwrap();
                    fs::rename(rw.join("saved"), rw.join("d")).unwrap();
                    n += 7919;
                }
            });
            for _ in 0..40 {
                let mut tar = Vec::new();
                match s.diff(sn, NS, "rw", &mut tar) {
                    Ok(_) => {
                        ok += 1;
                        let mut a = tar::Archive::new(&tar[..]);
                        for e in a.entries().unwrap() {
                            let mut e = e.unwrap();
                            let mut data = Vec::new();
                            e.read_to_end(&mut data).unwrap();
                            assert_eq!(data.len() as u64, e.header().size().unwrap());
                            assert!(!data.windows(11).any(|w| w == b"host secret"));
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{sn}: {e}");
                    }
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(ok > failed, "{sn}: {ok} diffs, {failed} failed");
    }
}
