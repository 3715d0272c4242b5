//! The wire protocol of `shim.sock` (see `docs/shim.md`).
//!
//! Plain data + serde + blocking helpers over `std::io`. An async client (the runtime service)
//! can use the types and [`encode_frame`] / [`decode_frame_header`] with its own IO.
//!
//! A connection carries one request line ([`Request::to_line`]) and one response line
//! ([`Response::to_line`]). After a successful `attach` the connection carries frames:
//! `[kind: u8][len: u32 big-endian][payload]`.

use serde::{Deserialize, Deserializer, Serialize};
use std::io::{self, BufRead, Read, Write};

/// client → shim: stdin bytes.
pub const FRAME_STDIN: u8 = 0;
/// shim → client: stdout bytes (with a pty, all output).
pub const FRAME_STDOUT: u8 = 1;
/// shim → client: stderr bytes.
pub const FRAME_STDERR: u8 = 2;
/// shim → client: the exit status as JSON ([`ExitStatus`]); the last frame of a connection.
pub const FRAME_EXIT: u8 = 3;
/// client → shim: close the container's stdin (empty payload).
pub const FRAME_CLOSE_STDIN: u8 = 4;
/// client → shim: resize the terminal (payload: width u32 BE, height u32 BE).
pub const FRAME_RESIZE: u8 = 5;

/// Largest frame payload accepted by [`read_frame`] (16 MiB).
pub const MAX_FRAME_LEN: u32 = 16 << 20;

/// How a process ended, as written to `exit.json` and sent in answers and exit frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code; `128 + signal` when the process was killed by a signal (as Docker does).
    pub exit_code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// When the process ended, RFC 3339 with nanoseconds, UTC.
    pub exited_at: String,
    /// Whether the kernel OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
}

impl ExitStatus {
    /// Builds an exit status from a normal exit code.
    pub fn exited(code: i32, exited_at: String) -> Self {
        ExitStatus {
            exit_code: code,
            signal: None,
            exited_at,
            oom_killed: false,
        }
    }

    /// Builds an exit status for a death by `signal`: exit code `128 + signal`.
    pub fn signaled(signal: i32, exited_at: String) -> Self {
        ExitStatus {
            exit_code: 128 + signal,
            signal: Some(signal),
            exited_at,
            oom_killed: false,
        }
    }

    /// Maps a raw `wait(2)` status word. Returns `None` for stopped/continued states.
    pub fn from_wait_status(raw: i32, exited_at: String) -> Option<Self> {
        if libc::WIFEXITED(raw) {
            Some(Self::exited(libc::WEXITSTATUS(raw), exited_at))
        } else if libc::WIFSIGNALED(raw) {
            Some(Self::signaled(libc::WTERMSIG(raw), exited_at))
        } else {
            None
        }
    }
}

/// The state of the container's init process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, waiting for `start` before `execve`.
    Created,
    /// Running the container's program.
    Running,
    /// Exited; `exit` holds the status.
    Stopped,
}

/// One request, sent as a JSON line: `{"op":"…",…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// `{"op":"state"}`
    State,
    /// `{"op":"start"}`, with `"traceparent"` when the caller traces the start (the shim then
    /// times its `start` and `exit` work under it: [`SpanRecord`]).
    Start {
        /// W3C `traceparent` of the caller's span.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// `{"op":"kill","signal":N,"all":false}`
    Kill {
        /// Signal number.
        signal: i32,
        /// Signal every process in the container's cgroup, not only init.
        #[serde(default)]
        all: bool,
    },
    /// `{"op":"wait"}`: blocks until init exited.
    Wait,
    /// `{"op":"resize","width":W,"height":H}`
    Resize {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// `{"op":"delete"}`: removes the cgroup and ends the shim.
    Delete,
    /// `{"op":"pause"}`: freezes every process of the container's cgroup (the shim is not in
    /// it, so it goes on answering).
    Pause,
    /// `{"op":"resume"}`: thaws them.
    Resume,
    /// `{"op":"pids"}`: answers `pids`, the host pids of every process of the cgroup.
    Pids,
    /// `{"op":"stats"}`: answers `stats`, what the cgroup uses, and `cgroup`, its path.
    Stats,
    /// `{"op":"update","memory":N,"cpu_quota":N,"cpu_period":N,"pids":N}`: changes the
    /// limits of the container's cgroup (`docker update`); absent fields are kept. `memory`
    /// and `cpu_quota` -1 and `pids` 0 lift the limit.
    Update(Limits),
    /// `{"op":"reopenlog"}`: closes the container's log file and opens its path again
    /// (created when absent), answered once the new file is open: after a log rotation
    /// moved the file away (the kubelet's `ReopenContainerLog`), output goes to the path.
    ReopenLog,
    /// `{"op":"attach","stdin":bool}`: the connection switches to frames after the answer.
    Attach {
        /// Whether the client sends stdin frames.
        #[serde(default)]
        stdin: bool,
    },
    /// `{"op":"exec","args":[…],"env":["K=V"],"cwd":"/x","user":"name|uid[:gid]",
    /// "terminal":bool,"stdin":bool,"detach":bool}`: runs another process in the running
    /// container. Answers `{"ok":true,"pid":N}` once it runs; then (unless `detach`) the
    /// connection switches to the same frames as `attach`, the exit frame carrying the
    /// exec'd process's status.
    Exec {
        /// The command line; `args[0]` is looked up in `PATH` of the resulting env.
        args: Vec<String>,
        /// `KEY=VALUE` entries that override (or add to) the container's `process.env`.
        #[serde(default)]
        env: Vec<String>,
        /// Working folder; empty = the container's `process.cwd`.
        #[serde(default)]
        cwd: String,
        /// `name`, `uid`, `name:group`, `uid:gid`, …; empty = the container's process user.
        #[serde(default)]
        user: String,
        /// Run on a new pty made inside the container (output comes as stdout frames).
        #[serde(default)]
        terminal: bool,
        /// Whether the client sends stdin frames (otherwise stdin is `/dev/null`).
        #[serde(default)]
        stdin: bool,
        /// Answer once the pid is known and close; output is discarded, no frames.
        #[serde(default)]
        detach: bool,
    },
}

impl Request {
    /// The request as one JSON line (with the trailing `\n`).
    pub fn to_line(&self) -> String {
        to_line(self)
    }

    /// Parses a request line (trailing whitespace allowed).
    pub fn from_line(line: &str) -> io::Result<Self> {
        serde_json::from_str(line.trim_end()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad shim request: {e}"))
        })
    }
}

/// One answer, a JSON line: `{"ok":true,…}` or `{"ok":false,"error":"…","code":N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// `state`: the init's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `state`, `start`: host pid of the container's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// `state`, `wait`, `delete`: the exit status. `None` = field absent,
    /// `Some(None)` = `"exit":null` (state of a process that has not exited).
    /// Use [`Response::exit_status`] to read it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_some"
    )]
    pub exit: Option<Option<ExitStatus>>,
    /// `pids`: host pids of every process of the container's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<i32>>,
    /// `stats`: what the container's cgroup uses now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Box<Stats>>,
    /// `stats`: the container's cgroup, relative to each hierarchy's root (no leading `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Failure: a message for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failure: exit code hint (126, 127; 125 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// `state`, `start`, `delete`: the shim's traced work finished since the last such answer
    /// (each handed over once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<SpanRecord>,
}

/// A piece of the shim's work for a traced request (`create`, `start`, `exit`), timed by the
/// shim and handed back in an answer; the runtime exports it as a child of `parent`. The shim
/// links no exporter: this is all it knows about tracing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// What the work was: `create`, `start` or `exit`.
    pub name: String,
    /// The W3C `traceparent` of the span it belongs under.
    pub parent: String,
    /// When it began and ended, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Set when the work failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Facts about it: numbers, booleans or strings (`exit_code`, `init.pid`, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl SpanRecord {
    /// The time now, as [`SpanRecord::start_ns`] and [`SpanRecord::end_ns`] count it.
    pub fn now_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

// What a container's cgroup uses, the answer to `stats`, read by [`crate::cgroup::stats`]
// from either cgroup version's files in the same units.

/// New limits of a running container's cgroup (an `update` request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes; -1 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Microseconds per period; -1 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<u64>,
    /// Processes; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// `cpu.shares` (converted to `cpu.weight` on v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// cpuset lists (`0-2,4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
}

/// The figures of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Read from cgroup v2 (else v1).
    pub v2: bool,
    pub memory: Option<Memory>,
    pub cpu: Option<Cpu>,
    pub pids: Option<Pids>,
    /// Bytes read and written, by device: v1 `blkio.throttle.io_service_bytes_recursive`,
    /// v2 `io.stat`; absent without the controller (and from a shim older than the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio: Option<Vec<BlkioDevice>>,
}

/// The bytes a cgroup read from and wrote to one block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioDevice {
    pub major: u32,
    pub minor: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// Memory, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub usage: u64,
    /// v1 `memory.limit_in_bytes` (a huge number when unlimited), v2 `memory.max` (`max` is
    /// `u64::MAX`).
    pub limit: u64,
    /// v1 `memory.max_usage_in_bytes`, v2 `memory.peak` (0 on kernels without it).
    pub max_usage: u64,
    /// Page cache: v1 `total_cache`, v2 `file` of `memory.stat`.
    pub cache: u64,
    /// v1 `memory.memsw.usage_in_bytes` (memory and swap together, as the kernel counts it),
    /// v2 `memory.swap.current`; 0 when swap is not accounted.
    pub swap_usage: u64,
    /// v1 `memory.memsw.limit_in_bytes`, v2 `memory.swap.max`; 0 when swap is not accounted.
    pub swap_limit: u64,
}

/// CPU time, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// v1 `cpuacct.usage`, v2 `usage_usec` of `cpu.stat`.
    pub usage: u64,
    /// v1 `user` of `cpuacct.stat` (clock ticks), v2 `user_usec`.
    pub user: u64,
    /// v1 `system` of `cpuacct.stat`, v2 `system_usec`.
    pub system: u64,
    /// v1 `cpuacct.usage_percpu`; empty on v2, which has no such file.
    pub per_cpu: Vec<u64>,
    /// `cpu.stat`: CFS periods elapsed, periods throttled, and the time throttled.
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled: u64,
}

/// Processes (and threads) in the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    /// `pids.current`.
    pub current: u64,
    /// `pids.max`; 0 when there is no limit (`max`), as containerd reports it.
    pub limit: u64,
}

fn deserialize_some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl Response {
    /// `{"ok":true}`
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }

    /// `{"ok":false,"error":message,"code":code}`
    pub fn error(message: impl Into<String>, code: Option<i32>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            code,
            ..Default::default()
        }
    }

    /// The exit status carried by the answer, if any.
    pub fn exit_status(&self) -> Option<&ExitStatus> {
        self.exit.as_ref().and_then(|e| e.as_ref())
    }

    /// The exit code hint of a failed answer: `code`, or 125 when absent.
    pub fn error_code(&self) -> i32 {
        self.code.unwrap_or(125)
    }

    /// The answer as one JSON line (with the trailing `\n`).
    pub fn to_line(&self) -> String {
        to_line(self)
    }

    /// Parses an answer line.
    pub fn from_line(line: &str) -> io::Result<Self> {
        serde_json::from_str(line.trim_end()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad shim response: {e}"),
            )
        })
    }
}

fn to_line<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs cannot fail (string keys, no maps with non-string keys).
    let mut s = serde_json::to_string(v).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

/// Reads one `\n`-terminated line; `Ok(None)` on EOF before any byte.
pub fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut line = String::new();
    // Bound the line length so a broken peer cannot make us allocate without end.
    let n = r.by_ref().take(1 << 20).read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') && n as u64 >= (1 << 20) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request line too long",
        ));
    }
    Ok(Some(line))
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// One of the `FRAME_*` constants.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Encodes a frame into a new buffer: header + payload.
pub fn encode_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// Decodes a 5-byte frame header into `(kind, payload length)`.
pub fn decode_frame_header(header: [u8; 5]) -> (u8, u32) {
    (
        header[0],
        u32::from_be_bytes([header[1], header[2], header[3], header[4]]),
    )
}

/// Writes one frame (a single `write_all` of header + payload).
pub fn write_frame<W: Write>(w: &mut W, kind: u8, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode_frame(kind, payload))
}

/// Reads one frame; `Ok(None)` on a clean EOF at a frame boundary.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame header",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let (kind, len) = decode_frame_header(header);
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Some(Frame { kind, payload }))
}

/// Payload of a [`FRAME_RESIZE`] frame.
pub fn resize_payload(width: u32, height: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&width.to_be_bytes());
    p[4..].copy_from_slice(&height.to_be_bytes());
    p
}

/// Parses a [`FRAME_RESIZE`] payload into `(width, height)`.
pub fn parse_resize_payload(payload: &[u8]) -> Option<(u32, u32)> {
    if payload.len() != 8 {
        return None;
    }
    let w = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let h = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    Some((w, h))
}

/// Blocking convenience client: connects to `socket`, sends `req`, reads the answer.
/// For `attach`, use [`attach`] instead (the connection stays open).
pub fn call(socket: &std::path::Path, req: &Request) -> io::Result<Response> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("connect {}: {e}", socket.display())))?;
    stream.write_all(req.to_line().as_bytes())?;
    let mut reader = io::BufReader::new(stream);
    match read_line(&mut reader)? {
        Some(line) => Response::from_line(&line),
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "shim closed the connection without an answer",
        )),
    }
}

/// Blocking convenience client for `attach`: returns the connected stream, positioned at the
/// first frame, after a successful answer.
pub fn attach(socket: &std::path::Path, stdin: bool) -> io::Result<std::os::unix::net::UnixStream> {
    let (resp, stream) = call_keep(socket, &Request::Attach { stdin })?;
    if !resp.ok {
        return Err(io::Error::other(
            resp.error.unwrap_or_else(|| "attach refused".into()),
        ));
    }
    Ok(stream)
}

/// Blocking convenience client for `exec` (or any request whose connection goes on after the
/// answer): returns the answer and the connected stream, positioned at the first frame.
/// A refused exec is an `Ok` with `resp.ok == false` (see `resp.code`).
pub fn call_keep(
    socket: &std::path::Path,
    req: &Request,
) -> io::Result<(Response, std::os::unix::net::UnixStream)> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("connect {}: {e}", socket.display())))?;
    stream.write_all(req.to_line().as_bytes())?;
    // Read the answer byte by byte so no frame bytes are buffered away.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = stream.read(&mut b)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shim closed the connection without an answer",
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 1 << 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer too long",
            ));
        }
    }
    let resp = Response::from_line(&String::from_utf8_lossy(&line))?;
    Ok((resp, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let reqs = [
            Request::State,
            Request::Start { traceparent: None },
            Request::Kill {
                signal: 9,
                all: true,
            },
            Request::Wait,
            Request::Resize {
                width: 80,
                height: 24,
            },
            Request::Delete,
            Request::ReopenLog,
            Request::Attach { stdin: true },
            Request::Exec {
                args: vec!["sh".into(), "-c".into(), "id".into()],
                env: vec!["A=1".into()],
                cwd: "/tmp".into(),
                user: "app:staff".into(),
                terminal: true,
                stdin: true,
                detach: false,
            },
        ];
        for r in reqs {
            let line = r.to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(Request::from_line(&line).unwrap(), r);
        }
    }

    #[test]
    fn request_wire_format() {
        assert_eq!(Request::State.to_line(), "{\"op\":\"state\"}\n");
        assert_eq!(Request::ReopenLog.to_line(), "{\"op\":\"reopenlog\"}\n");
        assert_eq!(
            Request::from_line(r#"{"op":"kill","signal":15}"#).unwrap(),
            Request::Kill {
                signal: 15,
                all: false
            }
        );
        assert_eq!(
            Request::from_line(r#"{"op":"attach"}"#).unwrap(),
            Request::Attach { stdin: false }
        );
        assert!(Request::from_line(r#"{"op":"bogus"}"#).is_err());
        assert_eq!(
            Request::from_line(r#"{"op":"exec","args":["ps"]}"#).unwrap(),
            Request::Exec {
                args: vec!["ps".into()],
                env: vec![],
                cwd: String::new(),
                user: String::new(),
                terminal: false,
                stdin: false,
                detach: false,
            }
        );
    }

    #[test]
    fn response_exit_null_vs_absent() {
        let mut r = Response::ok();
        r.status = Some(Status::Running);
        r.pid = Some(42);
        r.exit = Some(None);
        let line = r.to_line();
        assert_eq!(
            line,
            "{\"ok\":true,\"status\":\"running\",\"pid\":42,\"exit\":null}\n"
        );
        let back = Response::from_line(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.exit_status(), None);

        let start = Response::from_line(r#"{"ok":true,"pid":7}"#).unwrap();
        assert_eq!(start.exit, None);
        assert_eq!(start.pid, Some(7));

        let mut w = Response::ok();
        w.exit = Some(Some(ExitStatus::signaled(
            9,
            "2024-01-01T00:00:00.000000000Z".into(),
        )));
        let back = Response::from_line(&w.to_line()).unwrap();
        assert_eq!(back.exit_status().unwrap().exit_code, 137);
        assert_eq!(back.exit_status().unwrap().signal, Some(9));
    }

    #[test]
    fn start_carries_an_optional_traceparent() {
        let untraced = Request::Start { traceparent: None };
        assert_eq!(untraced.to_line(), "{\"op\":\"start\"}\n");
        assert_eq!(Request::from_line(r#"{"op":"start"}"#).unwrap(), untraced);
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let traced = Request::Start {
            traceparent: Some(tp.into()),
        };
        assert_eq!(
            traced.to_line(),
            format!("{{\"op\":\"start\",\"traceparent\":\"{tp}\"}}\n")
        );
        assert_eq!(Request::from_line(&traced.to_line()).unwrap(), traced);
    }

    #[test]
    fn spans_ride_on_answers_only_when_there_are_some() {
        assert_eq!(Response::ok().to_line(), "{\"ok\":true}\n");
        let mut r = Response::ok();
        let mut attributes = serde_json::Map::new();
        attributes.insert("exit_code".into(), 0.into());
        r.spans.push(SpanRecord {
            name: "exit".into(),
            parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            start_ns: 1,
            end_ns: 2,
            error: None,
            attributes,
        });
        let line = r.to_line();
        assert!(
            line.contains(r#""spans":[{"name":"exit","#) && line.contains(r#""exit_code":0"#),
            "{line}"
        );
        assert_eq!(Response::from_line(&line).unwrap(), r);
        assert!(SpanRecord::now_ns() > 1_600_000_000_000_000_000);
    }

    #[test]
    fn response_error() {
        let e = Response::error("exec: \"x\": executable file not found in $PATH", Some(127));
        let line = e.to_line();
        let back = Response::from_line(&line).unwrap();
        assert!(!back.ok);
        assert_eq!(back.error_code(), 127);
        assert_eq!(Response::error("x", None).error_code(), 125);
    }

    #[test]
    fn exit_status_json() {
        let s = ExitStatus::exited(7, "2024-05-06T07:08:09.123456789Z".into());
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            r#"{"exit_code":7,"signal":null,"exited_at":"2024-05-06T07:08:09.123456789Z","oom_killed":false}"#
        );
        let back: ExitStatus = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn exit_status_mapping() {
        // exit(7): status word 7 << 8
        let s = ExitStatus::from_wait_status(7 << 8, String::new()).unwrap();
        assert_eq!((s.exit_code, s.signal), (7, None));
        // killed by SIGKILL: status word 9
        let s = ExitStatus::from_wait_status(9, String::new()).unwrap();
        assert_eq!((s.exit_code, s.signal), (137, Some(9)));
        // SIGSEGV with core dump: 11 | 0x80
        let s = ExitStatus::from_wait_status(11 | 0x80, String::new()).unwrap();
        assert_eq!((s.exit_code, s.signal), (139, Some(11)));
        // stopped: 0x7f | (SIGSTOP << 8)
        assert!(ExitStatus::from_wait_status(0x7f | (19 << 8), String::new()).is_none());
    }

    #[test]
    fn frame_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FRAME_STDOUT, b"hello\n").unwrap();
        write_frame(&mut buf, FRAME_CLOSE_STDIN, b"").unwrap();
        write_frame(&mut buf, FRAME_RESIZE, &resize_payload(120, 40)).unwrap();
        assert_eq!(&buf[..5], &[1, 0, 0, 0, 6]);
        let mut r = &buf[..];
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(
            (f.kind, f.payload.as_slice()),
            (FRAME_STDOUT, &b"hello\n"[..])
        );
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((f.kind, f.payload.len()), (FRAME_CLOSE_STDIN, 0));
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(parse_resize_payload(&f.payload), Some((120, 40)));
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn frame_errors() {
        let mut r = &[1u8, 0, 0][..];
        assert!(read_frame(&mut r).is_err());
        let mut r = &[1u8, 0xff, 0xff, 0xff, 0xff][..];
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut r = &[1u8, 0, 0, 0, 4, b'a'][..];
        assert!(read_frame(&mut r).is_err());
        assert_eq!(parse_resize_payload(&[0; 3]), None);
    }
}
