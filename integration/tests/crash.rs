//! A daemon killed with SIGKILL in the middle of a burst of writes leaves every database
//! consistent and only whole, verified blobs in the content store.

use berth_integration::{or_skip, Berthd, Registry};
use sha2_free::sha256_file;
use std::process::Stdio;
use std::time::Duration;

mod sha2_free {
    /// sha256 of a file with the system's sha256sum, so the check is independent of berth.
    pub fn sha256_file(p: &std::path::Path) -> String {
        let o = std::process::Command::new("sha256sum")
            .arg(p)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }
}

#[test]
fn kill_9_during_a_burst_of_writes() {
    let reg = or_skip!(Registry::start());
    for i in 0..6 {
        reg.push_busybox(&format!("burst{i}:latest"));
    }
    let mut d = Berthd::start("");
    let first = format!("{}/burst0:latest", reg.addr);
    d.ok(&["pull", "-q", &first]);
    for round in 0..3 {
        // a burst: pulls of every tag and containers being created and run, all at once
        let mut kids = Vec::new();
        for i in 0..6 {
            let mut c = d.cmd();
            c.args(["pull", "-q", &format!("{}/burst{i}:latest", reg.addr)])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            kids.push(c.spawn().unwrap());
            let mut c = d.cmd();
            c.args(["run", "--rm", &first, "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            kids.push(c.spawn().unwrap());
        }
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        d.kill9();
        for mut k in kids {
            let _ = k.wait();
        }
        d.restart();
        // every database opens and answers
        d.ok(&["images"]);
        d.ok(&["run", "--rm", &first, "true"]);
        // every blob in the store is whole: its bytes hash to its name
        let blobs = d.root().join("image/content/blobs/sha256");
        for b in std::fs::read_dir(&blobs).unwrap().flatten() {
            let name = b.file_name().to_string_lossy().into_owned();
            assert_eq!(
                sha256_file(&b.path()),
                name,
                "blob {name} is not whole after kill -9"
            );
        }
        let ingest = d.root().join("image/content/ingest");
        assert_eq!(
            std::fs::read_dir(&ingest).map(|r| r.count()).unwrap_or(0),
            0,
            "half-written blobs remain"
        );
    }
    // after the dust settles, every tag pulls and runs
    for i in 0..6 {
        let r = format!("{}/burst{i}:latest", reg.addr);
        d.ok(&["pull", "-q", &r]);
        assert_eq!(d.ok(&["run", "--rm", &r, "echo", "ok"]), "ok\n");
    }
}
