//! A berthd serving the Docker Engine API gateway (`[gateway] socket` in its state folder),
//! with busybox pulled from a real registry, and the Docker clients pointed at it: the docker
//! CLIs (Debian's 20.10 at `/usr/bin/docker`, a current one at `/usr/local/bin/docker` when
//! installed), curl over the socket, raw HTTP on it, and any program reading `DOCKER_HOST`.
//!
//! A test binary whose tests share one gateway takes [`Gateway::shared`]; one that needs a
//! berthd of its own starts one with [`Gateway::start`].

use crate::{Berthd, Registry, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

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

    /// The one gateway of this test binary (this process), started by the first test that
    /// asks, with busybox also tagged `busybox`; None when it cannot start (the callers skip).
    pub fn shared() -> Option<&'static Gateway> {
        static SHARED: OnceLock<Option<Gateway>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let g = Gateway::start()?;
                g.d.ok(&["tag", &g.img, "busybox"]);
                Some(g)
            })
            .as_ref()
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
    pub fn docker(&self, cli: impl AsRef<Path>, args: &[&str]) -> Output {
        self.docker_in(cli, None, args)
    }

    /// Runs the docker CLI at `cli` in folder `dir` (a build's context), or here.
    pub fn docker_in(&self, cli: impl AsRef<Path>, dir: Option<&Path>, args: &[&str]) -> Output {
        let mut c = self.command(cli.as_ref());
        if let Some(dir) = dir {
            c.current_dir(dir);
        }
        c.args(args).output().expect("run docker")
    }

    /// stdout of a docker command that must succeed.
    pub fn ok(&self, cli: impl AsRef<Path>, args: &[&str]) -> String {
        self.ok_in(cli, None, args)
    }

    /// stdout of a docker command that must succeed, without the whitespace around it.
    pub fn ok_trimmed(&self, cli: impl AsRef<Path>, args: &[&str]) -> String {
        self.ok(cli, args).trim().to_string()
    }

    /// `docker inspect -f FORMAT NAME`, trimmed.
    pub fn inspect(&self, cli: impl AsRef<Path>, name: &str, format: &str) -> String {
        self.ok_trimmed(cli, &["inspect", "-f", format, name])
    }

    /// stdout of a docker command run in `dir` that must succeed.
    pub fn ok_in(&self, cli: impl AsRef<Path>, dir: Option<&Path>, args: &[&str]) -> String {
        let cli = cli.as_ref();
        let o = self.docker_in(cli, dir, args);
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
    pub fn fails(&self, cli: impl AsRef<Path>, args: &[&str]) -> String {
        let cli = cli.as_ref();
        let o = self.docker(cli, args);
        assert!(
            !o.status.success(),
            "{} {args:?} should fail: {}",
            cli.display(),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// stdout of `curl -s --unix-socket <socket> ARGS`.
    pub fn curl(&self, args: &[&str]) -> String {
        let o = self.curl_command(args).output().expect("run curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// stdout of `curl` as [`Gateway::curl`] runs it, then the status on a line of its own.
    pub fn curl_status(&self, args: &[&str]) -> String {
        let mut all = vec!["-w", "\n%{http_code}"];
        all.extend_from_slice(args);
        self.curl(&all)
    }

    /// `curl -s --unix-socket <socket> ARGS`, to run as the caller needs.
    pub fn curl_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("curl");
        c.arg("-s")
            .arg("--unix-socket")
            .arg(&self.socket)
            .args(args);
        c
    }

    /// `request` written raw on the socket: the status line and headers, and the connection
    /// to read the rest from (a hijacked stream's frames).
    pub fn raw(&self, request: &str) -> (String, BufReader<UnixStream>) {
        let mut s = UnixStream::connect(&self.socket).expect("connect to the gateway");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            head.push_str(&line);
        }
        (head, r)
    }
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
