//! The Kubernetes CRI's pod network and container resources (issue 15, net slice): a CNI
//! folder without configuration gets berth's default conflist, pods get addresses on it and
//! reach each other, host ports are published through portmap, stopp/rmp leave nothing
//! behind (also after a kill -9 of berthd), CPU/cpuset/memory limits land in the container's
//! cgroup under the pod's cgroup parent and `crictl update` changes them live; critest's
//! Networking and resource-update specs.

use berth_integration::cri::{text, Cri, BUSYBOX};
use berth_integration::{or_skip, wait_for, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The CRI of this file: a fresh, empty CNI folder (the default conflist gets written).
fn net() -> Option<&'static Cri> {
    static C: OnceLock<Option<Cri>> = OnceLock::new();
    C.get_or_init(fresh).as_ref()
}

/// A CRI with an empty CNI folder and busybox pulled.
fn fresh() -> Option<Cri> {
    let c = Cri::start_with_cni(None)?;
    c.ok(&["pull", BUSYBOX]);
    Some(c)
}

fn free_port() -> u16 {
    berth_integration::free_port()
}

fn pod_json(dir: &Path, name: &str, host_port: Option<u16>, cgroup_parent: &str) -> String {
    let ports = match host_port {
        Some(p) => serde_json::json!([{"protocol": 0, "container_port": 80, "host_port": p}]),
        None => serde_json::json!([]),
    };
    let pod = serde_json::json!({
        "metadata": {"name": name, "uid": format!("uid-net-{name}"), "namespace": "berth-net", "attempt": 1},
        "hostname": name,
        "log_directory": dir.display().to_string(),
        "port_mappings": ports,
        "linux": {"cgroup_parent": cgroup_parent}
    });
    let path = dir.join(format!("{name}-pod.json"));
    std::fs::write(&path, pod.to_string()).unwrap();
    path.display().to_string()
}

fn container_json(dir: &Path, name: &str, script: &str, resources: serde_json::Value) -> String {
    let c = serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": BUSYBOX},
        "command": ["sh", "-c", script],
        "log_path": format!("{name}.log"),
        "linux": {"resources": resources}
    });
    let path = dir.join(format!("{name}-ctr.json"));
    std::fs::write(&path, c.to_string()).unwrap();
    path.display().to_string()
}

/// runp + create + start: (pod id, container id).
fn pod_with(c: &Cri, pod_file: &str, ctr_file: &str) -> (String, String) {
    let pod = c.ok(&["runp", pod_file]).trim().to_string();
    let ctr = c
        .ok(&["create", &pod, ctr_file, pod_file])
        .trim()
        .to_string();
    c.ok(&["start", &ctr]);
    (pod, ctr)
}

fn pod_ip(c: &Cri, pod: &str) -> String {
    c.json(&["inspectp", pod])["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What a pod's network leaves on the host, each found by the sandbox id or its address.
#[derive(Debug, Default)]
struct Traces {
    netns: Vec<PathBuf>,
    cache: Vec<PathBuf>,
    rules: Vec<String>,
    lease: Option<PathBuf>,
}

fn traces(c: &Cri, pod: &str, ip: &str) -> Traces {
    let net = c.berthd.state().join("net");
    let find = |dir: PathBuf| -> Vec<PathBuf> {
        walk(&dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(pod))
            .collect()
    };
    let rules = Command::new("iptables-save")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains(pod))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let lease = Path::new("/var/lib/cni/networks/berth-pods").join(ip);
    Traces {
        netns: find(net.join("netns")),
        cache: find(net.join("cache")),
        rules,
        lease: (!ip.is_empty() && lease.exists()).then_some(lease),
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn assert_clean(c: &Cri, pod: &str, ip: &str) {
    let t = traces(c, pod, ip);
    assert!(
        t.netns.is_empty() && t.cache.is_empty() && t.rules.is_empty() && t.lease.is_none(),
        "pod {pod} left {t:?}"
    );
}

#[test]
fn pods_get_the_default_network_reach_each_other_and_publish_host_ports() {
    let c = or_skip!(net());
    let tmp = TempDir::new("berth-it-cri-net");
    let port = free_port();
    let server = container_json(
        tmp.path(),
        "server",
        "mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 80 -h /www",
        serde_json::json!({}),
    );
    let (pod_a, _) = pod_with(c, &pod_json(tmp.path(), "a", Some(port), ""), &server);
    let conf = c.cni.path().join("10-berth-pods.conflist");
    assert!(
        conf.is_file(),
        "no default conflist in {}",
        c.cni.path().display()
    );
    let client = container_json(tmp.path(), "client", "sleep 1000", serde_json::json!({}));
    let (pod_b, ctr_b) = pod_with(c, &pod_json(tmp.path(), "b", None, ""), &client);
    let (ip_a, ip_b) = (pod_ip(c, &pod_a), pod_ip(c, &pod_b));
    for ip in [&ip_a, &ip_b] {
        assert!(
            ip.starts_with("10.88."),
            "pod address {ip:?} not in 10.88.0.0/16"
        );
    }
    assert_ne!(ip_a, ip_b);
    // Pod to pod, by address.
    let url = format!("http://{ip_a}/");
    wait_for("pod b reaching pod a", Duration::from_secs(15), || {
        let out = c.crictl(&["exec", "-s", &ctr_b, "wget", "-q", "-O", "-", &url]);
        String::from_utf8_lossy(&out.stdout).contains("hello-from-a")
    });
    // The host port, from the host (the pods' gateway is a host address).
    let host_url = format!("http://10.88.0.1:{port}/");
    wait_for("the host port", Duration::from_secs(15), || {
        Command::new("curl")
            .args(["-s", "-m", "2", &host_url])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("hello-from-a"))
    });
    let before = traces(c, &pod_a, &ip_a);
    assert!(
        !before.rules.is_empty()
            && !before.netns.is_empty()
            && !before.cache.is_empty()
            && before.lease.is_some(),
        "pod a's network is not where this test looks: {before:?}"
    );
    for (pod, ip) in [(&pod_a, &ip_a), (&pod_b, &ip_b)] {
        c.ok(&["stopp", pod]);
        c.ok(&["rmp", pod]);
        assert_clean(c, pod, ip);
    }
}

/// The cgroup folder of `pid` in the v1 hierarchy of `controller` (or v2's).
fn cgroup_dir(pid: u64, controller: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == controller) {
            return Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(&path[1..]);
        }
        if controllers.is_empty() && !Path::new("/sys/fs/cgroup").join(controller).exists() {
            return Path::new("/sys/fs/cgroup").join(&path[1..]);
        }
    }
    panic!("no {controller} cgroup for {pid}: {text}");
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

#[test]
fn container_resources_reach_its_cgroup_and_update_live() {
    let c = or_skip!(net());
    let tmp = TempDir::new("berth-it-cri-res");
    let parent = format!("berth-it-pods-{}/pod-res", std::process::id());
    let pod_file = pod_json(tmp.path(), "res", None, &format!("/{parent}"));
    let ctr_file = container_json(
        tmp.path(),
        "limited",
        "sleep 1000",
        serde_json::json!({
            "cpu_shares": 512,
            "cpu_quota": 50000,
            "cpu_period": 100000,
            "cpuset_cpus": "0",
            "memory_limit_in_bytes": 64 << 20,
            "oom_score_adj": 500
        }),
    );
    let (pod, ctr) = pod_with(c, &pod_file, &ctr_file);
    let pid = c.json(&["inspect", &ctr])["info"]["pid"].as_u64().unwrap();
    let v2 = !Path::new("/sys/fs/cgroup/memory").exists();
    let (cpu, mem, cpuset) = (
        cgroup_dir(pid, "cpu"),
        cgroup_dir(pid, "memory"),
        cgroup_dir(pid, "cpuset"),
    );
    assert!(
        cpu.to_string_lossy().contains(&parent),
        "not under the pod's cgroup parent: {}",
        cpu.display()
    );
    if v2 {
        assert_eq!(read(&cpu, "cpu.max"), "50000 100000");
        assert_eq!(read(&mem, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(&cpuset, "cpuset.cpus"), "0");
    } else {
        assert_eq!(read(&cpu, "cpu.shares"), "512");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(
            read(&mem, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&cpuset, "cpuset.cpus"), "0");
    }
    let oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(oom.trim(), "500");
    let status = c.json(&["inspect", &ctr]);
    let reported = &status["status"]["resources"]["linux"];
    assert_eq!(reported["cpuShares"], "512", "{status}");
    // crictl update: the live cgroup changes.
    c.ok(&[
        "update",
        "--memory",
        "134217728",
        "--cpu-share",
        "256",
        &ctr,
    ]);
    let limit = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(read(&mem, limit), (128u64 << 20).to_string());
    if !v2 {
        assert_eq!(read(&cpu, "cpu.shares"), "256");
    }
    let status = c.json(&["inspect", &ctr]);
    assert_eq!(
        status["status"]["resources"]["linux"]["memoryLimitInBytes"], "134217728",
        "{status}"
    );
    // Bad input: a clear error, nothing changed.
    let bad = c.crictl(&["update", "--cpuset-cpus", "3-1", &ctr]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("cpuset"), "{}", text(&bad));
    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
    // The pod's cgroup parent is the kubelet's to remove; this test made it.
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten();
    for base in hierarchies.map(|e| e.path()) {
        let top = parent.split('/').next().unwrap();
        let _ = std::fs::remove_dir(base.join(&parent));
        let _ = std::fs::remove_dir(base.join(top));
    }
}

#[test]
fn a_killed_berthd_still_releases_the_pod_network() {
    // A berthd of its own: this test kills it.
    let Some(mut c) = fresh() else {
        return;
    };
    let tmp = TempDir::new("berth-it-cri-net-kill");
    let client = container_json(tmp.path(), "sleeper", "sleep 1000", serde_json::json!({}));
    let (pod, _) = pod_with(
        &c,
        &pod_json(tmp.path(), "killed", Some(free_port()), ""),
        &client,
    );
    let ip = pod_ip(&c, &pod);
    assert!(ip.starts_with("10.88."), "{ip}");
    c.berthd.kill9();
    c.berthd.restart();
    wait_for("the CRI after the restart", Duration::from_secs(20), || {
        c.crictl(&["version"]).status.success()
    });
    assert_eq!(pod_ip(&c, &pod), ip);
    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
    assert_clean(&c, &pod, &ip);
}

#[test]
fn critest_networking_and_resource_specs() {
    let c = or_skip!(net());
    c.critest_passes(&["--ginkgo.focus=Networking|Resources|update"]);
}
