//! `berth build` (issue #5) end to end: real berthd, real containers for RUN, a real registry
//! for the base image.

use berth_integration::{or_skip, Berthd, Engine, Registry, TempDir};
use std::path::Path;

/// A registry with busybox, a berthd that pulled it, and the name it pulled it by.
fn setup() -> Option<(Registry, Berthd, String)> {
    Engine::start().map(|e| (e.reg, e.d, e.img))
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn inspect(d: &Berthd, image: &str) -> serde_json::Value {
    let out = d.ok(&["image", "inspect", image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array().map(|a| a[0].clone()).unwrap_or(v)
}

#[test]
fn every_instruction_lands_in_the_image() {
    let (_reg, d, img) = or_skip!(setup());
    let ctx = TempDir::new("berth-it-build");
    let c = ctx.path();
    write(c, "file", "one\n");
    write(c, "dir/a.txt", "a\n");
    write(c, "dir/b.txt", "b\n");
    write(c, "dir/skip.md", "md\n");
    write(c, "secret", "s\n");
    write(c, ".dockerignore", "secret\n");
    write(
        c,
        "Dockerfile",
        &format!(
            r#"# a comment
FROM {img}
LABEL maintainer='xxx' \
      other="y z"
ENV MYSQ 5.6
ENV A=1 B="two words"
ARG WHO=world
RUN echo "hello $WHO" > /hello.txt && echo $A > /a.txt
WORKDIR /root
WORKDIR demo
RUN pwd > /pwd.txt
COPY file ./
COPY dir/*.txt /texts/
COPY --chown=7:8 file /owned
COPY file /tmp
USER nobody
VOLUME ["/data"]
EXPOSE 80 53/udp
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s CMD true
ONBUILD RUN echo triggered
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/echo"]
CMD ["hello"]
"#
        ),
    );
    let out = d.ok(&[
        "build",
        "-t",
        "it/all",
        "-t",
        "it/all:v2",
        c.to_str().unwrap(),
    ]);
    assert!(out.contains("Step 1/22 : FROM"), "{out}");
    assert!(out.contains("Successfully built "), "{out}");
    assert!(out.contains("Successfully tagged it/all:latest"), "{out}");
    assert!(out.contains("Successfully tagged it/all:v2"), "{out}");

    assert_eq!(d.ok(&["run", "--rm", "it/all"]), "hello\n");
    let cat = |f: &str| d.ok(&["run", "--rm", "--entrypoint", "cat", "it/all", f]);
    assert_eq!(cat("/hello.txt"), "hello world\n");
    assert_eq!(cat("/a.txt"), "1\n");
    assert_eq!(cat("/pwd.txt"), "/root/demo\n");
    assert_eq!(cat("/root/demo/file"), "one\n");
    assert_eq!(cat("/texts/a.txt"), "a\n");
    // /tmp is a folder in the image: the file goes into it.
    assert_eq!(cat("/tmp/file"), "one\n");
    assert_eq!(
        d.ok(&["run", "--rm", "--entrypoint", "ls", "it/all", "/texts"]),
        "a.txt\nb.txt\n"
    );
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "stat",
            "it/all",
            "-c",
            "%u:%g",
            "/owned"
        ]),
        "7:8\n"
    );
    // .dockerignore kept the file out of the context.
    let (_, err) = d.fails(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        "it/all",
        "/root/demo/secret",
    ]);
    assert!(!err.is_empty());

    let v = inspect(&d, "it/all");
    let cfg = &v["Config"];
    assert_eq!(cfg["Labels"]["maintainer"], "xxx");
    assert_eq!(cfg["Labels"]["other"], "y z");
    let env: Vec<String> = serde_json::from_value(cfg["Env"].clone()).unwrap();
    assert!(env.contains(&"MYSQ=5.6".to_string()), "{env:?}");
    assert!(env.contains(&"B=two words".to_string()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("WHO=")),
        "ARG leaked into ENV: {env:?}"
    );
    assert_eq!(cfg["WorkingDir"], "/root/demo");
    assert_eq!(cfg["User"], "nobody");
    assert!(cfg["Volumes"]["/data"].is_object());
    assert!(cfg["ExposedPorts"]["80/tcp"].is_object());
    assert!(cfg["ExposedPorts"]["53/udp"].is_object());
    assert_eq!(cfg["StopSignal"], "SIGUSR1");
    assert_eq!(cfg["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(cfg["OnBuild"][0], "RUN echo triggered");
    assert_eq!(cfg["Shell"][1], "-ec");
    assert_eq!(cfg["Entrypoint"][0], "/bin/echo");
    assert_eq!(cfg["Cmd"][0], "hello");

    // One history entry per instruction after FROM; layers only for RUN and COPY.
    let hist = d.ok(&["history", "--no-trunc", "it/all"]);
    assert!(hist.contains("|1 WHO=world /bin/sh -c echo"), "{hist}");
    assert!(hist.contains("COPY file:"), "{hist}");
    assert!(hist.contains("#(nop)  CMD [\"hello\"]"), "{hist}");

    // The ONBUILD trigger runs in a child build.
    let child = TempDir::new("berth-it-build-child");
    write(child.path(), "Dockerfile", "FROM it/all\nCMD [\"child\"]\n");
    let out = d.ok(&["build", "-t", "it/child", child.path().to_str().unwrap()]);
    assert!(out.contains("triggered"), "{out}");
}

#[test]
fn scratch_with_a_static_file() {
    let (_reg, d, img) = or_skip!(setup());
    // A stage that makes a file, copied into scratch from it: no shell needed there.
    let ctx = TempDir::new("berth-it-build");
    let c = ctx.path();
    write(c, "msg", "from the context\n");
    write(
        c,
        "Dockerfile",
        &format!(
            "ARG BASE={img}\nFROM $BASE AS builder\nARG NOTE=default\nRUN mkdir /out && echo \"$NOTE\" > /out/note\nFROM scratch\nCOPY --from=builder /out/note /note\nCOPY --from=builder /bin/busybox /bin/sh\nCOPY msg /\nCMD [\"/bin/sh\", \"-c\", \"cat /note /msg\"]\n"
        ),
    );
    let path = c.to_str().unwrap();
    d.ok(&["build", "-t", "it/multi", "--build-arg", "NOTE=given", path]);
    assert_eq!(
        d.ok(&["run", "--rm", "it/multi"]),
        "given\nfrom the context\n"
    );
    let v = inspect(&d, "it/multi");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 3, "{v}");

    // --target stops at the first stage.
    let out = d.ok(&["build", "-t", "it/first", "--target", "builder", path]);
    assert!(out.contains("Step 3/"), "{out}");
    assert!(!out.contains("FROM scratch"), "{out}");
    assert_eq!(
        d.ok(&["run", "--rm", "it/first", "cat", "/out/note"]),
        "default\n"
    );
    let (code, err) = d.fails(&["build", "--target", "nosuch", path]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn the_cache_follows_content() {
    let (_reg, d, img) = or_skip!(setup());
    let ctx = TempDir::new("berth-it-build");
    let c = ctx.path();
    write(c, "a", "a1\n");
    write(c, "b", "b1\n");
    write(
        c,
        "Dockerfile",
        &format!(
            "FROM {img}\nENV X=1\nCOPY a /a\nRUN cat /a > /ran\nCOPY b /b\nCMD [\"cat\", \"/b\"]\n"
        ),
    );
    let path = c.to_str().unwrap();
    let first = d.ok(&["build", "-q", "-t", "it/cache", path]);
    let layers = inspect(&d, "it/cache")["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    // Nothing changed: every step from the cache, the same image.
    let out = d.ok(&["build", "-t", "it/cache", path]);
    assert_eq!(out.matches("Using cache").count(), 5, "{out}");
    assert_eq!(d.ok(&["build", "-q", "-t", "it/cache", path]), first);
    // Touching a file is not a change.
    filetime::set_file_mtime(c.join("b"), filetime::FileTime::from_unix_time(10, 0)).unwrap();
    assert_eq!(d.ok(&["build", "-q", "-t", "it/cache", path]), first);
    // Changing b invalidates its COPY and what follows, nothing before.
    write(c, "b", "b2\n");
    let out = d.ok(&["build", "-t", "it/cache", path]);
    assert_eq!(out.matches("Using cache").count(), 3, "{out}");
    assert_eq!(d.ok(&["run", "--rm", "it/cache"]), "b2\n");
    assert_eq!(
        inspect(&d, "it/cache")["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .len(),
        layers
    );
    // --no-cache runs everything.
    let out = d.ok(&["build", "--no-cache", "-t", "it/cache", path]);
    assert!(!out.contains("Using cache"), "{out}");
    assert!(out.contains("Running in"), "{out}");
}

#[test]
fn errors_name_the_line() {
    let (_reg, d, img) = or_skip!(setup());
    let ctx = TempDir::new("berth-it-build");
    let c = ctx.path();
    write(c, "present", "x\n");
    let path = c.to_str().unwrap();
    let build_with = |name: &str, text: &str| {
        write(c, name, text);
        let f = c.join(name);
        d.fails(&["build", "-f", f.to_str().unwrap(), "-t", "it/bad", path])
    };

    let (code, err) = build_with(
        "Dockerfile.run",
        &format!("FROM {img}\nRUN echo before-failing && exit 3\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile.run:2: The command '/bin/sh -c echo before-failing && exit 3' returned a non-zero code: 3"),
        "{err}"
    );

    let (code, err) = build_with("Dockerfile.unknown", &format!("FROM {img}\nFROBNICATE x\n"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(":2:") && err.to_lowercase().contains("frobnicate"),
        "{err}"
    );

    let (code, err) = build_with(
        "Dockerfile.missing",
        &format!("FROM {img}\nCOPY present /\nCOPY absent /\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile.missing:3:") && err.contains("absent"),
        "{err}"
    );

    let (code, err) = build_with(
        "Dockerfile.outside",
        &format!("FROM {img}\nCOPY ../etc/passwd /\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile.outside:2:") && err.contains("outside the build context"),
        "{err}"
    );

    let (code, err) = build_with(
        "Dockerfile.stage",
        &format!("FROM {img}\nCOPY --from=nosuchstage /x /\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Dockerfile.stage:2:"), "{err}");

    // Nothing was left behind: no build containers, no mounts.
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
    let mnt = d.root().join("build/mnt");
    assert_eq!(std::fs::read_dir(&mnt).map(|r| r.count()).unwrap_or(0), 0);
}

/// A tar holding `inner/hello` with `text`.
fn tar_of(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "inner/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(text.len() as u64);
    b.append_data(&mut h, "inner/hello", text.as_bytes())
        .unwrap();
    b.into_inner().unwrap()
}

fn bzip2_of(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Serves `body` to every GET on a loopback port, as a tiny HTTP/1.0 server; gives the port.
fn serve_once_more(body: Vec<u8>) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    port
}

#[test]
fn add_unpacks_bzip2_and_xz_downloads_urls_and_chown_takes_names() {
    let (_reg, d, img) = or_skip!(setup());
    let ctx = TempDir::new("berth-it-build");
    let c = ctx.path();
    std::fs::write(c.join("a.tar.bz2"), bzip2_of(&tar_of("from bzip2\n"))).unwrap();
    {
        use std::io::Write;
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(&tar_of("from xz\n")).unwrap();
        std::fs::write(c.join("a.tar.xz"), e.finish().unwrap()).unwrap();
    }
    write(c, "file", "owned\n");
    let remote = bzip2_of(&tar_of("remote\n"));
    let port = serve_once_more(remote.clone());
    write(
        c,
        "Dockerfile",
        &format!(
            r#"FROM {img}
RUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && echo 'appgrp:x:2345:' >> /etc/group && echo 'other:x:3456:' >> /etc/group
ADD a.tar.bz2 /bz/
ADD a.tar.xz /xz/
ADD http://127.0.0.1:{port}/files/remote.tar.bz2?v=1 /dl/
COPY --chown=app file /owned-user
ADD --chown=app:other file /owned-both
COPY --chown=nobody:nogroup file /owned-nobody
"#
        ),
    );
    d.ok(&["build", "-t", "it/add", c.to_str().unwrap()]);
    let sh = |cmd: &str| d.ok(&["run", "--rm", "it/add", "sh", "-c", cmd]);
    assert_eq!(sh("cat /bz/inner/hello"), "from bzip2\n");
    assert_eq!(sh("cat /xz/inner/hello"), "from xz\n");
    // A URL is downloaded as it is, named after the path, mode 0600; never unpacked.
    assert_eq!(sh("ls /dl"), "remote.tar.bz2\n");
    assert_eq!(
        sh("stat -c '%a %u:%g %s' /dl/remote.tar.bz2"),
        format!("600 0:0 {}\n", remote.len())
    );
    assert_eq!(
        sh("stat -c %u:%g /owned-user /owned-both /owned-nobody"),
        "1234:2345\n1234:3456\n65534:65534\n"
    );
    // A name the image does not know fails the build at its line.
    write(
        c,
        "Dockerfile.bad",
        &format!("FROM {img}\nCOPY --chown=nosuchuser file /x\n"),
    );
    let f = c.join("Dockerfile.bad");
    let (code, err) = d.fails(&["build", "-f", f.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile.bad:2:") && err.contains("nosuchuser"),
        "{err}"
    );
}

#[test]
fn onbuild_labels_and_workdir_folders() {
    let (_reg, d, img) = or_skip!(setup());
    let base_layers = inspect(&d, &img)["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len();
    let ctx = TempDir::new("berth-it-build");
    let c = ctx.path();
    let path = c.to_str().unwrap();
    write(
        c,
        "Dockerfile.parent",
        &format!("FROM {img}\nONBUILD RUN echo triggered > /onbuild.txt\n"),
    );
    let f = c.join("Dockerfile.parent");
    d.ok(&["build", "-f", f.to_str().unwrap(), "-t", "it/parent", path]);
    // The triggers run in the child build, and are not inherited by its image.
    write(
        c,
        "Dockerfile.child",
        "FROM it/parent\nRUN cat /onbuild.txt\n",
    );
    let f = c.join("Dockerfile.child");
    d.ok(&[
        "build",
        "-f",
        f.to_str().unwrap(),
        "--label",
        "team=blue",
        "--label",
        "stage=child",
        "-t",
        "it/child",
        path,
    ]);
    assert_eq!(
        d.ok(&["run", "--rm", "it/child", "cat", "/onbuild.txt"]),
        "triggered\n"
    );
    let v = inspect(&d, "it/child");
    assert_eq!(v["Config"]["Labels"]["team"], "blue", "{v}");
    assert_eq!(v["Config"]["Labels"]["stage"], "child", "{v}");
    assert!(
        v["Config"]["OnBuild"].is_null()
            || v["Config"]["OnBuild"]
                .as_array()
                .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    // The parent had no --label.
    assert!(inspect(&d, "it/parent")["Config"]["Labels"]["team"].is_null());

    // WORKDIR makes a missing folder (root's, even after USER, as Docker's classic builder),
    // as a layer a later stage can copy from; an existing one adds no layer.
    write(
        c,
        "Dockerfile.workdir",
        &format!(
            "FROM {img} AS base\nUSER nobody\nWORKDIR /srv/app/data\nWORKDIR /tmp\nFROM {img}\nCOPY --from=base /srv/app /copied\n"
        ),
    );
    let f = c.join("Dockerfile.workdir");
    let f = f.to_str().unwrap();
    d.ok(&[
        "build",
        "-f",
        f,
        "--target",
        "base",
        "-t",
        "it/wd-base",
        path,
    ]);
    let v = inspect(&d, "it/wd-base");
    assert_eq!(
        v["RootFS"]["Layers"].as_array().unwrap().len(),
        base_layers + 1,
        "{v}"
    );
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--user",
            "0",
            "it/wd-base",
            "stat",
            "-c",
            "%F %u:%g %a",
            "/srv/app/data"
        ]),
        "directory 0:0 755\n"
    );
    d.ok(&["build", "-f", f, "-t", "it/wd", path]);
    assert_eq!(
        d.ok(&["run", "--rm", "it/wd", "stat", "-c", "%F", "/copied/data"]),
        "directory\n"
    );
    // Cached the second time, and the same image.
    let again = d.ok(&[
        "build",
        "-f",
        f,
        "--target",
        "base",
        "-t",
        "it/wd-base",
        path,
    ]);
    assert_eq!(again.matches("Using cache").count(), 3, "{again}");
}

#[test]
fn a_restart_removes_build_views_a_crash_left() {
    use berth_api::snapshots::v1 as sapi;
    let (_reg, mut d, _img) = or_skip!(setup());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = |d: &Berthd| {
        let ch = berth_core::grpc::channel(&format!("unix://{}", d.sock.display())).unwrap();
        sapi::snapshots_client::SnapshotsClient::new(ch)
    };
    let list = |d: &Berthd| -> Vec<String> {
        rt.block_on(async {
            connect(d)
                .list(sapi::ListSnapshotsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .info
                .into_iter()
                .map(|i| i.name)
                .collect()
        })
    };
    // As a build that was killed while it read another stage: its view is still recorded.
    rt.block_on(async {
        let mut c = connect(&d);
        for key in ["build-view-0123456789abcdef", "someone-elses-view"] {
            c.view(sapi::PrepareSnapshotRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    let before = list(&d);
    assert!(before.iter().any(|n| n == "build-view-0123456789abcdef"));
    d.kill9();
    d.restart();
    let after = list(&d);
    assert!(
        !after.iter().any(|n| n.starts_with("build-view-")),
        "{after:?}"
    );
    assert!(after.iter().any(|n| n == "someone-elses-view"), "{after:?}");
}
