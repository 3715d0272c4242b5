//! The gateway's streams — attach, logs, exec, resize — driven by the real docker CLIs
//! (Debian's 20.10 at `/usr/bin/docker`, the current one at `/usr/local/bin/docker` when
//! installed), by a raw client over the unix socket (a hijacked attach that hangs up), and
//! `berth attach`. Containers are made with the `berth` CLI against the same berthd (the
//! gateway's namespace is `default`, the CLI's too).

use berth_integration::gateway::Gateway;
use berth_integration::{or_skip, skip, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Whether `name` runs, as `berth inspect` says.
fn running(g: &Gateway, name: &str) -> bool {
    let o = g.d.berth(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v[0]["State"]["Running"] == true
}

/// One frame of the multiplexed stream: (stream, payload).
fn read_frame(r: &mut impl Read) -> (u8, Vec<u8>) {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).expect("a frame header");
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).expect("a frame payload");
    (head[0], payload)
}

fn attach_request(name: &str) -> String {
    format!(
        "POST /v1.41/containers/{name}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_raw_client_that_hangs_up_mid_attach_leaves_the_container_running() {
    let g = or_skip!(Gateway::shared());
    g.d.run_d(&[
        "--name",
        "st-tick",
        &g.img,
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.2; done",
    ]);
    for _ in 0..2 {
        let (head, mut r) = g.raw(&attach_request("st-tick"));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/vnd.docker.multiplexed-stream"),
            "{head}"
        );
        assert_eq!(read_frame(&mut r), (1, b"tick\n".to_vec()));
        // Hang up, stdin attached and all.
        drop(r);
        assert!(running(g, "st-tick"), "the container survives its client");
    }
    let (head, _) = g.raw(&attach_request("nosuch"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    g.d.ok(&["rm", "-f", "st-tick"]);
}

#[test]
fn raw_exec_stdin_exit_code_and_inspect() {
    let g = or_skip!(Gateway::shared());
    g.d.run_d(&["--name", "st-exec", &g.img, "sleep", "1000"]);
    let create = |body: &str| {
        let (head, mut r) = g.raw(&format!(
            "POST /v1.41/containers/st-exec/exec HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let mut out = String::new();
        let _ = r.read_to_string(&mut out);
        (head, out)
    };
    let (head, body) = create(
        r#"{"Cmd":["sh","-c","cat; echo err >&2; exit 3"],"AttachStdin":true,"AttachStdout":true,"AttachStderr":true}"#,
    );
    assert!(head.starts_with("HTTP/1.1 201"), "{head}{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (head, mut r) = g.raw(&format!(
        "POST /v1.41/exec/{id}/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\
         Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{{\"Tty\":false}}"
    ));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    r.get_mut().write_all(b"piped\n").unwrap();
    r.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    // Both streams, each in its frames (their order is the pipes' race); the stream ends
    // with the exit, as the docker CLI waits for before it asks the code.
    let mut frames = vec![read_frame(&mut r), read_frame(&mut r)];
    frames.sort();
    assert_eq!(frames, [(1, b"piped\n".to_vec()), (2, b"err\n".to_vec())]);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let (_, mut r) = g.raw(&format!(
        "GET /v1.41/exec/{id}/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
    ));
    let mut out = String::new();
    let _ = r.read_to_string(&mut out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ExitCode"].as_i64(), v["Running"].as_bool()),
        (Some(3), Some(false)),
        "{v}"
    );

    let (head, body) = create("{bad json");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}{body}");
    assert!(body.starts_with(r#"{"message":"#), "{body}");
    let (head, _) = create(r#"{"Cmd":["true"],"Privileged":true}"#);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    g.d.ok(&["rm", "-f", "st-exec"]);
}

/// A process under `script` (a terminal), whose output lines come on a channel.
struct OnTerminal {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl OnTerminal {
    fn start(command: &str, cmd: Command) -> OnTerminal {
        let mut c = cmd;
        c.args(["-qec", command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = c.spawn().expect("run script");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&l).into_owned());
            }
        });
        OnTerminal { child, lines }
    }

    fn type_in(&mut self, keys: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(keys).unwrap();
        stdin.flush().unwrap();
    }

    fn wait_line(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} came");
    }
}

/// Attaches with `attach` (a command line) to a TTY container, runs a command in its shell,
/// detaches with ctrl-p ctrl-q: the client ends (`docker attach` 20.10 prints "read escape
/// sequence" and ends with status 1; whether it succeeded is returned) and the container
/// still runs.
fn attach_and_detach(g: &Gateway, name: &str, attach: &str, script: Command) -> bool {
    let mut t = OnTerminal::start(attach, script);
    // Its answer proves the attach is up (and the client's terminal raw).
    t.type_in(b"echo ready-$((6*7))\r");
    t.wait_line("ready-42");
    t.type_in(b"\x10\x11");
    let status = t.child.wait().unwrap();
    assert!(running(g, name), "detaching leaves {name} running");
    status.success()
}

/// `script`, with the docker CLI's environment for the gateway.
fn script_with_docker(g: &Gateway) -> Command {
    g.command(Path::new("script"))
}

#[test]
fn berth_attach_detaches_with_the_keys() {
    let g = or_skip!(Gateway::shared());
    if !berth_integration::have("script") {
        skip("script is missing (apt-get install bsdutils)");
        return;
    }
    g.d.run_d(&["-it", "--name", "st-battach", &g.img, "sh"]);
    let cmd = g.d.cmd();
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let attach = format!("{program} {} attach st-battach", args.join(" "));
    assert!(attach_and_detach(
        g,
        "st-battach",
        &attach,
        Command::new("script")
    ));
    let o =
        g.d.berth(&["attach", "--detach-keys", "ctrl-x,y", "nosuch"]);
    assert!(!o.status.success());
    g.d.ok(&["rm", "-f", "st-battach"]);
}

/// logs, exec and attach with the docker CLI at `cli`; `tag` keeps its containers apart.
fn drive(cli: &Path, tag: &str) {
    let g = or_skip!(Gateway::shared());
    let name = |n: &str| format!("st-{n}-{tag}");
    let (logs_ct, run_ct, tty_ct) = (name("logs"), name("run"), name("tty"));
    g.d.run_d(&[
        "--name",
        &logs_ct,
        &g.img,
        "sh",
        "-c",
        "echo one; echo two >&2; echo three",
    ]);
    g.d.run_d(&["--name", &run_ct, &g.img, "sleep", "1000"]);
    g.d.run_d(&["-it", "--name", &tty_ct, &g.img, "sh"]);
    wait_for(
        "the logged container to exit",
        Duration::from_secs(20),
        || !running(g, &logs_ct),
    );
    let o = g.docker(cli, &["logs", &logs_ct]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "one\nthree\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "two\n");
    // The last line, of either stream (stdout's and stderr's order is the pipes' race).
    let last = |args: &[&str]| {
        let o = g.docker(cli, args);
        assert!(o.status.success(), "{args:?}");
        [o.stdout, o.stderr].concat()
    };
    let tail = last(&["logs", "--tail", "1", &logs_ct]);
    assert!(
        [&b"three\n"[..], b"two\n"].contains(&tail.as_slice()),
        "{tail:?}"
    );
    let stamped = String::from_utf8(last(&["logs", "-t", "--tail", "1", &logs_ct])).unwrap();
    let (time, line) = stamped.split_once(' ').unwrap();
    assert!(line == "three\n" || line == "two\n", "{stamped}");
    assert!(time.ends_with('Z') && time.len() == 30, "{stamped}");

    let follow = name("follow");
    g.d.run_d(&[
        "--name",
        &follow,
        &g.img,
        "sh",
        "-c",
        "echo a; sleep 1; echo b",
    ]);
    assert_eq!(
        g.ok(cli, &["logs", "-f", &follow]),
        "a\nb\n",
        "-f ends with the exit"
    );

    assert_eq!(g.ok(cli, &["exec", &run_ct, "echo", "inside"]), "inside\n");
    let o = g.docker(cli, &["exec", &run_ct, "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let mut piped = g
        .command(cli)
        .args(["exec", "-i", &run_ct, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    piped.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = piped.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\n");

    if berth_integration::have("script") {
        let mut t = OnTerminal::start(
            &format!("{} exec -it {run_ct} sh", cli.display()),
            script_with_docker(g),
        );
        t.type_in(b"tty; exit\n");
        t.wait_line("/dev/pts/");
        assert!(t.child.wait().unwrap().success());

        let attach = format!("{} attach {tty_ct}", cli.display());
        let _ = attach_and_detach(g, &tty_ct, &attach, script_with_docker(g));
    }
    for c in [&logs_ct, &run_ct, &tty_ct, &follow] {
        g.d.ok(&["rm", "-f", c]);
    }
}

#[test]
fn debian_docker_cli_20_10() {
    let cli = Path::new("/usr/bin/docker");
    if !cli.exists() {
        skip("/usr/bin/docker is missing (apt-get install docker.io)");
        return;
    }
    drive(cli, "debian");
}

#[test]
fn current_docker_cli() {
    let cli = Path::new("/usr/local/bin/docker");
    if !cli.exists() {
        eprintln!("no /usr/local/bin/docker: the current docker CLI is optional");
        return;
    }
    drive(cli, "current");
}
