//! Applies that run at the same time: layers whose parent is still being applied, and the
//! same layer twice. The parent's data is held back by a gate, so each test controls the
//! order. Needs root; run with `cargo test -p berth-snapshot`.

use berth_core::Digest;
use berth_snapshot::snapshots::EXTRACTING_LABEL;
use berth_snapshot::{chain_name, Applied, Kind, Layer, Snapshots};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tonic::Code;

const NS: &str = "default";

/// Layer data that flows once the gate opens (or fails when the gate is dropped), and tells
/// when it was read to the end.
struct Gate {
    open: Option<mpsc::Receiver<()>>,
    data: io::Cursor<Vec<u8>>,
    read_all: Arc<AtomicBool>,
}

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(rx) = self.open.take() {
            rx.recv()
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the sender gave up"))?;
        }
        let n = self.data.read(buf)?;
        if n == 0 {
            self.read_all.store(true, Ordering::SeqCst);
        }
        Ok(n)
    }
}

fn gate(data: Vec<u8>) -> (Gate, mpsc::Sender<()>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel();
    let read_all = Arc::new(AtomicBool::new(false));
    (
        Gate {
            open: Some(rx),
            data: io::Cursor::new(data),
            read_all: read_all.clone(),
        },
        tx,
        read_all,
    )
}

/// Data that is there at once.
fn open_gate(data: Vec<u8>) -> (Gate, Arc<AtomicBool>) {
    let (g, tx, read_all) = gate(data);
    tx.send(()).unwrap();
    (g, read_all)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h
}

/// The parent: a folder with its own owner and mode, and a file to link to.
fn parent_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut d = header(tar::EntryType::Directory, 0o710, 0);
    d.set_uid(5);
    d.set_gid(6);
    b.append_data(&mut d, "usr", io::empty()).unwrap();
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0),
        "bin",
        io::empty(),
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o755, 3),
        "bin/busybox",
        &b"elf"[..],
    )
    .unwrap();
    b.into_inner().unwrap()
}

/// A child that writes under the parent's `usr` without listing it.
fn child_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 5),
        "usr/local/bin/tool",
        &b"tool\n"[..],
    )
    .unwrap();
    b.into_inner().unwrap()
}

/// A child with a hard link to the parent's file: it cannot be unpacked without the parent.
fn linking_child_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_link(
        &mut header(tar::EntryType::Link, 0o755, 0),
        "bin/sh",
        "bin/busybox",
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 2),
        "after",
        &b"hi"[..],
    )
    .unwrap();
    b.into_inner().unwrap()
}

fn named(tar: &[u8], parent: Option<&str>) -> Layer {
    let diff_id = Digest::sha256_of(tar);
    Layer {
        name: Some(chain_name(parent, &diff_id)),
        parent: parent.map(str::to_string),
        media_type: String::new(),
        diff_id: Some(diff_id),
        labels: BTreeMap::new(),
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether an Apply of `name` is unpacking (its temporary snapshot exists).
fn extracting(s: &Snapshots, sn: &str, name: &str) -> bool {
    s.list(sn, NS)
        .unwrap()
        .iter()
        .any(|i| i.labels.get(EXTRACTING_LABEL).map(String::as_str) == Some(name))
}

fn open(sn: &str) -> Option<(tempfile::TempDir, Snapshots)> {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshots::open(&dir.path().join("snapshot"), sn).unwrap();
    if s.default_snapshotter() != sn {
        berth_core::testing::skip(format!("{sn} does not work here"));
        return None;
    }
    Some((dir, s))
}

/// The folder of a committed layer (the first lower of a view on it, or its bind).
fn layer_dir(s: &Snapshots, sn: &str, name: &str, key: &str) -> PathBuf {
    let v = s.view(sn, NS, key, Some(name), BTreeMap::new()).unwrap();
    let m = &v[0];
    match m.options.iter().find_map(|o| o.strip_prefix("lowerdir=")) {
        Some(l) => PathBuf::from(l.split(':').next().unwrap()),
        None => PathBuf::from(&m.source),
    }
}

#[test]
fn overlay_unpacks_a_child_while_its_parent_is_still_arriving() {
    let Some((_d, s)) = open("overlayfs") else {
        return;
    };
    let s = Arc::new(s);
    let (ptar, ctar) = (parent_tar(), child_tar());
    let parent = named(&ptar, None);
    let pname = parent.name.clone().unwrap();
    let child = named(&ctar, Some(&pname));
    let (pgate, release, _) = gate(ptar);
    let p = {
        let (s, parent) = (s.clone(), parent.clone());
        std::thread::spawn(move || s.apply("", NS, &parent, pgate))
    };
    wait_until("the parent's Apply started", || {
        extracting(&s, "overlayfs", &pname)
    });
    let (cgate, child_read) = open_gate(ctar);
    let c = {
        let (s, child) = (s.clone(), child.clone());
        std::thread::spawn(move || s.apply("", NS, &child, cgate))
    };
    // The child is unpacked while the parent has not sent a byte; it is not committed yet.
    wait_until("the child was unpacked", || {
        child_read.load(Ordering::SeqCst)
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!c.is_finished(), "the child commits only after its parent");
    assert!(s.stat("", NS, child.name.as_ref().unwrap()).is_err());

    release.send(()).unwrap();
    let pa = p.join().unwrap().unwrap();
    let ca = c.join().unwrap().unwrap();
    assert!(!pa.existed && !ca.existed);
    let info = s.stat("", NS, &ca.name).unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::Committed, Some(pname.as_str()))
    );
    // The folder the child made implicitly took the parent's owner and mode, as a
    // sequential unpack would have.
    let cdir = layer_dir(&s, "overlayfs", &ca.name, "v");
    let usr = std::fs::metadata(cdir.join("usr")).unwrap();
    assert_eq!((usr.uid(), usr.gid(), usr.mode() & 0o7777), (5, 6, 0o710));
    assert_eq!(
        std::fs::metadata(cdir.join("usr/local")).unwrap().mode() & 0o7777,
        0o755
    );
    // Nothing temporary is left.
    let names: Vec<String> = s
        .list("", NS)
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // And the removal order is enforced: the parent has a child now.
    let e = s.remove("", NS, &pname).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[test]
fn overlay_waits_mid_layer_for_a_hard_link_into_the_parent() {
    let Some((_d, s)) = open("overlayfs") else {
        return;
    };
    let s = Arc::new(s);
    let (ptar, ctar) = (parent_tar(), linking_child_tar());
    let parent = named(&ptar, None);
    let pname = parent.name.clone().unwrap();
    let child = named(&ctar, Some(&pname));
    let (pgate, release, _) = gate(ptar);
    let p = {
        let (s, parent) = (s.clone(), parent.clone());
        std::thread::spawn(move || s.apply("", NS, &parent, pgate))
    };
    wait_until("the parent's Apply started", || {
        extracting(&s, "overlayfs", &pname)
    });
    let (cgate, child_read) = open_gate(ctar);
    let c = {
        let (s, child) = (s.clone(), child.clone());
        std::thread::spawn(move || s.apply("", NS, &child, cgate))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !child_read.load(Ordering::SeqCst),
        "the link waits for the parent's file"
    );
    release.send(()).unwrap();
    p.join().unwrap().unwrap();
    let ca = c.join().unwrap().unwrap();
    let cdir = layer_dir(&s, "overlayfs", &ca.name, "v");
    let (a, b) = (
        std::fs::metadata(cdir.join("bin/busybox")).unwrap(),
        std::fs::metadata(cdir.join("bin/sh")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "copied up and linked");
    assert_eq!(std::fs::read(cdir.join("bin/sh")).unwrap(), b"elf");
}

#[test]
fn native_waits_for_the_parent_before_unpacking() {
    let Some((_d, s)) = open("native") else {
        return;
    };
    let s = Arc::new(s);
    let (ptar, ctar) = (parent_tar(), child_tar());
    let parent = named(&ptar, None);
    let pname = parent.name.clone().unwrap();
    let child = named(&ctar, Some(&pname));
    let (pgate, release, _) = gate(ptar);
    let p = {
        let (s, parent) = (s.clone(), parent.clone());
        std::thread::spawn(move || s.apply("native", NS, &parent, pgate))
    };
    wait_until("the parent's Apply started", || {
        extracting(&s, "native", &pname)
    });
    let (cgate, child_read) = open_gate(ctar);
    let c = {
        let (s, child) = (s.clone(), child.clone());
        std::thread::spawn(move || s.apply("native", NS, &child, cgate))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!child_read.load(Ordering::SeqCst));
    assert!(!extracting(&s, "native", child.name.as_ref().unwrap()));
    release.send(()).unwrap();
    p.join().unwrap().unwrap();
    let ca = c.join().unwrap().unwrap();
    let dir = layer_dir(&s, "native", &ca.name, "v");
    assert!(dir.join("bin/busybox").is_file() && dir.join("usr/local/bin/tool").is_file());
}

#[test]
fn a_failed_parent_fails_its_children_and_leaves_nothing() {
    for sn in ["overlayfs", "native"] {
        let Some((_d, s)) = open(sn) else {
            continue;
        };
        let s = Arc::new(s);
        let (ptar, ctar) = (parent_tar(), child_tar());
        let parent = named(&ptar, None);
        let pname = parent.name.clone().unwrap();
        let child = named(&ctar, Some(&pname));
        let (pgate, release, _) = gate(ptar);
        let p = {
            let (s, parent) = (s.clone(), parent.clone());
            std::thread::spawn(move || s.apply(sn, NS, &parent, pgate))
        };
        wait_until("the parent's Apply started", || extracting(&s, sn, &pname));
        let (cgate, _) = open_gate(ctar);
        let c = {
            let (s, child) = (s.clone(), child.clone());
            std::thread::spawn(move || s.apply(sn, NS, &child, cgate))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(release); // the parent's stream breaks off
        let pe = p.join().unwrap().unwrap_err();
        assert_eq!(pe.code(), Code::DataLoss, "{pe}");
        let ce = c.join().unwrap().unwrap_err();
        assert_eq!(ce.code(), Code::FailedPrecondition, "{sn}: {ce}");
        assert!(ce.to_string().contains(&pname), "names the parent: {ce}");
        assert!(s.list(sn, NS).unwrap().is_empty(), "{sn}");
        let left = std::fs::read_dir(s.root().join(sn).join("snapshots"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "{sn}");
    }
}

#[test]
fn a_parent_nobody_applies_is_a_failed_precondition() {
    let Some((_d, s)) = open("native") else {
        return;
    };
    let ctar = child_tar();
    let child = named(
        &ctar,
        Some("sha256:0000000000000000000000000000000000000000000000000000000000000000"),
    );
    let e = s.apply("", NS, &child, &ctar[..]).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.to_string().contains("sha256:0000000000"), "{e}");
    // name without diff_id, and the other way round.
    let mut half = named(&ctar, None);
    half.diff_id = None;
    assert_eq!(
        s.apply("", NS, &half, &ctar[..]).unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut half = named(&ctar, None);
    half.name = None;
    assert_eq!(
        s.apply("", NS, &half, &ctar[..]).unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(s.list("", NS).unwrap().is_empty());
}

#[test]
fn the_same_layer_twice_unpacks_once() {
    for sn in ["overlayfs", "native"] {
        let Some((_d, s)) = open(sn) else {
            continue;
        };
        let s = Arc::new(s);
        let tar = parent_tar();
        let layer = named(&tar, None);
        let name = layer.name.clone().unwrap();
        let (first, release, _) = gate(tar.clone());
        let a = {
            let (s, layer) = (s.clone(), layer.clone());
            std::thread::spawn(move || s.apply(sn, NS, &layer, first))
        };
        wait_until("the first Apply started", || extracting(&s, sn, &name));
        // The second one's data must not be read at all.
        let (second, _never, second_read) = gate(tar);
        let b = {
            let (s, layer) = (s.clone(), layer.clone());
            std::thread::spawn(move || s.apply(sn, NS, &layer, second))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!b.is_finished(), "the second waits for the first");
        release.send(()).unwrap();
        let a: Applied = a.join().unwrap().unwrap();
        let b: Applied = b.join().unwrap().unwrap();
        assert!(!a.existed && b.existed, "{sn}");
        assert!(!second_read.load(Ordering::SeqCst));
        assert_eq!((a.name, a.size), (b.name, b.size));
        let left = std::fs::read_dir(s.root().join(sn).join("snapshots"))
            .unwrap()
            .count();
        assert_eq!(left, 1, "{sn}");
    }
}

#[test]
fn computed_names_are_chain_ids() {
    let Some((_d, s)) = open("native") else {
        return;
    };
    let (ptar, ctar) = (parent_tar(), child_tar());
    let anon = |parent: Option<&str>| Layer {
        name: None,
        parent: parent.map(str::to_string),
        media_type: String::new(),
        diff_id: None,
        labels: BTreeMap::new(),
    };
    let p = s.apply("", NS, &anon(None), &ptar[..]).unwrap();
    assert_eq!(p.diff_id, Digest::sha256_of(&ptar));
    assert_eq!(
        p.name,
        p.diff_id.to_string(),
        "a first layer's chain id is its diff_id"
    );
    let c = s.apply("", NS, &anon(Some(&p.name)), &ctar[..]).unwrap();
    let want = berth_core::digest::chain_id([&p.diff_id, &Digest::sha256_of(&ctar)]).unwrap();
    assert_eq!(c.name, want.to_string());
    // Once more: the existing layer stays, the new unpack is dropped.
    let again = s.apply("", NS, &anon(Some(&p.name)), &ctar[..]).unwrap();
    assert!(again.existed);
    assert_eq!(again.name, c.name);
    assert_eq!(s.list("", NS).unwrap().len(), 2);
    // And a named Apply of it is answered without reading.
    let named = named(&ctar, Some(&p.name));
    assert_eq!(named.name.as_deref(), Some(c.name.as_str()));
    assert!(s.apply("", NS, &named, io::empty()).unwrap().existed);
}

#[test]
fn a_child_that_arrives_before_its_parent_waits_for_it_to_start() {
    for sn in ["overlayfs", "native"] {
        let Some((_d, s)) = open(sn) else {
            continue;
        };
        let s = Arc::new(s);
        let (ptar, ctar) = (parent_tar(), child_tar());
        let parent = named(&ptar, None);
        let pname = parent.name.clone().unwrap();
        let child = named(&ctar, Some(&pname));
        let c = {
            let s = s.clone();
            std::thread::spawn(move || s.apply(sn, NS, &child, &ctar[..]))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!c.is_finished(), "{sn}: within the grace period");
        s.apply(sn, NS, &parent, &ptar[..]).unwrap();
        let ca = c.join().unwrap().unwrap();
        assert_eq!(
            s.stat(sn, NS, &ca.name).unwrap().parent.as_deref(),
            Some(pname.as_str())
        );
    }
}
