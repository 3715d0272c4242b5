//! Services reach each other only through gRPC at configured addresses: the same engine
//! works with its services split across two berthd processes.

use berth_integration::{or_skip, Berthd, Registry};

#[test]
fn services_split_across_two_daemons() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");
    // A hosts the snapshot and registry services
    let a = Berthd::start_with("", &[], &["--service", "snapshot,registry"]);
    let a_sock = format!("unix://{}", a.sock.display());
    // B hosts image and runtime, and reaches A's services at A's socket
    let b = Berthd::start_with(
        &format!("[services]\nsnapshot = \"{a_sock}\"\nregistry = \"{a_sock}\"\n"),
        &[],
        &["--service", "image,runtime"],
    );
    let version = b.ok(&["version"]);
    assert!(version.contains("image, runtime"), "{version}");
    let img = format!("{}/busybox:latest", reg.addr);
    b.ok(&["pull", "-q", &img]);
    assert_eq!(b.ok(&["run", "--rm", &img, "echo", "split"]), "split\n");
    // each daemon kept only its own services' data
    assert!(a.root().join("snapshot").exists(), "A holds the snapshots");
    assert!(!a.root().join("image").exists(), "A hosts no image service");
    assert!(b.root().join("image").exists(), "B holds the content store");
    assert!(
        !b.root().join("snapshot").exists(),
        "B hosts no snapshot service"
    );
    // a client of A cannot list images: A does not host that service
    let (_, err) = a.fails(&["images"]);
    assert!(
        err.to_lowercase().contains("unimplemented") || err.contains("Images"),
        "{err}"
    );
}

#[test]
fn host_network_and_namespaces_from_the_cli() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");
    let d = Berthd::start("");
    let img = format!("{}/busybox:latest", reg.addr);
    d.ok(&["pull", "-q", &img]);
    // Other tests plug veths and bridges in and out meanwhile: the host's own interfaces
    // (lo and the one of its default route, when it has one) must be seen, not a count.
    let default_if = std::fs::read_to_string("/proc/net/route")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some("00000000"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string));
    let inside = d.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        &img,
        "ls",
        "/sys/class/net",
    ]);
    let inside: Vec<&str> = inside.split_whitespace().collect();
    assert!(inside.contains(&"lo"), "{inside:?}");
    if let Some(i) = &default_if {
        assert!(
            inside.contains(&i.as_str()),
            "--network host shares the host's interfaces ({i}): {inside:?}"
        );
    }
    let (code, err) = d.fails(&["run", "--rm", "--network", "bogus", &img, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("bogus"), "{err}");
    // a namespace sees only its own images
    assert!(d.ok(&["-n", "other", "images", "-q"]).trim().is_empty());
    let (_, err) = d.fails(&["-n", "Bad!", "images"]);
    assert!(err.contains("namespace"), "{err}");
}
