//! The gateway's remaining Docker behaviours, driven by the real docker CLIs (Debian's 20.10
//! at /usr/bin/docker; a current one at /usr/local/bin/docker when installed) and by the
//! `berth` CLI where it has the verb: StdinOnce (`docker run -i` closes stdin at the input's
//! end; a client that leaves a `run -d -i` container keeps its stdin open), `docker push
//! --all-tags`, network events, `docker builder prune`, and the classic builder's lines.

use berth_integration::gateway::{docker_clis, Gateway};
use berth_integration::or_skip;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// This binary's gateway, busybox tagged `busybox`.
fn gateway() -> Option<&'static Gateway> {
    berth_integration::gateway::Gateway::shared()
}

/// Held by the tests that build or prune: a prune takes the other's cache.
static SERIAL: Mutex<()> = Mutex::new(());

/// `input | cli ARGS`: the command's stdout and whether it succeeded.
fn piped(mut cmd: Command, input: &[u8]) -> (String, bool) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.is_empty() || o.status.success(), "{err}");
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        o.status.success(),
    )
}

/// Attaches to container `name` over the gateway's socket with stdin, sends `input`, reads
/// the 101 answer, and hangs up.
fn attach_and_hang_up(g: &Gateway, name: &str, input: &[u8]) {
    let mut s = UnixStream::connect(&g.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1.41/containers/{name}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "the attach's answer ended early"
        );
        answer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(input).unwrap();
    s.flush().unwrap();
    // The echo proves the input reached the container before the hang-up.
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let want = String::from_utf8_lossy(input).trim().to_string();
    while !String::from_utf8_lossy(&seen).contains(&want) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the attach ended before the echo");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
}

fn running(g: &Gateway, cli: &Path, name: &str) -> bool {
    g.ok(cli, &["inspect", "-f", "{{.State.Running}}", name])
        .trim()
        == "true"
}

#[test]
fn stdin_once_closes_stdin_at_the_first_input_end_only() {
    let g = or_skip!(gateway());
    for (i, cli) in or_skip!(docker_clis()).iter().enumerate() {
        // docker run -i: the input's end closes cat's stdin, and it exits 0.
        let mut run = g.command(cli);
        run.args(["run", "--rm", "-i", "busybox", "cat"]);
        let (out, ok) = piped(run, b"hi\n");
        assert!(ok && out == "hi\n", "{}: {out:?}", cli.display());
        let inspect = g.ok(cli, &["create", "-i", "busybox", "cat"]);
        let created = inspect.trim();
        let once = g.ok(cli, &["inspect", "-f", "{{.Config.StdinOnce}}", created]);
        assert_eq!(once.trim(), "true");
        let mut start = g.command(cli);
        start.args(["start", "-ai", created]);
        let (out, ok) = piped(start, b"again\n");
        assert!(ok && out == "again\n", "start -ai: {out:?}");
        g.ok(cli, &["rm", created]);

        // docker run -d -i: attached clients that hang up leave stdin open.
        let name = format!("keep-{i}");
        g.ok(cli, &["run", "-d", "-i", "--name", &name, "busybox", "cat"]);
        let once = g.ok(cli, &["inspect", "-f", "{{.Config.StdinOnce}}", &name]);
        assert_eq!(once.trim(), "false");
        attach_and_hang_up(g, &name, b"one\n");
        attach_and_hang_up(g, &name, b"two\n");
        assert!(
            running(g, cli, &name),
            "{name} stopped after its clients left"
        );
        let logs = g.ok(cli, &["logs", &name]);
        assert_eq!(logs, "one\ntwo\n");
        g.ok(cli, &["rm", "-f", &name]);
    }
    // berth run -i behaves the same.
    let mut run = g.d.cmd();
    run.args(["run", "--rm", "-i", "busybox", "cat"]);
    let (out, ok) = piped(run, b"berth\n");
    assert!(ok && out == "berth\n", "berth run -i: {out:?}");
}

/// The registry's tags of `repo`, sorted.
fn registry_tags(g: &Gateway, repo: &str) -> Vec<String> {
    let url = format!("http://{}/v2/{repo}/tags/list", g.reg.addr);
    let o = Command::new("curl").args(["-s", &url]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

#[test]
fn a_push_without_a_tag_pushes_every_tag() {
    let g = or_skip!(gateway());
    for (i, cli) in or_skip!(docker_clis()).iter().enumerate() {
        let repo = format!("alltags{i}");
        let named = format!("{}/{repo}", g.reg.addr);
        for t in ["a", "b"] {
            g.ok(cli, &["tag", "busybox", &format!("{named}:{t}")]);
        }
        let out = g.ok(cli, &["push", "--all-tags", &named]);
        assert_eq!(registry_tags(g, &repo), ["a", "b"], "{out}");
        // One repository line, then each tag's summary, as Docker prints them.
        let opening = format!("The push refers to repository [{named}]");
        assert_eq!(out.matches(&opening).count(), 1, "{out}");
        for t in ["a", "b"] {
            assert!(out.contains(&format!("{t}: digest: sha256:")), "{out}");
        }
    }
    // The API call itself: no tag pushes the repository's tags.
    let named = format!("{}/alltagsapi", g.reg.addr);
    for t in ["x", "y"] {
        g.d.ok(&["tag", "busybox", &format!("{named}:{t}")]);
    }
    let out = g.curl(&["-X", "POST", &format!("http://d/v1.41/images/{named}/push")]);
    assert!(!out.contains("error"), "{out}");
    assert_eq!(registry_tags(g, "alltagsapi"), ["x", "y"], "{out}");
    let missing = g.curl(&[
        "-X",
        "POST",
        &format!("http://d/v1.41/images/{}/nosuchrepo/push", g.reg.addr),
    ]);
    assert!(
        missing.contains("An image does not exist locally"),
        "{missing}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn network_events_show_create_connect_disconnect_and_destroy() {
    let g = or_skip!(gateway());
    for (i, cli) in or_skip!(docker_clis()).iter().enumerate() {
        let start = unix_now() - 1;
        let (net, ctr) = (format!("evnet{i}"), format!("evctr{i}"));
        let id = g.ok(cli, &["network", "create", &net]).trim().to_string();
        g.ok(
            cli,
            &["run", "-d", "--name", &ctr, "busybox", "sleep", "60"],
        );
        let cid = g
            .ok(cli, &["inspect", "-f", "{{.Id}}", &ctr])
            .trim()
            .to_string();
        g.ok(cli, &["network", "connect", &net, &ctr]);
        g.ok(cli, &["network", "disconnect", &net, &ctr]);
        g.ok(cli, &["network", "rm", &net]);
        g.ok(cli, &["rm", "-f", &ctr]);
        // An until of now: the stream ends at once with the events kept.
        let now = unix_now() + 1;
        let out = g.ok(
            cli,
            &[
                "events",
                "--since",
                &start.to_string(),
                "--until",
                &now.to_string(),
                "--filter",
                "type=network",
                "--filter",
                &format!("network={net}"),
                "--format",
                "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}} {{.Actor.Attributes.type}} {{.Actor.Attributes.container}}",
            ],
        );
        let want = [
            format!("network create {id} {net} bridge <no value>"),
            format!("network connect {id} {net} bridge {cid}"),
            format!("network disconnect {id} {net} bridge {cid}"),
            format!("network destroy {id} {net} bridge <no value>"),
        ];
        let got: Vec<&str> = out.lines().collect();
        assert_eq!(got, want, "{}", cli.display());
    }
    // berth events shows them too.
    let start = unix_now() - 1;
    g.d.ok(&["network", "create", "berthnet"]);
    g.d.ok(&["network", "rm", "berthnet"]);
    let now = (unix_now() + 1).to_string();
    let out = g.d.ok(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &now,
        "--filter",
        "type=network",
    ]);
    let actions: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("name=berthnet"))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(actions, ["create", "destroy"], "{out}");
}

/// Replaces every 12-hex id in `text` with `ID`.
fn ids_hidden(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split(' ')
                .map(|w| {
                    if w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()) {
                        "ID"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_classic_builder_says_what_docker_says_and_builder_prune_empties_its_cache() {
    let g = or_skip!(gateway());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = berth_integration::TempDir::new("berth-it-gwmore-build");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox\nRUN echo hi\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let ctx = dir.path().to_str().unwrap();
    let docker = Path::new(berth_integration::gateway::DEBIAN_DOCKER);
    let out = g.ok(docker, &["build", "--no-cache", "-t", "steps:1", ctx]);
    let body: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("Sending build context"))
        .collect();
    // Docker 20.10 also runs a container for CMD (` ---> Running in` and `Removing
    // intermediate container` lines around it); berth commits a config step without one.
    assert_eq!(
        ids_hidden(&body.join("\n")),
        "Step 1/3 : FROM busybox\n ---> ID\nStep 2/3 : RUN echo hi\n ---> Running in ID\nhi\n\
         Removing intermediate container ID\n ---> ID\nStep 3/3 : CMD [\"sh\"]\n ---> ID\n\
         Successfully built ID\nSuccessfully tagged steps:1",
        "{out}"
    );
    // berth build prints the same lines.
    let berth = g.d.ok(&["build", "--no-cache", "-t", "steps:2", ctx]);
    assert_eq!(
        ids_hidden(berth.trim_end()),
        ids_hidden(&body.join("\n")).replace("steps:1", "steps:2")
    );

    // The RUN step's image is cache no container uses: builder prune removes it.
    for cli in or_skip!(docker_clis()) {
        let pruned = g.ok(&cli, &["builder", "prune", "-f", "-a"]);
        assert!(pruned.contains("Total reclaimed space:"), "{pruned}");
    }
    g.d.ok(&["build", "--no-cache", "-t", "steps:3", ctx]);
    let r = g.curl(&["-X", "POST", "http://d/v1.41/build/prune?all=1"]);
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert!(
        !v["CachesDeleted"].as_array().unwrap().is_empty() && v["SpaceReclaimed"].is_u64(),
        "{r}"
    );
    let again = g.curl(&["-X", "POST", "http://d/v1.41/build/prune"]);
    let v: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(v["CachesDeleted"], serde_json::json!([]), "{again}");
    let bad = g.curl(&[
        "-X",
        "POST",
        "http://d/v1.41/build/prune?filters=%7B%22until%22%3A%5B%2224h%22%5D%7D",
    ]);
    assert!(bad.contains("takes no filters"), "{bad}");
    // The images built are still there.
    let ls = g.d.ok(&["images"]);
    assert!(ls.contains("steps"), "{ls}");
}

/// Runs `script` with sh; it must succeed.
fn shell(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn docker_import_makes_a_one_layer_image_of_a_rootfs_tarball() {
    let g = or_skip!(gateway());
    let dir = berth_integration::TempDir::new("berth-it-gwmore-import");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("file"), "imported\n").unwrap();
    // busybox's binary, so the image can run something.
    let export = dir.path().join("busybox.tar");
    let cid = g.d.ok(&["create", "busybox"]).trim().to_string();
    g.d.ok(&["export", "-o", export.to_str().unwrap(), &cid]);
    g.d.ok(&["rm", &cid]);
    let (root, tarball) = (rootfs.display(), dir.path().join("rootfs.tar"));
    let gz = dir.path().join("rootfs.tar.gz");
    shell(&format!(
        "tar -C {root} -xf {} bin/busybox bin/sh bin/cat && tar -C {root} -cf {} . && gzip -c {} > {}",
        export.display(),
        tarball.display(),
        tarball.display(),
        gz.display()
    ));
    let tar_bytes = std::fs::read(&tarball).unwrap();
    for (i, cli) in or_skip!(docker_clis()).iter().enumerate() {
        // From stdin, with changes and a message.
        let name = format!("imp{i}:1");
        let mut import = g.command(cli);
        import.args([
            "import",
            "--change",
            "ENV GREETING=hi",
            "--change",
            "WORKDIR /bin",
            "-m",
            "from a test",
            "-",
            &name,
        ]);
        let (out, ok) = piped(import, &tar_bytes);
        assert!(ok && out.trim().starts_with("sha256:"), "{out}");
        let file = g.ok(cli, &["run", "--rm", &name, "cat", "/file"]);
        assert_eq!(file, "imported\n");
        let env = g.ok(
            cli,
            &["run", "--rm", &name, "sh", "-c", "echo $GREETING $PWD"],
        );
        assert_eq!(env.trim(), "hi /bin");
        let history = g.ok(cli, &["history", "--format", "{{.Comment}}", &name]);
        assert_eq!(history.trim(), "from a test");
        // A gzip file by name.
        let gz_name = format!("impgz{i}:1");
        g.ok(cli, &["import", gz.to_str().unwrap(), &gz_name]);
        let file = g.ok(cli, &["run", "--rm", &gz_name, "cat", "/file"]);
        assert_eq!(file, "imported\n");
        // A URL is refused.
        let err = g.fails(
            cli,
            &["import", "http://127.0.0.1:1/rootfs.tar", "impurl:1"],
        );
        assert!(err.contains("berth does not import from URLs"), "{err}");
    }
    // berth import: the same, from a file and from standard input.
    let id = g.d.ok(&[
        "import",
        "-c",
        "CMD [\"cat\", \"/file\"]",
        gz.to_str().unwrap(),
        "bimp:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(g.d.ok(&["run", "--rm", "bimp:1"]), "imported\n");
    let mut stdin_import = g.d.cmd();
    stdin_import.args(["import", "-", "bimp:2"]);
    let (out, ok) = piped(stdin_import, &tar_bytes);
    assert!(ok && out.trim().starts_with("sha256:"), "{out}");
    let history = g.d.ok(&["history", "bimp:2"]);
    assert!(history.contains("Imported from -"), "{history}");
    // A hostile entry is refused and makes no image.
    let hostile = dir.path().join("hostile.tar");
    {
        let f = std::fs::File::create(&hostile).unwrap();
        let mut b = tar::Builder::new(f);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let name = b"../escape";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"bad"[..]).unwrap();
        b.finish().unwrap();
    }
    let docker = Path::new(berth_integration::gateway::DEBIAN_DOCKER);
    let err = g.fails(docker, &["import", hostile.to_str().unwrap(), "hostile:1"]);
    assert!(!err.is_empty());
    let ls = g.d.ok(&["images"]);
    assert!(!ls.contains("hostile"), "{ls}");
}
