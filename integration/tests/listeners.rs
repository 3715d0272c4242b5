//! Where berthd listens: its gRPC API beyond loopback only with mutual TLS or when the user
//! says so, and a warning when the distribution API (`/v2/`) is served beyond loopback without
//! auth.

use berth_integration::{bin_dir, free_port, have, skip, spawn_tied, Berthd, TempDir};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// berthd on its own folders, listening on `address`, with `args`; its log goes to `log`.
fn berthd(dir: &TempDir, address: &str, args: &[&str]) -> Child {
    berthd_with(dir, "", address, args)
}

/// [`berthd`] with `extra` appended to its config.
fn berthd_with(dir: &TempDir, extra: &str, address: &str, args: &[&str]) -> Child {
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"{d}/root\"\nstate = \"{d}/state\"\n{extra}\n",
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

/// Waits for a berthd that must refuse to start; returns its log.
fn refused_at_start(mut child: Child, dir: &TempDir, what: &str) -> String {
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("berthd serves {what}: {}", log(dir));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let said = log(dir);
    assert!(
        !dir.path().join("root/image").exists(),
        "no service started: {said}"
    );
    said
}

/// Runs `berth` (made by `cmd`) until it succeeds, while `served` runs; returns its output.
fn answered(served: &mut Child, dir: &TempDir, cmd: impl Fn() -> Output) -> Output {
    let started = Instant::now();
    loop {
        let o = cmd();
        if o.status.success() {
            return o;
        }
        if started.elapsed() > Duration::from_secs(60) || served.try_wait().unwrap().is_some() {
            let _ = served.kill();
            panic!(
                "berthd never answered: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                log(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn grpc_beyond_loopback_needs_insecure_tcp() {
    let dir = TempDir::new("berth-it-listen");
    let address = format!("tcp://0.0.0.0:{}", free_port());
    let said = refused_at_start(
        berthd(&dir, &address, &[]),
        &dir,
        &format!("{address} without --insecure-tcp"),
    );
    assert!(
        said.contains("refusing to serve") && said.contains("--insecure-tcp"),
        "{said}"
    );

    // Said explicitly: served, with a warning, and the CLI reaches it.
    let port = free_port();
    let mut served = berthd(&dir, &format!("tcp://0.0.0.0:{port}"), &["--insecure-tcp"]);
    let cli = format!("tcp://127.0.0.1:{port}");
    answered(&mut served, &dir, || {
        Command::new(bin_dir().join("berth"))
            .args(["--address", &cli, "version"])
            .output()
            .unwrap()
    });
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

/// An IPv4 address of this machine other than loopback: the source address of a route out
/// (a connected UDP socket sends nothing). None on a machine with no such route.
fn own_ipv4() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// Runs `openssl` with the words of `args` in `dir`, asserting success.
fn openssl(dir: &Path, args: &str) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .expect("run openssl");
    assert!(
        o.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// openssl's arguments for a new P-256 key, unencrypted.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A throwaway CA `NAME.pem` / `NAME.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 {NEW_KEY} -days 2 -subj /CN={name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
             -keyout {name}.key -out {name}.pem"
        ),
    );
}

/// A certificate `NAME.pem` / `NAME.key` signed by the CA `ca`, with the extensions `ext`
/// (an openssl extension file's lines).
fn make_cert(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &format!("req {NEW_KEY} -subj /CN={name} -keyout {name}.key -out {name}.csr"),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -days 2 -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
             -extfile {name}.ext -out {name}.pem"
        ),
    );
}

/// `berth` with `args`, berthd's TLS files taken from `dir`.
fn berth_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin_dir().join("berth"))
        .current_dir(dir)
        .args(args)
        .env_remove("BERTH_TLS_CACERT")
        .env_remove("BERTH_TLS_CERT")
        .env_remove("BERTH_TLS_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

#[test]
fn grpc_over_mutual_tls_beyond_loopback() {
    if !have("openssl") {
        return skip("openssl is not installed (deploy/install-deps.sh installs it)");
    }
    let ip = own_ipv4();
    if ip.is_none() {
        eprintln!("no IPv4 address besides loopback: listening on 0.0.0.0, reached at 127.0.0.1");
    }
    let (listen_ip, reach_ip) = match ip {
        Some(ip) => (ip.to_string(), ip.to_string()),
        None => ("0.0.0.0".to_string(), "127.0.0.1".to_string()),
    };
    let dir = TempDir::new("berth-it-tls");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    make_ca(&tls, "ca");
    make_ca(&tls, "other-ca");
    make_cert(
        &tls,
        "ca",
        "server",
        &format!(
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n\
             subjectAltName=IP:{reach_ip},IP:127.0.0.1,DNS:localhost\n"
        ),
    );
    let client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
    make_cert(&tls, "ca", "client", client_ext);
    make_cert(&tls, "other-ca", "stranger", client_ext);

    let t = tls.display();
    let port = free_port();
    let mut served = berthd_with(
        &dir,
        &format!(
            "[tls]\ncert = \"{t}/server.pem\"\nkey = \"{t}/server.key\"\nclient_ca = \"{t}/ca.pem\"\n"
        ),
        &format!("tcp://{listen_ip}:{port}"),
        &[],
    );
    let address = format!("https://{reach_ip}:{port}");
    let client = ["--tlscert", "client.pem", "--tlskey", "client.key"];
    let mutual = [
        &["--address", &address, "--tlscacert", "ca.pem"][..],
        &client,
    ]
    .concat();
    let version = answered(&mut served, &dir, || {
        berth_in(&tls, &[&mutual[..], &["version"]].concat())
    });
    let said = log(&dir);
    assert!(
        !said.contains("--insecure-tcp"),
        "no warning with mutual TLS: {said}"
    );
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("Server"),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
    let ok = |args: &[&str]| {
        let o = berth_in(&tls, &[&mutual[..], args].concat());
        assert!(
            o.status.success(),
            "berth {args:?} over TLS: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(ok(&["images"]).contains("REPOSITORY"));
    // The image service asks the runtime which images containers use: berthd's own clients
    // reach the services it hosts although its listener serves TLS.
    ok(&["image", "prune", "-f"]);
    // The same through the environment, as a script would set it.
    let o = Command::new(bin_dir().join("berth"))
        .current_dir(&tls)
        .args(["--address", &address, "version"])
        .env("BERTH_TLS_CACERT", "ca.pem")
        .env("BERTH_TLS_CERT", "client.pem")
        .env("BERTH_TLS_KEY", "client.key")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let refused = |why: &str, args: &[&str]| {
        let o = berth_in(&tls, &[args, &["version"]].concat());
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("Server"),
            "{why}: served: {}{err}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert_eq!(o.status.code(), Some(125), "{why}: {err}");
        err
    };
    let ca = ["--address", &address, "--tlscacert", "ca.pem"];
    refused("no client certificate", &ca);
    refused(
        "a client certificate from another CA",
        &[
            &ca[..],
            &["--tlscert", "stranger.pem", "--tlskey", "stranger.key"],
        ]
        .concat(),
    );
    refused(
        "a CA that did not sign berthd's certificate",
        &[
            &["--address", &address, "--tlscacert", "other-ca.pem"][..],
            &client,
        ]
        .concat(),
    );
    let plain = format!("tcp://{reach_ip}:{port}");
    refused("plain gRPC to the TLS port", &["--address", &plain]);
    let err = refused(
        "TLS flags with a tcp:// address",
        &[&["--address", &plain, "--tlscacert", "ca.pem"][..], &client].concat(),
    );
    assert!(err.contains("https://"), "{err}");
    let err = refused("https:// without a CA", &["--address", &address]);
    assert!(err.contains("--tlscacert"), "{err}");
    let _ = served.kill();
    let _ = served.wait();

    // TLS without client certificates would let anyone who reaches the port in: refused
    // beyond loopback as plain TCP is, before any service starts.
    let dir2 = TempDir::new("berth-it-tls");
    let server_only = berthd_with(
        &dir2,
        &format!("[tls]\ncert = \"{t}/server.pem\"\nkey = \"{t}/server.key\"\n"),
        &format!("tcp://{listen_ip}:{}", free_port()),
        &[],
    );
    let said = refused_at_start(server_only, &dir2, "TLS without client_ca");
    assert!(
        said.contains("without client certificates") && said.contains("client_ca"),
        "{said}"
    );
}
