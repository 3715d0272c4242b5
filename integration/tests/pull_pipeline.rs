//! Pulls of multi-layer images (issue #4): layers download in parallel and unpack while the
//! others download, whiteouts and opaque directories across layers come out right, and two
//! concurrent pulls of the same image fetch each blob from the registry once.

use berth_integration::{
    busybox_archive, free_port, missing_tool, skip, spawn_tied, Berthd, TempDir,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sh(script: &str, dir: &Path) {
    let o = Command::new("sh")
        .args(["-euc", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A registry that logs every request (to count blob downloads).
struct LoggingRegistry {
    addr: String,
    dir: TempDir,
    child: std::process::Child,
}

impl Drop for LoggingRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LoggingRegistry {
    fn start() -> LoggingRegistry {
        let dir = TempDir::new("berth-it-logreg");
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}/data}}}}\nhttp: {{addr: {addr}}}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn_tied(cmd).unwrap();
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LoggingRegistry { addr, dir, child }
    }

    /// How many GETs of a blob the registry answered.
    fn blob_gets(&self, digest: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(&format!("GET /v2/multi/blobs/{digest}")))
            .count()
    }
}

/// busybox plus five layers: files added, one deleted (a whiteout), a directory replaced
/// (an opaque directory), pushed as `multi:1`.
fn push_multi_layer(reg: &LoggingRegistry) {
    let work = TempDir::new("berth-it-multi");
    let archive = busybox_archive();
    sh(
        &format!(
            "skopeo copy -q oci-archive:{} oci:layout:img
             for i in 1 2 3 4 5; do
               umoci unpack --image layout:img b >/dev/null
               mkdir -p b/rootfs/data
               head -c 3000000 /dev/urandom > b/rootfs/data/layer$i
               case $i in
                 1) mkdir -p b/rootfs/data/dir && echo old > b/rootfs/data/dir/old ;;
                 3) rm b/rootfs/data/layer1 ;;
                 4) rm -rf b/rootfs/data/dir && mkdir b/rootfs/data/dir && echo new > b/rootfs/data/dir/new ;;
               esac
               umoci repack --image layout:img b >/dev/null
               rm -rf b
             done
             skopeo copy -q --dest-tls-verify=false oci:layout:img docker://{}/multi:1",
            archive.display(),
            reg.addr
        ),
        work.path(),
    );
}

#[test]
fn multi_layer_pulls_are_right_and_concurrent_pulls_fetch_once() {
    if let Some(why) = missing_tool(&["docker-registry", "umoci", "skopeo"]) {
        return skip(why);
    }
    let reg = LoggingRegistry::start();
    push_multi_layer(&reg);
    let img = format!("{}/multi:1", reg.addr);
    let d = Berthd::start("");

    // Two pulls at once.
    let spawn = || {
        d.cmd()
            .args(["pull", "-q", &img])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for p in [a, b] {
        let o = p.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "pull: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            d.log()
        );
    }
    let manifest_layers = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{img}"))
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest_layers.stdout).unwrap();
    let digests: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests.len(), 6, "{m}");
    for dg in &digests {
        assert_eq!(
            reg.blob_gets(dg),
            1,
            "blob {dg} was downloaded more than once"
        );
    }

    // The rootfs is the sum of the layers.
    let ls = d.ok(&["run", "--rm", &img, "ls", "/data", "/data/dir"]);
    assert!(
        !ls.contains("layer1"),
        "a whiteout did not hide layer1: {ls}"
    );
    for i in 2..=5 {
        assert!(ls.contains(&format!("layer{i}")), "layer{i} missing: {ls}");
    }
    assert!(
        ls.contains("new") && !ls.contains("old"),
        "opaque dir: {ls}"
    );
    let size = d.ok(&["run", "--rm", &img, "sh", "-c", "cat /data/layer5 | wc -c"]);
    assert_eq!(size.trim(), "3000000");

    // Another pull is all cached; a second berthd shares nothing and pulls it whole.
    d.ok(&["pull", "-q", &img]);
    for dg in &digests {
        assert_eq!(reg.blob_gets(dg), 1);
    }
    let d2 = Berthd::start("");
    d2.ok(&["pull", "-q", &img]);
    assert_eq!(
        d2.ok(&["run", "--rm", &img, "cat", "/data/dir/new"]).trim(),
        "new"
    );
}
