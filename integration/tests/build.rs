//! `berth build` (issue #5) end to end: real berthd, real containers for RUN, a real registry
//! for the base image.

use berth_integration::{Berthd, Registry, TempDir};
use std::path::Path;

fn setup() -> Option<(Registry, Berthd, String)> {
    let reg = Registry::start()?;
    reg.push_busybox("busybox:latest");
    let d = Berthd::start("");
    let img = format!("{}/busybox:latest", reg.addr);
    d.ok(&["pull", "-q", &img]);
    Some((reg, d, img))
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
    let Some((_reg, d, img)) = setup() else {
        return;
    };
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
    let Some((_reg, d, img)) = setup() else {
        return;
    };
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
    let Some((_reg, d, img)) = setup() else {
        return;
    };
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
    let Some((_reg, d, img)) = setup() else {
        return;
    };
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
