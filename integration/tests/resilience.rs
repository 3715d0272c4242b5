//! Resilience of the container lifecycle (issue #3), end to end with a real registry, real
//! berthd instances and real containers, checked the way a user sees it: through the `berth`
//! CLI, plus /proc for the processes. A kill -9 of berthd while containers run, a shim killed
//! under its container, restart policies across a daemon restart, 20 concurrent `run -d`,
//! bad input with Docker's wording, and volumes.
//!
//! Every test has its own berthd (kill -9 and counting containers need isolation); the
//! registry and the image are shared.

use berth_integration::{busybox_archive, or_skip, spawn_tied, Berthd, Registry, TempDir};
use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

const TICKER: &str = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done";

struct Shared {
    reg: Registry,
    img: String,
}

fn shared() -> Option<&'static Shared> {
    static S: OnceLock<Option<Shared>> = OnceLock::new();
    S.get_or_init(|| {
        let reg = Registry::start()?;
        reg.push_busybox("busybox:latest");
        let img = format!("{}/busybox:latest", reg.addr);
        Some(Shared { reg, img })
    })
    .as_ref()
}

/// A berthd of its own with the busybox image pulled; None (after a SKIP) when a tool is missing.
fn daemon() -> Option<(Berthd, String)> {
    let s = shared()?;
    let d = Berthd::start("");
    d.ok(&["pull", "-q", &s.img]);
    Some((d, s.img.clone()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "timed out ({timeout:?}) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `inspect -f FORMAT NAME`, trimmed.
fn inspect(d: &Berthd, format: &str, name: &str) -> String {
    d.ok(&["inspect", "-f", format, name]).trim().to_string()
}

/// The line of `ps -a` whose NAMES column is `name`.
fn ps_line(d: &Berthd, name: &str) -> Option<String> {
    d.ok(&["ps", "-a"])
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .map(str::to_string)
}

/// Every number N of a "tick N" in `s`, in order.
fn ticks(s: &str) -> Vec<u64> {
    s.match_indices("tick ")
        .filter_map(|(i, m)| {
            let rest = &s[i + m.len()..];
            let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            n.parse().ok()
        })
        .collect()
}

/// The state letter of a process (R, S, Z, …), None when it does not exist.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// The parent pid of a process.
fn proc_ppid(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// berthd and the shims of this instance: their command line names its folder.
fn instance_pids(d: &Berthd) -> HashSet<i32> {
    let dir = d.dir.path().to_string_lossy().into_owned();
    all_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| text(&c).replace('\0', " ").contains(&dir))
        })
        .collect()
}

/// Zombies whose parent is berthd or one of its shims ("pid ppid comm").
fn zombies(d: &Berthd) -> Vec<String> {
    let ours = instance_pids(d);
    all_pids()
        .into_iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            let ppid = proc_ppid(&stat)?;
            (state == 'Z' && ours.contains(&ppid)).then(|| format!("{p} {ppid} {stat}"))
        })
        .collect()
}

fn assert_no_zombies(d: &Berthd) {
    // A process that just ended may not be reaped yet: give the reapers a moment.
    let t0 = Instant::now();
    loop {
        let z = zombies(d);
        if z.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "zombies of berthd or its shims remain: {z:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After every container was removed: none is listed, no shim of this instance is left
/// (only berthd), the cgroups of `ids` are gone, and no zombie remains.
fn assert_all_gone(d: &Berthd, ids: &[&str]) {
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    wait_for("the shims to exit", Duration::from_secs(5), || {
        instance_pids(d).len() == 1
    });
    for id in ids {
        wait_for(
            &format!("the cgroups of {id} gone"),
            Duration::from_secs(5),
            || cgroup_dirs(id).iter().all(|c| !c.exists()),
        );
    }
    assert_no_zombies(d);
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn sigkill(pid: i32) {
    assert!(pid > 1);
    // SAFETY: kill(2) on a pid this test read from berth's own state or inspect.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
}

/// The cgroup folders of a container on v1 (every hierarchy) and v2.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let rel = format!("berth/default-{id}");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(&rel))
        .collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(&rel));
    dirs
}

/// Spawns `berth ARGS…` and hands its stdout lines over a channel.
fn stream_lines(d: &Berthd, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut c = d.cmd();
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = spawn_tied(c).expect("spawn berth");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn kill_9_of_berthd_loses_nothing() {
    let (mut d, img) = or_skip!(daemon());
    let ticker = d.run_d(&["--name", "ticker", &img, "sh", "-c", TICKER]);
    let sleeper = d.run_d(&[
        "--name",
        "sleeper",
        &img,
        "sh",
        "-c",
        "while true; do sleep 1; done",
    ]);
    wait_for("a few ticks", Duration::from_secs(10), || {
        ticks(&d.ok(&["logs", "ticker"])).len() >= 3
    });
    let pids: Vec<i32> = ["ticker", "sleeper"]
        .iter()
        .map(|n| inspect(&d, "{{.State.Pid}}", n).parse().unwrap())
        .collect();
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
    let log = PathBuf::from(inspect(&d, "{{.LogPath}}", "ticker"));
    assert!(log.is_file(), "LogPath {} is a file", log.display());
    let seen_before = *ticks(&d.ok(&["logs", "ticker"])).last().unwrap();

    d.kill9();
    // What the log held at the moment berthd died (a tick may land in between: that is fine).
    let at_kill = ticks(&std::fs::read_to_string(&log).unwrap())
        .last()
        .copied()
        .unwrap();
    assert!(at_kill >= seen_before);
    let size = file_size(&log);
    wait_for(
        "the log growing while berthd is down",
        Duration::from_secs(5),
        || file_size(&log) > size + 40,
    );
    for p in &pids {
        assert!(alive(*p), "init {p} died with berthd");
    }
    let raw_ticks = ticks(&std::fs::read_to_string(&log).unwrap());
    let while_down = *raw_ticks.last().unwrap();
    assert!(while_down > at_kill, "{while_down} > {at_kill}");

    d.restart();
    for name in ["ticker", "sleeper"] {
        let line = ps_line(&d, name).unwrap_or_else(|| panic!("{name} listed"));
        assert!(
            line.contains("Up "),
            "{name} is up after the restart: {line}"
        );
    }
    let running: HashSet<String> = d
        .ok(&["ps", "-q", "--no-trunc"])
        .lines()
        .map(String::from)
        .collect();
    assert!(running.contains(&ticker), "{running:?}");
    assert_eq!(
        inspect(&d, "{{.State.Pid}}", "ticker"),
        pids[0].to_string(),
        "the same process carries on"
    );

    // Nothing is lost: every tick from 1 on, including those written while berthd was away.
    let logged = ticks(&d.ok(&["logs", "ticker"]));
    assert!(
        logged.last().copied().unwrap_or(0) >= while_down,
        "logs has ticks written while berthd was down: {logged:?}"
    );
    let expect: Vec<u64> = (1..=logged.len() as u64).collect();
    assert_eq!(logged, expect, "logs are whole and in order");

    // logs -f streams new lines.
    let (mut follow, lines) = stream_lines(&d, &["logs", "-f", "ticker"]);
    let last_now = *logged.last().unwrap();
    let t0 = Instant::now();
    let mut newest = 0;
    while newest < last_now + 3 {
        let left = Duration::from_secs(10).saturating_sub(t0.elapsed());
        match lines.recv_timeout(left) {
            Ok(l) => {
                if let Some(n) = ticks(&l).first() {
                    newest = newest.max(*n);
                }
            }
            Err(e) => panic!(
                "logs -f streamed up to tick {newest} (want {}): {e}",
                last_now + 3
            ),
        }
    }

    assert_eq!(d.ok(&["exec", "ticker", "echo", "hi"]), "hi\n");
    assert_eq!(d.ok(&["stop", "-t", "1", "ticker"]).trim(), "ticker");
    // logs -f ends by itself when the container exits, as after any run.
    let t0 = Instant::now();
    let ended = loop {
        if let Ok(Some(st)) = follow.try_wait() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(5) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if ended.is_none() {
        let _ = follow.kill();
        let _ = follow.wait();
    }
    assert!(
        ended.is_some_and(|s| s.success()),
        "logs -f ends when the container stops: {ended:?}"
    );
    let code = d.ok(&["wait", "ticker"]).trim().to_string();
    // sh as pid 1 ignores SIGTERM: the SIGKILL after 1 s ends it.
    assert_eq!(code, "137", "wait prints the exit code");
    assert_eq!(inspect(&d, "{{.State.ExitCode}}", "ticker"), "137");
    let line = ps_line(&d, "ticker").unwrap();
    assert!(line.contains("Exited (137)"), "{line}");
    assert!(!alive(pids[0]), "ticker's init is gone after stop");
    assert_eq!(d.ok(&["rm", "ticker"]).trim(), "ticker");
    assert_eq!(d.ok(&["rm", "-f", "sleeper"]).trim(), "sleeper");
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    wait_for("sleeper's init to end", Duration::from_secs(5), || {
        !alive(pids[1])
    });
    assert_all_gone(&d, &[&ticker, &sleeper]);
}

#[test]
fn a_dead_shim_means_an_exited_container() {
    let (mut d, img) = or_skip!(daemon());
    let id = d.run_d(&["--name", "victim", &img, "sleep", "300"]);
    let init: i32 = inspect(&d, "{{.State.Pid}}", "victim").parse().unwrap();
    assert!(alive(init));
    sigkill(d.shim_pid(&id));
    wait_for("victim reported exited", Duration::from_secs(5), || {
        ps_line(&d, "victim").is_some_and(|l| l.contains("Exited"))
    });
    // ... and it stays so.
    for _ in 0..5 {
        let line = ps_line(&d, "victim").unwrap();
        assert!(line.contains("Exited") && !line.contains("Up "), "{line}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(inspect(&d, "{{.State.Running}}", "victim"), "false");
    assert_eq!(inspect(&d, "{{.State.Status}}", "victim"), "exited");
    assert!(!d.ok(&["ps", "-q", "--no-trunc"]).contains(&id));
    wait_for("victim's init to end", Duration::from_secs(5), || {
        proc_state(init).is_none()
    });
    assert_eq!(d.ok(&["rm", "victim"]).trim(), "victim");
    assert!(ps_line(&d, "victim").is_none());

    // The shim dies while berthd is away: the new berthd reports the container exited.
    let id2 = d.run_d(&["--name", "victim2", &img, "sleep", "300"]);
    let init2: i32 = inspect(&d, "{{.State.Pid}}", "victim2").parse().unwrap();
    d.kill9();
    sigkill(d.shim_pid(&id2));
    d.restart();
    wait_for("victim2 reported exited", Duration::from_secs(5), || {
        ps_line(&d, "victim2").is_some_and(|l| l.contains("Exited"))
    });
    assert_eq!(inspect(&d, "{{.State.Running}}", "victim2"), "false");
    wait_for("victim2's init to end", Duration::from_secs(5), || {
        !alive(init2)
    });
    assert_eq!(d.ok(&["rm", "victim2"]).trim(), "victim2");

    // The container exits while berthd is away and then its shim dies: the exit code the
    // shim recorded is what the new berthd reports.
    let host = TempDir::new("berth-it-go");
    let bind = format!("{}:/go", host.path().display());
    let id3 = d.run_d(&[
        "--name",
        "quitter",
        "-v",
        &bind,
        &img,
        "sh",
        "-c",
        "while [ ! -e /go/now ]; do sleep 0.1; done; exit 7",
    ]);
    let init3: i32 = inspect(&d, "{{.State.Pid}}", "quitter").parse().unwrap();
    d.kill9();
    std::fs::write(host.path().join("now"), "").unwrap();
    wait_for("quitter's init to end", Duration::from_secs(5), || {
        !alive(init3)
    });
    let bundle_dir = d.state().join("tasks/default").join(&id3);
    let shim3 = d.shim_pid(&id3);
    // Let the shim record the exit before it is killed.
    std::thread::sleep(Duration::from_millis(300));
    if alive(shim3) {
        sigkill(shim3);
    }
    d.restart();
    wait_for("quitter reported exited", Duration::from_secs(5), || {
        ps_line(&d, "quitter").is_some_and(|l| l.contains("Exited"))
    });
    assert_eq!(
        inspect(&d, "{{.State.Status}} {{.State.ExitCode}}", "quitter"),
        "exited 7",
        "bundle: {:?}",
        std::fs::read_dir(&bundle_dir)
            .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert!(ps_line(&d, "quitter").unwrap().contains("Exited (7)"));
    assert_eq!(d.ok(&["rm", "quitter"]).trim(), "quitter");
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert_all_gone(&d, &[&id, &id2, &id3]);
}

#[test]
fn restart_policies_through_the_cli_and_a_daemon_restart() {
    let (mut d, img) = or_skip!(daemon());
    let onfail = d.run_d(&[
        "--name",
        "onfail",
        "--restart",
        "on-failure:2",
        &img,
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    wait_for("on-failure:2 to give up", Duration::from_secs(15), || {
        inspect(&d, "{{.State.Status}} {{.RestartCount}}", "onfail") == "exited 2"
    });
    // No third restart comes later.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        inspect(
            &d,
            "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
            "onfail"
        ),
        "exited 2 1"
    );
    let runs = d.ok(&["logs", "onfail"]);
    assert_eq!(runs, "run\nrun\nrun\n", "the first run and two restarts");
    assert!(ps_line(&d, "onfail").unwrap().contains("Exited (1)"));

    let always_id = d.run_d(&[
        "--name",
        "phoenix",
        "--restart",
        "always",
        &img,
        "sleep",
        "300",
    ]);
    // Its process dies while berthd is away: the new berthd starts it again.
    let phoenix2 = d.run_d(&[
        "--name",
        "phoenix2",
        "--restart",
        "always",
        &img,
        "sleep",
        "300",
    ]);
    let stayer = d.run_d(&[
        "--name",
        "stayer",
        "--restart",
        "unless-stopped",
        &img,
        "sleep",
        "300",
    ]);
    assert_eq!(d.ok(&["stop", "-t", "1", "stayer"]).trim(), "stayer");
    assert_eq!(inspect(&d, "{{.State.Running}}", "stayer"), "false");
    let started2 = inspect(&d, "{{.State.StartedAt}}", "phoenix2");
    let pid2: i32 = inspect(&d, "{{.State.Pid}}", "phoenix2").parse().unwrap();

    d.kill9();
    sigkill(pid2);
    d.restart();

    wait_for(
        "phoenix running after the restart",
        Duration::from_secs(10),
        || inspect(&d, "{{.State.Running}}", "phoenix") == "true",
    );
    assert!(d.ok(&["ps", "-q", "--no-trunc"]).contains(&always_id));
    wait_for(
        "phoenix2 started again after the restart",
        Duration::from_secs(10),
        || {
            inspect(&d, "{{.State.Running}}", "phoenix2") == "true"
                && inspect(&d, "{{.State.StartedAt}}", "phoenix2") != started2
        },
    );
    let new_pid2: i32 = inspect(&d, "{{.State.Pid}}", "phoenix2").parse().unwrap();
    assert!(new_pid2 != pid2 && alive(new_pid2), "{pid2} -> {new_pid2}");
    assert!(ps_line(&d, "phoenix2").unwrap().contains("Up "));
    // The stopped unless-stopped container stays stopped.
    for _ in 0..10 {
        assert_eq!(inspect(&d, "{{.State.Running}}", "stayer"), "false");
        let line = ps_line(&d, "stayer").unwrap();
        assert!(line.contains("Exited"), "{line}");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.ok(&["rm", "-f", "onfail", "phoenix", "phoenix2", "stayer"]);
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert_all_gone(&d, &[&onfail, &always_id, &phoenix2, &stayer]);
}

#[test]
fn twenty_concurrent_detached_runs() {
    let (d, img) = or_skip!(daemon());
    let names: Vec<String> = (1..=20).map(|i| format!("c{i}")).collect();
    let kids: Vec<_> = names
        .iter()
        .map(|n| {
            let mut c = d.cmd();
            c.args(["run", "-d", "--name", n, &img, "sleep", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            spawn_tied(c).expect("spawn berth")
        })
        .collect();
    let outs: Vec<Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    let mut ids = HashSet::new();
    for (n, o) in names.iter().zip(&outs) {
        assert!(
            o.status.success(),
            "run -d --name {n} failed: {}",
            text(&o.stderr)
        );
        let id = text(&o.stdout).trim().to_string();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id:?}"
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), 20, "distinct ids");
    let q = d.ok(&["ps", "-q", "--no-trunc"]);
    let listed: HashSet<String> = q.lines().map(String::from).collect();
    assert_eq!(listed, ids, "ps -q lists the 20");
    for n in &names {
        assert_eq!(inspect(&d, "{{.State.Status}}", n), "running", "{n}");
    }
    for id in &ids {
        assert!(cgroup_dirs(id).iter().any(|c| c.is_dir()), "cgroup of {id}");
    }

    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    let out = d.ok(&rm);
    assert_eq!(out.lines().count(), 20, "{out}");
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    for id in &ids {
        wait_for(
            &format!("the cgroups of {id} gone"),
            Duration::from_secs(5),
            || cgroup_dirs(id).iter().all(|c| !c.exists()),
        );
    }
    assert_all_gone(&d, &[]);
}

#[test]
fn bad_input_is_a_clear_error() {
    let (d, img) = or_skip!(daemon());
    for verb in [
        vec!["logs", "nosuch"],
        vec!["exec", "nosuch", "true"],
        vec!["stop", "nosuch"],
        vec!["rm", "nosuch"],
        vec!["container", "inspect", "nosuch"],
    ] {
        let (code, err) = d.fails(&verb);
        assert!(err.contains("No such container: nosuch"), "{verb:?}: {err}");
        assert_eq!(code, 125, "{verb:?}: {err}");
    }
    let (_, err) = d.fails(&["inspect", "nosuch"]);
    assert!(err.contains("No such object: nosuch"), "{err}");

    // An ambiguous prefix: create until two ids share their first hex digit.
    let mut by_digit: std::collections::HashMap<char, Vec<String>> = Default::default();
    let mut created = Vec::new();
    let digit = loop {
        assert!(created.len() < 17, "17 ids always share a first digit");
        let id = d.ok(&["create", &img, "true"]).trim().to_string();
        created.push(id.clone());
        let first = id.chars().next().unwrap();
        let same = by_digit.entry(first).or_default();
        same.push(id);
        if same.len() == 2 {
            break first.to_string();
        }
    };
    for verb in [
        vec!["inspect", "-f", "{{.Id}}", digit.as_str()],
        vec!["rm", digit.as_str()],
        vec!["start", digit.as_str()],
    ] {
        let (code, err) = d.fails(&verb);
        assert!(err.contains("is ambiguous"), "{verb:?}: {err}");
        assert_eq!(code, 125, "{verb:?}: {err}");
    }
    // A longer prefix still names one.
    let one = &by_digit[&digit.chars().next().unwrap()][0];
    assert_eq!(inspect(&d, "{{.Id}}", &one[..12]), *one);
    let mut rm = vec!["rm"];
    rm.extend(created.iter().map(String::as_str));
    d.ok(&rm);

    // A duplicate name.
    let x = d.run_d(&["--name", "x", &img, "sleep", "300"]);
    for args in [
        vec!["run", "-d", "--name", "x", &img, "true"],
        vec!["create", "--name", "x", &img, "true"],
    ] {
        let (code, err) = d.fails(&args);
        assert!(
            err.contains("Conflict. The container name \"/x\" is already in use by container")
                && err.contains(&x),
            "{args:?}: {err}"
        );
        assert_eq!(code, 125, "{args:?}: {err}");
    }
    assert_eq!(
        d.ok(&["ps", "-aq"]).lines().count(),
        1,
        "nothing was created"
    );

    // rm of a running container without -f.
    let (code, err) = d.fails(&["rm", "x"]);
    assert!(
        err.contains("container is running: stop the container before removing or force remove")
            || err.contains("You cannot remove a running container"),
        "{err}"
    );
    assert_eq!(code, 125, "{err}");
    assert!(ps_line(&d, "x").unwrap().contains("Up "));

    // Stop, then exec into the stopped container; stop again succeeds as in Docker.
    assert_eq!(d.ok(&["stop", "-t", "1", "x"]).trim(), "x");
    let (code, err) = d.fails(&["exec", "x", "echo", "hi"]);
    assert!(err.contains("is not running"), "{err}");
    assert_eq!(code, 125, "{err}");
    assert_eq!(d.ok(&["stop", "x"]).trim(), "x");
    assert_eq!(d.ok(&["stop", "-t", "1", "x"]).trim(), "x");
    assert!(ps_line(&d, "x").unwrap().contains("Exited"));
    assert_eq!(d.ok(&["rm", "x"]).trim(), "x");
    assert_all_gone(&d, &[&x]);
}

/// Pushes busybox with `VOLUME /data` in its config as `<registry>/busyvol:latest`.
fn push_volume_image(reg: &Registry) -> Option<String> {
    if let Some(why) = berth_integration::missing_tool(&["umoci", "skopeo"]) {
        berth_integration::skip(format!("the image VOLUME part: {why}"));
        return None;
    }
    let work = TempDir::new("berth-it-volimg");
    let layout = work.path().join("oci");
    let run = |cmd: &mut Command| {
        let o = cmd.output().expect("run tool");
        assert!(o.status.success(), "{cmd:?}: {}", text(&o.stderr));
    };
    run(Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci-archive:{}", busybox_archive().display()))
        .arg(format!("oci:{}:img", layout.display())));
    run(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:img", layout.display()))
        .args(["--config.volume", "/data", "--tag", "vol"]));
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:vol", layout.display()))
        .arg(format!("docker://{}/busyvol:latest", reg.addr)));
    Some(format!("{}/busyvol:latest", reg.addr))
}

#[test]
fn volumes_outlive_containers_and_binds_are_read_only() {
    let (d, img) = or_skip!(daemon());
    // A named volume, created on first use, kept after its container is removed.
    let o = d.ok(&[
        "run",
        "--rm",
        "-v",
        "keep:/data",
        &img,
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]);
    assert_eq!(o, "");
    assert_eq!(d.ok(&["ps", "-aq"]), "", "--rm removed the container");
    let ls = d.ok(&["volume", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().last() == Some("keep")),
        "{ls}"
    );
    let id = d.run_d(&["--name", "reader", "-v", "keep:/data", &img, "sleep", "300"]);
    assert_eq!(d.ok(&["exec", "reader", "cat", "/data/f"]), "persisted\n");
    let m = inspect(
        &d,
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}}{{end}}",
        "reader",
    );
    assert_eq!(m, "volume keep /data true");
    d.ok(&["rm", "-f", &id]);
    assert!(d.ok(&["volume", "ls", "-q"]).lines().any(|l| l == "keep"));

    // A read-only bind mount.
    let host = TempDir::new("berth-it-bind");
    std::fs::write(host.path().join("x"), "from the host\n").unwrap();
    let bind = format!("{}:/mnt:ro", host.path().display());
    let o = d.berth(&[
        "run",
        "--rm",
        "-v",
        &bind,
        &img,
        "sh",
        "-c",
        "cat /mnt/x; touch /mnt/y",
    ]);
    assert_eq!(text(&o.stdout), "from the host\n");
    assert!(!o.status.success(), "a write to a :ro bind succeeds");
    assert!(
        text(&o.stderr).contains("Read-only file system"),
        "{}",
        text(&o.stderr)
    );
    assert!(!host.path().join("y").exists());
    // Read-write, the same folder is written through.
    let rw = format!("{}:/mnt", host.path().display());
    d.ok(&["run", "--rm", "-v", &rw, &img, "touch", "/mnt/y"]);
    assert!(host.path().join("y").exists());

    // VOLUME in the image: an anonymous volume, kept by rm, removed by rm -v.
    let Some(vimg) = shared().and_then(|s| push_volume_image(&s.reg)) else {
        return;
    };
    d.ok(&["pull", "-q", &vimg]);
    let anon_id = d.run_d(&[
        "--name",
        "anon",
        &vimg,
        "sh",
        "-c",
        "echo mine > /data/y; sleep 300",
    ]);
    let m = inspect(
        &d,
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}",
        "anon",
    );
    let parts: Vec<&str> = m.split(' ').collect();
    assert_eq!(parts.len(), 3, "one mount: {m}");
    assert_eq!((parts[0], parts[2]), ("volume", "/data"), "{m}");
    let anon = parts[1].to_string();
    assert!(
        anon.len() == 64 && anon.bytes().all(|b| b.is_ascii_hexdigit()),
        "an anonymous volume is named by a random id: {anon}"
    );
    assert!(d.ok(&["volume", "ls", "-q"]).lines().any(|l| l == anon));
    wait_for(
        "the write into the anonymous volume",
        Duration::from_secs(5),
        || d.berth(&["exec", "anon", "cat", "/data/y"]).stdout == b"mine\n",
    );
    d.ok(&["rm", "-f", "-v", "anon"]);
    assert!(
        !d.ok(&["volume", "ls", "-q"]).lines().any(|l| l == anon),
        "rm -v removes the anonymous volume"
    );
    assert_eq!(d.ok(&["volume", "rm", "keep"]).trim(), "keep");
    assert_all_gone(&d, &[&id, &anon_id]);
}
