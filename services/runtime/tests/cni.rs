//! The CNI driver against the real plugins of Debian's `containernetworking-plugins`.
//!
//! Needs root and `/usr/lib/cni/bridge`; skipped without them (failing under CI). Each test
//! makes its own network namespace (`ip netns add bt<random>`) and bridge (`bt<random>`) and
//! removes both, and runs CNI DEL for every attachment it made, through guards that also run when the
//! test fails.

use berth_runtime::network::cni::{
    CniError, Network, NetworkConfig, PortMapping, Protocol, Subnet, DEFAULT_PLUGIN_DIR,
};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: CNI plugins need CAP_NET_ADMIN".into());
    }
    if !Path::new(DEFAULT_PLUGIN_DIR).join("bridge").is_file() {
        return Some(format!(
            "no {DEFAULT_PLUGIN_DIR}/bridge (Debian package containernetworking-plugins)"
        ));
    }
    None
}

macro_rules! require_plugins {
    () => {
        if let Some(why) = skip_reason() {
            return berth_core::testing::skip(why);
        }
    };
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    u32::from_le_bytes(b)
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// A named network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("bt{:08x}", random_u32());
        let out = run("ip", &["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add: {out:?}");
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The flags of `dev` inside the namespace (`UP`, `LOWER_UP`, …), or `None` if it is missing.
    fn link_flags(&self, dev: &str) -> Option<Vec<String>> {
        let out = run("ip", &["-n", &self.name, "-o", "link", "show", "dev", dev]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let flags = text.split('<').nth(1)?.split('>').next()?;
        Some(flags.split(',').map(str::to_string).collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A bridge network with its own bridge, subnet and state folders; the bridge is deleted on
/// drop, and the portmap plugin's top-level chains too if this test created them.
struct TestNetwork {
    net: Network,
    bridge: String,
    _dir: tempfile::TempDir,
    hostport_chains_existed: [bool; 3],
}

impl TestNetwork {
    fn new() -> TestNetwork {
        let r = random_u32();
        let bridge = format!("bt{:08x}", r);
        // 10.200-249.x.0/24: a subnet of its own per test.
        let subnet = Subnet::new(
            Ipv4Addr::new(10, 200 + (r % 50) as u8, (r >> 8) as u8, 0),
            24,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let net = Network::new(NetworkConfig {
            name: format!("berth-test-{:08x}", r),
            bridge: bridge.clone(),
            subnet,
            gateway: None,
            ip_masq: true,
            loopback: true,
            plugin_dir: DEFAULT_PLUGIN_DIR.into(),
            ipam_dir: dir.path().join("ipam"),
            cache_dir: dir.path().join("cache"),
        })
        .unwrap();
        TestNetwork {
            net,
            bridge,
            _dir: dir,
            hostport_chains_existed: HOSTPORT_CHAINS.map(chain_exists),
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.net
            .config()
            .unwrap()
            .ipam_dir
            .join(&self.net.config().unwrap().name)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.bridge]);
        remove_new_hostport_chains(self.hostport_chains_existed);
    }
}

fn chain_exists(chain: &str) -> bool {
    run("iptables", &["-t", "nat", "-S", chain])
        .status
        .success()
}

const HOSTPORT_CHAINS: [&str; 3] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
];

/// Removes those of portmap's shared chains that did not exist before the test (`existed`,
/// in the order of [`HOSTPORT_CHAINS`]) with the jumps to them, unless another container's
/// mapping is still in `CNI-HOSTPORT-DNAT` (another user of the plugin on this host).
fn remove_new_hostport_chains(existed: [bool; 3]) {
    let dnat = run("iptables", &["-t", "nat", "-S", "CNI-HOSTPORT-DNAT"]);
    if String::from_utf8_lossy(&dnat.stdout)
        .lines()
        .any(|l| l.starts_with("-A "))
    {
        return;
    }
    for (chain, existed) in HOSTPORT_CHAINS.iter().zip(existed) {
        if existed || !chain_exists(chain) {
            continue;
        }
        for parent in ["PREROUTING", "OUTPUT", "POSTROUTING"] {
            let rules = run("iptables", &["-t", "nat", "-S", parent]);
            for line in String::from_utf8_lossy(&rules.stdout).lines() {
                if line.starts_with("-A ") && line.ends_with(&format!("-j {chain}")) {
                    let mut args = vec!["-t", "nat", "-D"];
                    args.extend(line.split_whitespace().skip(1));
                    // The comment is quoted in -S output; give it unquoted as one argument.
                    let args = requote(&args);
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    let _ = run("iptables", &refs);
                }
            }
        }
        let _ = run("iptables", &["-t", "nat", "-F", chain]);
        let _ = run("iptables", &["-t", "nat", "-X", chain]);
    }
}

/// Joins the words of a `"quoted string"` split by whitespace back into one argument.
fn requote(words: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    for w in words {
        match open.take() {
            Some(mut acc) => {
                acc.push(' ');
                acc.push_str(w.trim_end_matches('"'));
                if w.ends_with('"') {
                    out.push(acc);
                } else {
                    open = Some(acc);
                }
            }
            None if w.starts_with('"') && !(w.len() > 1 && w.ends_with('"')) => {
                open = Some(w.trim_start_matches('"').to_string());
            }
            None => out.push(w.trim_matches('"').to_string()),
        }
    }
    out.extend(open);
    out
}

/// An attachment made by ADD, released by CNI DEL on drop.
struct Attached<'a> {
    net: &'a Network,
    id: String,
    netns: PathBuf,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.net.del(&self.id, &self.netns, "eth0") {
            eprintln!("cleanup: CNI DEL of {}: {e}", self.id);
        }
    }
}

/// A process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP server inside the namespace that answers every connection with "hello".
fn serve_hello(ns: &Netns, port: u16) -> Reaped {
    let script = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{port}))\ns.listen()\nwhile True:\n c,_=s.accept()\n c.sendall(b'hello')\n c.close()\n"
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("ip netns exec python3");
    Reaped(child)
}

/// Connects to `addr` until it answers (the server may still be starting) and reads its reply.
fn fetch(addr: SocketAddr) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reply = String::new();
                s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
                let _ = s.flush();
                return Ok(reply);
            }
            Err(e) if Instant::now() > deadline => return Err(format!("{addr}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn add_gives_an_address_the_host_reaches_and_del_releases_it() {
    require_plugins!();
    let tn = TestNetwork::new();
    let ns = Netns::new();
    let id = format!("c{:08x}", random_u32());
    let host_port = 20000 + (random_u32() % 20000) as u16;
    let ports = [PortMapping {
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
        host_ip: None,
    }];

    let a = tn.net.add(&id, &ns.path(), "eth0", &ports, "").unwrap();
    let guard = Attached {
        net: &tn.net,
        id: id.clone(),
        netns: ns.path(),
    };
    let subnet = tn.net.config().unwrap().subnet;
    assert!(subnet.contains(a.ip), "{} not in {subnet}", a.ip);
    assert_ne!(a.ip, tn.net.gateway().unwrap());
    assert_eq!(a.gateway, Some(tn.net.gateway().unwrap()));
    assert_eq!(a.prefix_len, 24);
    assert!(a.mac.is_some(), "{a:?}");
    let veth = a.host_ifname.clone().expect("the host end of the veth");
    assert!(run("ip", &["link", "show", "dev", &veth]).status.success());

    for dev in ["eth0", "lo"] {
        let flags = ns.link_flags(dev).unwrap_or_else(|| panic!("no {dev}"));
        assert!(
            flags.iter().any(|f| f == "UP"),
            "{dev} is not up: {flags:?}"
        );
    }
    let _server = serve_hello(&ns, 8080);
    assert_eq!(fetch(SocketAddr::from((a.ip, 8080))).unwrap(), "hello");
    // The published port, through portmap's DNAT on the host's address on the bridge.
    assert_eq!(
        fetch(SocketAddr::from((tn.net.gateway().unwrap(), host_port))).unwrap(),
        "hello"
    );

    drop(guard);
    assert!(
        !run("ip", &["link", "show", "dev", &veth]).status.success(),
        "{veth} is still there after DEL"
    );
    assert!(ns.link_flags("eth0").is_none(), "eth0 left in the netns");
    assert!(
        !tn.ipam_dir().join(a.ip.to_string()).exists(),
        "{} is still leased after DEL",
        a.ip
    );
    let dnat = run("iptables", &["-t", "nat", "-S"]);
    assert!(
        !String::from_utf8_lossy(&dnat.stdout).contains(&format!("--dport {host_port}")),
        "port {host_port} is still mapped after DEL"
    );
    // DEL again is fine: nothing is left to release.
    tn.net.del(&id, &ns.path(), "eth0").unwrap();

    let b = tn.net.add(&id, &ns.path(), "eth0", &[], "").unwrap();
    let _guard = Attached {
        net: &tn.net,
        id: id.clone(),
        netns: ns.path(),
    };
    assert!(subnet.contains(b.ip), "{} not in {subnet}", b.ip);
    // CHECK without published ports: Debian's portmap CHECK looks for IPv6 chains even for an
    // IPv4-only attachment (containernetworking/plugins#819), so a ported one fails it there.
    tn.net.check(&id, &ns.path(), "eth0").unwrap();
}

#[test]
fn two_containers_get_different_addresses() {
    require_plugins!();
    let tn = TestNetwork::new();
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let a = tn.net.add("one", &ns1.path(), "eth0", &[], "").unwrap();
    let _g1 = Attached {
        net: &tn.net,
        id: "one".into(),
        netns: ns1.path(),
    };
    let b = tn.net.add("two", &ns2.path(), "eth0", &[], "").unwrap();
    let _g2 = Attached {
        net: &tn.net,
        id: "two".into(),
        netns: ns2.path(),
    };
    assert_ne!(a.ip, b.ip);
    let _server = serve_hello(&ns2, 9000);
    // From the host to the second container.
    assert_eq!(fetch(SocketAddr::from((b.ip, 9000))).unwrap(), "hello");
}

#[test]
fn a_plugin_error_is_reported_clearly() {
    require_plugins!();
    let tn = TestNetwork::new();
    let missing = Path::new("/run/netns/berth-test-no-such-netns");
    let err = tn.net.add("ghost", missing, "eth0", &[], "").unwrap_err();
    match &err {
        CniError::Plugin { plugin, msg, .. } => {
            assert_eq!(plugin, "loopback", "{err}");
            assert!(msg.contains("berth-test-no-such-netns"), "{err}");
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("CNI plugin loopback failed (ADD): "));
    let _ = tn.net.del("ghost", missing, "eth0");
}

#[test]
fn a_bad_config_is_refused_before_any_plugin_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |bridge: &str, subnet: &str, gateway: Option<Ipv4Addr>| {
        Ok::<_, CniError>(NetworkConfig {
            name: "berth-test".into(),
            bridge: bridge.into(),
            subnet: subnet.parse()?,
            gateway,
            ip_masq: false,
            loopback: true,
            plugin_dir: DEFAULT_PLUGIN_DIR.into(),
            ipam_dir: dir.path().join("ipam"),
            cache_dir: dir.path().join("cache"),
        })
    };
    let e = cfg("bt0", "10.1.0.0", None).unwrap_err();
    assert!(e.to_string().contains("a.b.c.d/n"), "{e}");
    let e = Network::new(cfg("this-bridge-is-too-long", "10.1.0.0/24", None).unwrap()).unwrap_err();
    assert!(e.to_string().contains("bridge name"), "{e}");
    let e = Network::new(cfg("bt0", "10.1.0.0/24", Some(Ipv4Addr::new(10, 2, 0, 1))).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("not a host address"), "{e}");

    let mut c = cfg("bt0", "10.1.0.0/24", None).unwrap();
    c.plugin_dir = dir.path().join("no-plugins");
    let net = Network::new(c).unwrap();
    let e = net
        .add("x", Path::new("/run/netns/none"), "eth0", &[], "")
        .unwrap_err();
    assert!(matches!(e, CniError::PluginNotFound(_)), "{e}");
    assert!(e.to_string().contains("containernetworking-plugins"), "{e}");
}
