//! The snapshot service over a real unix socket: real layers in, real mounts out.
//! Needs root (mounts); run with `cargo test -p berth-snapshot`.

use berth_api::snapshots::v1::apply_request::Item;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::snapshots::v1::{
    ApplyHeader, ApplyRequest, ApplyResponse, CommitSnapshotRequest, DiffRequest, Kind,
    ListSnapshotsRequest, PrepareSnapshotRequest, SnapshotKey,
};
use berth_api::types::v1::Mount;
use berth_core::digest::chain_id;
use berth_core::grpc::request;
use berth_core::media::OCI_LAYER_GZIP;
use berth_core::Digest;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use tonic::Code;

/// One service instance in a temporary folder, and a client connected over its socket.
struct Harness {
    dir: tempfile::TempDir,
    client: SnapshotsClient<Channel>,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(default_snapshotter: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("snapshot");
        let sock = dir.path().join("berth.sock");
        let service =
            berth_snapshot::serve(&root, default_snapshotter, Default::default()).unwrap();
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
        let channel = berth_core::grpc::channel(&format!("unix://{}", sock.display())).unwrap();
        Harness {
            dir,
            client: SnapshotsClient::new(channel),
            server,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("snapshot")
    }

    async fn apply(
        &self,
        ns: &str,
        snapshotter: &str,
        layer: &TestLayer,
        parent: &str,
        name: &str,
    ) -> Result<(bool, i64), tonic::Status> {
        self.apply_bytes(ns, snapshotter, &layer.gzip, &layer.diff_id, parent, name)
            .await
    }

    async fn apply_bytes(
        &self,
        ns: &str,
        snapshotter: &str,
        bytes: &[u8],
        diff_id: &Digest,
        parent: &str,
        name: &str,
    ) -> Result<(bool, i64), tonic::Status> {
        let mut messages = vec![ApplyRequest {
            item: Some(Item::Header(ApplyHeader {
                snapshotter: snapshotter.into(),
                name: name.into(),
                parent: parent.into(),
                media_type: OCI_LAYER_GZIP.into(),
                diff_id: diff_id.to_string(),
                labels: Default::default(),
            })),
        }];
        // Small chunks, so the layer really streams through the service.
        for chunk in bytes.chunks(1000) {
            messages.push(ApplyRequest {
                item: Some(Item::Data(chunk.to_vec())),
            });
        }
        let r = self
            .client
            .clone()
            .apply(request(ns, tokio_stream::iter(messages)))
            .await?
            .into_inner();
        Ok((r.existed, r.size))
    }

    /// Streams `messages` (a header, then data) as one Apply.
    async fn apply_stream(
        &self,
        ns: &str,
        messages: impl tokio_stream::Stream<Item = ApplyRequest> + Send + 'static,
    ) -> Result<ApplyResponse, tonic::Status> {
        Ok(self
            .client
            .clone()
            .apply(request(ns, messages))
            .await?
            .into_inner())
    }

    /// The Diff of `key`, as the chunks it arrived in.
    async fn diff(&self, ns: &str, key: &str) -> Result<Vec<Vec<u8>>, tonic::Status> {
        let req = DiffRequest {
            snapshotter: String::new(),
            key: key.into(),
        };
        let mut stream = self
            .client
            .clone()
            .diff(request(ns, req))
            .await?
            .into_inner();
        let mut chunks = Vec::new();
        while let Some(m) = stream.message().await? {
            chunks.push(m.data);
        }
        Ok(chunks)
    }

    async fn prepare(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>, tonic::Status> {
        let req = PrepareSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
            parent: parent.into(),
            labels: Default::default(),
        };
        Ok(self
            .client
            .clone()
            .prepare(request(ns, req))
            .await?
            .into_inner()
            .mounts)
    }

    async fn view(&self, ns: &str, key: &str, parent: &str) -> Result<Vec<Mount>, tonic::Status> {
        let req = PrepareSnapshotRequest {
            snapshotter: String::new(),
            key: key.into(),
            parent: parent.into(),
            labels: Default::default(),
        };
        Ok(self
            .client
            .clone()
            .view(request(ns, req))
            .await?
            .into_inner()
            .mounts)
    }

    async fn remove(&self, ns: &str, snapshotter: &str, key: &str) -> Result<(), tonic::Status> {
        let req = SnapshotKey {
            snapshotter: snapshotter.into(),
            key: key.into(),
        };
        self.client
            .clone()
            .remove(request(ns, req))
            .await
            .map(|_| ())
    }

    async fn list(&self, ns: &str, snapshotter: &str) -> Vec<(String, Kind)> {
        let req = ListSnapshotsRequest {
            snapshotter: snapshotter.into(),
        };
        let mut out: Vec<_> = self
            .client
            .clone()
            .list(request(ns, req))
            .await
            .unwrap()
            .into_inner()
            .info
            .into_iter()
            .map(|i| (i.name, Kind::try_from(i.kind).unwrap()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Folders of snapshots on disk for one snapshotter.
    fn folders(&self, snapshotter: &str) -> usize {
        std::fs::read_dir(self.root().join(snapshotter).join("snapshots"))
            .unwrap()
            .count()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct TestLayer {
    gzip: Vec<u8>,
    diff_id: Digest,
}

fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> TestLayer {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    TestLayer {
        gzip: gz.finish().unwrap(),
        diff_id: Digest::sha256_of(&tar),
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h
}

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0),
        path,
        std::io::empty(),
    )
    .unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
        path,
        data,
    )
    .unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
    b.append_link(&mut header(kind, 0o777, 0), path, target)
        .unwrap();
}

/// Layer 1: a base filesystem.
fn base_layer() -> TestLayer {
    layer(|b| {
        dir(b, "etc");
        file(b, "etc/hello", b"hello from layer 1\n");
        file(b, "gone.txt", b"deleted by layer 2\n");
        dir(b, "opq");
        file(b, "opq/a", b"hidden by layer 2\n");
        dir(b, "bin");
        file(b, "bin/busybox", b"\x7fELF");
        link(b, tar::EntryType::Link, "bin/sh", "bin/busybox");
        link(b, tar::EntryType::Symlink, "bin/ls", "busybox");
    })
}

/// Layer 2: deletes a file, makes a folder opaque, adds a file.
fn top_layer() -> TestLayer {
    layer(|b| {
        file(b, ".wh.gone.txt", b"");
        dir(b, "opq");
        file(b, "opq/.wh..wh..opq", b"");
        file(b, "opq/b", b"from layer 2\n");
        file(b, "etc/new", b"new in layer 2\n");
    })
}

fn option<'a>(m: &'a Mount, key: &str) -> &'a str {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {:?}", m.options))
}

/// Mounts, runs `check` on the mounted folder, and unmounts even when `check` panics.
fn with_mounted(mounts: &[Mount], at: &Path, check: impl FnOnce(&Path)) {
    std::fs::create_dir_all(at).unwrap();
    berth_snapshot::mount::mount_all(mounts, at).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(at)));
    berth_snapshot::mount::unmount(at).unwrap();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

fn overlay_works(h: &Harness) -> bool {
    // The default falls back to native where overlay cannot mount; then overlay tests skip.
    std::fs::read_dir(h.root().join("overlayfs")).is_ok() && {
        let probe = tempfile::tempdir_in(h.root()).unwrap();
        let d = |n: &str| {
            let p = probe.path().join(n);
            std::fs::create_dir(&p).unwrap();
            p.display().to_string()
        };
        let (l, u, w, m) = (d("l"), d("u"), d("w"), d("m"));
        let ok = nix::mount::mount(
            Some("overlay"),
            m.as_str(),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(format!("lowerdir={l},upperdir={u},workdir={w}").as_str()),
        )
        .is_ok();
        if ok {
            nix::mount::umount(m.as_str()).unwrap();
        }
        ok
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_layers_mount_merge_and_protect_parents() {
    let h = Harness::start("overlayfs").await;
    if !overlay_works(&h) {
        return berth_core::testing::skip("overlayfs does not work on this host");
    }
    let (l1, l2) = (base_layer(), top_layer());
    let c1 = chain_id([&l1.diff_id]).unwrap().to_string();
    let c2 = chain_id([&l1.diff_id, &l2.diff_id]).unwrap().to_string();

    let (existed, size) = h.apply("default", "", &l1, "", &c1).await.unwrap();
    assert!(!existed && size > 0);
    let (existed, _) = h
        .apply("default", "overlayfs", &l2, &c1, &c2)
        .await
        .unwrap();
    assert!(!existed);
    // Applying again is answered from what is there.
    assert!(h.apply("default", "", &l1, "", &c1).await.unwrap().0);

    let mounts = h.prepare("default", "", "rw", &c2).await.unwrap();
    assert_eq!(mounts.len(), 1);
    let m = &mounts[0];
    assert_eq!(m.r#type, "overlay");
    let lowers: Vec<&str> = option(m, "lowerdir").split(':').collect();
    assert_eq!(
        lowers.len(),
        2,
        "two layers below, nearest first: {lowers:?}"
    );
    assert!(Path::new(lowers[1]).join("etc/hello").exists());
    assert!(Path::new(lowers[0]).join("etc/new").exists());
    let upper = PathBuf::from(option(m, "upperdir"));

    // The layer 2 folder holds overlay's own whiteout form.
    let wh = std::fs::symlink_metadata(Path::new(lowers[0]).join("gone.txt")).unwrap();
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(Path::new(lowers[0]).join("opq"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );

    let merged = h.dir.path().join("merged");
    with_mounted(&mounts, &merged, |at| {
        assert_eq!(
            std::fs::read(at.join("etc/hello")).unwrap(),
            b"hello from layer 1\n"
        );
        assert_eq!(
            std::fs::read(at.join("etc/new")).unwrap(),
            b"new in layer 2\n"
        );
        assert!(!at.join("gone.txt").exists(), "whiteout hides the file");
        let opq: Vec<_> = std::fs::read_dir(at.join("opq"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(opq, ["b"], "opaque folder hides layer 1's content");
        let (a, b) = (
            std::fs::metadata(at.join("bin/busybox")).unwrap(),
            std::fs::metadata(at.join("bin/sh")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(
            std::fs::read_link(at.join("bin/ls")).unwrap(),
            Path::new("busybox")
        );
        std::fs::write(at.join("written"), b"rw layer").unwrap();
        std::fs::remove_file(at.join("etc/hello")).unwrap();
    });
    assert_eq!(std::fs::read(upper.join("written")).unwrap(), b"rw layer");
    assert!(
        Path::new(lowers[1]).join("etc/hello").exists(),
        "layers below are never written"
    );

    // A view of one layer is a read-only bind.
    let view = h.view("default", "ro", &c1).await.unwrap();
    assert_eq!(
        (view[0].r#type.as_str(), view[0].options.clone()),
        ("bind", vec!["ro".into(), "rbind".into()])
    );
    with_mounted(&view, &h.dir.path().join("view"), |at| {
        assert!(at.join("gone.txt").exists());
        let e = std::fs::write(at.join("x"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    });

    // Mounts of a committed snapshot make no sense; of an active one they are stable.
    let key = |k: &str| SnapshotKey {
        snapshotter: String::new(),
        key: k.into(),
    };
    let e = h
        .client
        .clone()
        .mounts(request("default", key(&c1)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let again = h
        .client
        .clone()
        .mounts(request("default", key("rw")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.mounts, mounts);

    // Parents with children cannot go.
    let e = h.remove("default", "", &c2).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("rw"), "names a child: {}", e.message());
    let e = h.remove("default", "", &c1).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Commit the rw layer and build on it.
    let commit = CommitSnapshotRequest {
        snapshotter: String::new(),
        name: "image-commit".into(),
        key: "rw".into(),
        labels: Default::default(),
    };
    h.client
        .clone()
        .commit(request("default", commit))
        .await
        .unwrap();
    let stat = h
        .client
        .clone()
        .stat(request("default", key("image-commit")))
        .await
        .unwrap()
        .into_inner();
    let info = stat.info.unwrap();
    assert_eq!(
        (info.kind, info.parent.as_str()),
        (Kind::Committed as i32, c2.as_str())
    );
    let e = h
        .client
        .clone()
        .stat(request("default", key("rw")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let m3 = h
        .prepare("default", "", "rw2", "image-commit")
        .await
        .unwrap();
    assert_eq!(option(&m3[0], "lowerdir").split(':').count(), 3);
    with_mounted(&m3, &h.dir.path().join("merged"), |at| {
        assert!(at.join("written").exists());
        assert!(!at.join("etc/hello").exists());
    });
    let usage = h
        .client
        .clone()
        .usage(request("default", key("image-commit")))
        .await
        .unwrap()
        .into_inner();
    assert!(usage.size > 0 && usage.inodes >= 2, "{usage:?}");

    // Everything goes, top down.
    for k in ["rw2", "image-commit", "ro", &c2, &c1] {
        h.remove("default", "", k).await.unwrap();
    }
    assert!(h.list("default", "").await.is_empty());
    assert_eq!(h.folders("overlayfs"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_and_state_errors_have_proper_codes() {
    let h = Harness::start("native").await;
    let l1 = base_layer();
    let c1 = chain_id([&l1.diff_id]).unwrap().to_string();

    let e = h.prepare("default", "zfs", "k", "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("overlayfs"), "{}", e.message());
    let e = h.prepare("default", "", "k", "missing").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = h.prepare("default", "", "", "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    h.prepare("default", "", "active", "").await.unwrap();
    let e = h.prepare("default", "", "active", "").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = h
        .prepare("default", "", "child", "active")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("commit it first"), "{}", e.message());

    // A layer cannot be committed over a name an active snapshot holds.
    let e = h.apply("default", "", &l1, "", "active").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Apply without a header, with a bad digest.
    let e = h
        .client
        .clone()
        .apply(request(
            "default",
            tokio_stream::iter(vec![ApplyRequest {
                item: Some(Item::Data(vec![1])),
            }]),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let bad = ApplyRequest {
        item: Some(Item::Header(ApplyHeader {
            name: c1.clone(),
            diff_id: "sha256:nope".into(),
            ..Default::default()
        })),
    };
    let e = h
        .client
        .clone()
        .apply(request("default", tokio_stream::iter(vec![bad])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Bad namespace.
    let mut req = tonic::Request::new(ListSnapshotsRequest::default());
    req.metadata_mut()
        .insert("berth-namespace", "../x".parse().unwrap());
    assert_eq!(
        h.client.clone().list(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_diff_id_or_a_hostile_layer_commits_nothing() {
    let h = Harness::start("").await;
    let l1 = base_layer();
    let c1 = chain_id([&l1.diff_id]).unwrap().to_string();

    let wrong = Digest::sha256_of(b"not this layer");
    let e = h
        .apply_bytes("default", "", &l1.gzip, &wrong, "", &c1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss);
    assert!(e.message().contains(&wrong.to_string()), "{}", e.message());

    let truncated = &l1.gzip[..l1.gzip.len() - 20];
    let e = h
        .apply_bytes("default", "", truncated, &l1.diff_id, "", &c1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");

    let outside = h.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = outside.display().to_string();
    let evil = layer(|b| {
        link(b, tar::EntryType::Symlink, "evil", &target);
        let mut hd = header(tar::EntryType::Regular, 0o644, 5);
        // append_data refuses `..`; the raw name goes in by hand, as an attacker would.
        hd.as_gnu_mut().unwrap().name[..14].copy_from_slice(b"evil/pwned.txt");
        hd.set_cksum();
        b.append(&hd, &b"pwned"[..]).unwrap();
    });
    let e = h
        .apply("default", "", &evil, "", "evil-chain")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("evil/pwned.txt"), "{}", e.message());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // Nothing was committed and no temporary snapshot or folder is left.
    assert!(h.list("default", "").await.is_empty());
    assert_eq!(h.folders("overlayfs") + h.folders("native"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_of_one_layer_both_succeed_once() {
    let h = Harness::start("").await;
    let l1 = base_layer();
    let c1 = chain_id([&l1.diff_id]).unwrap().to_string();
    let (a, b) = tokio::join!(
        h.apply("race", "", &l1, "", &c1),
        h.apply("race", "", &l1, "", &c1)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.1 > 0 && b.1 > 0);
    assert_eq!(h.list("race", "").await, [(c1.clone(), Kind::Committed)]);
    // Namespaces are separate: the layer is not in `default`.
    assert!(h.list("default", "").await.is_empty());
    assert!(!h.apply("default", "", &l1, "", &c1).await.unwrap().0);
    let folders = h.folders("overlayfs") + h.folders("native");
    assert_eq!(folders, 2, "one per namespace, the loser's removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_snapshots_copy_and_delete_whiteouts() {
    let h = Harness::start("native").await;
    let (l1, l2) = (base_layer(), top_layer());
    let c1 = chain_id([&l1.diff_id]).unwrap().to_string();
    let c2 = chain_id([&l1.diff_id, &l2.diff_id]).unwrap().to_string();
    h.apply("default", "native", &l1, "", &c1).await.unwrap();
    h.apply("default", "", &l2, &c1, &c2).await.unwrap();
    // Overlay's snapshots are a separate set.
    assert!(h.list("default", "overlayfs").await.is_empty());

    let mounts = h.prepare("default", "native", "rw", &c2).await.unwrap();
    assert_eq!(
        (mounts[0].r#type.as_str(), mounts[0].options.clone()),
        ("bind", vec!["rw".into(), "rbind".into()])
    );
    let fs = PathBuf::from(&mounts[0].source);
    with_mounted(&mounts, &h.dir.path().join("merged"), |at| {
        assert_eq!(
            std::fs::read(at.join("etc/hello")).unwrap(),
            b"hello from layer 1\n"
        );
        assert!(!at.join("gone.txt").exists());
        let opq: Vec<_> = std::fs::read_dir(at.join("opq"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(opq, ["b"]);
        assert!(!at.join(".wh.gone.txt").exists());
        std::fs::write(at.join("written"), b"rw").unwrap();
    });
    assert!(fs.join("written").exists());
    let e = h.remove("default", "native", &c1).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    for k in ["rw", &c2, &c1] {
        h.remove("default", "native", k).await.unwrap();
    }
    assert_eq!(h.folders("native"), 0);
}

/// A header and the bytes of an uncompressed tar, in chunks.
fn plain_apply(tar: &[u8], name: &str, diff_id: &str, parent: &str) -> Vec<ApplyRequest> {
    let mut messages = vec![ApplyRequest {
        item: Some(Item::Header(ApplyHeader {
            name: name.into(),
            parent: parent.into(),
            diff_id: diff_id.into(),
            ..Default::default()
        })),
    }];
    for chunk in tar.chunks(64 * 1024) {
        messages.push(ApplyRequest {
            item: Some(Item::Data(chunk.to_vec())),
        });
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_flow_diff_streams_into_an_apply_with_a_computed_name() {
    let h = Harness::start("native").await;
    let l1 = base_layer();
    let c1 = chain_id([&l1.diff_id]).unwrap().to_string();
    h.apply("default", "", &l1, "", &c1).await.unwrap();
    let mounts = h.prepare("default", "", "container", &c1).await.unwrap();
    let rw = PathBuf::from(&mounts[0].source);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(rw.join("big.bin"), &big).unwrap();
    std::fs::remove_file(rw.join("gone.txt")).unwrap();

    let chunks = h.diff("default", "container").await.unwrap();
    assert!(
        chunks.len() > 1,
        "a 3 MB change streams in several messages"
    );
    assert!(chunks
        .iter()
        .all(|c| c.len() <= berth_snapshot::service::DIFF_CHUNK));
    let tar: Vec<u8> = chunks.concat();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(names, ["big.bin", ".wh.gone.txt"]);

    // The image service's commit: the same bytes into Apply, with neither name nor diff_id.
    let r = h
        .apply_stream(
            "default",
            tokio_stream::iter(plain_apply(&tar, "", "", &c1)),
        )
        .await
        .unwrap();
    let diff_id = Digest::sha256_of(&tar);
    assert_eq!(r.diff_id, diff_id.to_string());
    let c1d: Digest = c1.parse().unwrap();
    assert_eq!(r.name, chain_id([&c1d, &diff_id]).unwrap().to_string());
    assert!(!r.existed && r.size > 0);
    let stat = h
        .client
        .clone()
        .stat(request(
            "default",
            SnapshotKey {
                snapshotter: String::new(),
                key: r.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(
        (stat.kind, stat.parent.as_str()),
        (Kind::Committed as i32, c1.as_str())
    );
    // Again: the same name, existed.
    let again = h
        .apply_stream(
            "default",
            tokio_stream::iter(plain_apply(&tar, "", "", &c1)),
        )
        .await
        .unwrap();
    assert!(again.existed);
    assert_eq!(again.name, r.name);

    // A named Apply reports its name and diff_id too, also when answered from what is there.
    let named = h
        .apply_stream(
            "default",
            tokio_stream::iter(plain_apply(&tar, &r.name, &r.diff_id, &c1)),
        )
        .await
        .unwrap();
    assert!(named.existed);
    assert_eq!((named.name, named.diff_id), (r.name.clone(), r.diff_id));

    // Errors: an unknown key before any data; name without diff_id and the reverse.
    let e = h.diff("default", "nope").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    for (name, diff_id) in [
        (r.name.as_str(), ""),
        ("", diff_id.to_string().leak() as &str),
    ] {
        let e = h
            .apply_stream(
                "default",
                tokio_stream::iter(plain_apply(&tar, name, diff_id, &c1)),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    // A parent nobody has or applies.
    let e = h
        .apply_stream(
            "default",
            tokio_stream::iter(plain_apply(&tar, "", "", "sha256:nothing-here")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("sha256:nothing-here"),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_applies_layers_in_parallel() {
    for sn in ["overlayfs", "native"] {
        let h = Harness::start(sn).await;
        if sn == "overlayfs" && !overlay_works(&h) {
            continue;
        }
        let (l1, l2) = (base_layer(), top_layer());
        let c1 = chain_id([&l1.diff_id]).unwrap().to_string();
        let c2 = chain_id([&l1.diff_id, &l2.diff_id]).unwrap().to_string();
        // The parent's data is held back until the child's Apply is under way.
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let mut first = vec![ApplyRequest {
            item: Some(Item::Header(ApplyHeader {
                snapshotter: sn.into(),
                name: c1.clone(),
                media_type: OCI_LAYER_GZIP.into(),
                diff_id: l1.diff_id.to_string(),
                ..Default::default()
            })),
        }];
        let data = ApplyRequest {
            item: Some(Item::Data(l1.gzip.clone())),
        };
        let parent_stream = async_stream(first.remove(0), held, data);
        let parent = {
            let client = h.client.clone();
            tokio::spawn(async move {
                client
                    .clone()
                    .apply(request("default", parent_stream))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let child = {
            let client = h.client.clone();
            let messages = vec![
                ApplyRequest {
                    item: Some(Item::Header(ApplyHeader {
                        snapshotter: sn.into(),
                        name: c2.clone(),
                        parent: c1.clone(),
                        media_type: OCI_LAYER_GZIP.into(),
                        diff_id: l2.diff_id.to_string(),
                        ..Default::default()
                    })),
                },
                ApplyRequest {
                    item: Some(Item::Data(l2.gzip.clone())),
                },
            ];
            tokio::spawn(async move {
                client
                    .clone()
                    .apply(request("default", tokio_stream::iter(messages)))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !child.is_finished(),
            "{sn}: the child commits after its parent"
        );
        release.send(()).unwrap();
        let p = parent.await.unwrap().unwrap().into_inner();
        let c = child.await.unwrap().unwrap().into_inner();
        assert_eq!(
            (p.name.as_str(), c.name.as_str()),
            (c1.as_str(), c2.as_str())
        );
        let mut want = vec![(c1.clone(), Kind::Committed), (c2.clone(), Kind::Committed)];
        want.sort();
        assert_eq!(h.list("default", sn).await, want);
        let mounts = h.prepare("default", sn, "rw", &c2).await.unwrap();
        with_mounted(&mounts, &h.dir.path().join("m"), |at| {
            assert!(at.join("etc/hello").exists() && at.join("etc/new").exists());
            assert!(!at.join("gone.txt").exists());
        });
    }
}

/// A stream of `first`, then — once `held` fires — `rest`.
fn async_stream(
    first: ApplyRequest,
    held: tokio::sync::oneshot::Receiver<()>,
    rest: ApplyRequest,
) -> impl tokio_stream::Stream<Item = ApplyRequest> + Send + 'static {
    use futures::StreamExt;
    let later = futures::stream::once(async move {
        let _ = held.await;
        rest
    });
    futures::stream::iter([first]).chain(later)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_collector_sees_parents_and_cannot_remove_a_parent() {
    let h = Harness::start("native").await;
    let (l1, l2) = (base_layer(), top_layer());
    let c1 = chain_id([&l1.diff_id]).unwrap().to_string();
    let c2 = chain_id([&l1.diff_id, &l2.diff_id]).unwrap().to_string();
    h.apply("default", "", &l1, "", &c1).await.unwrap();
    h.apply("default", "", &l2, &c1, &c2).await.unwrap();
    // An unrelated layer nothing refers to.
    let lone = layer(|b| file(b, "lone", b"x"));
    let c3 = chain_id([&lone.diff_id]).unwrap().to_string();
    h.apply("default", "", &lone, "", &c3).await.unwrap();
    // A committed container layer on c2, and a running container on that.
    h.prepare("default", "", "rw", &c2).await.unwrap();
    let commit = CommitSnapshotRequest {
        snapshotter: String::new(),
        name: "committed".into(),
        key: "rw".into(),
        labels: Default::default(),
    };
    h.client
        .clone()
        .commit(request("default", commit))
        .await
        .unwrap();
    h.prepare("default", "", "container", "committed")
        .await
        .unwrap();

    // Reachability from List alone, as the image service's GC computes it.
    let infos = h
        .client
        .clone()
        .list(request("default", ListSnapshotsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .info;
    let parent: std::collections::HashMap<String, String> = infos
        .iter()
        .map(|i| (i.name.clone(), i.parent.clone()))
        .collect();
    let mut live = std::collections::BTreeSet::new();
    for i in infos.iter().filter(|i| i.kind == Kind::Active as i32) {
        let mut k = i.name.clone();
        while !k.is_empty() && live.insert(k.clone()) {
            k = parent[&k].clone();
        }
    }
    let want: std::collections::BTreeSet<String> =
        ["container", "committed", c2.as_str(), c1.as_str()]
            .into_iter()
            .map(String::from)
            .collect();
    assert_eq!(live, want);

    // A committed snapshot with children refuses to go, whatever kind the children are.
    for (key, child) in [(&c1, &c2), (&c2, &"committed".to_string())] {
        let e = h.remove("default", "", key).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{key}");
        assert!(e.message().contains(child.as_str()), "{}", e.message());
    }
    let e = h.remove("default", "", "committed").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // What is not reachable goes; the rest goes top down.
    h.remove("default", "", &c3).await.unwrap();
    for k in ["container", "committed", c2.as_str(), c1.as_str()] {
        h.remove("default", "", k).await.unwrap();
    }
    assert!(h.list("default", "").await.is_empty());
    assert_eq!(h.folders("native"), 0);
}
