//! The image endpoints of the Docker Engine API gateway that stream or carry bodies, driven by
//! the real docker CLIs (Debian's 20.10 at `/usr/bin/docker`; the 28.x one at
//! `/usr/local/bin/docker` when installed, with `DOCKER_BUILDKIT=0` for the classic builder):
//! `docker pull`, `push`, `build`, `commit`, `save`/`load`, `image prune` and `login`, against
//! a berthd that talks to real `docker-registry` instances; skopeo reads what was pushed.

use berth_integration::gateway::{Gateway, CURRENT_DOCKER, DEBIAN_DOCKER};
use berth_integration::{free_port, have, or_skip, require_tools, spawn_tied, TempDir};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::Duration;

const DOCKER: &str = DEBIAN_DOCKER;
const DOCKER_28: &str = CURRENT_DOCKER;

/// The binary's shared gateway, with busybox also pushed as `pullme` to pull.
fn gateway() -> Option<&'static Gateway> {
    require_tools(&["docker", "skopeo", "curl"])?;
    let g = Gateway::shared()?;
    static PULLME: Once = Once::new();
    PULLME.call_once(|| g.reg.push_busybox("pullme:latest"));
    Some(g)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn pull_and_push() {
    let g = or_skip!(gateway());
    let img = format!("{}/pullme:latest", g.reg.addr);
    let first = g.ok(DOCKER, &["pull", &img]);
    assert!(first.contains("latest: Pulling from pullme"), "{first}");
    // Its layer is busybox's, which berth holds already.
    assert!(first.contains(": Already exists"), "{first}");
    assert!(first.contains("Digest: sha256:"), "{first}");
    assert!(
        first.contains("Status: Downloaded newer image for"),
        "{first}"
    );
    let second = g.ok(DOCKER, &["pull", &img]);
    assert!(
        second.contains("Status: Image is up to date for"),
        "{second}"
    );

    let missing = g.fails(DOCKER, &["pull", &format!("{}/nosuch:latest", g.reg.addr)]);
    assert!(missing.contains("not found"), "{missing}");
    g.fails(DOCKER, &["pull", "UPPER/Case::bad"]);
    let bad = g.curl_status(&[
        "-XPOST",
        "http://d/v1.41/images/create?fromImage=UPPER%2FCase&tag=%3Abad",
    ]);
    assert!(bad.ends_with("\n400"), "{bad}");
    let import = g.curl_status(&[
        "-XPOST",
        "http://d/v1.41/images/create?fromSrc=http%3A%2F%2Fx%2Fa.tar",
    ]);
    assert!(import.ends_with("\n400"), "{import}");

    let target = format!("{}/pushed/bb:v1", g.reg.addr);
    g.ok(DOCKER, &["tag", &g.img, &target]);
    let pushed = g.ok(DOCKER, &["push", &target]);
    assert!(
        pushed.contains(&format!(
            "The push refers to repository [{}/pushed/bb]",
            g.reg.addr
        )),
        "{pushed}"
    );
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let digest = pushed
        .split("digest: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    assert!(text(&o).contains(digest), "{}", text(&o));
    // The raw stream ends with the aux record docker-py reads.
    let raw = g.curl_status(&[
        "-XPOST",
        "-H",
        "X-Registry-Auth: e30=",
        &format!("http://d/v1.41/images/{}/pushed/bb/push?tag=v1", g.reg.addr),
    ]);
    assert!(raw.contains(r#"{"aux":{"Digest":"sha256:"#), "{raw}");
    let none = g.fails(DOCKER, &["push", &format!("{}/never/here:v1", g.reg.addr)]);
    assert!(none.contains("does not exist locally"), "{none}");
}

#[test]
fn build_with_both_clis() {
    let g = or_skip!(gateway());
    let ctx = TempDir::new("berth-it-gw-build");
    let dir = ctx.path();
    std::fs::create_dir_all(dir.join("other")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo built > /built && echo running-step\nCOPY hello.txt /hello.txt\n",
            g.img
        ),
    )
    .unwrap();
    std::fs::write(dir.join("hello.txt"), "hi\n").unwrap();
    std::fs::write(
        dir.join("other/Dockerfile"),
        format!("FROM {}\nRUN echo other > /other\n", g.img),
    )
    .unwrap();
    let out = g.ok_in(DOCKER, Some(dir), &["build", "-t", "gwbuilt:1", "."]);
    assert!(out.contains("Step 1/3 : FROM"), "{out}");
    assert!(out.contains("running-step"), "{out}");
    assert!(out.contains("Successfully built "), "{out}");
    assert!(out.contains("Successfully tagged gwbuilt:1"), "{out}");
    let run =
        g.d.ok(&["run", "--rm", "gwbuilt:1", "cat", "/built", "/hello.txt"]);
    assert_eq!(run, "built\nhi\n");

    let cli = if have(DOCKER_28) { DOCKER_28 } else { DOCKER };
    let again = g.ok_in(cli, Some(dir), &["build", "-t", "gwbuilt:2", "."]);
    assert!(again.contains(" ---> Using cache"), "{again}");
    assert!(again.contains("Successfully tagged gwbuilt:2"), "{again}");

    let other = g.ok_in(
        DOCKER,
        Some(dir),
        &["build", "-f", "other/Dockerfile", "-t", "gwother", "."],
    );
    assert!(
        other.contains("Successfully tagged gwother:latest"),
        "{other}"
    );
    assert_eq!(
        g.d.ok(&["run", "--rm", "gwother", "cat", "/other"]),
        "other\n"
    );
    let quiet = g.ok_in(DOCKER, Some(dir), &["build", "-q", "."]);
    assert!(quiet.trim().starts_with("sha256:"), "{quiet}");

    std::fs::write(
        dir.join("Dockerfile.fail"),
        format!("FROM {}\nRUN echo before-failing && exit 3\n", g.img),
    )
    .unwrap();
    let o = g.docker_in(DOCKER, Some(dir), &["build", "-f", "Dockerfile.fail", "."]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("returned a non-zero code: 3"),
        "{}",
        text(&o)
    );
}

#[test]
fn commit_save_load_prune() {
    let g = or_skip!(gateway());
    g.d.ok(&[
        "run",
        "--name",
        "gwcommit",
        &g.img,
        "sh",
        "-c",
        "echo x > /f",
    ]);
    let id = g.ok(
        DOCKER,
        &["commit", "-c", "ENV FOO=bar", "gwcommit", "gwcommitted:1"],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        g.d.ok(&["run", "--rm", "gwcommitted:1", "cat", "/f"]),
        "x\n"
    );
    let env = g.ok(
        DOCKER,
        &["inspect", "-f", "{{.Config.Env}}", "gwcommitted:1"],
    );
    assert!(env.contains("FOO=bar"), "{env}");
    let none = g.fails(DOCKER, &["commit", "gw-nosuch", "x:1"]);
    assert!(none.contains("No such container: gw-nosuch"), "{none}");

    let tar = TempDir::new("berth-it-gw-save");
    let file = tar.path().join("f.tar");
    let file = file.to_str().unwrap();
    g.ok(DOCKER, &["save", "-o", file, "gwcommitted:1"]);
    g.ok(DOCKER, &["rmi", "gwcommitted:1"]);
    g.fails(DOCKER, &["image", "inspect", "gwcommitted:1"]);
    let loaded = g.ok(DOCKER, &["load", "-i", file]);
    assert!(loaded.contains("Loaded image: gwcommitted:1"), "{loaded}");
    assert_eq!(
        g.d.ok(&["run", "--rm", "gwcommitted:1", "cat", "/f"]),
        "x\n"
    );
    g.fails(DOCKER, &["save", "-o", file, "gw-nosuch:1"]);

    // An untagged commit is dangling: prune removes it.
    let dangling = g.ok(DOCKER, &["commit", "gwcommit"]);
    let dangling = dangling.trim();
    let pruned = g.ok(DOCKER, &["image", "prune", "-f"]);
    assert!(pruned.contains(dangling), "{pruned}");
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    g.fails(DOCKER, &["image", "inspect", dangling]);
    g.fails(DOCKER, &["image", "prune", "-f", "--filter", "until=1h"]);
}

/// A docker-registry that wants `user`/`password` (htpasswd Basic auth).
struct AuthRegistry {
    addr: String,
    _dir: TempDir,
    child: Child,
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn auth_registry(user: &str, password: &str) -> AuthRegistry {
    let dir = TempDir::new("berth-it-gw-auth-registry");
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash(password, 5).unwrap();
    std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {d}/data}}}}\nhttp: {{addr: {addr}}}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {p}\n",
            d = dir.path().display(),
            p = htpasswd.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_tied(cmd).expect("start docker-registry");
    berth_integration::wait_for("the registry answering", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    AuthRegistry {
        addr,
        _dir: dir,
        child,
    }
}

#[test]
fn login() {
    let g = or_skip!(gateway());
    let reg = auth_registry("alice", "s3cret");
    // Before any login: a push and a pull with X-Registry-Auth use the request's credentials
    // (berth keeps none of them); without them the registry refuses.
    let private = format!("{}/perreq/bb", reg.addr);
    g.ok(DOCKER, &["tag", &g.img, &format!("{private}:1")]);
    let push_url = format!("http://d/v1.41/images/{private}/push?tag=1");
    let refused = g.curl_status(&["-XPOST", "-H", "X-Registry-Auth: e30=", &push_url]);
    assert!(refused.contains(r#""errorDetail""#), "{refused}");
    let header = |user: &str, password: &str| {
        use base64::Engine as _;
        let json = format!(
            r#"{{"username":"{user}","password":"{password}","serveraddress":"{}"}}"#,
            reg.addr
        );
        format!(
            "X-Registry-Auth: {}",
            base64::engine::general_purpose::URL_SAFE.encode(json)
        )
    };
    let wrong = g.curl_status(&["-XPOST", "-H", &header("alice", "nope"), &push_url]);
    assert!(wrong.contains(r#""errorDetail""#), "{wrong}");
    let pushed = g.curl_status(&["-XPOST", "-H", &header("alice", "s3cret"), &push_url]);
    assert!(pushed.contains(r#"{"aux":{"Digest":"sha256:"#), "{pushed}");
    g.ok(DOCKER, &["rmi", &format!("{private}:1")]);
    let pull_url = format!(
        "http://d/v1.41/images/create?fromImage={}&tag=1",
        private.replace('/', "%2F")
    );
    let anonymous = g.curl_status(&["-XPOST", &pull_url]);
    assert!(anonymous.contains(r#""errorDetail""#), "{anonymous}");
    let pulled = g.curl_status(&["-XPOST", "-H", &header("alice", "s3cret"), &pull_url]);
    assert!(
        pulled.contains("Status: Downloaded newer image"),
        "{pulled}"
    );

    let o = g.docker(DOCKER, &["login", "-u", "alice", "-p", "wrong", &reg.addr]);
    assert!(!o.status.success(), "{}", text(&o));
    let ok = g.ok(DOCKER, &["login", "-u", "alice", "-p", "s3cret", &reg.addr]);
    assert!(ok.contains("Login Succeeded"), "{ok}");
    // The stored login is berth's: a push to that registry goes through with it.
    let target = format!("{}/private/bb:1", reg.addr);
    g.ok(DOCKER, &["tag", &g.img, &target]);
    let pushed = g.ok(DOCKER, &["push", &target]);
    assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
    let bad = g.curl_status(&["-XPOST", "http://d/v1.41/auth", "-d", "{bad"]);
    assert!(bad.ends_with("\n400"), "{bad}");
}
