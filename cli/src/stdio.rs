//! The terminal side of attach and exec: raw mode, window size, relaying stdin and resizes
//! into a request stream, and printing the output that comes back. `run`, `start -a` and
//! `exec` share it, over attach's or exec's messages alike.

use crate::client::Error;
use berth_api::tasks::v1 as tapi;
use std::io::{IsTerminal, Read, Write};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// A request of an attach or exec stream that carries our terminal's input.
pub trait TerminalInput: Send + 'static {
    fn stdin(data: Vec<u8>) -> Self;
    fn close_stdin() -> Self;
    fn resize(size: tapi::ResizeRequest) -> Self;
}

/// What a response of an attach or exec stream says to print, or that the process exited.
#[derive(Debug)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    /// Nothing to print (exec's pid, an empty message).
    Other,
}

/// A response of an attach or exec stream.
pub trait StreamOutput {
    fn into_output(self) -> Output;
}

/// Implements [`TerminalInput`] and [`StreamOutput`] for one stream's generated types
/// (attach's or exec's), whose `oneof` items have the same variants in modules of their own.
macro_rules! terminal_stream {
    ($request:ident, $request_item:ident, $response:ident, $response_item:ident) => {
        impl TerminalInput for tapi::$request {
            fn stdin(data: Vec<u8>) -> Self {
                tapi::$request {
                    item: Some(tapi::$request_item::Item::Stdin(data)),
                }
            }
            fn close_stdin() -> Self {
                tapi::$request {
                    item: Some(tapi::$request_item::Item::CloseStdin(true)),
                }
            }
            fn resize(size: tapi::ResizeRequest) -> Self {
                tapi::$request {
                    item: Some(tapi::$request_item::Item::Resize(size)),
                }
            }
        }

        impl StreamOutput for tapi::$response {
            fn into_output(self) -> Output {
                use tapi::$response_item::Item;
                match self.item {
                    Some(Item::Stdout(b)) => Output::Stdout(b),
                    Some(Item::Stderr(b)) => Output::Stderr(b),
                    Some(Item::Exit(e)) => Output::Exit(e.exit_code),
                    _ => Output::Other,
                }
            }
        }
    };
}

terminal_stream!(
    AttachRequest,
    attach_request,
    AttachResponse,
    attach_response
);
terminal_stream!(ExecRequest, exec_request, ExecResponse, exec_response);

/// Relays our terminal into an attach or exec stream for container `id`: with `tty` its size
/// now and on every change, in raw mode while the returned guard lives; with `stdin` our
/// stdin, then its end.
pub async fn relay_terminal<M: TerminalInput>(
    tx: &mpsc::Sender<M>,
    id: &str,
    stdin: bool,
    tty: bool,
) -> Option<RawTerminal> {
    let raw = (tty && std::io::stdin().is_terminal()).then(RawTerminal::enable);
    if tty {
        relay_resizes(tx, id, M::resize).await;
    }
    if stdin {
        relay_stdin(tx.clone(), M::stdin, M::close_stdin);
    }
    raw
}

/// Prints an attach or exec stream's output as it comes; the exit code that ends it, or None
/// when the stream ends without one.
pub async fn print_output<R: StreamOutput>(
    output: &mut tonic::Streaming<R>,
) -> Result<Option<i32>, Error> {
    while let Some(m) = output.next().await {
        match m?.into_output() {
            Output::Stdout(b) => write_stdout(&b)?,
            Output::Stderr(b) => write_stderr(&b)?,
            Output::Exit(code) => return Ok(Some(code)),
            Output::Other => {}
        }
    }
    Ok(None)
}

/// Asks Docker's `[y/N]` question after `warning` (a prune's); whether the answer is yes.
pub fn confirm(warning: &str) -> bool {
    eprint!("WARNING! {warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// Puts the terminal in raw mode while it lives.
#[derive(Debug)]
pub struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    pub fn enable() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        match tcgetattr(&stdin) {
            Ok(saved) => {
                let mut raw = saved.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
                RawTerminal(Some(saved))
            }
            Err(_) => RawTerminal(None),
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// The size of our terminal (columns, rows), if stdout or stdin is one.
pub fn terminal_size() -> Option<(u32, u32)> {
    // SAFETY: winsize is a plain C struct of integers, for which all zeroes is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own; fd 1 or 0 is ours to query.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0
        || unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// Sends the terminal's size now, then again on every SIGWINCH until the stream closes.
async fn relay_resizes<M: Send + 'static>(
    tx: &mpsc::Sender<M>,
    id: &str,
    wrap: fn(tapi::ResizeRequest) -> M,
) {
    let resize = |id: &str| {
        terminal_size().map(|(w, h)| tapi::ResizeRequest {
            container_id: id.to_string(),
            width: w,
            height: h,
        })
    };
    if let Some(r) = resize(id) {
        let _ = tx.send(wrap(r)).await;
    }
    let (tx, id) = (tx.clone(), id.to_string());
    tokio::spawn(async move {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(r) = resize(&id) {
                if tx.send(wrap(r)).await.is_err() {
                    break;
                }
            }
        }
    });
}

/// Reads our stdin in a thread (it blocks) and sends it on, then `close()` at its end.
fn relay_stdin<M: Send + 'static>(tx: mpsc::Sender<M>, data: fn(Vec<u8>) -> M, close: fn() -> M) {
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(data(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.blocking_send(close());
    });
}

pub fn write_stdout(b: &[u8]) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(b)?;
    o.flush()
}

pub fn write_stderr(b: &[u8]) -> std::io::Result<()> {
    let mut o = std::io::stderr().lock();
    o.write_all(b)?;
    o.flush()
}
