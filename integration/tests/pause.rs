//! `pause` and `unpause` through the CLI: a paused container's processes stop (a loop that
//! appends to a bind-mounted host file stops growing), ps and inspect show it as Docker does,
//! exec is refused, stop/kill/rm -f still end it, and `commit` pauses a running container
//! around the commit unless `--pause=false`.

use berth_integration::{or_skip, wait_for, Engine, TempDir};
use std::process::Child;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// One registry and one berthd shared by the tests of this file; None when a tool is missing.
fn env() -> Option<&'static Engine> {
    static E: OnceLock<Option<Engine>> = OnceLock::new();
    E.get_or_init(Engine::start).as_ref()
}

/// A container appending a line to HOSTDIR/ticks every 0.1 s; its full id. Removed on drop,
/// so a failing test leaves no container running (the shared berthd is never dropped).
struct Ticker {
    id: String,
    dir: TempDir,
    e: &'static Engine,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = self.e.d.berth(&["rm", "-f", &self.id]);
    }
}

impl Ticker {
    fn start(e: &'static Engine, name: &str) -> Ticker {
        let dir = TempDir::new("berth-pause");
        let vol = format!("{}:/out", dir.path().display());
        let id =
            e.d.ok(&[
                "run",
                "-d",
                "--name",
                name,
                "-v",
                &vol,
                &e.img,
                "sh",
                "-c",
                "while true; do echo x >> /out/ticks; sleep 0.1; done",
            ])
            .trim()
            .to_string();
        assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
        let t = Ticker { id, dir, e };
        t.assert_ticking("a new container");
        t
    }

    fn count(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("ticks"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The file grows by several lines within a few seconds.
    fn assert_ticking(&self, when: &str) {
        let n = self.count();
        wait_for(
            &format!("{when}: ticks to grow past {n}"),
            Duration::from_secs(10),
            || self.count() >= n + 3,
        );
    }

    /// The file does not grow for over a second.
    fn assert_frozen(&self, when: &str) {
        let n = self.count();
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(self.count(), n, "{when}: the container kept running");
    }
}

fn inspect(e: &Engine, name: &str, format: &str) -> String {
    e.d.ok(&["inspect", "-f", format, name]).trim().to_string()
}

/// `{{.State.Status}} {{.State.Running}} {{.State.Paused}}`
fn state(e: &Engine, name: &str) -> String {
    inspect(
        e,
        name,
        "{{.State.Status}} {{.State.Running}} {{.State.Paused}}",
    )
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    let e = or_skip!(env());
    let t = Ticker::start(e, "pz-main");
    assert_eq!(e.d.ok(&["pause", "pz-main"]), "pz-main\n");
    t.assert_frozen("paused");

    assert_eq!(state(e, "pz-main"), "paused true true");
    let status =
        e.d.ok(&["ps", "-f", "name=pz-main", "--format", "{{.Status}}"]);
    assert!(
        status.starts_with("Up ") && status.trim_end().ends_with(" (Paused)"),
        "{status:?}"
    );
    let listed =
        e.d.ok(&["ps", "-f", "name=pz-main", "--format", "{{.State}}"]);
    assert_eq!(listed, "paused\n");
    let table = e.d.ok(&["ps", "-f", "name=pz-main"]);
    assert!(table.contains("(Paused)"), "{table}");
    let paused = e.d.ok(&["ps", "-q", "--no-trunc", "-f", "status=paused"]);
    assert!(paused.lines().any(|l| l == t.id), "{paused}");
    let running = e.d.ok(&["ps", "-q", "--no-trunc", "-f", "status=running"]);
    assert!(!running.lines().any(|l| l == t.id), "{running}");

    let (_, err) = e.d.fails(&["exec", "pz-main", "true"]);
    assert!(
        err.contains("is paused, unpause the container before exec"),
        "{err}"
    );
    let (code, err) = e.d.fails(&["pause", "pz-main"]);
    assert!(
        err.contains("Error response from daemon:") && err.contains("is already paused"),
        "{err}"
    );
    assert_ne!(code, 0);
    t.assert_frozen("after the refused exec and pause");

    assert_eq!(e.d.ok(&["container", "unpause", "pz-main"]), "pz-main\n");
    t.assert_ticking("unpaused");
    assert_eq!(state(e, "pz-main"), "running true false");
    let status =
        e.d.ok(&["ps", "-f", "name=pz-main", "--format", "{{.Status}}"]);
    assert!(!status.contains("Paused"), "{status:?}");
    assert_eq!(e.d.ok(&["exec", "pz-main", "echo", "hi"]), "hi\n");
    let (_, err) = e.d.fails(&["unpause", "pz-main"]);
    assert!(err.contains("is not paused"), "{err}");

    // Several names: each one that works is printed, the others are errors, and the exit
    // code says one failed.
    assert_eq!(
        e.d.ok(&["container", "pause", &t.id[..12]]),
        format!("{}\n", &t.id[..12])
    );
    let o = e.d.berth(&["unpause", "pz-nosuch", "pz-main"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!o.status.success(), "{out}{err}");
    assert_eq!(out, "pz-main\n");
    assert!(err.contains("pz-nosuch"), "{err}");
    t.assert_ticking("unpaused along with an unknown name");
    e.d.ok(&["rm", "-f", "pz-main"]);
}

#[test]
fn only_a_running_container_can_be_paused() {
    let e = or_skip!(env());
    e.d.ok(&["create", "--name", "pz-created", &e.img, "true"]);
    let (_, err) = e.d.fails(&["pause", "pz-created"]);
    assert!(err.contains("is not running"), "{err}");
    e.d.ok(&["run", "--name", "pz-exited", &e.img, "true"]);
    let (_, err) = e.d.fails(&["pause", "pz-exited"]);
    assert!(
        err.contains("Error response from daemon:") && err.contains("is not running"),
        "{err}"
    );
    let (_, err) = e.d.fails(&["unpause", "pz-exited"]);
    assert!(err.contains("is not paused"), "{err}");
    let (_, err) = e.d.fails(&["pause", "pz-nosuch"]);
    assert!(err.contains("No such container: pz-nosuch"), "{err}");
    assert_eq!(state(e, "pz-exited"), "exited false false");
    e.d.ok(&["rm", "pz-created", "pz-exited"]);
}

#[test]
fn stop_kill_and_rm_end_a_paused_container() {
    let e = or_skip!(env());
    let stopped = Ticker::start(e, "pz-stop");
    let killed = Ticker::start(e, "pz-kill");
    let removed = Ticker::start(e, "pz-rm");
    e.d.ok(&["pause", "pz-stop", "pz-kill", "pz-rm"]);
    stopped.assert_frozen("paused for stop");

    // sh as pid 1 ignores SIGTERM: stop kills it after its 1 s.
    let t0 = Instant::now();
    assert_eq!(e.d.ok(&["stop", "-t", "1", "pz-stop"]), "pz-stop\n");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    assert_eq!(state(e, "pz-stop"), "exited false false");
    e.d.ok(&["start", "pz-stop"]);
    stopped.assert_ticking("started again");
    assert_eq!(state(e, "pz-stop"), "running true false");

    let t0 = Instant::now();
    assert_eq!(e.d.ok(&["kill", "pz-kill"]), "pz-kill\n");
    assert_eq!(e.d.ok(&["wait", "pz-kill"]), "137\n");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert_eq!(state(e, "pz-kill"), "exited false false");
    killed.assert_frozen("killed");

    assert_eq!(e.d.ok(&["rm", "-f", "pz-rm"]), "pz-rm\n");
    let all = e.d.ok(&["ps", "-a", "-q", "--no-trunc"]);
    assert!(!all.lines().any(|l| l == removed.id), "{all}");
    removed.assert_frozen("removed");
    e.d.ok(&["rm", "-f", "pz-stop", "pz-kill"]);
}

/// `berth events` lines as they come.
struct Events {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Events {
    /// Subscribes, and returns once the subscription is live (a container created after it
    /// shows up).
    fn subscribe(e: &Engine, marker: &str) -> Events {
        let (child, rx) = e.d.events(&["-f", "type=container"]);
        let mut ev = Events { child, rx };
        let t0 = Instant::now();
        loop {
            let id = e.d.ok(&["create", &e.img, "true"]).trim().to_string();
            let got = ev.until(&format!(" container create {id}"), Duration::from_secs(2));
            e.d.ok(&["rm", &id]);
            if got.is_some() {
                return ev;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "events: {marker}");
        }
    }

    /// The lines until one containing `want` (inclusive); None when it does not come.
    fn until(&mut self, want: &str, timeout: Duration) -> Option<Vec<String>> {
        let end = Instant::now() + timeout;
        let mut lines = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains(want);
                    lines.push(l);
                    if done {
                        return Some(lines);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether event lines include the pause of container `id`.
fn paused(lines: &[String], id: &str) -> bool {
    lines
        .iter()
        .any(|l| l.contains(&format!(" container pause {id}")))
}

#[test]
fn commit_pauses_a_running_container_around_the_commit() {
    let e = or_skip!(env());
    let t = Ticker::start(e, "pz-commit");
    let mut ev = Events::subscribe(e, "commit");
    let image = e.d.ok(&["commit", "pz-commit", "pz-committed:1"]);
    assert!(image.trim().starts_with("sha256:"), "{image}");
    let lines = ev
        .until(
            &format!(" container unpause {}", t.id),
            Duration::from_secs(10),
        )
        .expect("commit unpauses the container");
    assert!(paused(&lines, &t.id), "commit paused it first: {lines:?}");
    assert_eq!(state(e, "pz-commit"), "running true false");
    t.assert_ticking("after commit");
    e.d.ok(&["image", "inspect", "pz-committed:1"]);

    // --pause=false leaves it running throughout: no pause event before a later marker.
    e.d.ok(&["commit", "--pause=false", "pz-commit", "pz-committed:2"]);
    let marker = e.d.ok(&["create", &e.img, "true"]).trim().to_string();
    let lines = ev
        .until(
            &format!(" container create {marker}"),
            Duration::from_secs(10),
        )
        .expect("the marker's create event");
    e.d.ok(&["rm", &marker]);
    assert!(!paused(&lines, &t.id), "--pause=false paused: {lines:?}");
    e.d.ok(&["image", "inspect", "pz-committed:2"]);

    // A paused container stays paused after a commit.
    e.d.ok(&["pause", "pz-commit"]);
    e.d.ok(&["commit", "pz-commit", "pz-committed:3"]);
    assert_eq!(state(e, "pz-commit"), "paused true true");
    t.assert_frozen("committed while paused");

    // A commit that fails still unpauses: a bad --change is refused by the image service
    // after the pause.
    e.d.ok(&["unpause", "pz-commit"]);
    let unpaused = format!(" container unpause {}", t.id);
    ev.until(&unpaused, Duration::from_secs(10))
        .expect("the unpause event");
    let (_, err) =
        e.d.fails(&["commit", "-c", "RUN echo", "pz-commit", "pz-committed:4"]);
    assert!(err.contains("RUN"), "{err}");
    let lines = ev
        .until(&unpaused, Duration::from_secs(10))
        .expect("a failed commit unpauses the container");
    assert!(
        paused(&lines, &t.id),
        "the failed commit paused it first: {lines:?}"
    );
    assert_eq!(state(e, "pz-commit"), "running true false");
    t.assert_ticking("after a failed commit");

    // A stopped container is committed without pausing.
    e.d.ok(&["stop", "-t", "0", "pz-commit"]);
    e.d.ok(&["commit", "pz-commit", "pz-committed:5"]);
    assert_eq!(state(e, "pz-commit"), "exited false false");
    e.d.ok(&["rm", "-f", "pz-commit"]);
    for n in 1..=5 {
        if n != 4 {
            e.d.ok(&["rmi", &format!("pz-committed:{n}")]);
        }
    }
}
