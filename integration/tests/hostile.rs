//! A layer that tries to write outside its rootfs, served by a real registry: the pull fails
//! with a clear error and nothing outside berth's folders is written.

use berth_integration::{Berthd, Registry, TempDir};
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
    let Some(reg) = Registry::start() else { return };
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
