//! The Kubernetes CRI's streaming server (issue 15, stream slice): `crictl exec` with stdin,
//! exit codes and a terminal, `crictl attach`, `crictl port-forward` to a server in a pod, and
//! critest's Streaming specs — against a berthd with `[cri]` (see `berth_integration::cri`).

use berth_integration::cri::{cri, text, Cri, BUSYBOX};
use berth_integration::{or_skip, require_tools, wait_for, TempDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// crictl against the CRI socket, to be given its arguments and stdio.
fn crictl(c: &Cri) -> Command {
    let endpoint = format!("unix://{}", c.socket.display());
    let mut cmd = Command::new(c.tools.join("crictl"));
    cmd.args([
        "--runtime-endpoint",
        &endpoint,
        "--image-endpoint",
        &endpoint,
        "--timeout",
        "60s",
    ]);
    cmd
}

/// A running pod named `name`; its config file and id.
fn pod(c: &Cri, dir: &Path, name: &str) -> (String, String) {
    let pod = serde_json::json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "namespace": "berth-stream", "attempt": 1},
        "log_directory": dir.display().to_string(),
        "linux": {}
    });
    let file = dir.join(format!("{name}-pod.json"));
    std::fs::write(&file, pod.to_string()).unwrap();
    let file = file.display().to_string();
    let id = c.ok(&["runp", &file]).trim().to_string();
    (file, id)
}

/// A started busybox container in `pod` running `script`; `stdin` keeps its stdin open (and
/// closes it at the end of the first attach's input, as `stdin_once`).
fn container(
    c: &Cri,
    dir: &Path,
    pod: &(String, String),
    name: &str,
    script: &str,
    stdin: bool,
) -> String {
    let config = serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": BUSYBOX},
        "command": ["sh", "-c", script],
        "log_path": format!("{name}.log"),
        "stdin": stdin,
        "stdin_once": stdin,
        "linux": {}
    });
    let file = dir.join(format!("{name}-ctr.json"));
    std::fs::write(&file, config.to_string()).unwrap();
    let id = c
        .ok(&["create", &pod.1, &file.display().to_string(), &pod.0])
        .trim()
        .to_string();
    c.ok(&["start", &id]);
    id
}

/// Runs crictl with `input` on its stdin; its output.
fn with_input(c: &Cri, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = crictl(c)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crictl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn crictl_exec_streams_stdin_exit_codes_and_a_terminal() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-exec");
    let pod = pod(c, tmp.path(), "exec");
    let ctr = container(c, tmp.path(), &pod, "sleeper", "sleep 1000", false);

    // stdin piped through `cat`, a few frames' worth
    let input: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let out = with_input(c, &["exec", "-i", &ctr, "cat"], &input);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stdout == input,
        "cat gave {} bytes of {}",
        out.stdout.len(),
        input.len()
    );

    // stdout and stderr apart, and the exit code
    // (crictl 1.27 exits 1 and names the code; the kubelet's clients read the code itself)
    let out = crictl(c)
        .args(["exec", &ctr, "sh", "-c", "echo out; echo err >&2; exit 3"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("command terminated with exit code 3"), "{t}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err\n"),
        "{t}"
    );
    let out = crictl(c).args(["exec", &ctr, "true"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // a terminal: crictl needs one of its own, which script(1) gives it
    if require_tools(&["script"]).is_some() {
        let command = format!(
            "{} --runtime-endpoint unix://{} exec -it {ctr} sh -c 'tty; stty size'",
            c.tools.join("crictl").display(),
            c.socket.display()
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("COLUMNS", "91")
            .env("LINES", "33")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("/dev/pts/"), "{t}");
    }

    // a command that is not there, a container that does not run, one that does not exist
    let out = crictl(c)
        .args(["exec", &ctr, "/no/such/binary"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let stopped = container(c, tmp.path(), &pod, "done", "true", false);
    wait_for("the container to exit", Duration::from_secs(20), || {
        c.json(&["inspect", &stopped])["status"]["state"] == "CONTAINER_EXITED"
    });
    let out = crictl(c).args(["exec", &stopped, "true"]).output().unwrap();
    assert!(
        !out.status.success() && text(&out).contains("not running"),
        "{}",
        text(&out)
    );
    let out = crictl(c)
        .args(["exec", "0123456789ab", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    c.ok(&["stopp", &pod.1]);
    c.ok(&["rmp", &pod.1]);
}

#[test]
fn crictl_attach_feeds_and_reads_a_running_container() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-attach");
    let pod = pod(c, tmp.path(), "attach");
    let ctr = container(c, tmp.path(), &pod, "cat", "cat", true);
    let out = with_input(c, &["attach", "-i", &ctr], b"through attach\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through attach\n",
        "{}",
        text(&out)
    );
    // stdin_once: the end of the input ended cat
    wait_for("cat to exit", Duration::from_secs(20), || {
        c.json(&["inspect", &ctr])["status"]["state"] == "CONTAINER_EXITED"
    });
    let out = crictl(c).args(["attach", &ctr]).output().unwrap();
    assert!(
        !out.status.success() && text(&out).contains("not running"),
        "{}",
        text(&out)
    );
    c.ok(&["stopp", &pod.1]);
    c.ok(&["rmp", &pod.1]);
}

/// `crictl port-forward POD 0:PORT` running, and the local port it chose.
fn port_forward(c: &Cri, pod: &str, port: u16) -> (std::process::Child, u16) {
    let mut forward = crictl(c)
        .args(["port-forward", pod, &format!("0:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "Forwarding from 127.0.0.1:LOCAL -> PORT"
    let mut lines = BufReader::new(forward.stdout.take().unwrap()).lines();
    let local = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!(
                "crictl port-forward ended: {:?}",
                forward.wait_with_output()
            );
        };
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // crictl goes on writing ("Handling connection for …"): a closed pipe would end it
    std::thread::spawn(move || lines.for_each(drop));
    (forward, local)
}

/// An HTTP GET of `/` through `port` on the host: the body.
fn http_get(port: u16) -> std::io::Result<String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
    tcp.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut response = String::new();
    tcp.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn crictl_port_forward_reaches_a_server_in_the_pod() {
    let c = or_skip!(cri());
    c.ok(&["pull", BUSYBOX]);
    let tmp = TempDir::new("berth-it-cri-forward");
    let pod = pod(c, tmp.path(), "forward");
    // listens on the pod's loopback only: nothing but a forward from inside reaches it
    let web = container(
        c,
        tmp.path(),
        &pod,
        "web",
        "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
        false,
    );
    let (mut forward, local) = port_forward(c, &pod.1, 8080);
    let reached = (0..25).any(|_| {
        let body = http_get(local).unwrap_or_default();
        body.contains("hello-from-the-pod") || {
            std::thread::sleep(Duration::from_millis(200));
            false
        }
    });
    if !reached {
        forward.kill().unwrap();
        let inside = c.crictl(&["exec", "-s", &web, "wget", "-qO-", "http://127.0.0.1:8080/"]);
        panic!(
            "no answer through the forward: {}\ninside: {}\nberthd: {}",
            text(&inside),
            text(&forward.wait_with_output().unwrap()),
            c.berthd.log()
        );
    }
    // connections one after another, and two at once
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| http_get(local));
        let b = s.spawn(|| http_get(local));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(
        a.contains("hello-from-the-pod") && b.contains("200"),
        "{a}\n{b}"
    );
    forward.kill().unwrap();
    forward.wait().unwrap();

    // a port nothing listens on: the connection ends, crictl reports why
    let (mut refused, local) = port_forward(c, &pod.1, 9);
    let got = http_get(local).unwrap_or_default();
    assert!(!got.contains("200"), "{got}");
    refused.kill().unwrap();
    let out = refused.wait_with_output().unwrap();
    let t = text(&out);
    assert!(t.contains("error forwarding port 9 to pod"), "{t}");
    c.ok(&["stopp", &pod.1]);
    c.ok(&["rmp", &pod.1]);
}

#[test]
fn critest_streaming_specs() {
    let c = or_skip!(cri());
    c.critest_passes(&["--ginkgo.focus=Streaming"]);
}
