//! End-to-end tests of the real `berth-shim` binary with real containers (needs root and
//! /usr/bin/busybox from Debian's busybox-static). Tests skip with a message when not root.

mod common;

use berth_shim::protocol::{
    self, ExitStatus, Request, Response, Status, FRAME_CLOSE_STDIN, FRAME_EXIT, FRAME_STDERR,
    FRAME_STDIN, FRAME_STDOUT,
};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MEMORY_LIMIT: i64 = 64 * 1024 * 1024;
const PIDS_LIMIT: i64 = 64;
const BUSYBOX: &str = "/usr/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "hostname", "ps", "tty", "id", "sleep", "ls", "true", "false", "env",
    "grep", "head", "pwd", "tr", "tail", "stty", "wc", "mknod",
];

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("needs root");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        common::skip(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
        return false;
    }
    true
}

#[derive(Default)]
struct Opts {
    terminal: bool,
    stdin: bool,
    user: Option<&'static str>,
    host_network: bool,
    cwd: Option<&'static str>,
    join: Vec<(LinuxNamespaceType, PathBuf)>,
    overlay: bool,
    annotations: Vec<(&'static str, String)>,
    /// Mounts after the default ones.
    mounts: Vec<oci_spec::runtime::Mount>,
    /// Changes the image's rootfs before the container is made.
    rootfs: Option<RootfsChange>,
}

/// A change to the image's rootfs.
type RootfsChange = Box<dyn Fn(&Path)>;

struct TestBundle {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    id: String,
    cgroup: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn make_rootfs(root: &Path) {
    for d in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
}

fn docker_caps() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

fn mount(dest: &str, typ: &str, src: &str, opts: &[&str]) -> oci_spec::runtime::Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

fn build_spec(args: &[&str], id: &str, cgroup: &str, o: &Opts) -> Spec {
    let caps = docker_caps();
    let process = ProcessBuilder::default()
        .terminal(o.terminal)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "TERM=xterm".to_string(),
        ])
        .cwd(o.cwd.unwrap_or("/"))
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps.clone())
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()
                .unwrap(),
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1_048_576u64)
            .soft(1_048_576u64)
            .build()
            .unwrap()])
        .no_new_privileges(true)
        .build()
        .unwrap();
    let ns = |t| LinuxNamespaceBuilder::default().typ(t).build().unwrap();
    let dev = |allow: bool,
               t: Option<LinuxDeviceType>,
               major: Option<i64>,
               minor: Option<i64>,
               access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(t) = t {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    };
    use LinuxDeviceType::{B, C};
    let devices = vec![
        dev(false, None, None, None, "rwm"),
        dev(true, Some(C), None, None, "m"),
        dev(true, Some(B), None, None, "m"),
        dev(true, Some(C), Some(1), Some(3), "rwm"),
        dev(true, Some(C), Some(1), Some(5), "rwm"),
        dev(true, Some(C), Some(1), Some(7), "rwm"),
        dev(true, Some(C), Some(1), Some(8), "rwm"),
        dev(true, Some(C), Some(1), Some(9), "rwm"),
        dev(true, Some(C), Some(5), Some(0), "rwm"),
        dev(true, Some(C), Some(5), Some(1), "rwm"),
        dev(true, Some(C), Some(5), Some(2), "rwm"),
        dev(true, Some(C), Some(136), None, "rwm"),
        dev(true, Some(C), Some(10), Some(200), "rwm"),
    ];
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid),
        ns(LinuxNamespaceType::Mount),
        ns(LinuxNamespaceType::Uts),
        ns(LinuxNamespaceType::Ipc),
        ns(LinuxNamespaceType::Cgroup),
    ];
    if !o.host_network {
        namespaces.push(ns(LinuxNamespaceType::Network));
    }
    for (t, p) in &o.join {
        namespaces.retain(|n| n.typ() != *t);
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(*t)
                .path(p.clone())
                .build()
                .unwrap(),
        );
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroup))
        .resources(if std::env::var_os("BERTH_SHIM_TEST_NO_LIMITS").is_some() {
            // for hosts whose cgroup has no memory/pids controller
            LinuxResourcesBuilder::default()
                .devices(devices)
                .build()
                .unwrap()
        } else {
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(MEMORY_LIMIT)
                        .build()
                        .unwrap(),
                )
                .pids(
                    LinuxPidsBuilder::default()
                        .limit(PIDS_LIMIT)
                        .build()
                        .unwrap(),
                )
                .devices(devices)
                .build()
                .unwrap()
        })
        .masked_paths(
            [
                "/proc/asound",
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        )
        .readonly_paths(
            [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        )
        .build()
        .unwrap();
    let mut annotations = HashMap::new();
    if o.stdin {
        annotations.insert("io.berth.stdin".to_string(), "true".to_string());
    }
    if let Some(u) = o.user {
        annotations.insert("io.berth.user".to_string(), u.to_string());
    }
    annotations.insert("io.berth.log-max-size".to_string(), "1048576".to_string());
    for (k, v) in &o.annotations {
        annotations.insert(k.to_string(), v.clone());
    }
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .unwrap(),
        )
        .hostname(format!("host-{id}"))
        .process(process)
        .mounts(vec![
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            ),
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
            mount(
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                &["ro", "nosuid", "noexec", "nodev"],
            ),
            mount(
                "/dev/mqueue",
                "mqueue",
                "mqueue",
                &["nosuid", "noexec", "nodev"],
            ),
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
            ),
        ])
        .linux(linux)
        .annotations(annotations)
        .build()
        .unwrap();
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.extend(o.mounts.iter().cloned());
    spec.set_mounts(Some(mounts));
    spec
}

fn bundle(args: &[&str], o: Opts) -> TestBundle {
    let tmp = tempfile::Builder::new()
        .prefix("berth-shim-it")
        .tempdir()
        .unwrap();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let id = format!("t{}x{n}", std::process::id());
    let cgroup = format!("/berth-test/{id}");
    let dir = tmp.path().join("b");
    let rootfs_src = tmp.path().join("image");
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    make_rootfs(&rootfs_src);
    // a file that looks executable but is not a program
    let bad = rootfs_src.join("bin/notaprogram");
    std::fs::write(&bad, b"\x00\x01garbage").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    if let Some(f) = &o.rootfs {
        f(&rootfs_src);
    }
    let spec = build_spec(args, &id, &cgroup, &o);
    spec.save(dir.join("config.json")).unwrap();
    let rootfs_json = if o.overlay {
        let upper = tmp.path().join("upper");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        serde_json::json!([{"type": "overlay", "source": "overlay", "options": [
            format!("lowerdir={}", rootfs_src.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ]}])
    } else {
        serde_json::json!([
            {"type": "bind", "source": rootfs_src.to_str().unwrap(), "options": ["rbind", "rw"]}
        ])
    };
    std::fs::write(dir.join("rootfs.json"), rootfs_json.to_string()).unwrap();
    TestBundle {
        _tmp: tmp,
        dir,
        id,
        cgroup,
    }
}

impl TestBundle {
    fn sock(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }

    /// Runs `berth-shim` (which daemonizes) and returns (exit code, stderr).
    fn create(&self) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_berth-shim"))
            .args(["--id", &self.id, "--namespace", "test", "--bundle"])
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .output()
            .expect("run berth-shim");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn create_ok(&self) {
        let (code, err) = self.create();
        if code != 0 {
            let log = std::fs::read_to_string(self.dir.join("shim.log")).unwrap_or_default();
            panic!("berth-shim exited {code}: {err}\nshim.log:\n{log}");
        }
    }

    fn call(&self, req: Request) -> Response {
        protocol::call(&self.sock(), &req).expect("shim call")
    }

    fn attach(&self, stdin: bool) -> UnixStream {
        let s = protocol::attach(&self.sock(), stdin).expect("attach");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    fn shim_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("shim.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn cgroup_dir(&self) -> PathBuf {
        let rel = self.cgroup.trim_start_matches('/');
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            Path::new("/sys/fs/cgroup").join(rel)
        } else {
            Path::new("/sys/fs/cgroup/memory").join(rel)
        }
    }

    /// Deletes the container and checks the shim and the cgroup are gone.
    fn delete(&self) -> ExitStatus {
        let pid = self.shim_pid();
        let r = self.call(Request::Delete);
        assert!(r.ok, "delete: {r:?}");
        let exit = r.exit_status().cloned().expect("delete answers the exit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && zombie_or_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "shim {pid} did not exit after delete"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !self.cgroup_dir().exists(),
            "cgroup {:?} still exists",
            self.cgroup_dir()
        );
        exit
    }

    /// Sends an exec request: the answer and the connection (at the first frame).
    fn exec(&self, req: Request) -> (Response, UnixStream) {
        let (r, s) = protocol::call_keep(&self.sock(), &req).expect("exec call");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        (r, s)
    }

    /// exec `args` (pipes, no stdin) and collect its output and exit status.
    fn exec_collect(&self, args: &[&str]) -> (String, String, ExitStatus) {
        let (r, conn) = self.exec(exec_req(args));
        assert!(r.ok, "exec {args:?}: {r:?}");
        assert!(r.pid.unwrap_or(0) > 0, "{r:?}");
        collect(conn)
    }

    /// start, collect all output until the exit frame.
    fn run(&self) -> (String, String, ExitStatus) {
        let conn = self.attach(false);
        let r = self.call(Request::Start { traceparent: None });
        assert!(r.ok, "start: {r:?}");
        collect(conn)
    }
}

fn exec_req(args: &[&str]) -> Request {
    Request::Exec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: String::new(),
        user: String::new(),
        terminal: false,
        stdin: false,
        detach: false,
    }
}

fn zombie_or_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.contains(") Z "),
        Err(_) => false,
    }
}

fn collect(mut conn: UnixStream) -> (String, String, ExitStatus) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    loop {
        let f = protocol::read_frame(&mut conn)
            .expect("read frame")
            .expect("connection closed before the exit frame");
        match f.kind {
            FRAME_STDOUT => out.extend_from_slice(&f.payload),
            FRAME_STDERR => err.extend_from_slice(&f.payload),
            FRAME_EXIT => {
                let exit: ExitStatus = serde_json::from_slice(&f.payload).unwrap();
                // the shim closes the connection after the exit frame
                let mut rest = Vec::new();
                let _ = conn.read_to_end(&mut rest);
                assert!(rest.is_empty());
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    String::from_utf8_lossy(&err).into_owned(),
                    exit,
                );
            }
            k => panic!("unexpected frame kind {k}"),
        }
    }
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn vm_rss_kb(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kb(&s, "VmRSS:")
}

/// Prints the mappings that hold the most resident memory.
fn print_rss_breakdown(pid: i32) {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut rows: Vec<(u64, String)> = Vec::new();
    let mut name = String::new();
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            let perms = l.split_whitespace().nth(1).unwrap_or("");
            name = format!(
                "{perms} {}",
                if name.is_empty() {
                    "[anon]".into()
                } else {
                    name
                }
            );
        } else if let Some(v) = l.strip_prefix("Rss:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            rows.push((kb, name.clone()));
        }
    }
    let mut agg: HashMap<String, u64> = HashMap::new();
    for (kb, n) in rows {
        *agg.entry(n).or_default() += kb;
    }
    let mut v: Vec<_> = agg.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (n, kb) in v.iter().take(8) {
        println!("  {kb:>6} kB  {n}");
    }
}

#[test]
fn echo_output_exit_files_rss_and_delete() {
    if !can_run() {
        return;
    }
    let b = bundle(&["echo", "hello", "world"], Opts::default());
    b.create_ok();
    let st = b.call(Request::State);
    assert_eq!(st.status, Some(Status::Created));
    assert!(st.exit.is_some() && st.exit_status().is_none());
    let init_pid: i32 = std::fs::read_to_string(b.dir.join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(st.pid, Some(init_pid));

    let shim_pid = b.shim_pid();
    let shim_pid_status = std::fs::read_to_string(format!("/proc/{shim_pid}/status")).unwrap();
    let rss = vm_rss_kb(shim_pid).expect("VmRSS of the shim");
    println!("berth-shim RSS (created, idle): {rss} kB");
    print_rss_breakdown(shim_pid);

    let (out, err, exit) = b.run();
    assert_eq!(out, "hello world\n");
    assert_eq!(err, "");
    assert_eq!(exit.exit_code, 0);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    let rss_after = vm_rss_kb(shim_pid).expect("VmRSS of the shim");
    println!("berth-shim RSS (after the container ran): {rss_after} kB");

    // exit.json and container.log
    let on_disk: ExitStatus =
        serde_json::from_slice(&std::fs::read(b.dir.join("exit.json")).unwrap()).unwrap();
    assert_eq!(on_disk, exit);
    let log = std::fs::read_to_string(b.dir.join("container.log")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "hello world\n");
    assert_eq!(first["stream"], "stdout");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));

    let st = b.call(Request::State);
    assert_eq!(st.status, Some(Status::Stopped));
    // attaching after the exit gets the exit frame right away
    let (o, _, e) = collect(b.attach(false));
    assert_eq!((o.as_str(), e.exit_code), ("", 0));
    let w = b.call(Request::Wait);
    assert_eq!(w.exit_status(), Some(&exit));
    assert_eq!(b.delete(), exit);
    println!(
        "shim.log:\n{}",
        std::fs::read_to_string(b.dir.join("shim.log")).unwrap_or_default()
    );
    // VmRSS counts the file-backed code pages of the binary and libc, which in an unoptimized
    // debug build dominate; the shim's own memory is the anonymous part.
    let anon = status_kb(shim_pid_status.as_str(), "RssAnon:").expect("RssAnon");
    if rss < 3 * 1024 {
        assert!(rss < 3 * 1024);
    } else {
        println!(
            "note: VmRSS {rss} kB is above 3 MB; RssAnon {anon} kB, RssFile {} kB (code pages)",
            status_kb(shim_pid_status.as_str(), "RssFile:").unwrap_or(0)
        );
    }
    assert!(
        anon < 3 * 1024,
        "shim anonymous RSS {anon} kB is not below 3 MB"
    );
}

#[test]
fn exit_code_pid1_hostname() {
    if !can_run() {
        return;
    }
    let b = bundle(&["sh", "-c", "exit 7"], Opts::default());
    b.create_ok();
    let (_, _, exit) = b.run();
    assert_eq!(exit.exit_code, 7);
    b.delete();

    let b = bundle(
        &["sh", "-c", "echo $$; hostname; echo err >&2"],
        Opts::default(),
    );
    b.create_ok();
    let (out, err, exit) = b.run();
    assert_eq!(out, format!("1\nhost-{}\n", b.id));
    assert_eq!(err, "err\n");
    assert_eq!(exit.exit_code, 0);
    b.delete();
}

#[test]
fn cgroup_limits_visible_inside() {
    if !can_run() {
        return;
    }
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let script = if v2 {
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; touch /sys/fs/cgroup/x 2>/dev/null || echo ro"
    } else {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; ls /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpuacct/cpuacct.usage >/dev/null && echo cpu-ok; touch /sys/fs/cgroup/memory/x 2>/dev/null || echo ro"
    };
    let b = bundle(&["sh", "-c", script], Opts::default());
    b.create_ok();
    let (out, err, exit) = b.run();
    let want = if v2 {
        format!("{MEMORY_LIMIT}\n{PIDS_LIMIT}\nro\n")
    } else {
        format!("{MEMORY_LIMIT}\n{PIDS_LIMIT}\ncpu-ok\nro\n")
    };
    assert_eq!(out, want, "stderr: {err}");
    assert_eq!(exit.exit_code, 0);
    b.delete();
}

#[test]
fn security_settings_inside() {
    if !can_run() {
        return;
    }
    // Docker's default capability set = 0x00000000a80425fb; no_new_privs; masked /proc/kcore;
    // read-only /proc/sys; rlimit clamped to the current hard limit; /dev nodes.
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; \
        cat /proc/kcore | head -c 1 | grep -q . && echo kcore-visible || echo kcore-masked; \
        (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo sys-rw || echo sys-ro; \
        echo ok > /dev/null && echo null-ok; ls /dev/pts/ptmx >/dev/null && echo pts-ok; \
        echo nofile=$(ulimit -n)";
    let b = bundle(&["sh", "-c", script], Opts::default());
    b.create_ok();
    let (out, err, exit) = b.run();
    assert_eq!(exit.exit_code, 0, "out: {out} err: {err}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("kcore-masked"), "{out}");
    assert!(out.contains("sys-ro"), "{out}");
    assert!(out.contains("null-ok") && out.contains("pts-ok"), "{out}");
    // the spec asks for 1048576; without CAP_SYS_RESOURCE it is clamped to our hard limit
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        out.contains(&format!("nofile={}", hard.min(1_048_576))),
        "{out}"
    );
    b.delete();
}

#[test]
fn user_annotation_resolves_names() {
    if !can_run() {
        return;
    }
    let b = bundle(
        &["sh", "-c", "id; echo $HOME; pwd"],
        Opts {
            user: Some("app"),
            cwd: Some("/work/dir"),
            ..Default::default()
        },
    );
    b.create_ok();
    let (out, _, exit) = b.run();
    assert_eq!(exit.exit_code, 0);
    let mut lines = out.lines();
    let id = lines.next().unwrap();
    assert!(id.starts_with("uid=1000(app) gid=1000(app)"), "{id}");
    assert!(id.contains("50(staff)"), "{id}");
    assert_eq!(lines.next(), Some("/home/app"));
    assert_eq!(lines.next(), Some("/work/dir"));
    b.delete();

    let b = bundle(
        &["id"],
        Opts {
            user: Some("ghost"),
            ..Default::default()
        },
    );
    let (code, err) = b.create();
    assert_eq!(code, 1);
    assert!(err.contains("unable to find user ghost"), "{err}");
}

#[test]
fn missing_binary_fails_create() {
    if !can_run() {
        return;
    }
    let b = bundle(&["nosuchcmd"], Opts::default());
    let (code, err) = b.create();
    assert_eq!(code, 127);
    assert_eq!(
        err.trim(),
        "exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    assert!(!b.cgroup_dir().exists());
    assert!(!b.sock().exists());

    let b = bundle(&["/no/such"], Opts::default());
    let (code, err) = b.create();
    assert_eq!(code, 127);
    assert_eq!(
        err.trim(),
        "exec: \"/no/such\": stat /no/such: no such file or directory"
    );

    let b = bundle(&["/etc/passwd"], Opts::default());
    let (code, err) = b.create();
    assert_eq!(code, 126);
    assert_eq!(err.trim(), "exec: \"/etc/passwd\": permission denied");
}

#[test]
fn stdin_reaches_cat() {
    if !can_run() {
        return;
    }
    let b = bundle(
        &["cat"],
        Opts {
            stdin: true,
            ..Default::default()
        },
    );
    b.create_ok();
    let mut conn = b.attach(true);
    let r = b.call(Request::Start { traceparent: None });
    assert!(r.ok, "{r:?}");
    protocol::write_frame(&mut conn, FRAME_STDIN, b"hello stdin\n").unwrap();
    protocol::write_frame(&mut conn, FRAME_STDIN, b"second line\n").unwrap();
    protocol::write_frame(&mut conn, FRAME_CLOSE_STDIN, b"").unwrap();
    let (out, _, exit) = collect(conn);
    assert_eq!(out, "hello stdin\nsecond line\n");
    assert_eq!(exit.exit_code, 0);
    b.delete();
}

#[test]
fn terminal_tty_and_resize() {
    if !can_run() {
        return;
    }
    let b = bundle(
        &["sh", "-c", "sleep 0.3; tty; stty size 2>/dev/null || true"],
        Opts {
            terminal: true,
            ..Default::default()
        },
    );
    b.create_ok();
    let conn = b.attach(false);
    assert!(
        b.call(Request::Resize {
            width: 100,
            height: 30
        })
        .ok
    );
    assert!(b.call(Request::Start { traceparent: None }).ok);
    let (out, _, exit) = collect(conn);
    assert_eq!(exit.exit_code, 0);
    assert!(out.starts_with("/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("30 100"), "window size not applied: {out:?}");
    b.delete();
}

#[test]
fn kill_gives_137_and_delete_rules() {
    if !can_run() {
        return;
    }
    let b = bundle(&["sleep", "100"], Opts::default());
    b.create_ok();
    let conn = b.attach(false);
    let r = b.call(Request::Start { traceparent: None });
    assert!(r.ok, "{r:?}");
    assert_eq!(b.call(Request::State).status, Some(Status::Running));
    let d = b.call(Request::Delete);
    assert!(!d.ok, "delete of a running container must be refused");
    assert!(
        b.call(Request::Kill {
            signal: 9,
            all: false
        })
        .ok
    );
    let (_, _, exit) = collect(conn);
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.signal, Some(9));
    let w = b.call(Request::Wait);
    assert_eq!(w.exit_status().map(|e| e.exit_code), Some(137));
    assert!(
        !b.call(Request::Kill {
            signal: 9,
            all: false
        })
        .ok
    );
    b.delete();

    // a created (never started) container can be deleted
    let b = bundle(&["sleep", "100"], Opts::default());
    b.create_ok();
    b.delete();
}

#[test]
fn exec_format_error_at_start() {
    if !can_run() {
        return;
    }
    let b = bundle(&["notaprogram"], Opts::default());
    b.create_ok();
    let r = b.call(Request::Start { traceparent: None });
    assert!(!r.ok);
    assert_eq!(r.code, Some(126), "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("exec format error"),
        "{r:?}"
    );
    let w = b.call(Request::Wait);
    assert_eq!(w.exit_status().map(|e| e.exit_code), Some(126));
    b.delete();
}

#[test]
fn host_network_and_oom() {
    if !can_run() {
        return;
    }
    let b = bundle(
        &["sh", "-c", "ls /sys/class/net | wc -l"],
        Opts {
            host_network: true,
            ..Default::default()
        },
    );
    b.create_ok();
    let (out, err, exit) = b.run();
    assert_eq!(exit.exit_code, 0, "{err}");
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(out.trim(), host_ifaces.to_string());
    b.delete();

    let b = bundle(
        &[
            "sh",
            "-c",
            "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
        ],
        Opts::default(),
    );
    b.create_ok();
    let (out, _, exit) = b.run();
    assert_eq!(out, "");
    assert_eq!(exit.exit_code, 137);
    assert!(exit.oom_killed, "{exit:?}");
    b.delete();
}

#[test]
fn joins_namespaces_by_path() {
    if !can_run() {
        return;
    }
    let a = bundle(&["sleep", "100"], Opts::default());
    a.create_ok();
    assert!(a.call(Request::Start { traceparent: None }).ok);
    let pid = a.call(Request::State).pid.unwrap();
    let b = bundle(
        &["hostname"],
        Opts {
            join: vec![
                (
                    LinuxNamespaceType::Uts,
                    PathBuf::from(format!("/proc/{pid}/ns/uts")),
                ),
                (
                    LinuxNamespaceType::Network,
                    PathBuf::from(format!("/proc/{pid}/ns/net")),
                ),
            ],
            ..Default::default()
        },
    );
    b.create_ok();
    let (out, _, exit) = b.run();
    assert_eq!(exit.exit_code, 0);
    assert_eq!(out, format!("host-{}\n", a.id));
    b.delete();
    assert!(
        a.call(Request::Kill {
            signal: 9,
            all: true
        })
        .ok
    );
    assert_eq!(a.call(Request::Wait).exit_status().unwrap().exit_code, 137);
    a.delete();
}

#[test]
fn overlay_rootfs_stays_in_the_container() {
    if !can_run() {
        return;
    }
    let b = bundle(
        &[
            "sh",
            "-c",
            "echo data > /root/new-file && cat /root/new-file",
        ],
        Opts {
            overlay: true,
            ..Default::default()
        },
    );
    b.create_ok();
    // the rootfs is mounted only inside the container's mount namespace
    assert_eq!(std::fs::read_dir(b.dir.join("rootfs")).unwrap().count(), 0);
    let (out, err, exit) = b.run();
    assert_eq!((out.as_str(), exit.exit_code), ("data\n", 0), "{err}");
    let tmp = b.dir.parent().unwrap();
    assert!(tmp.join("upper/root/new-file").exists());
    assert!(!tmp.join("image/root/new-file").exists());
    b.delete();
}

/// A block device of the host (major, minor), preferring a real disk to loop and ram devices.
fn host_block_device() -> (u32, u32) {
    let mut found: Vec<(bool, u32, u32)> = std::fs::read_dir("/sys/dev/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (ma, mi) = name.split_once(':')?;
            Some((ma.parse::<u32>().ok()?, mi.parse::<u32>().ok()?))
        })
        .map(|(ma, mi)| (ma == 7 || ma == 1, ma, mi))
        .collect();
    found.sort();
    found.first().map_or((8, 0), |(_, ma, mi)| (*ma, *mi))
}

/// A character device outside Docker's allowlist that root can open without any capability
/// (unlike /dev/kmsg or /dev/mem, which the container's capabilities refuse anyway): the
/// host's loop-control or fuse device, else 10:237.
fn host_unlisted_char_device() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    ["/dev/loop-control", "/dev/fuse"]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (libc::major(m.rdev()), libc::minor(m.rdev())))
        .next()
        .unwrap_or((10, 237))
}

#[test]
fn device_rules_hold_through_the_cgroup2_program() {
    if !can_run() {
        return;
    }
    let Some(cgroup2) = common::cgroup2() else {
        return;
    };
    let (major, minor) = host_block_device();
    let (cmajor, cminor) = host_unlisted_char_device();
    println!("block device {major}:{minor}, character device {cmajor}:{cminor}");
    // `(: < node)` only opens the node, read-only.
    let script = format!(
        "echo hi > /dev/null && echo null-ok; \
         head -c 1 /dev/zero | wc -c; \
         mknod /dev/tnull c 1 3 && echo hi > /dev/tnull && echo tnull-ok; \
         mknod /dev/tblk b {major} {minor} && echo mknod-blk-ok; \
         (: < /dev/tblk) || echo blk-denied; \
         mknod /dev/tchr c {cmajor} {cminor} && echo mknod-chr-ok; \
         (: < /dev/tchr) || echo chr-denied"
    );
    let b = bundle(&["sh", "-c", &script], Opts::default());
    b.create_ok();
    let rel = b.cgroup.trim_start_matches('/');
    let dir = cgroup2.join(rel);
    // The init waits for start: its cgroup2 cgroup holds it and berth's program.
    let progs = berth_shim::devices_bpf::attached_programs(&dir)
        .unwrap_or_else(|e| panic!("programs of {}: {e}", dir.display()));
    assert!(
        progs
            .iter()
            .any(|p| p.name == berth_shim::devices_bpf::PROG_NAME),
        "{progs:?}"
    );
    let init_pid = b.call(Request::State).pid.unwrap();
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == init_pid.to_string()),
        "init {init_pid} not in {}: {procs:?}",
        dir.display()
    );
    // Hybrid host: lift the v1 devices rules, so that what holds below holds through the
    // cgroup2 program alone.
    let v1 = Path::new("/sys/fs/cgroup/devices").join(rel);
    if v1.join("devices.allow").exists() {
        std::fs::write(v1.join("devices.allow"), "a").unwrap();
        assert_eq!(
            std::fs::read_to_string(v1.join("devices.list")).unwrap(),
            "a *:* rwm\n"
        );
        println!("v1 devices rules of {} lifted", v1.display());
    }
    let (out, err, exit) = b.run();
    assert_eq!(exit.exit_code, 0, "out: {out} err: {err}");
    assert_eq!(
        out, "null-ok\n1\ntnull-ok\nmknod-blk-ok\nblk-denied\nmknod-chr-ok\nchr-denied\n",
        "stderr: {err}"
    );
    assert_eq!(
        err.matches("Operation not permitted").count(),
        2,
        "stderr: {err}"
    );
    b.delete();
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn exec_joins_the_running_container() {
    if !can_run() {
        return;
    }
    let b = bundle(&["sleep", "1000"], Opts::default());
    b.create_ok();
    // not started yet: refused
    let (r, _) = b.exec(exec_req(&["true"]));
    assert!(!r.ok && r.code.is_none(), "{r:?}");
    let init_conn = b.attach(false);
    assert!(b.call(Request::Start { traceparent: None }).ok);

    let (out, err, exit) = b.exec_collect(&["echo", "inside"]);
    assert_eq!(
        (out.as_str(), err.as_str(), exit.exit_code),
        ("inside\n", "", 0)
    );
    let (_, _, exit) = b.exec_collect(&["sh", "-c", "exit 3"]);
    assert_eq!((exit.exit_code, exit.signal), (3, None));
    let (out, err, _) = b.exec_collect(&["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));

    // the container's pid namespace (init is pid 1), hostname, mounts
    let (out, _, exit) = b.exec_collect(&["ps", "-o", "pid,args"]);
    assert_eq!(exit.exit_code, 0);
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep 1000")),
        "{out}"
    );
    let (out, _, _) = b.exec_collect(&["hostname"]);
    assert_eq!(out, format!("host-{}\n", b.id));
    let (out, _, _) = b.exec_collect(&[
        "sh",
        "-c",
        "echo $$; ls /bin/busybox; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].parse::<i32>().unwrap() > 1, "{out}");
    assert_eq!(lines[1], "/bin/busybox");
    assert_eq!(lines[2].trim_end(), "sleep 1000");

    // the container's process: caps, no_new_privs, env, HOME, cwd
    let (out, _, _) = b.exec_collect(&[
        "sh",
        "-c",
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; echo $HOME; pwd; echo $PATH",
    ]);
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("\n/root\n/\n/usr/local/sbin:"), "{out}");

    // request env/cwd/user
    let (r, conn) = b.exec(Request::Exec {
        args: [
            "sh",
            "-c",
            "echo $FOO $TERM; pwd; id -u; id -g; id -G; echo $HOME",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: vec!["FOO=bar".into(), "TERM=dumb".into()],
        cwd: "/tmp".into(),
        user: "app".into(),
        terminal: false,
        stdin: false,
        detach: false,
    });
    assert!(r.ok, "{r:?}");
    let (out, _, exit) = collect(conn);
    assert_eq!(exit.exit_code, 0);
    assert_eq!(out, "bar dumb\n/tmp\n1000\n1000\n1000 50\n/home/app\n");
    let mut req = exec_req(&["id"]);
    if let Request::Exec { user, .. } = &mut req {
        *user = "ghost".into();
    }
    let (r, _) = b.exec(req);
    assert!(!r.ok, "{r:?}");
    assert!(r
        .error
        .as_deref()
        .unwrap_or("")
        .contains("unable to find user ghost"));

    // the container's cgroup: on the host the process is listed in it
    let (out, _, _) = b.exec_collect(&["sh", "-c", "cat /proc/self/cgroup"]);
    assert!(
        out.lines().all(|l| l.ends_with(":/")),
        "cgroup namespace root: {out}"
    );
    let mut req = exec_req(&["sleep", "5"]);
    if let Request::Exec { detach, .. } = &mut req {
        *detach = true;
    }
    let (r, _) = b.exec(req);
    assert!(r.ok, "{r:?}");
    let pid = r.pid.unwrap();
    let procs = std::fs::read_to_string(b.cgroup_dir().join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "{pid} not in {procs}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains(&format!("PPid:\t{}\n", b.shim_pid())),
        "the exec'd process is not a child of the shim: {status}"
    );
    let _ = nix_kill(pid);

    // stdin
    let mut req = exec_req(&["cat"]);
    if let Request::Exec { stdin, .. } = &mut req {
        *stdin = true;
    }
    let (r, mut conn) = b.exec(req);
    assert!(r.ok, "{r:?}");
    protocol::write_frame(&mut conn, FRAME_STDIN, b"piped\n").unwrap();
    protocol::write_frame(&mut conn, FRAME_CLOSE_STDIN, b"").unwrap();
    let (out, _, exit) = collect(conn);
    assert_eq!((out.as_str(), exit.exit_code), ("piped\n", 0));

    // missing binary, not executable, bad cwd
    let (r, _) = b.exec(exec_req(&["nosuchcmd", "x"]));
    assert!(!r.ok);
    assert_eq!(r.code, Some(127), "{r:?}");
    assert_eq!(
        r.error.as_deref(),
        Some("exec: \"nosuchcmd\": executable file not found in $PATH")
    );
    let (r, _) = b.exec(exec_req(&["/no/such"]));
    assert_eq!(r.code, Some(127), "{r:?}");
    let (r, _) = b.exec(exec_req(&["/etc/passwd"]));
    assert_eq!(r.code, Some(126), "{r:?}");
    assert_eq!(
        r.error.as_deref(),
        Some("exec: \"/etc/passwd\": permission denied")
    );
    let (r, _) = b.exec(exec_req(&["notaprogram"]));
    assert_eq!(r.code, Some(126), "{r:?}");

    // terminal: a pty of the container's devpts, resizable
    let (r, mut conn) = b.exec(Request::Exec {
        args: ["sh", "-c", "sleep 0.3; tty; stty size; echo $TERM"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        env: Vec::new(),
        cwd: String::new(),
        user: String::new(),
        terminal: true,
        stdin: true,
        detach: false,
    });
    assert!(r.ok, "{r:?}");
    protocol::write_frame(
        &mut conn,
        protocol::FRAME_RESIZE,
        &protocol::resize_payload(120, 40),
    )
    .unwrap();
    let (out, _, exit) = collect(conn);
    assert_eq!(exit.exit_code, 0, "{out:?}");
    let first = out.lines().next().unwrap_or("");
    assert!(first.starts_with("/dev/pts/"), "{out:?}");
    assert!(out.contains("40 120"), "window size not applied: {out:?}");
    assert!(out.contains("xterm"), "{out:?}");

    // execs never touch the init's state
    assert_eq!(b.call(Request::State).status, Some(Status::Running));
    assert!(
        b.call(Request::Kill {
            signal: 9,
            all: false
        })
        .ok
    );
    let (_, _, exit) = collect(init_conn);
    assert_eq!(exit.exit_code, 137);
    let (r, _) = b.exec(exec_req(&["echo", "late"]));
    assert!(!r.ok);
    assert_eq!(r.code, None);
    assert_eq!(
        r.error.as_deref(),
        Some(format!("container {} is not running", b.id).as_str())
    );
    assert_eq!(b.delete().exit_code, 137);
}

#[test]
fn exec_output_waits_for_a_long_exec_and_init_exit_kills_it() {
    if !can_run() {
        return;
    }
    let b = bundle(&["sh", "-c", "sleep 1; exit 4"], Opts::default());
    b.create_ok();
    let init_conn = b.attach(false);
    assert!(b.call(Request::Start { traceparent: None }).ok);
    let (r, conn) = b.exec(exec_req(&["sh", "-c", "echo started; sleep 100"]));
    assert!(r.ok, "{r:?}");
    // the init exits 4 after 1 s; the pid namespace dies with it, and the exec with SIGKILL
    let (_, _, exit) = collect(init_conn);
    assert_eq!(exit.exit_code, 4);
    let (out, _, exit) = collect(conn);
    assert_eq!(out, "started\n");
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert_eq!(b.delete().exit_code, 4);
}

fn nix_kill(pid: i32) -> i32 {
    // SAFETY: kill with a pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) }
}

#[test]
fn log_path_annotation_outlives_the_bundle_and_appends() {
    if !can_run() {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("containers/c1/json.log");
    let opts = |word: &'static str| -> (TestBundle, &'static str) {
        (
            bundle(
                &["echo", word],
                Opts {
                    annotations: vec![("io.berth.log-path", path.display().to_string())],
                    ..Default::default()
                },
            ),
            word,
        )
    };
    for (b, word) in [opts("first"), opts("second")] {
        b.create_ok();
        let (out, _, exit) = b.run();
        assert_eq!(
            (out.as_str(), exit.exit_code),
            (format!("{word}\n").as_str(), 0)
        );
        assert!(!b.dir.join("container.log").exists());
        b.delete();
    }
    let log = std::fs::read_to_string(&path).unwrap();
    let words: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["log"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(words, vec!["first\n", "second\n"]);

    // a relative path is refused
    let b = bundle(
        &["true"],
        Opts {
            annotations: vec![("io.berth.log-path", "rel/x.log".into())],
            ..Default::default()
        },
    );
    let (code, err) = b.create();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("io.berth.log-path"), "{err}");

    // rotation at io.berth.log-max-size renames to .1 next to the log
    let path = logs.path().join("rot/r.log");
    let b = bundle(
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 40 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done",
        ],
        Opts {
            annotations: vec![
                ("io.berth.log-path", path.display().to_string()),
                ("io.berth.log-max-size", "1000".into()),
            ],
            ..Default::default()
        },
    );
    b.create_ok();
    let (_, _, exit) = b.run();
    assert_eq!(exit.exit_code, 0);
    assert!(logs.path().join("rot/r.log.1").exists());
    assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
    b.delete();
}

/// Mount points are resolved inside the rootfs: a symlink in the image that points at a host
/// path (absolute, or climbing with `..`) and a destination with `..` all land inside the
/// container, and nothing is made or mounted on the host.
#[test]
fn mount_points_never_leave_the_rootfs() {
    if !can_run() {
        return;
    }
    let outside = tempfile::Builder::new()
        .prefix("berth-outside")
        .tempdir()
        .unwrap();
    let out = outside.path().to_path_buf();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), "from the volume").unwrap();
    let abs = out.clone();
    let o = Opts {
        rootfs: Some(Box::new(move |root: &Path| {
            std::os::unix::fs::symlink(&abs, root.join("abs")).unwrap();
            std::os::unix::fs::symlink("../../../../../../../..", root.join("tmp/up")).unwrap();
        })),
        mounts: vec![
            mount("/abs/tmpfs", "tmpfs", "tmpfs", &["nosuid"]),
            mount(
                "/tmp/up/abs/bind",
                "bind",
                src.path().to_str().unwrap(),
                &["rbind", "ro"],
            ),
            mount(
                &format!("/../../..{}/dotdot", out.display()),
                "tmpfs",
                "tmpfs",
                &[],
            ),
            mount(
                "/abs/file",
                "bind",
                src.path().join("f").to_str().unwrap(),
                &["bind"],
            ),
        ],
        ..Opts::default()
    };
    let script = format!(
        "cat {o}/bind/f; echo; cat {o}/file; echo; grep -c ' {o}/' /proc/self/mountinfo; \
         touch {o}/bind/g 2>/dev/null || echo ro",
        o = out.display()
    );
    let b = bundle(&["sh", "-c", &script], o);
    b.create_ok();
    let (stdout, err, exit) = b.run();
    assert_eq!(exit.exit_code, 0, "out: {stdout} err: {err}");
    assert_eq!(stdout, "from the volume\nfrom the volume\n4\nro\n", "{err}");
    b.delete();
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "made on the host: {left:?}");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(&out.display().to_string()));
}

/// A read-only bind is read-only all the way down: a mount under its source is too.
#[test]
fn read_only_binds_are_recursive() {
    if !can_run() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let sub = src.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    // A private mount namespace of our own would not reach the shim: mount on the host, and
    // take it away whatever happens.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let _guard = Unmount(sub.clone());
    let o = Opts {
        mounts: vec![mount(
            "/data",
            "bind",
            src.path().to_str().unwrap(),
            &["rbind", "ro", "rprivate"],
        )],
        ..Opts::default()
    };
    let b = bundle(
        &[
            "sh",
            "-c",
            "touch /data/x 2>/dev/null || echo top-ro; touch /data/sub/x 2>/dev/null || echo sub-ro",
        ],
        o,
    );
    b.create_ok();
    let (out, err, exit) = b.run();
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out, "top-ro\nsub-ro\n", "{err}");
    b.delete();
}

#[test]
fn the_shim_serves_its_cgroup_and_delete_cleans_up_after_a_dead_shim() {
    if !can_run() {
        return;
    }
    let b = bundle(&["sleep", "100"], Opts::default());
    b.create_ok();
    // A created task's init is in the cgroup already.
    let init = b.call(Request::State).pid.expect("init pid");
    let pids = b.call(Request::Pids);
    assert!(pids.ok, "{pids:?}");
    assert_eq!(pids.pids, Some(vec![init]));
    assert!(b.call(Request::Start { traceparent: None }).ok);

    // Frozen, the container's processes stop; the shim, outside the cgroup, still answers.
    let paused = b.call(Request::Pause);
    assert!(paused.ok, "{paused:?}");
    let stats = b.call(Request::Stats);
    assert!(stats.ok, "{stats:?}");
    assert_eq!(
        stats.cgroup.as_deref(),
        Some(b.cgroup.trim_start_matches('/'))
    );
    let figures = stats.stats.expect("stats answer the figures");
    if let Some(p) = &figures.pids {
        assert_eq!(p.current, 1, "{figures:?}");
    }
    assert_eq!(b.call(Request::Pids).pids, Some(vec![init]));
    let resumed = b.call(Request::Resume);
    assert!(resumed.ok, "{resumed:?}");
    assert!(
        b.call(Request::Kill {
            signal: 9,
            all: false
        })
        .ok
    );
    assert!(b.call(Request::Wait).exit_status().is_some());
    b.delete();

    // A shim killed with its container running: `berth-shim delete` kills what is left in
    // the cgroup and removes it, as the shim's own delete does.
    let b = bundle(&["sleep", "100"], Opts::default());
    b.create_ok();
    assert!(b.call(Request::Start { traceparent: None }).ok);
    assert_eq!(nix_kill(b.shim_pid()), 0);
    assert!(b.cgroup_dir().exists());
    let out = Command::new(env!("CARGO_BIN_EXE_berth-shim"))
        .args(["delete", "--id", &b.id, "--namespace", "test", "--bundle"])
        .arg(&b.dir)
        .output()
        .expect("run berth-shim delete");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !b.cgroup_dir().exists(),
        "cgroup {:?} still exists",
        b.cgroup_dir()
    );
}
