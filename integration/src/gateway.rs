//! A berthd serving the Docker Engine API gateway (`[gateway] socket` in its state folder),
//! with busybox pulled from a real registry, and the Docker clients pointed at it: the docker
//! CLIs (Debian's 20.10 at `/usr/bin/docker`, a current one at `/usr/local/bin/docker` when
//! installed), curl over the socket, and any program reading `DOCKER_HOST`.

use crate::{Berthd, Registry, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's docker CLI (20.10, API 1.41): every gateway test drives it.
pub const DEBIAN_DOCKER: &str = "/usr/bin/docker";
/// A current docker CLI (28.x), driven too when it is installed.
pub const CURRENT_DOCKER: &str = "/usr/local/bin/docker";

/// A registry with busybox, a berthd serving the gateway that pulled it, and the image's name.
#[derive(Debug)]
pub struct Gateway {
    pub reg: Registry,
    pub d: Berthd,
    /// `<registry>/busybox:latest`, pulled.
    pub img: String,
    pub socket: PathBuf,
    /// DOCKER_CONFIG: the clients read no config of the user running the tests.
    pub config: TempDir,
}

impl Gateway {
    /// None when the registry cannot start (its tools are missing: the caller skips).
    pub fn start() -> Option<Gateway> {
        let reg = Registry::start()?;
        reg.push_busybox("busybox:latest");
        let d = Berthd::start("[gateway]\nsocket = \"{STATE}/docker.sock\"\n");
        let img = format!("{}/busybox:latest", reg.addr);
        d.ok(&["pull", "-q", &img]);
        let socket = d.state().join("docker.sock");
        Some(Gateway {
            reg,
            d,
            img,
            socket,
            config: TempDir::new("berth-it-docker-config"),
        })
    }

    /// `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `cmd` pointed at the gateway: DOCKER_HOST, DOCKER_CONFIG, no API version or context of
    /// the environment, the classic builder.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY");
        c
    }

    /// Runs the docker CLI at `cli`.
    pub fn docker(&self, cli: &Path, args: &[&str]) -> Output {
        self.command(cli).args(args).output().expect("run docker")
    }

    /// stdout of a docker command that must succeed.
    pub fn ok(&self, cli: &Path, args: &[&str]) -> String {
        let o = self.docker(cli, args);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(
            o.status.success(),
            "{} {args:?} failed: {err}\n{out}\n--- berthd:\n{}",
            cli.display(),
            self.d.log()
        );
        out.into_owned()
    }

    /// stderr of a docker command that must fail.
    pub fn fails(&self, cli: &Path, args: &[&str]) -> String {
        let o = self.docker(cli, args);
        assert!(
            !o.status.success(),
            "{} {args:?} should fail",
            cli.display()
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// stdout of `curl -s --unix-socket <socket> ARGS`.
    pub fn curl(&self, args: &[&str]) -> String {
        let o = Command::new("curl")
            .arg("-s")
            .arg("--unix-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// One gateway for the tests of a test binary (each binary has its own), with busybox also
/// tagged `busybox`; None when it cannot start (the caller skips).
pub fn shared() -> Option<&'static Gateway> {
    static G: std::sync::OnceLock<Option<Gateway>> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let g = Gateway::start()?;
        g.d.ok(&["tag", &g.img, "busybox"]);
        Some(g)
    })
    .as_ref()
}

/// The docker CLIs to drive: Debian's (required: under CI its absence fails the test) and the
/// current one when installed.
pub fn docker_clis() -> Option<Vec<PathBuf>> {
    crate::require_tools(&[DEBIAN_DOCKER])?;
    let mut clis = vec![PathBuf::from(DEBIAN_DOCKER)];
    if Path::new(CURRENT_DOCKER).exists() {
        clis.push(PathBuf::from(CURRENT_DOCKER));
    }
    Some(clis)
}
