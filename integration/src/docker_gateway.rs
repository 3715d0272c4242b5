//! The gateway tests' harness: a registry with busybox, a berthd serving the Docker Engine
//! API on `[gateway] socket` that pulled it, and the docker CLIs (and curl) pointed at it
//! with a config folder of their own.

use crate::{Berthd, Registry, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A berthd with its gateway, busybox pulled; see the module documentation.
#[derive(Debug)]
pub struct DockerGateway {
    _reg: Registry,
    pub d: Berthd,
    /// The pulled image, `<registry>/busybox:latest`.
    pub img: String,
    pub socket: PathBuf,
    /// DOCKER_CONFIG: the CLIs read no config of the user running the tests.
    config: TempDir,
}

impl DockerGateway {
    /// `None` (with a SKIP line) when the registry cannot be run.
    pub fn start() -> Option<DockerGateway> {
        let reg = Registry::start()?;
        reg.push_busybox("busybox:latest");
        let d = Berthd::start("[gateway]\nsocket = \"{STATE}/docker.sock\"\n");
        let img = format!("{}/busybox:latest", reg.addr);
        d.ok(&["pull", "-q", &img]);
        let socket = d.state().join("docker.sock");
        Some(DockerGateway {
            _reg: reg,
            d,
            img,
            socket,
            config: TempDir::new("berth-it-docker-config"),
        })
    }

    /// Runs the docker CLI at `cli` against the gateway.
    pub fn docker(&self, cli: &Path, args: &[&str]) -> Output {
        Command::new(cli)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.config.path())
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .expect("run docker")
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

    /// curl's stdout for a request over the gateway's socket.
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
