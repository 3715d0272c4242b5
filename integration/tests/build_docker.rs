//! `berth build` beside `docker build` (issue #5): the same Dockerfiles built by a private
//! dockerd (Debian's docker.io, classic builder) and by berthd, then what both recorded is
//! compared: the config fields a Dockerfile sets, the history (created_by and empty_layer, in
//! order; times differ) and the number of layers.
//!
//! Where the two may differ by design, the comparison says so next to the normalisation:
//! COPY/ADD describe their sources as `file:<hash>` of a tar Docker makes with its own
//! headers, so only the shape (`file:`, `dir:`, `multi:`) is compared.

use berth_integration::{or_skip, Berthd, Dockerd, Registry, TempDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A context that holds a file, a folder and a tar.gz for ADD to unpack.
fn context(c: &Path) {
    write(c, "file", "one\n");
    write(c, "dir/a.txt", "a\n");
    write(c, "dir/b.txt", "b\n");
    write(c, "arch/inner/x", "x\n");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(c.join("arch.tar.gz"))
        .arg("-C")
        .arg(c.join("arch"))
        .arg("inner")
        .status()
        .unwrap();
    assert!(st.success());
}

/// Runs docker's classic builder on the private dockerd.
fn docker_build(d: &Dockerd, tag: &str, file: &Path, ctx: &Path, build_args: &[&str]) {
    let mut cmd = Command::new("docker");
    cmd.env(
        "DOCKER_HOST",
        format!("unix://{}/docker.sock", d.dir.path().display()),
    )
    .env("DOCKER_CONFIG", d.dir.path().join("client"))
    .env("DOCKER_BUILDKIT", "0")
    .args(["build", "-q", "--network", "host", "-t", tag, "-f"])
    .arg(file);
    for a in build_args {
        cmd.args(["--build-arg", a]);
    }
    let o = cmd.arg(ctx).stdin(Stdio::null()).output().unwrap();
    assert!(
        o.status.success(),
        "docker build {tag} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn berth_build(b: &Berthd, tag: &str, file: &Path, ctx: &Path, build_args: &[&str]) {
    let mut args = vec!["build", "-q", "-t", tag, "-f", file.to_str().unwrap()];
    for a in build_args {
        args.extend(["--build-arg", a]);
    }
    args.push(ctx.to_str().unwrap());
    b.ok(&args);
}

/// The image config of the only image in a `docker save` archive.
fn saved_config(archive: &Path) -> Value {
    let out = TempDir::new("berth-it-saved");
    let st = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(st.success(), "cannot unpack {}", archive.display());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    let cfg = manifest[0]["Config"]
        .as_str()
        .expect("a config in manifest.json");
    serde_json::from_slice(&std::fs::read(out.path().join(cfg)).unwrap()).unwrap()
}

/// `file:3a4f…` → `file:<hash>` (and `dir:`, `multi:`).
fn without_hashes(text: &str) -> String {
    let mut out = String::new();
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match word.split_once(':') {
            Some((kind @ ("file" | "dir" | "multi"), hex))
                if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                out.push_str(kind);
                out.push_str(":<hash>");
            }
            _ => out.push_str(word),
        }
    }
    out
}

/// What both builders must agree on.
struct Recorded {
    /// The config fields a Dockerfile sets, by name.
    fields: Vec<(String, Value)>,
    /// created_by (hashes masked) and empty_layer of each history entry, in order.
    history: Vec<(String, bool)>,
    layers: usize,
}

fn recorded(config: &Value) -> Recorded {
    let c = &config["config"];
    let fields = [
        "Cmd",
        "Entrypoint",
        "Env",
        "WorkingDir",
        "User",
        "Labels",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
    ]
    .iter()
    .map(|k| {
        // A field Docker leaves out and one written as null or "" mean the same.
        let v = match c.get(*k) {
            Some(Value::String(s)) if s.is_empty() => Value::Null,
            Some(v) => v.clone(),
            None => Value::Null,
        };
        (k.to_string(), v)
    })
    .collect();
    let history = config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    (
                        without_hashes(e["created_by"].as_str().unwrap_or("")),
                        e["empty_layer"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let layers = config["rootfs"]["diff_ids"]
        .as_array()
        .map_or(0, |l| l.len());
    Recorded {
        fields,
        history,
        layers,
    }
}

struct Both {
    _reg: Registry,
    docker: Dockerd,
    berth: Berthd,
    image: String,
    saves: TempDir,
}

impl Both {
    fn start() -> Option<Both> {
        let docker = Dockerd::start()?;
        let reg = Registry::start()?;
        reg.push_busybox("busybox:latest");
        let image = format!("{}/busybox:latest", reg.addr);
        Some(Both {
            _reg: reg,
            docker,
            berth: Berthd::start(""),
            image,
            saves: TempDir::new("berth-it-saves"),
        })
    }

    /// Builds `dockerfile` (relative to `ctx`) with both and compares what they recorded.
    fn compare(&self, tag: &str, ctx: &Path, dockerfile: &str, build_args: &[&str]) {
        let file = ctx.join(dockerfile);
        docker_build(&self.docker, tag, &file, ctx, build_args);
        berth_build(&self.berth, tag, &file, ctx, build_args);
        let name = tag.replace(['/', ':'], "_");
        let d_tar: PathBuf = self.saves.path().join(format!("{name}.docker.tar"));
        let b_tar: PathBuf = self.saves.path().join(format!("{name}.berth.tar"));
        self.docker
            .ok(&["save", "-o", d_tar.to_str().unwrap(), tag]);
        self.berth.ok(&["save", "-o", b_tar.to_str().unwrap(), tag]);
        let d = recorded(&saved_config(&d_tar));
        let b = recorded(&saved_config(&b_tar));
        let (d_hist, b_hist, d_layers, b_layers) = (&d.history, &b.history, d.layers, b.layers);
        let mut diffs = Vec::new();
        for ((k, dv), (_, bv)) in d.fields.iter().zip(&b.fields) {
            if dv != bv {
                diffs.push(format!("config {k}: docker {dv} / berth {bv}"));
            }
        }
        for i in 0..d_hist.len().max(b_hist.len()) {
            let (d, b) = (d_hist.get(i), b_hist.get(i));
            if d != b {
                diffs.push(format!("history[{i}]: docker {d:?} / berth {b:?}"));
            }
        }
        if d_layers != b_layers {
            diffs.push(format!("layers: docker {d_layers} / berth {b_layers}"));
        }
        assert!(diffs.is_empty(), "{tag} differs:\n{}", diffs.join("\n"));
    }
}

#[test]
fn every_instruction_is_recorded_as_docker_does() {
    let both = or_skip!(Both::start());
    let ctx = TempDir::new("berth-it-build-docker");
    let c = ctx.path();
    context(c);
    write(
        c,
        "Dockerfile.all",
        &format!(
            r#"ARG BASE={img}
FROM $BASE AS builder
ARG NOTE=default
RUN mkdir /out && echo "$NOTE" > /out/note
FROM $BASE
MAINTAINER someone@example.com
LABEL a=1 b="two words"
ENV MYSQ 5.6
ENV A=1 B="x y"
ARG WHO=world
ARG UNSET
RUN echo "hello $WHO" > /hello.txt
RUN ["/bin/sh", "-c", "echo exec > /exec.txt"]
WORKDIR /root
WORKDIR demo
COPY file ./
COPY dir /dir/
COPY dir/*.txt /texts/
ADD file /added
ADD arch.tar.gz /unpacked/
COPY --from=builder /out/note /note
USER nobody
VOLUME ["/data", "/more"]
VOLUME /one
EXPOSE 80 53/udp
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=4 CMD true
ONBUILD RUN echo triggered
SHELL ["/bin/sh", "-ec"]
RUN echo with the new shell
CMD echo shell-form
ENTRYPOINT ["/bin/echo"]
CMD ["hello"]
"#,
            img = both.image
        ),
    );
    both.compare("cmp/all", c, "Dockerfile.all", &["WHO=there"]);

    // A child: the ONBUILD trigger, HEALTHCHECK NONE, a later ENTRYPOINT resetting the CMD.
    write(
        c,
        "Dockerfile.child",
        "FROM cmp/all\nHEALTHCHECK NONE\nCMD [\"x\"]\nENTRYPOINT sleep 1\nEXPOSE 8080\n",
    );
    both.compare("cmp/child", c, "Dockerfile.child", &[]);
}

#[test]
fn the_walkthrough_dockerfile_is_recorded_as_docker_does() {
    let both = or_skip!(Both::start());
    let ctx = TempDir::new("berth-it-build-docker");
    let c = ctx.path();
    context(c);
    write(
        c,
        "Dockerfile",
        &format!(
            "FROM {img}\nLABEL org.example.seed=yes\nENV GREETING=hi\nRUN echo built > /built.txt\nWORKDIR /app\nADD file /app/\nADD arch.tar.gz /app/\nVOLUME /data\nEXPOSE 8080\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"cat /built.txt\"]\n",
            img = both.image
        ),
    );
    both.compare("cmp/seed", c, "Dockerfile", &[]);
}
