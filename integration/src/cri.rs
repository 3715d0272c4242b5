//! The Kubernetes CRI under test: a berthd with `[cri]`, a local registry holding the
//! stand-in images of `deploy/cri-images.sh` (berth's mirrors point registry.k8s.io, gcr.io
//! and docker.io at it), a CNI config folder, and crictl/critest 1.27.1 from `shared/tools/cri`
//! beside the checkout (or `BERTH_CRI_TOOLS`), unpacked into a cache folder. Shared by the
//! CRI test files; [`cri`] starts it once per test binary.

use crate::{require_tools, skip, Berthd, Registry, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The default busybox of critest, from the stand-ins.
pub const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
pub const STAGING: &str = "gcr.io/k8s-staging-cri-tools";

/// A berthd serving the CRI, the registry it pulls from and the unpacked CRI tools.
#[derive(Debug)]
pub struct Cri {
    pub berthd: Berthd,
    pub registry: Registry,
    pub tools: PathBuf,
    pub socket: PathBuf,
    pub cni: TempDir,
}

impl Cri {
    pub fn start() -> Option<Cri> {
        // berth writes its default pod network into the empty folder.
        Cri::start_with_cni(None)
    }

    /// A CRI whose CNI folder holds `conflist` as `10-pods.conflist`, or nothing (`None`).
    pub fn start_with_cni(conflist: Option<&str>) -> Option<Cri> {
        require_tools(&["umoci", "skopeo", "pgrep", "ipcs"])?;
        let tools = cri_tools()?;
        let registry = Registry::start()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cri-images.sh");
        let pushed = Command::new("bash")
            .arg(&script)
            .arg(&registry.addr)
            .output()
            .expect("run deploy/cri-images.sh");
        assert!(pushed.status.success(), "cri-images.sh: {}", text(&pushed));
        let cni = TempDir::new("berth-it-cni");
        if let Some(conflist) = conflist {
            std::fs::write(cni.path().join("10-pods.conflist"), conflist).unwrap();
        }
        let (berthd, socket) = berthd_with_cri(&registry.addr, cni.path());
        Some(Cri {
            berthd,
            registry,
            tools,
            socket,
            cni,
        })
    }

    /// crictl against the CRI socket.
    pub fn crictl(&self, args: &[&str]) -> Output {
        let endpoint = format!("unix://{}", self.socket.display());
        Command::new(self.tools.join("crictl"))
            .args([
                "--runtime-endpoint",
                &endpoint,
                "--image-endpoint",
                &endpoint,
            ])
            .args(["--timeout", "60s"])
            .args(args)
            .output()
            .expect("run crictl")
    }

    /// critest with ginkgo's `flags` (focus, skip) against the CRI socket, in a folder of its
    /// own (its `podLogTest*` folders too); its output.
    pub fn critest(&self, flags: &[&str]) -> Output {
        let tmp = TempDir::new("berth-it-critest");
        let endpoint = format!("unix://{}", self.socket.display());
        Command::new(self.tools.join("critest"))
            .current_dir(tmp.path())
            .env("TMPDIR", tmp.path())
            .args([
                "--runtime-endpoint",
                &endpoint,
                "--image-endpoint",
                &endpoint,
                "--ginkgo.no-color",
            ])
            .args(flags)
            .output()
            .expect("run critest")
    }

    /// critest with `flags`: panics with its output unless it succeeds with no failed spec;
    /// logs its counts ("Ran N of M Specs", "N Passed | …") and answers its output.
    pub fn critest_passes(&self, flags: &[&str]) -> String {
        let out = self.critest(flags);
        let t = text(&out);
        for line in t
            .lines()
            .filter(|l| l.contains("Ran ") || l.contains("Passed"))
        {
            eprintln!("critest: {}", line.trim());
        }
        assert!(out.status.success(), "critest failed:\n{t}");
        assert!(t.contains(" 0 Failed"), "{t}");
        t
    }

    /// crictl's standard output; panics with its output when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.crictl(args);
        assert!(out.status.success(), "crictl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// crictl's output as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl {args:?}: {e}: {out}"))
    }
}

/// A berthd with `[cri]` on a socket in its state folder, its CNI configurations in `cni`,
/// and mirrors of the registries critest pulls from at `registry`.
pub fn berthd_with_cri(registry: &str, cni: &Path) -> (Berthd, PathBuf) {
    let mirrors: String = ["registry.k8s.io", "gcr.io", "docker.io"]
        .iter()
        .map(|r| format!("[registries.\"{r}\"]\nmirrors = [\"http://{registry}\"]\n"))
        .collect();
    let d = Berthd::start(&format!(
        "[cri]\nsocket = \"{{STATE}}/cri.sock\"\ncni_conf_dir = \"{}\"\n{mirrors}",
        cni.display()
    ));
    let socket = d.dir.path().join("state/cri.sock");
    crate::wait_for("the CRI socket", std::time::Duration::from_secs(10), || {
        socket.exists()
    });
    (d, socket)
}

/// The CRI fixture of this test binary, started by the first test that asks (released at
/// exit by the harness, as every fixture kept in a static).
pub fn cri() -> Option<&'static Cri> {
    static C: OnceLock<Option<Cri>> = OnceLock::new();
    C.get_or_init(Cri::start).as_ref()
}

/// crictl and critest unpacked (once) into a cache folder; `None` (after a SKIP line) when
/// the project's copy of them is not beside the checkout.
pub fn cri_tools() -> Option<PathBuf> {
    let source = std::env::var_os("BERTH_CRI_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/cri"));
    let unpack = source.join("unpack");
    if !unpack.is_file() {
        skip(format!(
            "crictl and critest are not at {} (shared/tools/cri beside the checkout, or BERTH_CRI_TOOLS)",
            source.display()
        ));
        return None;
    }
    let dest = std::env::temp_dir().join("berth-cri-tools-1.27.1");
    let out = Command::new("bash")
        .arg(&unpack)
        .arg(&dest)
        .output()
        .expect("run the unpack script of the CRI tools");
    assert!(out.status.success(), "unpack: {}", text(&out));
    Some(dest)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
