//! A container's sizes and a stopped container's volumes through the gateway, with the real
//! docker CLIs and the `berth` CLI: `GET /containers/json?size=1` and
//! `/containers/{id}/json?size=1` (SizeRw, SizeRootFs; absent without `size`), `docker ps -s`
//! and `berth ps -s`; `docker cp` and `berth cp` both ways against a stopped container's named
//! volume, which are read and written in the volume (never in the snapshot under it, never
//! outside the volume through a symlink).

use berth_integration::gateway::{docker_clis, Gateway};
use berth_integration::{or_skip, wait_for, TempDir};
use std::time::Duration;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn sizes_with_size_1_only() {
    let g = or_skip!(Gateway::shared());
    let clis = or_skip!(docker_clis());
    let script = "head -c 300000 /dev/zero > /big; exec sleep 1000";
    g.ok(
        &clis[0],
        &["run", "-d", "--name", "tidy-sz", &g.img, "sh", "-c", script],
    );
    wait_for("the big file", Duration::from_secs(10), || {
        g.d.berth(&["exec", "tidy-sz", "test", "-f", "/big"])
            .status
            .success()
    });
    let filter = "filters=%7B%22name%22%3A%5B%22tidy-sz%22%5D%7D";
    let plain = json(&g.curl(&[&format!("http://d/v1.41/containers/json?{filter}")]));
    assert!(plain[0].get("SizeRw").is_none(), "{plain}");
    let sized = json(&g.curl(&[&format!("http://d/v1.41/containers/json?size=1&{filter}")]));
    let (rw, root) = (
        sized[0]["SizeRw"].as_i64().unwrap(),
        sized[0]["SizeRootFs"].as_i64().unwrap(),
    );
    assert!((300_000..400_000).contains(&rw), "{sized}");
    assert!(root > rw + 1_000_000, "busybox is in it too: {sized}");
    let inspect = json(&g.curl(&["http://d/v1.41/containers/tidy-sz/json"]));
    assert!(inspect.get("SizeRw").is_none());
    let inspect = json(&g.curl(&["http://d/v1.41/containers/tidy-sz/json?size=1"]));
    assert_eq!(inspect["SizeRw"].as_i64(), Some(rw), "{inspect}");
    assert_eq!(inspect["SizeRootFs"].as_i64(), Some(root));
    for cli in &clis {
        let ps = g.ok(cli, &["ps", "-s", "--filter", "name=tidy-sz"]);
        assert!(ps.lines().next().unwrap().contains("SIZE"), "{ps}");
        assert!(ps.contains("kB (virtual "), "{ps}");
    }
    let ps = g.d.ok(&["ps", "-s", "--filter", "name=tidy-sz"]);
    assert!(ps.lines().next().unwrap().contains("SIZE"), "{ps}");
    assert!(ps.contains("kB (virtual "), "{ps}");
    let size =
        g.d.ok(&["ps", "--filter", "name=tidy-sz", "--format", "{{.Size}}"]);
    assert!(size.contains("(virtual "), "{size}");
    g.d.ok(&["rm", "-f", "tidy-sz"]);
}

#[test]
fn cp_reads_and_writes_a_stopped_containers_volume() {
    let g = or_skip!(Gateway::shared());
    let clis = or_skip!(docker_clis());
    let script = "echo hello > /data/f; mkdir /data/d; echo deep > /data/d/g";
    g.ok(
        &clis[0],
        &[
            "run",
            "--name",
            "tidy-cp",
            "-v",
            "tidyvol:/data",
            &g.img,
            "sh",
            "-c",
            script,
        ],
    );
    let dir = TempDir::new("berth-it-tidy-cp");
    let at = |name: &str| dir.path().join(name).display().to_string();
    for (i, cli) in clis.iter().enumerate() {
        let file = at(&format!("f{i}"));
        g.ok(cli, &["cp", "tidy-cp:/data/f", &file]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");
        let tree = at(&format!("tree{i}"));
        g.ok(cli, &["cp", "tidy-cp:/data", &tree]);
        let deep = std::fs::read_to_string(format!("{tree}/d/g")).unwrap();
        assert_eq!(deep, "deep\n");
        // Into the volume of the stopped container, and seen there by the next one.
        let put = at(&format!("put{i}.txt"));
        std::fs::write(&put, format!("put {i}\n")).unwrap();
        g.ok(cli, &["cp", &put, "tidy-cp:/data/d/"]);
        let seen = g.d.ok(&[
            "run",
            "--rm",
            "-v",
            "tidyvol:/data",
            &g.img,
            "cat",
            &format!("/data/d/put{i}.txt"),
        ]);
        assert_eq!(seen, format!("put {i}\n"));
    }
    // berth cp, the same RPCs.
    g.d.ok(&["cp", "tidy-cp:/data/d/g", &at("g-berth")]);
    assert_eq!(std::fs::read_to_string(at("g-berth")).unwrap(), "deep\n");
    std::fs::write(at("esc.txt"), "inside\n").unwrap();
    // A symlink that climbs is resolved inside the volume: the file lands in its root.
    g.d.ok(&[
        "run",
        "--rm",
        "-v",
        "tidyvol:/data",
        &g.img,
        "ln",
        "-s",
        "../../../../..",
        "/data/up",
    ]);
    g.d.ok(&["cp", &at("esc.txt"), "tidy-cp:/data/up/"]);
    assert!(
        !std::path::Path::new("/esc.txt").exists(),
        "nothing escapes"
    );
    let seen = g.d.ok(&[
        "run",
        "--rm",
        "-v",
        "tidyvol:/data",
        &g.img,
        "cat",
        "/data/esc.txt",
    ]);
    assert_eq!(seen, "inside\n");
    // A path out of the volume is still the container's own.
    g.d.ok(&["cp", "tidy-cp:/etc/hostname", &at("hostname")]);
    g.d.ok(&["rm", "tidy-cp"]);
    g.d.ok(&["volume", "rm", "tidyvol"]);
}
