//! The in-process [`Snapshots`] domain: restarts after a crash, and long layer chains.

use berth_core::digest::chain_id;
use berth_core::Digest;
use berth_snapshot::{Kind, Layer, Snapshots};
use std::collections::BTreeMap;
use std::path::Path;

fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

/// Opens a root that was open a moment ago in this process. sled's background threads may
/// hold the database lock briefly after the database is dropped (a new berthd process never
/// meets this), so a busy lock is retried for a while.
fn reopen(root: &Path, snapshotter: &str) -> Snapshots {
    let start = std::time::Instant::now();
    loop {
        match Snapshots::open(root, snapshotter) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("lock") && start.elapsed().as_secs() < 5 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn apply(
    s: &Snapshots,
    sn: &str,
    tar: &[u8],
    parent: Option<&Digest>,
    diff_ids: &mut Vec<Digest>,
) -> Digest {
    let diff_id = Digest::sha256_of(tar);
    diff_ids.push(diff_id.clone());
    let name = chain_id(diff_ids.iter()).unwrap();
    let layer = Layer {
        name: Some(name.to_string()),
        parent: parent.map(|p| p.to_string()),
        media_type: String::new(),
        diff_id: Some(diff_id),
        labels: BTreeMap::new(),
    };
    let applied = s.apply(sn, "default", &layer, tar).unwrap();
    assert!(!applied.existed);
    name
}

#[test]
fn a_restart_cleans_up_half_done_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshot");
    {
        let s = Snapshots::open(&root, "native").unwrap();
        s.prepare("native", "default", "kept", None, BTreeMap::new())
            .unwrap();
        s.prepare("native", "default", "lost", None, BTreeMap::new())
            .unwrap();
    }
    let snaps = root.join("native/snapshots");
    let mut ids: Vec<u64> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    // As if killed between making a folder and recording it, and a folder lost by hand.
    std::fs::create_dir_all(snaps.join("424242/fs/usr")).unwrap();
    std::fs::remove_dir_all(snaps.join(ids[1].to_string())).unwrap();

    let s = reopen(&root, "native");
    let names: Vec<String> = s
        .list("native", "default")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["kept"]);
    assert!(!snaps.join("424242").exists());
    assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 1);
    // New ids never reuse old ones.
    s.prepare("native", "default", "next", None, BTreeMap::new())
        .unwrap();
    let newest = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert!(newest > ids[1], "{newest} reuses an old id");
}

#[test]
fn a_restart_removes_interrupted_extractions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshot");
    {
        let s = Snapshots::open(&root, "native").unwrap();
        let mut labels = BTreeMap::new();
        labels.insert(
            berth_snapshot::snapshots::EXTRACTING_LABEL.to_string(),
            "sha256:x".to_string(),
        );
        s.prepare("native", "team", "extract-1234-sha256:x", None, labels)
            .unwrap();
        s.prepare("native", "team", "container-rw", None, BTreeMap::new())
            .unwrap();
    }
    let s = reopen(&root, "native");
    let names: Vec<String> = s
        .list("native", "team")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["container-rw"]);
    assert_eq!(
        std::fs::read_dir(root.join("native/snapshots"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn a_restart_removes_views_an_interrupted_build_left() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshot");
    let view = format!(
        "{}0011223344556677",
        berth_snapshot::snapshots::BUILD_VIEW_PREFIX
    );
    {
        let s = Snapshots::open(&root, "native").unwrap();
        let mut ids = Vec::new();
        let base = apply(&s, "native", &tar_with("f", b"x"), None, &mut ids).to_string();
        s.view("native", "default", &view, Some(&base), BTreeMap::new())
            .unwrap();
        s.view("native", "team", &view, None, BTreeMap::new())
            .unwrap();
        s.view(
            "native",
            "default",
            "inspect-view",
            Some(&base),
            BTreeMap::new(),
        )
        .unwrap();
        s.prepare(
            "native",
            "default",
            "build-view-rw",
            Some(&base),
            BTreeMap::new(),
        )
        .unwrap();
    }
    let s = reopen(&root, "native");
    let mut names: Vec<String> = s
        .list("native", "default")
        .unwrap()
        .into_iter()
        .filter(|i| i.kind != Kind::Committed)
        .map(|i| i.name)
        .collect();
    names.sort();
    // Only views are the build's: an active snapshot of that name is somebody else's.
    assert_eq!(names, ["build-view-rw", "inspect-view"]);
    assert!(s.stat("native", "team", &view).is_err());
}

#[test]
fn long_chains_mount_with_relative_paths() {
    // A long root makes absolute lowerdir options exceed a page with few layers.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r".repeat(200)).join("snapshot");
    let s = Snapshots::open(&root, "overlayfs").unwrap();
    if s.default_snapshotter() != "overlayfs" {
        return berth_core::testing::skip("overlayfs does not work on this host");
    }
    let mut diff_ids = Vec::new();
    let mut parent: Option<Digest> = None;
    for i in 0..20 {
        let tar = tar_with(&format!("f{i}"), format!("{i}").as_bytes());
        parent = Some(apply(&s, "", &tar, parent.as_ref(), &mut diff_ids));
    }
    let top = parent.unwrap().to_string();
    let mounts = s
        .prepare("", "default", "rw", Some(&top), BTreeMap::new())
        .unwrap();
    let data: usize = mounts[0].options.iter().map(|o| o.len() + 1).sum();
    assert!(
        data > 4096,
        "the test needs options longer than a page ({data})"
    );

    let at = dir.path().join("m");
    std::fs::create_dir(&at).unwrap();
    berth_snapshot::mount::mount_all(&mounts, &at).unwrap();
    let seen: Vec<bool> = (0..20)
        .map(|i| at.join(format!("f{i}")).is_file())
        .collect();
    std::fs::write(at.join("top"), b"x").unwrap();
    berth_snapshot::mount::unmount(&at).unwrap();
    assert!(seen.iter().all(|&b| b), "{seen:?}");

    // A view of several layers is a read-only overlay.
    let view = s
        .view("", "default", "v", Some(&top), BTreeMap::new())
        .unwrap();
    assert_eq!(view[0].r#type, "overlay");
    assert!(view[0].options.iter().any(|o| o == "ro"));
    berth_snapshot::mount::mount_all(&view, &at).unwrap();
    let f0 = at.join("f0").is_file();
    let write = std::fs::write(at.join("x"), b"x");
    berth_snapshot::mount::unmount(&at).unwrap();
    assert!(f0 && write.is_err());
    assert_eq!(s.stat("", "default", "v").unwrap().kind, Kind::View);
}

#[test]
fn an_unknown_default_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Snapshots::open(Path::new(&dir.path().join("s")), "zfs").unwrap_err();
    assert!(e.to_string().contains("zfs"), "{e}");
}

const CRASH_ROOT: &str = "BERTH_SNAPSHOT_CRASH_ROOT";

/// The workload `kill_9_leaves_a_consistent_state` kills; does nothing when run on its own.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var(CRASH_ROOT) else {
        return;
    };
    let s = Snapshots::open(Path::new(&root), "").unwrap();
    let pid = std::process::id();
    for i in 0.. {
        let mut diff_ids = Vec::new();
        let tar = tar_with(&format!("f{pid}-{i}"), &vec![7u8; 64 * 1024]);
        let base = apply(&s, "", &tar, None, &mut diff_ids);
        let tar = tar_with(&format!("g{pid}-{i}"), b"g");
        let top = apply(&s, "", &tar, Some(&base), &mut diff_ids).to_string();
        let rw = format!("rw-{pid}-{i}");
        s.prepare("", "default", &rw, Some(&top), BTreeMap::new())
            .unwrap();
        s.commit("", "default", &format!("c-{pid}-{i}"), &rw, BTreeMap::new())
            .unwrap();
        // A parent and its child at once: the child waits for (native) or unpacks beside
        // (overlayfs) the parent, whose data trickles in.
        let ptar = tar_with(&format!("p{pid}-{i}"), &vec![7u8; 64 * 1024]);
        let ctar = tar_with(&format!("c{pid}-{i}"), &vec![7u8; 64 * 1024]);
        let (pd, cd) = (Digest::sha256_of(&ptar), Digest::sha256_of(&ctar));
        let pname = chain_id([&pd]).unwrap().to_string();
        let cname = chain_id([&pd, &cd]).unwrap().to_string();
        let layer = |name: &str, parent: Option<&str>, diff_id: &Digest| Layer {
            name: Some(name.to_string()),
            parent: parent.map(str::to_string),
            media_type: String::new(),
            diff_id: Some(diff_id.clone()),
            labels: BTreeMap::new(),
        };
        std::thread::scope(|scope| {
            let p =
                scope.spawn(|| s.apply("", "default", &layer(&pname, None, &pd), Trickle(&ptar)));
            let c = scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                s.apply("", "default", &layer(&cname, Some(&pname), &cd), &ctar[..])
            });
            p.join().unwrap().unwrap();
            c.join().unwrap().unwrap();
        });
        if i % 2 == 0 {
            for k in [format!("c-{pid}-{i}"), top, base.to_string(), cname, pname] {
                s.remove("", "default", &k).unwrap();
            }
        }
    }
}

/// Layer data that arrives a little at a time, so a kill lands in the middle of it.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(1));
        let n = buf.len().min(self.0.len()).min(4096);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn kill_9_leaves_a_consistent_state() {
    use berth_snapshot::metadata::Metadata;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshot");
    for round in 0..4u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--test-threads=1"])
            .env(CRASH_ROOT, &root)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400 + 150 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Opening recovers; then every record has its folder, every folder its record, and
        // every child count is right.
        let sn = reopen(&root, "").default_snapshotter();
        let md = Metadata::open(&root.join("metadata.db")).unwrap();
        let all = md.all(sn).unwrap();
        assert!(!all.is_empty() || round == 0, "the workload made progress");
        let snaps = root.join(sn).join("snapshots");
        let mut folders: Vec<u64> = std::fs::read_dir(&snaps)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        folders.sort();
        let mut ids: Vec<u64> = all.iter().map(|(_, _, r)| r.id).collect();
        ids.sort();
        assert_eq!(folders, ids, "round {round}");
        for (ns, key, r) in &all {
            let children = all
                .iter()
                .filter(|(n, _, c)| n == ns && c.parent.as_deref() == Some(key.as_str()))
                .count() as u64;
            assert_eq!(r.children, children, "{key}");
            if let Some(p) = &r.parent {
                assert!(
                    all.iter().any(|(n, k, _)| n == ns && k == p),
                    "parent {p} of {key}"
                );
            }
            assert!(
                !key.starts_with("extract-"),
                "interrupted extraction {key} left"
            );
            // A committed layer is whole: every file the workload writes is 1 or 64 KiB of
            // one byte.
            if r.kind == Kind::Committed && key.starts_with("sha256:") {
                let fs = snaps.join(r.id.to_string()).join("fs");
                for e in std::fs::read_dir(&fs).unwrap() {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_file() {
                        let data = std::fs::read(e.path()).unwrap();
                        assert!(
                            data == b"g" || data == vec![7u8; 64 * 1024],
                            "{key}: {:?} has {} bytes",
                            e.file_name(),
                            data.len()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn namespace_usage_counts_every_namespace_per_snapshotter() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshots::open(&dir.path().join("snapshot"), "native").unwrap();
    assert!(s.namespace_usage().unwrap().is_empty());
    let mut diff_ids = Vec::new();
    let base = apply(&s, "native", &tar_with("a", b"1"), None, &mut diff_ids);
    s.prepare(
        "native",
        "default",
        "rw",
        Some(&base.to_string()),
        BTreeMap::new(),
    )
    .unwrap();
    s.prepare("native", "team", "other", None, BTreeMap::new())
        .unwrap();
    let usage = s.namespace_usage().unwrap();
    let count = |ns: &str, kind: &str| usage.get(ns).and_then(|k| k.get(kind)).copied();
    assert_eq!(count("default", "snapshots/native"), Some(2));
    assert_eq!(count("team", "snapshots/native"), Some(1));
    assert_eq!(count("default", "snapshots/overlayfs"), None);
    assert_eq!(usage.len(), 2);
    s.remove("native", "team", "other").unwrap();
    assert!(!s.namespace_usage().unwrap().contains_key("team"));
}
