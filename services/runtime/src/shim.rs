//! The runtime's side of the shim contract (`docs/shim.md`): starting `berth-shim`, and an
//! async client for its socket.
//!
//! Each request is one unix connection: a JSON line out, a JSON line back. `attach` keeps its
//! connection and switches to frames `[kind u8][len u32 BE][payload]`.
//!
//! The wire types and frame encoding are `berth_shim::protocol`, shared with the shim; this
//! module adds the async side (tokio sockets, timeouts, a shim that is gone). The container's
//! cgroup is the shim's: pausing, its processes and its figures are requests too
//! (`pause`/`resume`, `pids`, `stats`), and after a shim that died `berth-shim delete`
//! removes what it left ([`delete_after_death`]).

use crate::error::{Error, Result};
pub use berth_shim::protocol::{
    decode_frame_header, encode_frame, resize_payload, ExitStatus, Frame, Request, Response, Stats,
    Status, FRAME_CLOSE_STDIN, FRAME_EXIT, FRAME_RESIZE, FRAME_STDERR, FRAME_STDIN, FRAME_STDOUT,
    MAX_FRAME_LEN,
};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long a shim may take to answer anything but `wait`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shim may take to create its container.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The `start` request, with the current trace context when there is one: the shim then
/// records its start and the container's exit under it.
pub fn start_request() -> Request {
    Request::Start {
        traceparent: berth_core::telemetry::current_traceparent(),
    }
}

/// How a shim answers a request it cannot parse; a shim started by a berth-shim older than
/// this berthd answers so to a request added since (`pause`, `resume`, `pids`, `stats`).
const UNKNOWN_REQUEST: &str = "bad shim request: unknown variant";

/// The error for a shim's refusal of a request about container `id`: `container ID:
/// <context><the shim's reason>`, or, when the shim is older than the request, a
/// FailedPrecondition saying that restarting the container (which starts a current shim)
/// lets it `action` ("pause it", "read its metrics", …).
pub(crate) fn refusal(id: &str, answer: Response, context: &str, action: &str) -> Error {
    let reason = answer.error.unwrap_or_default();
    if reason.starts_with(UNKNOWN_REQUEST) {
        return Error::FailedPrecondition(format!(
            "the shim of container {id} predates this berthd; restart the container to {action}"
        ));
    }
    Error::FailedPrecondition(format!("container {id}: {context}{reason}"))
}

/// Exports the spans a shim handed back in an answer (its work for a traced request: `create`,
/// `start`, `exit`) under the service name `berth-shim`, as children of the contexts it was
/// given. This is how the shim takes part in traces without an exporter of its own.
fn export_spans(id: &str, answer: &mut Response) {
    use berth_core::telemetry::{export_recorded, Recorded, SHIM_SERVICE};
    use opentelemetry::{KeyValue, Value};
    let at = |ns: u64| std::time::UNIX_EPOCH + Duration::from_nanos(ns);
    for span in std::mem::take(&mut answer.spans) {
        let mut attributes = vec![KeyValue::new("container.id", id.to_string())];
        for (k, v) in span.attributes {
            let v = match v {
                serde_json::Value::Bool(b) => Value::Bool(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Value::I64(i),
                    None => Value::F64(n.as_f64().unwrap_or_default()),
                },
                serde_json::Value::String(s) => Value::from(s),
                other => Value::from(other.to_string()),
            };
            attributes.push(KeyValue::new(k, v));
        }
        export_recorded(
            SHIM_SERVICE,
            Recorded {
                name: &format!("shim {}", span.name),
                parent: &span.parent,
                start: at(span.start_ns),
                end: at(span.end_ns.max(span.start_ns)),
                error: span.error.as_deref(),
                attributes,
            },
        );
    }
}

/// The answer's pid as the API carries it (0 when absent).
pub fn pid_of(answer: &Response) -> u32 {
    answer.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0)
}

/// Reads one frame; `None` on a clean end of the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the shim closed the connection inside a frame",
            ));
        }
        got += n;
    }
    let (kind, len) = decode_frame_header(header);
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the shim sent a frame of {len} bytes, more than the limit of {MAX_FRAME_LEN}"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame { kind, payload }))
}

/// An attach connection, positioned at the first frame.
#[derive(Debug)]
pub struct Attached {
    /// Output and exit frames come from here.
    pub output: BufReader<OwnedReadHalf>,
    /// Stdin, close and resize frames go here.
    pub input: OwnedWriteHalf,
}

/// The socket of one container's shim.
#[derive(Debug, Clone)]
pub struct Shim {
    id: String,
    socket: PathBuf,
}

/// Whether a connect error means that no shim listens there any more.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

impl Shim {
    pub fn new(id: &str, socket: PathBuf) -> Shim {
        Shim {
            id: id.to_string(),
            socket,
        }
    }

    fn io_err(&self, source: io::Error) -> Error {
        Error::ShimIo {
            id: self.id.clone(),
            source,
        }
    }

    /// Connects; `None` when no shim listens (it exited or never started).
    async fn connect(&self) -> Result<Option<UnixStream>> {
        match connect_path(&self.socket).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(self.io_err(e)),
        }
    }

    /// Sends one request and reads its answer. `None` when the shim is gone, also when it
    /// closes the connection without an answer (it exited while we waited).
    pub async fn call(&self, request: &Request) -> Result<Option<Response>> {
        // A shim that exits while a request is in flight resets the connection: that is a
        // gone shim too.
        let gone_midway = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            )
        };
        let exchange = async {
            let Some(mut stream) = self.connect().await? else {
                return Ok(None);
            };
            let (read, mut write) = stream.split();
            match write.write_all(&line(request)).await {
                Ok(()) => {}
                Err(e) if gone_midway(&e) => return Ok(None),
                Err(e) => return Err(self.io_err(e)),
            }
            let mut reader = BufReader::new(read);
            match read_answer(&mut reader).await {
                Ok(mut answer) => {
                    if let Some(a) = answer.as_mut() {
                        export_spans(&self.id, a);
                    }
                    Ok(answer)
                }
                Err(e) if gone_midway(&e) => Ok(None),
                Err(e) => Err(self.io_err(e)),
            }
        };
        if matches!(request, Request::Wait) {
            exchange.await
        } else {
            match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
                Ok(r) => r,
                Err(_) => Err(self.io_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {}s", ANSWER_TIMEOUT.as_secs()),
                ))),
            }
        }
    }

    /// Like [`Shim::call`], but a refusal (`ok:false`) becomes an error with the shim's exit
    /// code hint.
    pub async fn call_ok(&self, request: &Request) -> Result<Option<Response>> {
        match self.call(request).await? {
            Some(r) if !r.ok => Err(Error::Shim {
                message: r
                    .error
                    .clone()
                    .unwrap_or_else(|| "the shim refused the request".to_string()),
                exit_code: r.code.unwrap_or(125),
            }),
            other => Ok(other),
        }
    }

    /// Attaches to the container's stdio. `None` when the shim is gone.
    pub async fn attach(&self, stdin: bool) -> Result<Option<Attached>> {
        Ok(self
            .open(&Request::Attach { stdin })
            .await?
            .map(|(_, attached)| attached))
    }

    /// Sends a request whose connection goes on with frames (`attach`, `exec`): the answer
    /// and the connection. `None` when the shim is gone; a refusal is an error with the
    /// shim's exit code hint.
    pub async fn open(&self, request: &Request) -> Result<Option<(Response, Attached)>> {
        let Some(stream) = self.connect().await? else {
            return Ok(None);
        };
        let (read, mut input) = stream.into_split();
        input
            .write_all(&line(request))
            .await
            .map_err(|e| self.io_err(e))?;
        let mut output = BufReader::new(read);
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, read_answer(&mut output))
            .await
            .map_err(|_| {
                self.io_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from the shim",
                ))
            })?
            .map_err(|e| self.io_err(e))?;
        match answer {
            None => Ok(None),
            Some(r) if !r.ok => Err(Error::Shim {
                message: r
                    .error
                    .unwrap_or_else(|| "the shim refused the request".to_string()),
                exit_code: r.code.unwrap_or(125),
            }),
            Some(r) => Ok(Some((r, Attached { output, input }))),
        }
    }
}

/// Connects to a unix socket, also when its path is longer than `sun_path` holds (a long
/// state folder or namespace): then through `/proc/self/fd/<dir>/<name>`.
async fn connect_path(path: &Path) -> io::Result<UnixStream> {
    // sun_path is 108 bytes, including the terminating NUL.
    const SUN_PATH_MAX: usize = 107;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixStream::connect(path).await;
    };
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return UnixStream::connect(path).await;
    }
    let dir = std::fs::File::open(dir)?;
    let short = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    // `dir` stays open until the connect is done.
    let stream = UnixStream::connect(&short).await;
    drop(dir);
    stream
}

fn line(request: &Request) -> Vec<u8> {
    request.to_line().into_bytes()
}

/// Reads one answer line; `None` when the connection ends first. The reader keeps any bytes
/// after the line (the first frames of an attach).
async fn read_answer<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<Option<Response>> {
    let mut buf = Vec::new();
    let n = (&mut *r).take(1 << 20).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        // Closed mid-line: the shim died while answering.
        return Ok(None);
    }
    serde_json::from_slice(&buf).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the shim answered something unreadable: {e}"),
        )
    })
}

/// The shim binary: the configured one, else `berth-shim` next to the running program, else
/// `berth-shim` from `$PATH`.
pub fn binary(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.is_file())
    {
        return beside;
    }
    PathBuf::from("berth-shim")
}

/// `berth-shim [MODE] --id ID --namespace NS --bundle DIR`.
fn command(
    binary: &Path,
    mode: Option<&str>,
    id: &str,
    namespace: &str,
    bundle: &Path,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command.args(mode);
    command
        .arg("--id")
        .arg(id)
        .arg("--namespace")
        .arg(namespace)
        .arg("--bundle")
        .arg(bundle);
    command
}

/// The last line a shim wrote on stderr that is not blank.
fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Runs `berth-shim delete … ` for a task whose shim died: it kills what is left in the
/// container's cgroup and removes the cgroup, as the shim's own `delete` would have.
pub async fn delete_after_death(
    binary: &Path,
    id: &str,
    namespace: &str,
    bundle: &Path,
) -> Result<()> {
    let mut command = command(
        binary,
        Some(berth_shim::shim::DELETE_COMMAND),
        id,
        namespace,
        bundle,
    );
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(ANSWER_TIMEOUT, command.output()).await {
        Ok(output) => output.map_err(|e| Error::io("cannot run the shim", binary, e))?,
        Err(_) => {
            return Err(Error::Shim {
                message: format!(
                    "the shim did not clean up after container {id} within {}s",
                    ANSWER_TIMEOUT.as_secs()
                ),
                exit_code: 125,
            })
        }
    };
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Shim {
        message: last_line(&output.stderr).unwrap_or_else(|| {
            format!(
                "the shim's clean-up after container {id} failed ({})",
                output.status
            )
        }),
        exit_code: 125,
    })
}

/// Starts `berth-shim --id ID --namespace NS --bundle DIR` and waits for its verdict: it
/// exits 0 once the container is created and its socket listens. On failure, the shim's last
/// stderr line becomes the error, with its exit code (127 not found, 126 cannot execute).
/// Within a trace, `--traceparent` passes it on: the shim times its create under it.
pub async fn spawn(binary: &Path, id: &str, namespace: &str, bundle: &Path) -> Result<()> {
    let mut command = command(binary, None, id, namespace, bundle);
    if let Some(tp) = berth_core::telemetry::current_traceparent() {
        command.arg("--traceparent").arg(tp);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Shim {
            message: format!(
                "cannot run the shim {}: {e}; install berth-shim beside berthd, or set \
                 runtime.shim in the config",
                binary.display()
            ),
            exit_code: 125,
        })?;
    let mut stderr = child.stderr.take();
    let status = match tokio::time::timeout(START_TIMEOUT, child.wait()).await {
        Ok(status) => status.map_err(|e| Error::io("cannot wait for the shim", binary, e))?,
        Err(_) => {
            let _ = child.start_kill();
            return Err(Error::Shim {
                message: format!(
                    "the shim did not create container {id} within {}s; see {}",
                    START_TIMEOUT.as_secs(),
                    bundle.join("shim.log").display()
                ),
                exit_code: 125,
            });
        }
    };
    if status.success() {
        return Ok(());
    }
    // The daemonized shim has pointed its stdio elsewhere, so the pipe ends when the parent
    // exits; the bound only guards against a shim that forgot to.
    let mut text = Vec::new();
    if let Some(stderr) = stderr.as_mut() {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            stderr.take(64 << 10).read_to_end(&mut text),
        )
        .await;
    }
    let message = match (last_line(&text), status.code()) {
        (Some(l), _) => l,
        (None, Some(code)) => format!("the shim of container {id} failed with exit code {code}"),
        (None, None) => format!("the shim of container {id} was killed ({status})"),
    };
    let exit_code = status
        .code()
        .filter(|c| *c == 126 || *c == 127)
        .unwrap_or(125);
    Err(Error::Shim { message, exit_code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_shims_refusal_says_to_restart() {
        // What a shim answers to an op it does not know, as its request loop builds it.
        let unknown = Request::from_line(r#"{"op":"frobnicate"}"#).unwrap_err();
        let old = Response::error(unknown.to_string(), None);
        let e = refusal("abc", old, "reading its cgroup: ", "pause it");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            e.to_string(),
            "the shim of container abc predates this berthd; restart the container to pause it"
        );
        let refused = Response::error("cannot freeze: busy", None);
        let e = refusal("abc", refused, "reading its cgroup: ", "pause it");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            e.to_string(),
            "container abc: reading its cgroup: cannot freeze: busy"
        );
    }

    #[test]
    fn request_lines_follow_the_contract() {
        let text = |r: &Request| String::from_utf8(line(r)).unwrap();
        assert_eq!(text(&Request::State), "{\"op\":\"state\"}\n");
        assert_eq!(
            text(&Request::Kill {
                signal: 9,
                all: false
            }),
            "{\"op\":\"kill\",\"signal\":9,\"all\":false}\n"
        );
        assert_eq!(
            text(&Request::Resize {
                width: 80,
                height: 24
            }),
            "{\"op\":\"resize\",\"width\":80,\"height\":24}\n"
        );
        assert_eq!(
            text(&Request::Attach { stdin: true }),
            "{\"op\":\"attach\",\"stdin\":true}\n"
        );
    }

    #[test]
    fn answers_parse() {
        let r: Response =
            serde_json::from_str(r#"{"ok":true,"status":"running","pid":42,"exit":null}"#).unwrap();
        assert_eq!(
            (r.status, pid_of(&r), r.exit.clone()),
            (Some(Status::Running), 42, Some(None))
        );
        let r: Response = serde_json::from_str(
            r#"{"ok":true,"exit":{"exit_code":137,"signal":9,"exited_at":"2024-01-01T00:00:00.000000001Z","oom_killed":false}}"#,
        )
        .unwrap();
        assert_eq!(r.exit_status().unwrap().exit_code, 137);
        let r: Response =
            serde_json::from_str(r#"{"ok":false,"error":"not found","code":127}"#).unwrap();
        assert_eq!((r.ok, r.code), (false, Some(127)));
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut buf = encode_frame(FRAME_STDOUT, b"hello\n");
        buf.extend(encode_frame(FRAME_RESIZE, &resize_payload(120, 40)));
        buf.extend(encode_frame(FRAME_CLOSE_STDIN, b""));
        assert_eq!(&buf[..5], &[1, 0, 0, 0, 6]);
        let mut r = &buf[..];
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(
            (f.kind, f.payload.as_slice()),
            (FRAME_STDOUT, &b"hello\n"[..])
        );
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(f.payload, [0, 0, 0, 120, 0, 0, 0, 40]);
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((f.kind, f.payload.len()), (FRAME_CLOSE_STDIN, 0));
        assert!(read_frame(&mut r).await.unwrap().is_none());
        let mut short = &[1u8, 0, 0][..];
        assert!(read_frame(&mut short).await.is_err());
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_gone_shim() {
        let dir = tempfile::tempdir().unwrap();
        let shim = Shim::new("x", dir.path().join("shim.sock"));
        assert!(shim.call(&Request::State).await.unwrap().is_none());
        assert!(shim.attach(false).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn long_socket_paths_connect() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let socket = deep.join("shim.sock");
        assert!(socket.as_os_str().len() > 108);
        // Bind the way a shim can: through the same short path.
        let d = std::fs::File::open(&deep).unwrap();
        let short = format!("/proc/self/fd/{}/shim.sock", d.as_raw_fd());
        let listener = tokio::net::UnixListener::bind(&short).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 15];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, b"{\"op\":\"state\"}\n");
            s.write_all(b"{\"ok\":true,\"status\":\"created\",\"pid\":9,\"exit\":null}\n")
                .await
                .unwrap();
        });
        let shim = Shim::new("x", socket);
        let answer = shim.call(&Request::State).await.unwrap().unwrap();
        assert_eq!((answer.status, pid_of(&answer)), (Some(Status::Created), 9));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_shim_reports_its_stderr_line_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-shim");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'some noise' >&2\necho 'exec: \"nope\": executable file not found in $PATH' >&2\nexit 127\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        match spawn(&fake, "id", "default", dir.path()).await.unwrap_err() {
            Error::Shim { message, exit_code } => {
                assert_eq!(exit_code, 127);
                assert_eq!(
                    message,
                    "exec: \"nope\": executable file not found in $PATH"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let missing = spawn(&dir.path().join("nope"), "id", "default", dir.path())
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("cannot run the shim"));
    }
}
