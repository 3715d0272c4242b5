//! The harness of the integration tests: a real registry (Debian's `docker-registry`) in a
//! temp dir, a busybox image built with umoci and pushed with skopeo, and the Registry
//! service on a unix socket with a generated client.

#![allow(dead_code)]

use berth_api::registry::v1::registry_client::RegistryClient as GrpcClient;
use berth_api::registry::v1::{FetchRequest, ResolveRequest, ResolveResponse};
use berth_api::types::v1::Descriptor;
use berth_core::config::Config;
pub use berth_core::testing::skip;
use berth_registry_proxy::CredentialStore;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Whether the tools a test needs are installed; [`skip`]s (fails under CI) when not.
pub fn have_tools(tools: &[&str]) -> bool {
    let Some(why) = berth_core::testing::missing_tool(tools) else {
        return true;
    };
    skip(format!(
        "{why} (apt-get install docker-registry skopeo umoci)"
    ));
    false
}

/// A port on 127.0.0.1 that nothing listens on (just now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An IPv4 address of this host that is not loopback (the one a default route would use),
/// found without sending anything.
pub fn non_loopback_ipv4() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A running `docker-registry serve`, stopped on drop.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `(user, password)` when it asks for Basic auth.
    pub credentials: Option<(String, String)>,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl TestRegistry {
    /// An open registry.
    pub fn start() -> TestRegistry {
        TestRegistry::start_with("127.0.0.1".parse().unwrap(), None)
    }

    /// An open registry on another address of this host.
    pub fn start_on(ip: IpAddr) -> TestRegistry {
        TestRegistry::start_with(ip, None)
    }

    /// A registry that wants htpasswd Basic auth for `user`/`password`.
    pub fn with_basic_auth(user: &str, password: &str) -> TestRegistry {
        let credentials = Some((user.to_string(), password.to_string()));
        TestRegistry::start_with("127.0.0.1".parse().unwrap(), credentials)
    }

    fn start_with(ip: IpAddr, credentials: Option<(String, String)>) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("{ip}:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            let hash = bcrypt::hash(password, 5).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = TestRegistry {
            addr,
            credentials,
            dir,
            child,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = http_status(&self.addr, "/v2/") {
                if status == 200 || status == 401 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry on {} did not answer: {}",
            self.addr,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the busybox test image as `NAME:latest`.
    pub fn push_busybox(&self, name: &str) {
        let layout = busybox_layout();
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.credentials {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:img", layout.display()))
            .arg(format!("docker://{}/{name}:latest", self.addr));
        run(&mut cmd);
    }

    /// The file the registry keeps a blob's bytes in.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain GET, or `None` when nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout (`DIR:img`) with busybox as `/bin/*`, built once per test run (and kept in
/// the target dir between runs), as the acceptance suite's `make_busybox_image` builds it.
pub fn busybox_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-proxy-busybox");
        if dest.join("index.json").exists() {
            return dest;
        }
        let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let oci = work.path().join("oci");
        let bundle = work.path().join("bundle");
        let image = format!("{}:img", oci.display());
        run(Command::new("umoci").args(["init", "--layout"]).arg(&oci));
        run(Command::new("umoci").args(["new", "--image", &image]));
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "etc", "root", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for name in ["sh", "ls", "cat", "echo"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(name)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle));
        run(Command::new("umoci").args(["config", "--image", &image, "--config.cmd", "/bin/sh"]));
        // Another test binary may have won the race; either layout is good.
        let _ = std::fs::rename(&oci, &dest);
        dest
    })
}

/// The Registry service on a unix socket in its own temp dir, and a client of it.
pub struct Service {
    pub client: GrpcClient<Channel>,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Service {
    pub async fn start(config: &str, credentials: Arc<dyn CredentialStore>) -> Service {
        let config = Config::parse(config).expect("test config");
        let server = berth_registry_proxy::serve_with(&config, credentials).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("registry.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        let channel = berth_core::grpc::channel(&format!("unix://{}", socket.display())).unwrap();
        Service {
            client: GrpcClient::new(channel),
            _dir: dir,
            server,
        }
    }

    pub async fn resolve(&self, reference: &str) -> Result<ResolveResponse, tonic::Status> {
        let r = self
            .client
            .clone()
            .resolve(ResolveRequest {
                reference: reference.to_string(),
                auth: None,
            })
            .await?;
        Ok(r.into_inner())
    }

    /// The whole content and the `total` of the first message.
    pub async fn fetch(
        &self,
        repository: &str,
        descriptor: &Descriptor,
        manifest: bool,
    ) -> Result<(Vec<u8>, i64), tonic::Status> {
        let mut stream = self
            .client
            .clone()
            .fetch(FetchRequest {
                reference: repository.to_string(),
                descriptor: Some(descriptor.clone()),
                manifest,
                auth: None,
            })
            .await?
            .into_inner();
        let mut data = Vec::new();
        let mut total = None;
        while let Some(msg) = stream.message().await? {
            total.get_or_insert(msg.total);
            data.extend_from_slice(&msg.data);
        }
        Ok((data, total.unwrap_or(-1)))
    }
}

pub fn sha256(data: &[u8]) -> String {
    berth_core::Digest::sha256_of(data).to_string()
}

pub fn descriptor(media_type: &str, digest: &str, size: i64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        annotations: Default::default(),
    }
}
