//! A layer that tries to write outside its rootfs, served by a real registry: the pull fails
//! with a clear error and nothing outside berth's folders is written.

use berth_integration::{or_skip, Berthd, Registry, TempDir};
use std::path::Path;
use std::process::Command;

/// Writes an OCI layout holding one image whose single layer is `layer_tar` (gzip'd).
fn oci_layout_with_layer(dir: &Path, layer_tar: &Path) {
    let py = r#"
import gzip, hashlib, json, os, sys
out, layer = sys.argv[1], sys.argv[2]
raw = open(layer, 'rb').read()
gz = gzip.compress(raw, mtime=0)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    os.makedirs(f'{out}/blobs/sha256', exist_ok=True)
    open(f'{out}/blobs/sha256/{d}', 'wb').write(b)
    return 'sha256:' + d, len(b)
diff_id = 'sha256:' + hashlib.sha256(raw).hexdigest()
ld, ls = put(gz)
cfg = json.dumps({'architecture': 'amd64', 'os': 'linux', 'config': {'Cmd': ['/bin/sh']},
                  'rootfs': {'type': 'layers', 'diff_ids': [diff_id]}}).encode()
cd, cs = put(cfg)
man = json.dumps({'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
    'config': {'mediaType': 'application/vnd.oci.image.config.v1+json', 'digest': cd, 'size': cs},
    'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar+gzip', 'digest': ld, 'size': ls}]}).encode()
md, ms = put(man)
json.dump({'imageLayoutVersion': '1.0.0'}, open(f'{out}/oci-layout', 'w'))
json.dump({'schemaVersion': 2, 'manifests': [{'mediaType': 'application/vnd.oci.image.manifest.v1+json',
    'digest': md, 'size': ms, 'annotations': {'org.opencontainers.image.ref.name': 'evil'}}]},
    open(f'{out}/index.json', 'w'))
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(dir)
        .arg(layer_tar)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A tar made with Python's tarfile, which writes whatever names it is given.
fn hostile_tar(path: &Path, script: &str) {
    let py = format!(
        "import io, tarfile, sys\nt = tarfile.open(sys.argv[1], 'w')\n\
         def f(name, data=b'x'):\n    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n\
         def l(name, target):\n    i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target; t.addfile(i)\n\
         {script}\nt.close()\n"
    );
    let st = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn layers_cannot_write_outside_the_rootfs() {
    let reg = or_skip!(Registry::start());
    let d = Berthd::start("");
    let work = TempDir::new("berth-it-hostile");
    let victim = work.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let cases = [
        (
            "dotdot",
            format!(
                "f('bin/ok')\nf('../../../../../../..{}/dotdot')",
                victim.display()
            ),
        ),
        ("absolute", format!("f('{}/absolute')", victim.display())),
        (
            "symlink",
            format!(
                "l('escape', '{}')\nf('escape/through-link')",
                victim.display()
            ),
        ),
    ];
    for (name, script) in &cases {
        let tar = work.path().join(format!("{name}.tar"));
        hostile_tar(&tar, script);
        let layout = work.path().join(format!("{name}-oci"));
        oci_layout_with_layer(&layout, &tar);
        let st = Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:evil", layout.display()))
            .arg(format!("docker://{}/evil:{name}", reg.addr))
            .status()
            .unwrap();
        assert!(st.success(), "push {name}");
        let r = format!("{}/evil:{name}", reg.addr);
        let o = d.berth(&["pull", &r]);
        let err = String::from_utf8_lossy(&o.stderr);
        eprintln!("{name}: {}", err.trim().replace('\n', " / "));
        // Docker's rule: an absolute name is taken relative to the rootfs, so that layer may
        // pull; `..` and writes through a symlink are refused.
        if *name != "absolute" {
            assert!(!o.status.success(), "{name}: a hostile layer was pulled");
            assert!(err.contains("Error response from daemon"), "{name}: {err}");
            assert!(!d.ok(&["images"]).contains(&format!("evil:{name}")));
        }
        let written: Vec<_> = std::fs::read_dir(&victim)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            written.is_empty(),
            "{name}: files escaped the rootfs: {written:?} ({err})"
        );
    }
}

/// Writes what it is given to `inner` and hashes it on the way.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hash: <sha2::Sha256 as sha2::Digest>::new(),
        len: 0,
    }
}

fn digest(hash: sha2::Sha256) -> String {
    format!("sha256:{:x}", sha2::Digest::finalize(hash))
}

/// Writes a gzip'd layer to `path` by calling `write` with the tar stream, without holding
/// it; gives (digest, size) of the blob and the layer's diff_id.
fn gzip_layer(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> (String, u64, String) {
    use std::io::Write;
    let blob = hashing(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ));
    let mut tar = hashing(flate2::write::GzEncoder::new(
        blob,
        flate2::Compression::default(),
    ));
    write(&mut tar).unwrap();
    let Hashing {
        inner: gz, hash, ..
    } = tar;
    let mut blob = gz.finish().unwrap();
    blob.flush().unwrap();
    (digest(blob.hash), blob.len, digest(hash))
}

/// An OCI archive (for `berth load`) of one image `hostile:<tag>` with the one gzip'd layer.
fn oci_archive(
    out: &Path,
    tag: &str,
    layer: &Path,
    layer_digest: &str,
    layer_size: u64,
    diff_id: &str,
) {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let sha = |b: &[u8]| format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(b));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha(manifest.as_bytes()), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": format!("hostile:{tag}")}}],
    })
    .to_string();
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index.as_bytes());
    for doc in [&config, &manifest] {
        let name = format!("blobs/sha256/{}", &sha(doc.as_bytes())[7..]);
        add(&name, doc.as_bytes());
    }
    b.append_path_with_name(layer, format!("blobs/sha256/{}", &layer_digest[7..]))
        .unwrap();
    b.finish().unwrap();
}

/// The snapshot folders of berthd's snapshotters.
fn snapshot_dirs(d: &Berthd) -> Vec<std::path::PathBuf> {
    ["overlayfs", "native"]
        .iter()
        .map(|sn| d.root().join("snapshot").join(sn).join("snapshots"))
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect()
}

/// berthd's peak resident memory so far, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A header block for `name` of `kind` declaring `size` bytes.
fn header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(name).unwrap();
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    h
}

/// Writes a GNU long-name header of 1 GiB and its name (streamed).
fn gib_long_name(w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let gib = 1u64 << 30;
    w.write_all(header(tar::EntryType::GNULongName, "././@LongLink", gib).as_bytes())?;
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..(gib >> 20) {
        w.write_all(&chunk)?;
    }
    Ok(())
}

/// `berth load` of `archive` fails, naming the 1 GiB long name, with berthd's peak RSS
/// (VmHWM) under 256 MiB.
fn load_is_refused_in_bounded_memory(d: &Berthd, archive: &Path) {
    let (code, err) = d.fails(&["load", "-i", archive.to_str().unwrap()]);
    let peak = peak_rss_kib(d.pid());
    eprintln!("exit {code}: {}", err.trim());
    eprintln!("berthd peak RSS (VmHWM): {} MiB", peak >> 10);
    assert!(
        err.contains("GNU long name header of 1073741824 bytes"),
        "the error should say what was refused: {err}"
    );
    assert!(peak < 256 << 10, "berthd's peak RSS was {} MiB", peak >> 10);
}

#[test]
fn a_gib_long_name_layer_is_refused_in_bounded_memory() {
    let d = Berthd::start("");
    let work = TempDir::new("berth-it-longname");
    let layer = work.path().join("layer.tar.gz");
    let started = std::time::Instant::now();
    let (ld, ls, diff_id) = gzip_layer(&layer, |w| {
        gib_long_name(w)?;
        w.write_all(header(tar::EntryType::Regular, "after", 0).as_bytes())?;
        w.write_all(&[0; 1024])
    });
    eprintln!("layer: {ls} bytes gzip'd, made in {:?}", started.elapsed());
    assert!(ls < 16 << 20, "the layer should be a few MB, not {ls}");
    let archive = work.path().join("image.tar");
    oci_archive(&archive, "longname", &layer, &ld, ls, &diff_id);

    load_is_refused_in_bounded_memory(&d, &archive);
    // Nothing half-applied: no image, and no snapshot left behind.
    assert!(!d.ok(&["images"]).contains("longname"));
    let left = snapshot_dirs(&d);
    assert!(left.is_empty(), "snapshot folders left: {left:?}");
}

#[test]
fn a_sparse_tib_entry_does_not_fill_the_disk() {
    let d = Berthd::start("");
    let work = TempDir::new("berth-it-sparse");
    let layer = work.path().join("layer.tar.gz");
    let tib = 1u64 << 40;
    let (ld, ls, diff_id) = gzip_layer(&layer, |w| {
        // An old-GNU sparse entry (what `tar --sparse` writes): two 512-byte data segments,
        // at the start and at the end of a 1 TiB file.
        let mut h = header(tar::EntryType::GNUSparse, "disk.img", 1024);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(tib);
        gnu.sparse[0].set_offset(0);
        gnu.sparse[0].set_length(512);
        gnu.sparse[1].set_offset(tib - 512);
        gnu.sparse[1].set_length(512);
        h.set_cksum();
        w.write_all(h.as_bytes())?;
        w.write_all(&[b'h'; 512])?;
        w.write_all(&[b't'; 512])?;
        w.write_all(&[0; 1024])
    });
    let archive = work.path().join("image.tar");
    oci_archive(&archive, "sparse", &layer, &ld, ls, &diff_id);
    d.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(d.ok(&["images"]).contains("sparse"));

    let found: Vec<_> = snapshot_dirs(&d)
        .into_iter()
        .map(|p| p.join("fs/disk.img"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&found[0]).unwrap();
    eprintln!(
        "disk.img: {} bytes long, {} blocks of 512 bytes on disk",
        md.len(),
        md.blocks()
    );
    assert_eq!(md.len(), tib);
    assert!(
        md.blocks() <= 256,
        "{} blocks: the holes were written",
        md.blocks()
    );
    let mut f = std::fs::File::open(&found[0]).unwrap();
    let mut buf = [0u8; 512];
    use std::io::{Read, Seek};
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [b'h'; 512]);
    f.seek(std::io::SeekFrom::Start(tib - 512)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [b't'; 512]);
}

/// `berth load` of an archive (gzip'd, a few MB) whose own first entry has a 1 GiB GNU long
/// name: berthd refuses it from the header's size field instead of reading the name into
/// memory.
#[test]
fn a_load_archive_with_a_gib_long_name_is_refused_in_bounded_memory() {
    let d = Berthd::start("");
    let work = TempDir::new("berth-it-load-longname");
    let archive = work.path().join("image.tar.gz");
    let (_, size, _) = gzip_layer(&archive, |w| {
        w.write_all(header(tar::EntryType::Regular, "oci-layout", 0).as_bytes())?;
        gib_long_name(w)?;
        w.write_all(header(tar::EntryType::Regular, "index.json", 0).as_bytes())?;
        w.write_all(&[0; 1024])
    });
    assert!(
        size < 16 << 20,
        "the archive should be a few MB, not {size}"
    );

    load_is_refused_in_bounded_memory(&d, &archive);
    assert!(d.ok(&["images", "-q"]).trim().is_empty());
}
