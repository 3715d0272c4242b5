//! The harness of berth's end-to-end tests: a real registry (Debian's `docker-registry`), a
//! busybox image made offline with umoci and pushed with skopeo, and isolated `berthd`
//! instances (own root and state in temporary folders) driven through the real `berth` CLI.
//!
//! A test whose prerequisite is missing (a tool, root, dockerd) calls [`skip`] — `SKIP <test>:
//! <why>` on a developer's machine, a failure under CI (`CI` set to anything but ``, `0` or
//! `false`: see [`berth_core::testing`]); `integration/run.sh` fails a CI run whose log holds a
//! `SKIP` line. [`or_skip!`] does it for a shared setup that gave `None`.
//!
//! Processes started here get `PR_SET_PDEATHSIG` from a thread that lives as long as the test
//! binary, so nothing outlives a test run; what fixtures kept in statics still hold at exit
//! (berthds, their containers and bridges, folders) is released by [`leftovers`].

pub mod cri;
pub mod gateway;
mod leftovers;
pub mod python;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Folder with berth, berthd, berth-shim: `BERTH_BIN`, else the target folder of this test.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("BERTH_BIN") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub use berth_core::testing::{missing_tool, skip, under_ci};

/// The value of an `Option` that a test needs, or [`skip`] and `return` from the test when it
/// is `None` — a shared setup (registry, berthd, tools) that found a prerequisite missing and
/// said which in its own `SKIP` line (under CI it failed there already).
#[macro_export]
macro_rules! or_skip {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => {
                $crate::skip("a prerequisite is missing (the first SKIP line says which)");
                return;
            }
        }
    };
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts processes from one thread that never ends, so PDEATHSIG fires only when the test
/// process itself goes away.
/// A command to start and where to send the child (or the error).
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static S: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    })
}

pub fn spawn_tied(cmd: Command) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap()
        .send((cmd, tx))
        .expect("spawner thread");
    rx.recv().expect("spawner reply")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_ok(addr: &str, path: &str) -> bool {
    Command::new("curl")
        .args(["-fs", "-o", "/dev/null", &format!("http://{addr}{path}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// A temporary folder removed on drop (after unmounting anything left under it).
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let mut rnd = [0u8; 6];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd))
            .unwrap();
        let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let p = std::env::temp_dir().join(format!("{prefix}-{hex}"));
        std::fs::create_dir_all(&p).unwrap();
        leftovers::note_dir(&p);
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl TempDir {
    /// Unmounts what is mounted under the folder and removes it (what dropping it does).
    pub fn remove(&self) {
        remove_tree(&self.0);
        leftovers::forget_dir(&self.0);
    }
}

/// Unmounts what is mounted under `dir` (deepest first) and removes it.
fn remove_tree(dir: &Path) {
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(dir))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for TempDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A real distribution registry on a free loopback port.
#[derive(Debug)]
pub struct Registry {
    pub addr: String,
    pub dir: TempDir,
    child: Child,
}

impl Registry {
    /// Starts one, or [`skip`]s and gives None when docker-registry is not installed.
    pub fn start() -> Option<Registry> {
        if !have("docker-registry") {
            skip("docker-registry is not installed (apt-get install docker-registry)");
            return None;
        }
        let dir = TempDir::new("berth-it-registry");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}/data}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}}}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(cmd).expect("start docker-registry");
        wait_until("the registry answering", Duration::from_secs(10), || {
            http_ok(&addr, "/v2/")
        });
        Some(Registry { addr, dir, child })
    }

    /// Pushes a busybox image made offline to `<registry>/<name>`.
    pub fn push_busybox(&self, name: &str) {
        let archive = busybox_archive();
        let st = Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{name}", self.addr))
            .status()
            .expect("skopeo");
        assert!(st.success(), "skopeo push of {name} failed");
    }

    /// The folder where the registry keeps a blob.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn busybox_dir() -> PathBuf {
    std::env::temp_dir().join(format!("berth-it-image-{}", std::process::id()))
}

extern "C" fn remove_busybox_dir() {
    let _ = std::fs::remove_dir_all(busybox_dir());
}

/// A busybox OCI archive made once per test binary with deploy/make-busybox-image.sh.
pub fn busybox_archive() -> PathBuf {
    static A: OnceLock<PathBuf> = OnceLock::new();
    A.get_or_init(|| {
        let dir = busybox_dir();
        std::fs::create_dir_all(&dir).unwrap();
        // Statics are never dropped: remove the folder when the test binary exits.
        // SAFETY: registers a plain extern "C" function without arguments.
        unsafe { libc::atexit(remove_busybox_dir) };
        let out = dir.join("busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-busybox-image.sh");
        let st = Command::new("bash")
            .arg(script)
            .arg(&out)
            .arg("busybox:latest")
            .status()
            .expect("make image");
        assert!(st.success(), "making the busybox image failed");
        out
    })
    .clone()
}

/// An isolated berthd with its own root and state.
#[derive(Debug)]
pub struct Berthd {
    pub dir: TempDir,
    pub sock: PathBuf,
    /// Where the CLI reaches it: `unix://<sock>`, or the `--address` among its arguments.
    pub address: String,
    child: Option<Child>,
    config: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Berthd {
    pub fn start(extra_config: &str) -> Berthd {
        Berthd::start_with_env(extra_config, &[])
    }

    /// Like [`Berthd::start`], with extra environment variables for berthd (e.g. `BERTH_LOG`).
    pub fn start_with_env(extra_config: &str, env: &[(&str, &str)]) -> Berthd {
        Berthd::start_with(extra_config, env, &[])
    }

    /// Like [`Berthd::start`], with environment variables and command-line arguments
    /// (e.g. `--service image,runtime`) for berthd. `{STATE}` in `extra_config` stands for
    /// berthd's state folder (e.g. `[gateway] socket = "{STATE}/docker.sock"`).
    pub fn start_with(extra_config: &str, env: &[(&str, &str)], args: &[&str]) -> Berthd {
        let dir = TempDir::new("berth-it");
        let config = dir.path().join("config.toml");
        let extra_config =
            extra_config.replace("{STATE}", &dir.path().join("state").display().to_string());
        std::fs::write(
            &config,
            format!(
                "root = \"{r}/root\"\nstate = \"{r}/state\"\n{extra_config}\n",
                r = dir.path().display()
            ),
        )
        .unwrap();
        let sock = dir.path().join("state/berth.sock");
        let address = args.windows(2).find(|a| a[0] == "--address").map_or_else(
            || format!("unix://{}", sock.display()),
            |a| a[1].to_string(),
        );
        // Credentials stay in the test's folder unless the test gives its own: a login
        // through it must not reach the host's ~/.docker/config.json, and nothing stored
        // there by anyone may change what this berthd sends.
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !env.iter().any(|(k, _)| k == "DOCKER_CONFIG") {
            let docker_config = dir.path().join("docker-config");
            env.push(("DOCKER_CONFIG".into(), docker_config.display().to_string()));
        }
        let mut d = Berthd {
            dir,
            sock,
            address,
            child: None,
            config,
            env,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        d.restart();
        d
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The pid of the shim of a task in the default namespace, from berthd's state.
    pub fn shim_pid(&self, id: &str) -> i32 {
        let p = self.state().join("tasks/default").join(id).join("shim.pid");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// Starts berthd (again) on the same root and state.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(bin_dir().join("berthd"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("berthd.log"))
                    .unwrap(),
            );
        let child = spawn_tied(cmd).expect("start berthd");
        leftovers::note_berthd(self.dir.path(), Some(child.id()));
        self.child = Some(child);
        let sock = self.sock.clone();
        let me = &*self;
        wait_until("berthd answering", Duration::from_secs(20), || {
            (sock.exists() || !me.address.starts_with("unix://"))
                && me.berth(&["version"]).status.success()
        });
    }

    /// Kills berthd with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            leftovers::note_berthd(self.dir.path(), None);
        }
    }

    /// Stops berthd gracefully with SIGTERM, as systemd would, and waits up to `timeout` for
    /// it to exit (then kills it). Returns the exit status of a graceful stop, or None when it
    /// had to be killed or was not running.
    pub fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        leftovers::note_berthd(self.dir.path(), None);
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// berthd's process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("berthd is running").id()
    }

    /// What berthd wrote to stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("--address").arg(&self.address);
        c
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// Runs berth and returns stdout, asserting success.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.berth(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs berth expecting failure; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let o = self.berth(args);
        assert!(
            !o.status.success(),
            "berth {args:?} should have failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `berth run -d ARGS…`, asserting success; the container's full id, which it checks
    /// `run -d` printed.
    pub fn run_d(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(args);
        let id = self.ok(&a).trim().to_string();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "run -d prints the full id: {id:?}"
        );
        id
    }

    /// Starts `berth events ARGS…` (stderr dropped): the process, and its lines as they come.
    /// The caller kills it when done.
    pub fn events(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut cmd = self.cmd();
        cmd.arg("events")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Kills the shims and containers this instance started.
    pub fn kill_shims(&self) {
        kill_shims_in(&self.state());
    }
}

/// Kills the shims and containers of the berthd whose state folder is `state`, and removes
/// their cgroups.
fn kill_shims_in(state: &Path) {
    let tasks = state.join("tasks");
    let Ok(nss) = std::fs::read_dir(&tasks) else {
        return;
    };
    for ns in nss.flatten() {
        for t in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            for f in ["init.pid", "shim.pid"] {
                if let Some(pid) = std::fs::read_to_string(t.path().join(f))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill(2) with a pid read from our own state folder.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            // The shims were killed before they could remove their cgroups.
            let cg = format!(
                "berth/{}-{}",
                ns.file_name().to_string_lossy(),
                t.file_name().to_string_lossy()
            );
            remove_cgroups(&cg);
        }
    }
}

/// Removes a cgroup (relative to each hierarchy) on v1 and v2, once its processes are gone.
fn remove_cgroups(rel: &str) {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(rel))
        .collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(rel));
    for d in dirs.into_iter().filter(|d| d.is_dir()) {
        for _ in 0..50 {
            if std::fs::remove_dir(&d).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        self.kill9();
        self.kill_shims();
        leftovers::remove_bridges_of(self.dir.path());
        leftovers::forget_berthd(self.dir.path());
    }
}

/// A registry holding busybox and a berthd (default config) that pulled it as
/// [`Engine::img`] (`<registry>/busybox:latest`): where most tests start. The tests of one
/// file share one, in a `static OnceLock<Option<Engine>>`.
#[derive(Debug)]
pub struct Engine {
    pub reg: Registry,
    pub d: Berthd,
    pub img: String,
}

impl Engine {
    /// A registry with busybox pushed as `busybox:latest`, and a berthd that pulled it; `None`
    /// when a tool is missing (said in a `SKIP` line).
    pub fn start() -> Option<Engine> {
        Engine::with_names(&["busybox:latest"])
    }

    /// As [`Engine::start`], with busybox pushed under each of `names` (one of them
    /// `busybox:latest`, which berthd pulls).
    pub fn with_names(names: &[&str]) -> Option<Engine> {
        let reg = Registry::start()?;
        for name in names {
            reg.push_busybox(name);
        }
        let d = Berthd::start("");
        let img = format!("{}/busybox:latest", reg.addr);
        d.ok(&["pull", "-q", &img]);
        Some(Engine { reg, d, img })
    }
}

/// Polls `f` every 100 ms until it holds; panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// `Some(())` when every tool of `names` is installed; else [`skip`] names the missing one
/// and it gives `None`, for a shared setup that returns an `Option`.
pub fn require_tools(names: &[&str]) -> Option<()> {
    if let Some(why) = missing_tool(names) {
        skip(why);
        return None;
    }
    Some(())
}

/// The digest of `data` as the registry and berth write it (`sha256:<hex>`), computed with
/// the sha2 crate rather than berth's own code.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A dockerd of its own (data, exec root and socket in a temporary folder, trusting
/// registries on 127.0.0.0/8 over plain HTTP, no bridge, no iptables), stopped with SIGTERM
/// so that it takes its containerd down with it. Tests compare berth with the real docker
/// CLI through it.
#[derive(Debug)]
pub struct Dockerd {
    pub dir: TempDir,
    child: Child,
}

impl Dockerd {
    /// Starts one, or [`skip`]s and gives None when docker is not installed or does not
    /// start on this machine.
    pub fn start() -> Option<Dockerd> {
        if !have("dockerd") || !have("docker") {
            skip("dockerd or docker is not installed (apt-get install docker.io)");
            return None;
        }
        let dir = TempDir::new("berth-it-dockerd");
        let p = dir.path().display().to_string();
        let mut cmd = Command::new("dockerd");
        cmd.args([
            "--data-root",
            &format!("{p}/root"),
            "--exec-root",
            &format!("{p}/exec"),
            "-H",
            &format!("unix://{p}/docker.sock"),
            "-p",
            &format!("{p}/docker.pid"),
            "--insecure-registry",
            "127.0.0.0/8",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("dockerd.log")).expect("dockerd.log"));
        let child = spawn_tied(cmd).expect("start dockerd");
        let d = Dockerd { dir, child };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if d.docker(&["version"]).status.success() {
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        skip(format!(
            "dockerd did not start: {}",
            std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default()
        ));
        None
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env(
                "DOCKER_HOST",
                format!("unix://{}/docker.sock", self.dir.path().display()),
            )
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs docker and returns stdout, asserting success.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
