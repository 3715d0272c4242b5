//! What a build tells its client while it runs: an [`Event`] for each step started and done,
//! the lines a person reads (`Pulling …`, ` ---> Using cache`), a RUN's output, and the
//! result. The executor sends them through a [`Report`]; the gRPC shell turns them into
//! `BuildResponse` messages.

use tokio::sync::mpsc;

/// One thing a build reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Step `number` of `total` starts: the instruction as written, and its line.
    Step {
        number: usize,
        total: usize,
        instruction: String,
        line: usize,
    },
    /// A line for the person ("Pulling …", " ---> Running in …").
    Message(String),
    /// A RUN's output.
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The step is done: its image, whether it came from the cache, and for RUN the
    /// container that ran it (removed already).
    StepDone {
        image_id: String,
        cached: bool,
        container_id: String,
    },
    /// The build is done: the final image and the tags it got, as normalised references.
    Built {
        image_id: String,
        tags: Vec<String>,
    },
}

/// Where a build's progress goes. A client that went away is not an error: the build goes on
/// and its events are dropped.
#[derive(Debug, Clone)]
pub struct Report(mpsc::Sender<Event>);

impl Report {
    pub fn new(tx: mpsc::Sender<Event>) -> Report {
        Report(tx)
    }

    pub(crate) async fn send(&self, event: Event) {
        let _ = self.0.send(event).await;
    }

    pub(crate) async fn message(&self, m: impl Into<String>) {
        self.send(Event::Message(m.into())).await
    }

    pub(crate) async fn done(&self, image_id: &str, cached: bool, container_id: &str) {
        self.send(Event::StepDone {
            image_id: image_id.to_string(),
            cached,
            container_id: container_id.to_string(),
        })
        .await
    }
}
