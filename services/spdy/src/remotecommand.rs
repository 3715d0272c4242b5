//! Kubernetes' remote-command protocol, server side (`v4.channel.k8s.io` over SPDY): what the
//! kubelet's streaming server speaks for `exec` and `attach`.
//!
//! The client opens one stream per channel, each with a `streamType` header: `error` always,
//! `stdin`, `stdout`, `stderr` when the URL's query asks for them (`stdin=1&stdout=1…`;
//! `stderr` is merged into stdout with `tty=1`) and `resize` with `tty=1`. [`accept`] waits
//! for exactly that set (or fails after a timeout); the CRI service then copies the process's
//! stdio to and from the streams, applies [`RemoteCommand::resize`] events and ends with
//! [`RemoteCommand::finish`], which writes v4's `metav1.Status` on the `error` stream
//! (`Success`, or `Failure` with reason `NonZeroExitCode` and the exit code as a cause) and
//! closes the session.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::session::{Session, Stream};

/// The channel protocol this module speaks.
pub const PROTOCOL_V4: &str = "v4.channel.k8s.io";
/// How long Kubernetes waits for a client's streams by default.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`RemoteCommand::finish`] waits for the client to take the last bytes.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Which channels an exec/attach asked for (its URL's query).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Channels {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Channels {
    /// Reads `stdin`, `stdout`, `stderr` and `tty` from a query string (`1`/`true` are on).
    pub fn from_query(query: &str) -> Result<Channels, RemoteCommandError> {
        let mut channels = Channels::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "stdin" => &mut channels.stdin,
                "stdout" => &mut channels.stdout,
                "stderr" => &mut channels.stderr,
                "tty" => &mut channels.tty,
                _ => continue,
            };
            *slot = match value {
                "1" | "true" | "True" | "TRUE" => true,
                "0" | "false" | "False" | "FALSE" | "" => false,
                other => {
                    return Err(RemoteCommandError::BadQuery(format!(
                        "{name}={other}: expected 1/true or 0/false"
                    )))
                }
            };
        }
        if !channels.stdin && !channels.stdout && !channels.stderr {
            return Err(RemoteCommandError::BadQuery(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        Ok(channels)
    }

    fn expects_stderr(&self) -> bool {
        self.stderr && !self.tty
    }

    fn expected(&self) -> usize {
        1 + usize::from(self.stdin)
            + usize::from(self.stdout)
            + usize::from(self.expects_stderr())
            + usize::from(self.tty)
    }
}

/// A terminal size the client asks for (`{"Width":…,"Height":…}` on the resize stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How the command ended, for [`RemoteCommand::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code (0 is success).
    Exited(i32),
    /// The command could not run or be followed; the message says why.
    Error(String),
}

/// Why a remote-command exchange failed before the command ran.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCommandError {
    #[error("invalid exec/attach query: {0}")]
    BadQuery(String),
    #[error("timed out after {0:?} waiting for the client's streams ({1} of {2} arrived)")]
    Timeout(Duration, usize, usize),
    #[error("the client closed the connection before opening its streams ({0} of {1} arrived)")]
    Closed(usize, usize),
    #[error("unexpected stream from the client: {0}")]
    UnexpectedStream(String),
    #[error("writing the status: {0}")]
    Io(#[from] std::io::Error),
}

/// An exec or attach whose streams are all open: the CRI service drives it.
#[derive(Debug)]
pub struct RemoteCommand {
    /// What the client sends to the process; EOF when it closes stdin.
    pub stdin: Option<Stream>,
    /// Where the process's stdout goes (with stderr merged, under a tty).
    pub stdout: Option<Stream>,
    /// Where the process's stderr goes (never with a tty).
    pub stderr: Option<Stream>,
    /// Terminal sizes the client asks for, in order (with a tty).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    channels: Channels,
    error: Stream,
    session: Session,
}

/// Waits (up to `timeout`) for the streams `channels` calls for on `session`.
pub async fn accept(
    mut session: Session,
    channels: Channels,
    timeout: Duration,
) -> Result<RemoteCommand, RemoteCommandError> {
    let expected = channels.expected();
    let mut got = Streams::default();
    let wait = async {
        while got.count() < expected {
            let Some(stream) = session.accept().await else {
                return Err(RemoteCommandError::Closed(got.count(), expected));
            };
            got.place(stream, &channels)?;
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(RemoteCommandError::Timeout(timeout, got.count(), expected)),
    }
    let error = got
        .error
        .take()
        .ok_or(RemoteCommandError::Closed(0, expected))?;
    Ok(RemoteCommand {
        stdin: got.stdin,
        stdout: got.stdout,
        stderr: got.stderr,
        resize: got.resize.map(watch_resizes),
        channels,
        error,
        session,
    })
}

#[derive(Debug, Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn count(&self) -> usize {
        [
            &self.error,
            &self.stdin,
            &self.stdout,
            &self.stderr,
            &self.resize,
        ]
        .iter()
        .filter(|s| s.is_some())
        .count()
    }

    fn place(&mut self, stream: Stream, channels: &Channels) -> Result<(), RemoteCommandError> {
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let (slot, wanted) = match kind.as_str() {
            "error" => (&mut self.error, true),
            "stdin" => (&mut self.stdin, channels.stdin),
            "stdout" => (&mut self.stdout, channels.stdout),
            "stderr" => (&mut self.stderr, channels.expects_stderr()),
            "resize" => (&mut self.resize, channels.tty),
            _ => {
                return Err(RemoteCommandError::UnexpectedStream(format!(
                    "streamType {kind:?}"
                )))
            }
        };
        if !wanted {
            return Err(RemoteCommandError::UnexpectedStream(format!(
                "{kind}, which the request did not ask for"
            )));
        }
        if slot.is_some() {
            return Err(RemoteCommandError::UnexpectedStream(format!(
                "a second {kind} stream"
            )));
        }
        *slot = Some(stream);
        Ok(())
    }
}

/// Decodes the resize stream's JSON values into sizes, until the client closes it.
fn watch_resizes(mut stream: Stream) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            let mut values = serde_json::Deserializer::from_slice(&pending).into_iter();
            let mut used = 0;
            loop {
                match values.next() {
                    Some(Ok(size)) => {
                        used = values.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "malformed resize message; ignoring the stream");
                        return;
                    }
                }
            }
            pending.drain(..used);
            // one size is a few dozen bytes: more pending than this is not a size
            if pending.len() > 4096 {
                tracing::debug!("resize message over 4 KiB; ignoring the stream");
                return;
            }
        }
    });
    rx
}

impl RemoteCommand {
    /// The channels the request asked for.
    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// Reports how the command ended on the `error` stream, closes every stream still held
    /// here (FIN), and closes the connection once all of it is written.
    pub async fn finish(mut self, outcome: Outcome) -> Result<(), RemoteCommandError> {
        for stream in [self.stdout.take(), self.stderr.take(), self.stdin.take()]
            .into_iter()
            .flatten()
        {
            drop(stream);
        }
        let status = status_json(&outcome);
        let written = async {
            self.error.write_all(status.as_bytes()).await?;
            self.error.shutdown().await
        }
        .await;
        self.session.shutdown();
        if tokio::time::timeout(FINISH_TIMEOUT, self.session.closed())
            .await
            .is_err()
        {
            // the client stopped reading: do not wait for it forever
            self.session.abort();
        }
        written.map_err(RemoteCommandError::from)
    }
}

/// v4's `metav1.Status` for an outcome.
pub fn status_json(outcome: &Outcome) -> String {
    let status = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Error(message) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: {message}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": format!("error executing command in container: {message}")}]},
            "code": 500,
        }),
    };
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_from_query() {
        let channels = Channels::from_query("command=sh&stdin=1&stdout=true&tty=1").unwrap();
        assert_eq!(
            channels,
            Channels {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        assert_eq!(channels.expected(), 4);
        let channels = Channels::from_query("stdout=1&stderr=1").unwrap();
        assert_eq!(channels.expected(), 3);
        assert!(Channels::from_query("stdin=maybe").is_err());
        assert!(Channels::from_query("command=ls").is_err());
    }

    #[test]
    fn statuses_read_like_kubernetes() {
        let ok: serde_json::Value =
            serde_json::from_str(&status_json(&Outcome::Exited(0))).unwrap();
        assert_eq!(ok, serde_json::json!({"metadata": {}, "status": "Success"}));
        let failed: serde_json::Value =
            serde_json::from_str(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let error: serde_json::Value =
            serde_json::from_str(&status_json(&Outcome::Error("no such container".into())))
                .unwrap();
        assert_eq!(error["status"], "Failure");
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("no such container"));
    }
}
