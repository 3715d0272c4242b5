//! Container networking (issue 6) end to end: a real registry, real berthd instances, real
//! containers on CNI bridges, checked from the host (published ports reached with plain
//! sockets, bridges in /sys/class/net, rules in `iptables-save`, berthd's CNI cache, address
//! leases and namespace files) and from inside the containers (busybox's ip, wget, ping).
//!
//! Every test has its own berthd (published host ports, crashes and leftover counts need
//! isolation); the registry and the image are shared. Tests are skipped (and fail under
//! CI) when the CNI plugins, iptables or the registry tools are missing.

use berth_integration::{free_port, have, or_skip, Berthd, Registry, TempDir};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Shared {
    _reg: Registry,
    img: String,
}

/// What networking needs on the host, or why it cannot run here.
fn missing_tools() -> Option<String> {
    let plugins = ["/usr/lib/cni", "/opt/cni/bin"]
        .iter()
        .any(|d| Path::new(d).join("bridge").is_file() && Path::new(d).join("portmap").is_file());
    if !plugins {
        return Some("the CNI plugins are not installed (containernetworking-plugins)".into());
    }
    for t in ["iptables", "iptables-save", "ip"] {
        if !have(t) {
            return Some(format!("{t} is not installed"));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("networking needs root".into());
    }
    None
}

fn shared() -> Option<&'static Shared> {
    static S: OnceLock<Option<Shared>> = OnceLock::new();
    S.get_or_init(|| {
        if let Some(why) = missing_tools() {
            berth_integration::skip(why);
            return None;
        }
        let reg = Registry::start()?;
        reg.push_busybox("busybox:latest");
        let img = format!("{}/busybox:latest", reg.addr);
        Some(Shared { _reg: reg, img })
    })
    .as_ref()
}

/// A berthd of its own with the image pulled. Dropping it removes its containers (so their
/// veths, rules and leases go with them even when a test fails) and its user networks, then
/// stops berthd.
struct Env {
    d: Berthd,
    img: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.d.berth(&["ps", "-a", "-q", "--no-trunc"]);
        let ids = text(&ids.stdout);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut a = vec!["rm", "-f"];
            a.extend(ids);
            let _ = self.d.berth(&a);
        }
        let _ = self.d.berth(&["network", "prune", "-f"]);
    }
}

fn env() -> Option<Env> {
    let s = shared()?;
    let d = Berthd::start("");
    d.ok(&["pull", "-q", &s.img]);
    Some(Env {
        d,
        img: s.img.clone(),
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit code, stdout and stderr of a command, for failure messages.
fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A shell command that serves `content` as /index.html with busybox httpd on `port`.
fn httpd_script(content: &str, port: u16) -> String {
    format!("mkdir -p /w && echo {content} > /w/index.html && exec httpd -f -p {port} -h /w")
}

/// `run -d [flags…] IMG sh -c <httpd serving content on port 80>`.
fn serve(e: &Env, flags: &[&str], content: &str) -> String {
    let script = httpd_script(content, 80);
    let mut a: Vec<&str> = flags.to_vec();
    a.extend([e.img.as_str(), "sh", "-c", &script]);
    e.d.run_d(&a)
}

/// One plain HTTP/1.0 GET: the body of a 200 answer, else what went wrong.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let reply = text(&buf);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer from {addr}: {reply:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.lines().next().unwrap_or("").contains(" 200") {
        return Err(format!("{addr} answered {head:?}"));
    }
    Ok(body.to_string())
}

/// Waits (up to 10 s) until `ip:port` serves `/index.html` with `want` in it.
fn wait_http(ip: Ipv4Addr, port: u16, want: &str) {
    let addr = SocketAddr::from((ip, port));
    let t0 = Instant::now();
    loop {
        match http_get(addr, "/index.html") {
            Ok(body) if body.contains(want) => return,
            Ok(body) => panic!("{addr} serves {body:?}, not {want:?}"),
            Err(e) if t0.elapsed() > Duration::from_secs(10) => {
                panic!("{addr} does not serve {want:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The host's first global IPv4 address that is not on one of berth's bridges.
fn host_address() -> Option<Ipv4Addr> {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    text(&o.stdout).lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let dev = w.nth(1)?;
        if dev.starts_with("bth") || dev.starts_with("br-") || dev.starts_with("berth") {
            return None;
        }
        let addr = w.skip_while(|x| *x != "inet").nth(1)?;
        addr.split('/').next()?.parse().ok()
    })
}

/// `berth inspect C` as JSON (the first object).
fn inspect(d: &Berthd, c: &str) -> Value {
    let out = d.ok(&["inspect", c]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {c}: {e}: {out}"));
    v.as_array().map(|a| a[0].clone()).unwrap_or(v)
}

/// A container's address, through the template Docker users write.
fn ip_of(d: &Berthd, c: &str) -> Ipv4Addr {
    let out = d.ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        c,
    ]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("the address of {c} from inspect: {out:?}: {e}"))
}

/// `berth network inspect NAME` as JSON (the first object).
fn net_inspect(d: &Berthd, name: &str) -> Value {
    let out = d.ok(&["network", "inspect", name]);
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("network inspect {name}: {e}: {out}"));
    v.as_array().map(|a| a[0].clone()).unwrap_or(v)
}

/// (bridge name, subnet) of a bridge network.
fn bridge_of(d: &Berthd, name: &str) -> (String, String) {
    let n = net_inspect(d, name);
    let bridge = n["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap_or_else(|| panic!("no bridge name in network inspect {name}: {n:#}"))
        .to_string();
    let subnet = n["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap_or_else(|| panic!("no subnet in network inspect {name}: {n:#}"))
        .to_string();
    (bridge, subnet)
}

/// Whether `ip` is in `cidr` (`10.77.3.0/24`).
fn in_subnet(ip: Ipv4Addr, cidr: &str) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The `inet A.B.C.D/N` addresses of `ip -4 addr` output.
fn inets(out: &str) -> Vec<String> {
    out.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "inet")
        .map(|w| w[1].to_string())
        .collect()
}

/// Interface names of `ip -o link` output.
fn link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn iptables_save() -> String {
    let o = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    text(&o.stdout)
}

/// Whether nothing (berthd, a container) holds host port `port` on every address any more.
fn port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// What a container's network attachment leaves on the host, found from berthd's state and
/// the host's rules.
#[derive(Debug, Default)]
struct Footprint {
    /// `<state>/net/netns/default/<id>` exists.
    netns: bool,
    /// CNI cache files named after the container.
    cache: Vec<String>,
    /// host-local lease files naming the container.
    leases: Vec<String>,
    /// iptables-save lines mentioning the container or one of `chains`.
    rules: Vec<String>,
    /// Host-side veths (from the cached CNI results) that still exist.
    veths: Vec<String>,
}

impl Footprint {
    fn is_empty(&self) -> bool {
        !self.netns
            && self.cache.is_empty()
            && self.leases.is_empty()
            && self.rules.is_empty()
            && self.veths.is_empty()
    }
}

/// The CNI-DN-… chains of the rules that mention the container (portmap's per-container
/// DNAT chains).
fn dnat_chains(rules: &[String]) -> Vec<String> {
    let mut out: Vec<String> = rules
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter(|w| w.starts_with("CNI-DN-"))
        .map(|w| w.trim_matches('"').to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Host-side interfaces of the CNI results cached for a container (no `sandbox`, not the
/// bridge).
fn cached_veths(d: &Berthd, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(d.state().join("net/cache"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if !f.file_name().to_string_lossy().contains(id) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(f.path()).unwrap_or_default())
        else {
            continue;
        };
        for i in v["result"]["interfaces"].as_array().into_iter().flatten() {
            let name = i["name"].as_str().unwrap_or("");
            let sandbox = i["sandbox"].as_str().unwrap_or("");
            if sandbox.is_empty() && name.starts_with("veth") {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The footprint of container `id`; `veths` and `chains` are what it had when it ran (the
/// cache that names them is gone once it is released).
fn footprint(d: &Berthd, id: &str, veths: &[String], chains: &[String]) -> Footprint {
    let net = d.state().join("net");
    let mut f = Footprint {
        netns: net.join("netns/default").join(id).exists(),
        ..Default::default()
    };
    for e in std::fs::read_dir(net.join("cache"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(id) {
            f.cache.push(name);
        }
    }
    for n in std::fs::read_dir(net.join("ipam"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for l in std::fs::read_dir(n.path()).into_iter().flatten().flatten() {
            let name = l.file_name().to_string_lossy().into_owned();
            if name == "lock" || name.starts_with("last_reserved_ip") {
                continue;
            }
            if std::fs::read_to_string(l.path()).is_ok_and(|s| s.contains(id)) {
                f.leases
                    .push(format!("{}/{name}", n.file_name().to_string_lossy()));
            }
        }
    }
    f.rules = iptables_save()
        .lines()
        .filter(|l| l.contains(id) || chains.iter().any(|c| l.contains(c.as_str())))
        .map(str::to_string)
        .collect();
    f.veths = veths
        .iter()
        .filter(|v| Path::new("/sys/class/net").join(v).exists())
        .cloned()
        .collect();
    f
}

/// Checks that a running container with published ports has the whole footprint (so the
/// checks after its release look in the right places), and returns its (veths, chains).
fn footprint_of_running(d: &Berthd, id: &str) -> (Vec<String>, Vec<String>) {
    let veths = cached_veths(d, id);
    let f = footprint(d, id, &veths, &[]);
    let chains = dnat_chains(&f.rules);
    assert!(
        f.netns
            && !f.cache.is_empty()
            && !f.leases.is_empty()
            && !f.rules.is_empty()
            && !veths.is_empty()
            && f.veths == veths
            && !chains.is_empty(),
        "a running container with a published port has a netns file, a CNI cache file, a \
         lease, portmap rules (CNI-DN-…) and a host veth: {f:#?}\ncached veths: {veths:?}, \
         chains: {chains:?}"
    );
    (veths, chains)
}

/// Waits (up to `secs`) until nothing of container `id` is left on the host.
fn assert_released(d: &Berthd, id: &str, veths: &[String], chains: &[String], secs: u64) {
    let t0 = Instant::now();
    loop {
        let f = footprint(d, id, veths, chains);
        if f.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "container {id} left behind: {f:#?}\nberthd log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Test 1: the default bridge, resolv.conf, hosts, --dns, --add-host, none and host.
#[test]
fn default_bridge_and_the_files_a_container_gets() {
    let e = or_skip!(env());
    let d = &e.d;
    let img = e.img.as_str();

    // The default network: its own bridge (marked with this instance's root) and subnet.
    let (bridge, subnet) = bridge_of(d, "bridge");
    assert!(
        bridge.starts_with("bth"),
        "a non-default root gets a bth… bridge: {bridge}"
    );
    assert!(
        in_subnet(
            subnet.split('/').next().unwrap().parse().unwrap(),
            "10.77.0.0/16"
        ) && subnet.ends_with("/24"),
        "the default subnet is a /24 of 10.77.0.0/16: {subnet}"
    );
    let alias = std::fs::read_to_string(Path::new("/sys/class/net").join(&bridge).join("ifalias"))
        .unwrap_or_else(|e| panic!("bridge {bridge} is not on the host: {e}"));
    assert!(
        alias.trim().starts_with("berth:") && alias.contains(&d.root().display().to_string()),
        "bridge {bridge} is marked with its instance's root {}: {alias:?}",
        d.root().display()
    );

    // eth0 has an address in that subnet.
    let out = d.ok(&["run", "--rm", img, "ip", "-4", "addr", "show", "eth0"]);
    let addrs = inets(&out);
    assert_eq!(addrs.len(), 1, "one IPv4 address on eth0: {out}");
    let (ip, len) = addrs[0].split_once('/').unwrap();
    assert_eq!(len, "24", "{out}");
    assert!(
        in_subnet(ip.parse().unwrap(), &subnet),
        "eth0's {ip} is in the bridge network's subnet {subnet}: {out}"
    );

    // resolv.conf: the host's nameservers without loopback ones.
    let resolv = d.ok(&["run", "--rm", img, "cat", "/etc/resolv.conf"]);
    assert!(
        !resolv
            .lines()
            .any(|l| l.trim_start().starts_with("nameserver 127.")),
        "no loopback nameserver in the container: {resolv}"
    );
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for ns in host_resolv.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver")).then(|| w.next()).flatten()
    }) {
        if !ns.starts_with("127.") && !ns.contains(':') {
            assert!(
                resolv.contains(&format!("nameserver {ns}")),
                "the host's nameserver {ns} is the container's too: {resolv}"
            );
        }
    }

    // /etc/hosts and /etc/hostname: its own address under its hostname and name.
    let out = d.ok(&[
        "run",
        "--rm",
        "--name",
        "named1",
        img,
        "sh",
        "-c",
        "hostname; cat /etc/hostname; ip -4 -o addr show eth0; echo ---; cat /etc/hosts",
    ]);
    let mut lines = out.lines();
    let hostname = lines.next().unwrap_or("").trim().to_string();
    assert!(!hostname.is_empty(), "{out}");
    assert_eq!(
        lines.next().unwrap_or("").trim(),
        hostname,
        "/etc/hostname: {out}"
    );
    let own = inets(&out);
    assert_eq!(own.len(), 1, "{out}");
    let own_ip = own[0].split('/').next().unwrap();
    let hosts = out.split("---\n").nth(1).unwrap_or("");
    assert!(
        hosts
            .lines()
            .any(|l| l.contains("127.0.0.1") && l.contains("localhost")),
        "/etc/hosts has localhost: {hosts}"
    );
    assert!(
        hosts.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&own_ip) && w.contains(&hostname.as_str()) && w.contains(&"named1")
        }),
        "/etc/hosts maps the container's hostname {hostname:?} and name to its address \
         {own_ip}: {hosts}"
    );

    // --dns replaces the host's nameservers; --add-host adds a line that resolves.
    let resolv = d.ok(&[
        "run",
        "--rm",
        "--dns",
        "9.9.9.9",
        img,
        "cat",
        "/etc/resolv.conf",
    ]);
    let servers: Vec<&str> = resolv
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(servers, ["nameserver 9.9.9.9"], "--dns: {resolv}");
    let hosts = d.ok(&[
        "run",
        "--rm",
        "--add-host",
        "db:10.1.2.3",
        img,
        "cat",
        "/etc/hosts",
    ]);
    assert!(
        hosts.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"10.1.2.3") && w.contains(&"db")
        }),
        "--add-host db:10.1.2.3 is in /etc/hosts: {hosts}"
    );
    // ping fails (nothing answers there) but names the address it resolved.
    let o = d.berth(&[
        "run",
        "--rm",
        "--add-host",
        "db:10.1.2.3",
        img,
        "ping",
        "-c1",
        "-W1",
        "db",
    ]);
    assert!(
        text(&o.stdout).contains("(10.1.2.3)"),
        "db resolves to 10.1.2.3 through /etc/hosts: {}",
        shown(&o)
    );

    // --network none: only lo.
    let out = d.ok(&["run", "--rm", "--network", "none", img, "ip", "-o", "link"]);
    assert_eq!(link_names(&out), ["lo"], "--network none: {out}");
    let hosts = d.ok(&["run", "--rm", "--network", "none", img, "cat", "/etc/hosts"]);
    assert!(hosts.contains("localhost"), "{hosts}");

    // --network host: the host's interfaces (those not coming and going with containers).
    let out = d.ok(&["run", "--rm", "--network", "host", img, "ip", "-o", "link"]);
    let inside = link_names(&out);
    let host = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let stable: Vec<String> = link_names(&text(&host.stdout))
        .into_iter()
        .filter(|n| {
            !["veth", "bth", "br-", "berth", "cni", "bitout"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    assert!(stable.len() > 1, "{}", text(&host.stdout));
    for n in &stable {
        assert!(
            inside.contains(n),
            "--network host sees the host's {n}: {out}"
        );
    }
    assert!(
        !out.contains("eth0@") || stable.iter().any(|n| n == "eth0"),
        "--network host has no veth eth0 of its own: {out}"
    );
}

/// Test 2: TCP publishing: HOST:CONTAINER, a free host port, -P with an EXPOSEd port.
#[test]
fn tcp_ports_are_published() {
    let e = or_skip!(env());
    let d = &e.d;
    let port = free_port();
    let spec = format!("{port}:80");
    let id = serve(&e, &["--name", "web", "-p", &spec], "hello-tcp");
    wait_http(LO, port, "hello-tcp");
    if let Some(a) = host_address() {
        wait_http(a, port, "hello-tcp");
    } else {
        eprintln!("the host has no non-loopback IPv4 address: only 127.0.0.1 is checked");
    }

    let out = d.ok(&["port", "web"]);
    assert_eq!(
        out.trim(),
        format!("80/tcp -> 0.0.0.0:{port}"),
        "berth port"
    );
    let out = d.ok(&["port", "web", "80/tcp"]);
    assert_eq!(
        out.trim(),
        format!("0.0.0.0:{port}"),
        "berth port web 80/tcp"
    );
    let ps = d.ok(&["ps"]);
    let line = ps.lines().find(|l| l.contains(&id[..12])).unwrap_or("");
    assert!(
        line.contains(&format!("0.0.0.0:{port}->80/tcp")),
        "ps shows the published port: {ps}"
    );
    let i = inspect(d, "web");
    let p = &i["NetworkSettings"]["Ports"]["80/tcp"];
    assert_eq!(p[0]["HostPort"], Value::from(port.to_string()), "{i:#}");
    assert_eq!(p[0]["HostIp"], Value::from("0.0.0.0"), "{i:#}");
    let ip = ip_of(d, "web");
    assert_eq!(
        i["NetworkSettings"]["Networks"]["bridge"]["IPAddress"],
        Value::from(ip.to_string()),
        "{i:#}"
    );
    // berthd holds the port: nothing else on the host can take it.
    assert!(!port_free(port), "host port {port} is held while web runs");

    // -p 80: a free host port of berthd's choosing.
    let id2 = serve(&e, &["-p", "80"], "hello-any");
    let out = d.ok(&["port", &id2]);
    let p2: u16 = out
        .trim()
        .strip_prefix("80/tcp -> 0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("berth port of -p 80: {out:?}"));
    assert!(p2 != 0 && p2 != port, "{out}");
    wait_http(LO, p2, "hello-any");

    // -P: the image's EXPOSEd port on a free host port.
    let ctx = TempDir::new("berth-it-net-build");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nEXPOSE 8080\n", e.img),
    )
    .unwrap();
    d.ok(&[
        "build",
        "-q",
        "-t",
        "it/exposer",
        ctx.path().to_str().unwrap(),
    ]);
    let script = httpd_script("hello-exposed", 8080);
    let id3 = d.run_d(&["-P", "it/exposer", "sh", "-c", &script]);
    let out = d.ok(&["port", &id3]);
    let p3: u16 = out
        .trim()
        .strip_prefix("8080/tcp -> 0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("berth port of -P with EXPOSE 8080: {out:?}"));
    assert!(p3 != 0 && p3 != port && p3 != p2, "{out}");
    wait_http(LO, p3, "hello-exposed");
    let ps = d.ok(&["ps"]);
    assert!(
        ps.contains(&format!("0.0.0.0:{p3}->8080/tcp")),
        "ps shows -P's port: {ps}"
    );

    d.ok(&["rm", "-f", "web", &id2, &id3]);
    wait_for(
        "the published ports to be released",
        Duration::from_secs(5),
        || port_free(port) && port_free(p2) && port_free(p3),
    );
}

/// A static UDP receiver (busybox's nc cannot listen on UDP): prints every datagram.
const UDP_RECEIVER: &str = r#"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    printf("listening\n");
    fflush(stdout);
    char b[2048];
    for (;;) {
        ssize_t n = recv(s, b, sizeof b - 1, 0);
        if (n < 0) { perror("recv"); return 1; }
        b[n] = 0;
        printf("got: %s\n", b);
        fflush(stdout);
    }
}
"#;

/// Test 3: a UDP port published with /udp carries the host's datagrams to the container.
#[test]
fn udp_ports_are_published() {
    if !have("cc") {
        return berth_integration::skip("no C compiler for the UDP receiver (apt-get install gcc)");
    }
    let e = or_skip!(env());
    let d = &e.d;
    let tools = TempDir::new("berth-it-udp");
    let src = tools.path().join("udprecv.c");
    std::fs::write(&src, UDP_RECEIVER).unwrap();
    let o = Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(tools.path().join("udprecv"))
        .arg(&src)
        .output()
        .unwrap();
    if !o.status.success() {
        return berth_integration::skip(format!(
            "cannot link a static binary (apt-get install libc6-dev): {}",
            shown(&o)
        ));
    }
    let port = {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let spec = format!("{port}:53/udp");
    let vol = format!("{}:/t:ro", tools.path().display());
    let id = d.run_d(&["-p", &spec, "-v", &vol, &e.img, "/t/udprecv", "53"]);
    wait_for("the receiver to listen", Duration::from_secs(10), || {
        text(&d.berth(&["logs", &id]).stdout).contains("listening")
    });
    assert_eq!(
        d.ok(&["port", &id]).trim(),
        format!("53/udp -> 0.0.0.0:{port}")
    );
    // berthd holds the UDP port.
    assert!(
        UdpSocket::bind(("0.0.0.0", port)).is_err(),
        "host UDP port {port} is held while the container runs"
    );
    let mut targets = vec![LO];
    targets.extend(host_address());
    for (i, ip) in targets.into_iter().enumerate() {
        let msg = format!("datagram-{i}-via-{ip}");
        let t0 = Instant::now();
        loop {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(msg.as_bytes(), (ip, port)).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let logs = text(&d.berth(&["logs", &id]).stdout);
            if logs.contains(&format!("got: {msg}")) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(8),
                "the container did not receive {msg:?} sent to {ip}:{port}/udp; its logs:\n{logs}"
            );
        }
    }
    d.ok(&["rm", "-f", &id]);
    wait_for(
        "the UDP port to be released",
        Duration::from_secs(5),
        || UdpSocket::bind(("0.0.0.0", port)).is_ok(),
    );
}

/// Test 4: one host port, two containers: the second is refused, the first keeps serving,
/// and the port is free again once the first is removed.
#[test]
fn a_host_port_is_published_once() {
    let e = or_skip!(env());
    let d = &e.d;
    let port = free_port();
    let spec = format!("{port}:80");
    let first = serve(&e, &["-p", &spec], "first");
    wait_http(LO, port, "first");
    let script = httpd_script("second", 80);
    let o = d.berth(&["run", "-d", "-p", &spec, &e.img, "sh", "-c", &script]);
    assert!(
        !o.status.success(),
        "a second -p {spec} is refused: {}",
        shown(&o)
    );
    assert!(
        text(&o.stderr).contains("already allocated"),
        "the refusal says the port is already allocated: {}",
        shown(&o)
    );
    assert!(
        text(&o.stderr).contains(&port.to_string()),
        "the refusal names the port: {}",
        shown(&o)
    );
    wait_http(LO, port, "first");
    // Whatever the refused run left behind (Docker keeps it as Created) is not running.
    let running = d.ok(&["ps", "-q", "--no-trunc"]);
    assert_eq!(running.trim(), first, "only the first runs: {running}");
    let all = d.ok(&["ps", "-a", "-q", "--no-trunc"]);
    for c in all.split_whitespace().filter(|c| *c != first) {
        d.ok(&["rm", "-f", c]);
    }

    d.ok(&["rm", "-f", &first]);
    let third = serve(&e, &["-p", &spec], "third");
    wait_http(LO, port, "third");
    d.ok(&["rm", "-f", &third]);
}

/// Test 5: bad -p specs are refused by the CLI with 125, naming the spec, leaving nothing.
#[test]
fn invalid_publish_specs_are_refused() {
    let e = or_skip!(env());
    let d = &e.d;
    for spec in [
        "abc",
        "0:0",
        "70000:80",
        "80/sctp",
        "8000-8002:80-81",
        "1.2.3:80:80",
    ] {
        for verb in ["run", "create"] {
            let mut a = vec![verb];
            if verb == "run" {
                a.push("-d");
            }
            a.extend(["-p", spec, e.img.as_str(), "true"]);
            let (code, err) = d.fails(&a);
            assert_eq!(code, 125, "{a:?}: {err}");
            assert!(
                err.to_lowercase().contains("invalid") && err.contains(spec),
                "{a:?}: the error names the spec: {err}"
            );
        }
    }
    let left = d.ok(&["ps", "-a", "-q"]);
    assert!(left.trim().is_empty(), "no container is left: {left}");
}

/// The httpd container named `web` on `flags`' network, serving `content`.
fn web(e: &Env, flags: &[&str], content: &str) -> String {
    let mut f = vec!["--name", "web"];
    f.extend_from_slice(flags);
    serve(e, &f, content)
}

/// `run --rm ARGS…` (a container of its own), raw output.
fn run_rm(e: &Env, args: &[&str]) -> Output {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(args);
    e.d.berth(&a)
}

/// Retries `run --rm … timeout 5 wget -qO- URL` (not `wget -T`: busybox 1.35's wget
/// crashes with it, on the host too) for a while (httpd may still be starting) until it
/// returns `want`.
fn wait_wget(e: &Env, flags: &[&str], url: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        let mut a: Vec<&str> = flags.to_vec();
        a.extend([e.img.as_str(), "timeout", "5", "wget", "-qO-", url]);
        let o = run_rm(e, &a);
        if o.status.success() && text(&o.stdout).contains(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "run --rm {a:?} does not get {want:?}: {}",
            shown(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Test 6: a user network: names resolve between its containers, not from the default
/// bridge; connect/disconnect of a running container; rm refused while in use.
#[test]
fn user_networks_resolve_names() {
    let e = or_skip!(env());
    let d = &e.d;
    let netid = d.ok(&["network", "create", "appnet"]).trim().to_string();
    let n = net_inspect(d, "appnet");
    assert_eq!(n["Id"], Value::from(netid.clone()), "{n:#}");
    let (bridge, subnet) = bridge_of(d, "appnet");
    assert_eq!(bridge, format!("br-{}", &netid[..12]), "{n:#}");
    let (_, default_subnet) = bridge_of(d, "bridge");
    assert_ne!(
        subnet, default_subnet,
        "a user network has a subnet of its own"
    );
    assert!(
        Path::new("/sys/class/net").join(&bridge).exists(),
        "the bridge {bridge} of appnet exists"
    );
    let ls = d.ok(&["network", "ls"]);
    assert!(ls.contains("appnet") && ls.contains("bridge"), "{ls}");

    let web_id = web(&e, &["--network", "appnet"], "hello-appnet");
    let web_ip = ip_of(d, "web");
    assert!(
        in_subnet(web_ip, &subnet),
        "web {web_ip} is in appnet's {subnet}"
    );
    wait_wget(
        &e,
        &["--network", "appnet"],
        "http://web/index.html",
        "hello-appnet",
    );
    let o = run_rm(
        &e,
        &["--network", "appnet", &e.img, "ping", "-c1", "-W2", "web"],
    );
    assert!(
        o.status.success() && text(&o.stdout).contains(&web_ip.to_string()),
        "ping web on appnet: {}",
        shown(&o)
    );
    // By its short id too.
    let short = &web_id[..12];
    let url = format!("http://{short}/index.html");
    wait_wget(&e, &["--network", "appnet"], &url, "hello-appnet");

    // The default bridge knows no `web` (a dead nameserver so the lookup fails fast).
    let o = run_rm(
        &e,
        &[
            "--dns",
            "127.0.0.1",
            &e.img,
            "sh",
            "-c",
            "cat /etc/hosts; timeout 5 wget -qO- http://web/index.html",
        ],
    );
    assert!(
        !o.status.success() && !text(&o.stdout).contains("hello-appnet"),
        "a default-bridge container cannot resolve web: {}",
        shown(&o)
    );
    // Nor reach it by address: networks are isolated from each other, as Docker's are.
    let url = format!("http://{web_ip}/index.html");
    // (timeout cannot end wget as pid 1 of the container: sh is pid 1.)
    let wget = format!("timeout 3 wget -qO- {url}; exit $?");
    let o = run_rm(&e, &[&e.img, "sh", "-c", &wget]);
    assert!(
        !o.status.success() && !text(&o.stdout).contains("hello-appnet"),
        "a default-bridge container cannot reach appnet's {web_ip}: {}",
        shown(&o)
    );

    // connect: a running default-bridge container gets eth1 on appnet and finds web.
    d.run_d(&["--name", "client", &e.img, "sleep", "300"]);
    d.ok(&["network", "connect", "appnet", "client"]);
    let out = d.ok(&["exec", "client", "ip", "-4", "addr", "show", "eth1"]);
    let a = inets(&out);
    assert_eq!(a.len(), 1, "eth1 after network connect: {out}");
    assert!(
        in_subnet(a[0].split('/').next().unwrap().parse().unwrap(), &subnet),
        "eth1 is on appnet's {subnet}: {out}"
    );
    let o = d.berth(&[
        "exec",
        "client",
        "timeout",
        "5",
        "wget",
        "-qO-",
        "http://web/index.html",
    ]);
    assert!(
        o.status.success() && text(&o.stdout).contains("hello-appnet"),
        "client reaches web by name after network connect: {}\n/etc/hosts:\n{}",
        shown(&o),
        text(&d.berth(&["exec", "client", "cat", "/etc/hosts"]).stdout)
    );
    let n = net_inspect(d, "appnet");
    let members: Vec<&str> = n["Containers"]
        .as_object()
        .map(|m| m.values().filter_map(|c| c["Name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        members.contains(&"web") && members.contains(&"client"),
        "network inspect lists web and client: {n:#}"
    );
    // web's /etc/hosts, rewritten in place, lists client by its appnet address.
    let client_ip = a[0].split('/').next().unwrap().to_string();
    let lists_client = |hosts: &str| {
        hosts.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&client_ip.as_str()) && w.contains(&"client")
        })
    };
    let hosts = d.ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(
        lists_client(&hosts),
        "web's /etc/hosts lists client {client_ip}: {hosts}"
    );
    d.ok(&["network", "disconnect", "appnet", "client"]);
    let hosts = d.ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(
        !lists_client(&hosts),
        "web's /etc/hosts drops client after disconnect: {hosts}"
    );
    let o = d.berth(&["exec", "client", "ip", "link", "show", "eth1"]);
    assert!(
        !o.status.success(),
        "eth1 is gone after disconnect: {}",
        shown(&o)
    );
    let out = d.ok(&["exec", "client", "ip", "-4", "addr", "show", "eth0"]);
    assert_eq!(inets(&out).len(), 1, "eth0 stays after disconnect: {out}");

    // rm while web uses it: refused; after web is gone: removed with its bridge.
    let o = d.berth(&["network", "rm", "appnet"]);
    assert!(
        !o.status.success(),
        "network rm appnet while web runs: {}",
        shown(&o)
    );
    assert!(
        Path::new("/sys/class/net").join(&bridge).exists(),
        "a refused rm keeps the bridge"
    );
    d.ok(&["rm", "-f", "web", "client"]);
    d.ok(&["network", "rm", "appnet"]);
    wait_for(
        &format!("bridge {bridge} to go"),
        Duration::from_secs(5),
        || !Path::new("/sys/class/net").join(&bridge).exists(),
    );
    assert!(
        !iptables_save().contains(&format!("berth:{bridge}")),
        "no rule of {bridge} is left:\n{}",
        iptables_save()
    );
    assert!(!d.ok(&["network", "ls"]).contains("appnet"));
}

/// Test 7: containers on the default bridge reach each other by address.
#[test]
fn default_bridge_containers_reach_each_other() {
    let e = or_skip!(env());
    web(&e, &[], "hello-by-address");
    let ip = ip_of(&e.d, "web");
    let url = format!("http://{ip}/index.html");
    wait_wget(&e, &[], &url, "hello-by-address");
    e.d.ok(&["rm", "-f", "web"]);
}

/// Test 8: --network container:web shares web's namespace (its 127.0.0.1).
#[test]
fn a_container_joins_another_ones_network() {
    let e = or_skip!(env());
    web(&e, &[], "hello-shared-ns");
    wait_wget(
        &e,
        &["--network", "container:web"],
        "http://127.0.0.1/index.html",
        "hello-shared-ns",
    );
    let web_ip = ip_of(&e.d, "web");
    let o = run_rm(
        &e,
        &[
            "--network",
            "container:web",
            &e.img,
            "ip",
            "-4",
            "addr",
            "show",
            "eth0",
        ],
    );
    assert!(
        inets(&text(&o.stdout))
            .iter()
            .any(|a| a.starts_with(&format!("{web_ip}/"))),
        "container:web has web's eth0 ({web_ip}): {}",
        shown(&o)
    );
    e.d.ok(&["rm", "-f", "web"]);
}

/// Test 9: rm -f releases everything a container with a published port had on the host.
#[test]
fn rm_releases_the_network() {
    let e = or_skip!(env());
    let d = &e.d;
    let port = free_port();
    let spec = format!("{port}:80");
    let id = serve(&e, &["-p", &spec], "hello-cleanup");
    wait_http(LO, port, "hello-cleanup");
    let (veths, chains) = footprint_of_running(d, &id);
    let (bridge, _) = bridge_of(d, "bridge");
    let brif = Path::new("/sys/class/net").join(&bridge).join("brif");
    for v in &veths {
        assert!(brif.join(v).exists(), "{v} is a port of {bridge}");
    }
    // stop releases it all too; start publishes the same port again, with a new veth.
    d.ok(&["stop", "-t", "1", &id]);
    assert_released(d, &id, &veths, &chains, 5);
    assert!(
        port_free(port),
        "host port {port} is free while the container is stopped"
    );
    d.ok(&["start", &id]);
    wait_http(LO, port, "hello-cleanup");
    assert_eq!(
        d.ok(&["port", &id]).trim(),
        format!("80/tcp -> 0.0.0.0:{port}"),
        "berth port after stop and start"
    );
    let (veths, chains) = footprint_of_running(d, &id);
    d.ok(&["rm", "-f", &id]);
    assert_released(d, &id, &veths, &chains, 5);
    let ports: Vec<String> = std::fs::read_dir(&brif)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(ports.is_empty(), "{bridge} has no ports left: {ports:?}");
    assert!(port_free(port), "host port {port} is free after rm -f");
}

fn sigkill(pid: i32) {
    assert!(pid > 1);
    // SAFETY: kill(2) on a pid this test read from berth's own state or inspect.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn alive(pid: i32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

/// Test 10: after a crash, berthd releases the network of containers that died meanwhile,
/// and keeps (and still holds the ports of) the ones that still run.
#[test]
fn a_crash_releases_or_restores_the_network() {
    let mut e = or_skip!(env());

    // The container dies with berthd: the next berthd sweeps what it had.
    let port = free_port();
    let spec = format!("{port}:80");
    let id = serve(&e, &["-p", &spec], "hello-victim");
    wait_http(LO, port, "hello-victim");
    let (veths, chains) = footprint_of_running(&e.d, &id);
    let init: i32 =
        e.d.ok(&["inspect", "-f", "{{.State.Pid}}", &id])
            .trim()
            .parse()
            .unwrap();
    let shim = e.d.shim_pid(&id);
    e.d.kill9();
    sigkill(init);
    sigkill(shim);
    wait_for(
        "the container's processes to end",
        Duration::from_secs(5),
        || !alive(init) && !alive(shim),
    );
    e.d.restart();
    assert_released(&e.d, &id, &veths, &chains, 10);
    let again = serve(&e, &["-p", &spec], "hello-again");
    wait_http(LO, port, "hello-again");
    e.d.ok(&["rm", "-f", &again, &id]);

    // The container outlives berthd: the next berthd restores its port.
    let port = free_port();
    let spec = format!("{port}:80");
    let id = serve(&e, &["-p", &spec], "hello-survivor");
    wait_http(LO, port, "hello-survivor");
    let (veths, chains) = footprint_of_running(&e.d, &id);
    e.d.kill9();
    wait_http(LO, port, "hello-survivor");
    e.d.restart();
    wait_http(LO, port, "hello-survivor");
    assert_eq!(
        e.d.ok(&["port", &id]).trim(),
        format!("80/tcp -> 0.0.0.0:{port}"),
        "berth port after a restart"
    );
    let script = httpd_script("intruder", 80);
    let o =
        e.d.berth(&["run", "-d", "-p", &spec, &e.img, "sh", "-c", &script]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("already allocated"),
        "the restored container still holds {spec}: {}\nberthd log:\n{}",
        shown(&o),
        e.d.log()
    );
    wait_http(LO, port, "hello-survivor");
    for c in e.d.ok(&["ps", "-a", "-q", "--no-trunc"]).split_whitespace() {
        if c != id {
            e.d.ok(&["rm", "-f", c]);
        }
    }
    assert!(
        !port_free(port),
        "berthd holds {port} again after the restart"
    );
    e.d.ok(&["rm", "-f", &id]);
    assert_released(&e.d, &id, &veths, &chains, 5);
    assert!(port_free(port), "host port {port} is free after rm -f");
}

/// Test 11: two berthd instances side by side: own bridges and subnets, and one's
/// containers are not touched by the other.
#[test]
fn two_instances_keep_to_their_own_bridges() {
    let a = or_skip!(env());
    let b = or_skip!(env());
    let (bridge_a, subnet_a) = bridge_of(&a.d, "bridge");
    let (bridge_b, subnet_b) = bridge_of(&b.d, "bridge");
    assert_ne!(bridge_a, bridge_b, "two instances, two bridges");
    assert_ne!(subnet_a, subnet_b, "two instances, two subnets");
    let (pa, pb) = (free_port(), free_port());
    let ida = serve(&a, &["--name", "web", "-p", &format!("{pa}:80")], "hello-a");
    let idb = serve(&b, &["--name", "web", "-p", &format!("{pb}:80")], "hello-b");
    wait_http(LO, pa, "hello-a");
    wait_http(LO, pb, "hello-b");
    let (ipa, ipb) = (ip_of(&a.d, "web"), ip_of(&b.d, "web"));
    assert!(in_subnet(ipa, &subnet_a), "{ipa} in {subnet_a}");
    assert!(in_subnet(ipb, &subnet_b), "{ipb} in {subnet_b}");
    let brif = |br: &str| -> Vec<String> {
        std::fs::read_dir(Path::new("/sys/class/net").join(br).join("brif"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        cached_veths(&a.d, &ida),
        brif(&bridge_a),
        "a's veth is on a's bridge"
    );
    assert_eq!(
        cached_veths(&b.d, &idb),
        brif(&bridge_b),
        "b's veth is on b's bridge"
    );

    // Stopping and removing in a leaves b's container serving.
    a.d.ok(&["stop", "-t", "1", "web"]);
    a.d.ok(&["rm", "-f", "web"]);
    wait_http(LO, pb, "hello-b");
    assert!(
        Path::new("/sys/class/net").join(&bridge_b).exists(),
        "b's bridge stays"
    );
    assert_eq!(cached_veths(&b.d, &idb), brif(&bridge_b));
    let o = b.d.ok(&["ps", "-q", "--no-trunc"]);
    assert_eq!(o.trim(), idb, "b's web still runs");
    // ... and a fresh container in a does not disturb b either.
    let ida2 = serve(&a, &["-p", &format!("{pa}:80")], "hello-a2");
    wait_http(LO, pa, "hello-a2");
    wait_http(LO, pb, "hello-b");
    a.d.ok(&["rm", "-f", &ida2]);
    b.d.ok(&["rm", "-f", &idb]);
}

/// An "outside" network: a namespace behind a veth pair on 198.18.N.0/30 (the benchmarking
/// range), removed on drop.
struct Outside {
    ns: String,
    veth: String,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn sh_ok(script: &str) {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "{script}: {}", shown(&o));
}

/// Outbound traffic leaves with the host's address (masquerading), not the container's.
#[test]
fn outbound_traffic_is_masqueraded() {
    let e = or_skip!(env());
    if let Some(why) = berth_integration::missing_tool(&["python3"]) {
        return berth_integration::skip(why);
    }
    let n = std::process::id() % 200 + 20;
    let out = Outside {
        ns: format!("berth-it-out{n}"),
        veth: format!("bitout{n}"),
    };
    let (host_ip, far_ip) = (format!("198.18.{n}.1"), format!("198.18.{n}.2"));
    sh_ok(&format!(
        "ip netns add {ns} && ip link add {v} type veth peer name {v}p && \
         ip link set {v}p netns {ns} && ip addr add {host_ip}/30 dev {v} && ip link set {v} up && \
         ip -n {ns} addr add {far_ip}/30 dev {v}p && ip -n {ns} link set {v}p up && \
         ip -n {ns} link set lo up",
        ns = out.ns,
        v = out.veth
    ));
    // A listener out there that answers with the address it sees.
    let port = 8000 + n as u16;
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{far_ip}', {port})); s.listen(1); s.settimeout(30)\nc, a = s.accept()\n\
         c.recv(1024); body = a[0].encode()\n\
         c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: ' + str(len(body)).encode() + b'\\r\\n\\r\\n' + body)\n\
         c.close()\n"
    );
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &out.ns, "python3", "-c", &server])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("http://{far_ip}:{port}/");
    let wget = format!("timeout 10 wget -qO- {url}; exit $?");
    let o = run_rm(&e, &[&e.img, "sh", "-c", &wget]);
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(
        o.status.success(),
        "a container reaches the outside network: {}",
        shown(&o)
    );
    assert_eq!(
        text(&o.stdout).trim(),
        host_ip,
        "the outside sees the host's address, not the container's"
    );
}

/// `-p IP:HOST:CONTAINER` publishes on that address only.
#[test]
fn a_port_can_be_published_on_one_address() {
    let e = or_skip!(env());
    let port = free_port();
    let spec = format!("127.0.0.1:{port}:80");
    let id = serve(&e, &["-p", &spec], "hello-loopback");
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_for(
        "the published port on 127.0.0.1",
        Duration::from_secs(10),
        || http_get(local, "/index.html").is_ok_and(|b| b.contains("hello-loopback")),
    );
    let shown = e.d.ok(&["port", &id]);
    assert_eq!(shown.trim(), format!("80/tcp -> 127.0.0.1:{port}"));
    if let Some(h) = host_address() {
        let r = http_get(SocketAddr::from((h, port)), "/index.html");
        assert!(r.is_err(), "not published on {h}: {r:?}");
    }
    e.d.ok(&["rm", "-f", &id]);
}
