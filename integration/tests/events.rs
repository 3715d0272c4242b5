//! `berth events` streams what happens to images and containers, as Docker's does.

use berth_integration::{or_skip, Berthd, Registry};
use std::time::{Duration, Instant};

#[test]
fn events_stream_image_and_container_lifecycles() {
    let reg = or_skip!(Registry::start());
    reg.push_busybox("busybox:latest");
    let d = Berthd::start("");
    let img = format!("{}/busybox:latest", reg.addr);
    let (mut child, rx) = d.events(&[]);
    // the subscription is live once an event published after it arrives
    let mut lines = Vec::new();
    let start = Instant::now();
    while !lines.iter().any(|l: &String| l.contains("image pull")) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no pull event: {lines:?}"
        );
        d.ok(&["pull", "-q", &img]);
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
            lines.push(l);
        }
    }
    let code = d
        .berth(&["run", "--rm", "--name", "evt", &img, "sh", "-c", "exit 3"])
        .status
        .code();
    assert_eq!(code, Some(3));
    let want = [
        "container create",
        "container start",
        "container die",
        "container destroy",
    ];
    let start = Instant::now();
    while !want.iter().all(|w| lines.iter().any(|l| l.contains(w))) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "missing events: {lines:?}"
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let die = lines.iter().find(|l| l.contains("container die")).unwrap();
    assert!(
        die.contains("exitCode=3") && die.contains("name=evt"),
        "{die}"
    );
    let pos = |w: &str| lines.iter().position(|l| l.contains(w)).unwrap();
    assert!(
        pos("container create") < pos("container start")
            && pos("container start") < pos("container die")
    );
    assert!(pos("container die") < pos("container destroy"), "{lines:?}");
    let _ = child.kill();
    let _ = child.wait();
}
