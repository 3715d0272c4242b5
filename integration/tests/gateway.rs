//! The Docker Engine API gateway (`[gateway] socket`) driven by the real docker CLIs:
//! Debian's 20.10 (`/usr/bin/docker`, API 1.41) and a current one (`/usr/local/bin/docker`,
//! 28.x, which asks for a newer API and negotiates down to 1.41) when installed. Both against a
//! berthd that pulled busybox from a real registry through berth; and the raw HTTP answers
//! (headers, version refusals) with curl over the unix socket.

use berth_integration::gateway::Gateway;
use berth_integration::{or_skip, skip, Berthd};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

fn gateway() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(Gateway::start).as_ref()
}

/// Whether `docker images` printed a row of `repo` and `tag`.
fn listed(images: &str, repo: &str, tag: &str) -> bool {
    images.lines().any(|l| {
        let mut cols = l.split_whitespace();
        cols.next() == Some(repo) && cols.next() == Some(tag)
    })
}

/// Every docker command of this slice with the CLI at `cli`; `tag` names its own tag, so the
/// CLIs' tests can share one berthd.
fn drive(cli: &Path, tag: &str) {
    let g = or_skip!(gateway());
    let version = g.ok(cli, &["version"]);
    let server = version
        .split_once("Server:")
        .unwrap_or_else(|| panic!("no Server section in docker version:\n{version}"))
        .1;
    assert!(server.contains("1.41"), "{version}");
    assert!(server.contains("(minimum version 1.12)"), "{version}");

    let info = g.ok(cli, &["info"]);
    assert!(info.contains("Images: 1"), "{info}");
    assert!(info.contains("Cgroup Driver: cgroupfs"), "{info}");
    assert!(info.contains("Storage Driver: overlay2"), "{info}");

    let repo = g.img.trim_end_matches(":latest");
    let images = g.ok(cli, &["images"]);
    assert!(images.starts_with("REPOSITORY "), "{images}");
    assert!(listed(&images, repo, "latest"), "{images}");

    // Filters: `docker images REPO` sends a reference filter.
    assert!(listed(&g.ok(cli, &["images", repo]), repo, "latest"));
    assert_eq!(g.ok(cli, &["images", "nosuch/repo"]).lines().count(), 1);
    let dangling = g.ok(cli, &["images", "-f", "dangling=true"]);
    assert!(!listed(&dangling, repo, "latest"), "{dangling}");
    let tagged = g.ok(cli, &["images", "-f", "dangling=false"]);
    assert!(listed(&tagged, repo, "latest"), "{tagged}");
    let o = g.docker(cli, &["images", "-f", "label=a"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid filter 'label'"));

    let id = g.ok(cli, &["image", "inspect", "-f", "{{.Id}}", &g.img]);
    let berth: serde_json::Value =
        serde_json::from_str(&g.d.ok(&["image", "inspect", &g.img])).unwrap();
    assert_eq!(id.trim(), berth[0]["Id"].as_str().unwrap());
    assert!(id.starts_with("sha256:"), "{id}");

    let target = format!("gwtest:{tag}");
    g.ok(cli, &["tag", &g.img, &target]);
    let images = g.ok(cli, &["images"]);
    assert!(listed(&images, "gwtest", tag), "{images}");
    let rmi = g.ok(cli, &["rmi", &target]);
    assert_eq!(rmi.trim(), format!("Untagged: {target}"));
    let images = g.ok(cli, &["images"]);
    assert!(!listed(&images, "gwtest", tag), "{images}");

    let o = g.docker(cli, &["image", "inspect", "nosuch"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No such image: nosuch"), "{err}");

    let history = g.ok(cli, &["history", &g.img]);
    assert!(history.starts_with("IMAGE "), "{history}");
    assert!(history.contains("CREATED BY"), "{history}");
    assert!(history.lines().count() >= 2, "{history}");
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
fn current_docker_cli_negotiates_down() {
    let cli = Path::new("/usr/local/bin/docker");
    if !cli.exists() {
        // Optional: only Debian's CLI is a prerequisite.
        eprintln!("no /usr/local/bin/docker: the current CLI is not checked");
        return;
    }
    drive(cli, "current");
}

#[test]
fn raw_http_versions_headers_and_errors() {
    let g = or_skip!(gateway());
    if let Some(why) = berth_integration::missing_tool(&["curl"]) {
        skip(why);
        return;
    }
    let too_new = g.curl(&["-i", "http://docker/v1.99/version"]);
    assert!(too_new.starts_with("HTTP/1.1 400"), "{too_new}");
    assert!(
        too_new.contains(
            r#"{"message":"client version 1.99 is too new. Maximum supported API version is 1.41"}"#
        ),
        "{too_new}"
    );
    let too_old = g.curl(&["-i", "http://docker/v1.11/version"]);
    assert!(too_old.starts_with("HTTP/1.1 400"), "{too_old}");

    for head in [
        g.curl(&["-i", "http://docker/_ping"]),
        g.curl(&["-I", "http://docker/v1.41/_ping"]),
    ] {
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        for h in [
            "api-version: 1.41",
            "docker-experimental: false",
            "ostype: linux",
            "server: berth/",
            "cache-control: no-cache, no-store, must-revalidate",
            "pragma: no-cache",
            "builder-version: 1",
        ] {
            assert!(lower.contains(h), "{h} missing:\n{head}");
        }
    }
    assert!(g.curl(&["http://docker/_ping"]).ends_with("OK"));

    let v: serde_json::Value =
        serde_json::from_str(&g.curl(&["http://docker/v1.41/version"])).unwrap();
    assert_eq!(v["ApiVersion"], "1.41");
    assert_eq!(v["MinAPIVersion"], "1.12");
    assert_eq!(v["Os"], "linux");

    let missing = g.curl(&["-i", "http://docker/v1.41/nothing/here"]);
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(
        missing.contains(r#"{"message":"page not found"}"#),
        "{missing}"
    );

    let filtered = g.curl(&[
        "-i",
        "http://docker/images/json?filters=%7B%22label%22%3A%5B%22a%22%5D%7D",
    ]);
    assert!(filtered.starts_with("HTTP/1.1 400"), "{filtered}");

    let list: serde_json::Value =
        serde_json::from_str(&g.curl(&["http://docker/v1.41/images/json"])).unwrap();
    let first = &list[0];
    assert!(first["Id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(first["Containers"], -1);
    assert_eq!(first["SharedSize"], -1);
    assert_eq!(first["ParentId"], "");
    assert!(first["Created"].as_i64().unwrap() > 0);
}

/// `[gateway] group`: the socket is 0660 and the group's; a stale file in its place is
/// replaced at start; the socket is gone after a graceful stop.
#[test]
fn socket_mode_group_stale_file_and_shutdown() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let mut d = Berthd::start("[gateway]\nsocket = \"{STATE}/docker.sock\"\ngroup = \"root\"\n");
    let socket = d.state().join("docker.sock");
    let m = std::fs::metadata(&socket).expect("the gateway's socket");
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert_eq!(m.gid(), 0);

    assert!(d.stop(std::time::Duration::from_secs(20)).is_some());
    assert!(!socket.exists(), "the socket outlived berthd");

    std::fs::write(&socket, "stale").unwrap();
    d.restart();
    berth_integration::wait_for(
        "the gateway's socket",
        std::time::Duration::from_secs(10),
        || std::fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket()),
    );
    let o = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&socket)
        .arg("http://docker/_ping")
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "OK");
}

/// `berthd --service gateway`: the gateway alone in a berthd of its own, reaching the
/// services of another berthd through `[services]`, as any split deployment does; asked for
/// without a socket, berthd refuses to start.
#[test]
fn the_gateway_runs_alone() {
    or_skip!(berth_integration::require_tools(&[
        berth_integration::gateway::DEBIAN_DOCKER
    ]));
    let reg = or_skip!(berth_integration::Registry::start());
    reg.push_busybox("busybox:latest");
    let engine = Berthd::start("");
    let img = format!("{}/busybox:latest", reg.addr);
    engine.ok(&["pull", "-q", &img]);
    let to = format!("unix://{}", engine.sock.display());
    let services: String = [
        "image", "snapshot", "runtime", "registry", "events", "build",
    ]
    .iter()
    .map(|s| format!("{s} = \"{to}\"\n"))
    .collect();
    let front = Berthd::start_with(
        &format!("[services]\n{services}[gateway]\nsocket = \"{{STATE}}/docker.sock\"\n"),
        &[],
        &["--service", "gateway"],
    );
    let version = front.ok(&["version"]);
    assert!(version.contains("gateway"), "{version}");
    let docker = |args: &[&str]| {
        Command::new(berth_integration::gateway::DEBIAN_DOCKER)
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", front.state().join("docker.sock").display()),
            )
            .env_remove("DOCKER_API_VERSION")
            .output()
            .unwrap()
    };
    let images = docker(&["images"]);
    assert!(
        String::from_utf8_lossy(&images.stdout).contains("busybox"),
        "{images:?}"
    );
    let run = docker(&["run", "--rm", &img, "echo", "alone"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "alone\n", "{run:?}");
    // the container ran in the engine's berthd
    assert!(engine.log().contains("container created"));

    let dir = berth_integration::TempDir::new("berth-it-gw-alone");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"{d}/root\"\nstate = \"{d}/state\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let o = Command::new(berth_integration::bin_dir().join("berthd"))
        .arg("--config")
        .arg(&config)
        .args(["--service", "gateway"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("service gateway needs a socket"), "{err}");
}
