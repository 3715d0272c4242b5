//! Where berthd listens: its gRPC API beyond loopback only when the user says so, and a
//! warning when the distribution API (`/v2/`) is served beyond loopback without auth.

use berth_integration::{bin_dir, free_port, spawn_tied, Berthd, TempDir};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// berthd on its own folders, listening on `address`, with `args`; its log goes to `log`.
fn berthd(dir: &TempDir, address: &str, args: &[&str]) -> Child {
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"{d}/root\"\nstate = \"{d}/state\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("berthd.log")).unwrap();
    let mut cmd = Command::new(bin_dir().join("berthd"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--address", address])
        .args(args)
        .stdout(Stdio::null())
        .stderr(log);
    spawn_tied(cmd).expect("start berthd")
}

fn log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("berthd.log")).unwrap_or_default()
}

#[test]
fn grpc_beyond_loopback_needs_insecure_tcp() {
    let dir = TempDir::new("berth-it-listen");
    let address = format!("tcp://0.0.0.0:{}", free_port());
    let mut refused = berthd(&dir, &address, &[]);
    let started = Instant::now();
    let status = loop {
        if let Some(st) = refused.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = refused.kill();
            panic!(
                "berthd serves {address} without --insecure-tcp: {}",
                log(&dir)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let said = log(&dir);
    assert!(
        said.contains("refusing to serve") && said.contains("--insecure-tcp"),
        "{said}"
    );
    assert!(
        !dir.path().join("root/image").exists(),
        "no service started: {said}"
    );

    // Said explicitly: served, with a warning, and the CLI reaches it.
    let port = free_port();
    let mut served = berthd(&dir, &format!("tcp://0.0.0.0:{port}"), &["--insecure-tcp"]);
    let cli = format!("tcp://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        let o = Command::new(bin_dir().join("berth"))
            .args(["--address", &cli, "version"])
            .output()
            .unwrap();
        if o.status.success() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) || served.try_wait().unwrap().is_some() {
            let _ = served.kill();
            panic!("berthd --insecure-tcp never answered: {}", log(&dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = served.kill();
    let _ = served.wait();
    assert!(
        log(&dir).contains("without TLS (--insecure-tcp)"),
        "{}",
        log(&dir)
    );
}

#[test]
fn the_registry_beyond_loopback_without_auth_is_warned_about() {
    let open = Berthd::start(&format!(
        "[registry_proxy]\nlisten = \"0.0.0.0:{}\"\n",
        free_port()
    ));
    assert!(
        open.log().contains("without authentication") && open.log().contains("htpasswd"),
        "{}",
        open.log()
    );
    let local = Berthd::start(&format!(
        "[registry_proxy]\nlisten = \"127.0.0.1:{}\"\n",
        free_port()
    ));
    assert!(
        local.log().contains("serving the distribution API"),
        "{}",
        local.log()
    );
    assert!(
        !local.log().contains("without authentication"),
        "{}",
        local.log()
    );
}
