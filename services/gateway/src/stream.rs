//! Docker's JSON streams (`docker pull`, `push`, `build`, `load`): one JSON object a line,
//! written as the work goes. A handler hands [`json_lines`] a future that sends the lines to
//! a [`Lines`]; an error it ends with becomes Docker's `errorDetail` line (the client prints
//! it and exits 1), since the answer's 200 has gone out with the first line.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::future::Future;
use tokio::sync::mpsc;

/// Where a streaming handler writes its lines.
#[derive(Debug, Clone)]
pub struct Lines(mpsc::Sender<Value>);

impl Lines {
    /// Sends one line; false when the client has gone (the work may stop).
    pub async fn send(&self, v: Value) -> bool {
        self.0.send(v).await.is_ok()
    }
}

/// A 200 `application/json` answer streaming what `work` sends, then its error line if it
/// fails with one.
pub fn json_lines<F, Fut>(work: F) -> Response
where
    F: FnOnce(Lines) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Value>(64);
    let lines = Lines(tx.clone());
    tokio::spawn(async move {
        if let Err(message) = work(lines).await {
            let _ = tx.send(berth_docker::error_line(&message)).await;
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(|v| {
        let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes)
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

use tokio_stream::StreamExt as _;
