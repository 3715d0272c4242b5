//! The client side: how a service publishes to the Events service. A publish never blocks
//! the caller and never fails it: events go through one queue, are published in order by
//! one task, and a failure is only logged.

use berth_api::events::v1::{events_client::EventsClient, Envelope, PublishRequest};
use berth_api::prost_types;
use berth_core::grpc::request;
use std::collections::HashMap;
use std::sync::OnceLock;
use tokio::sync::mpsc::UnboundedSender;
use tonic::transport::Channel;

/// Publishes events to the Events service at a channel; does nothing without one.
#[derive(Debug, Default)]
pub struct Publisher {
    client: Option<EventsClient<Channel>>,
    queue: OnceLock<UnboundedSender<Envelope>>,
}

impl Publisher {
    pub fn new(events: Option<Channel>) -> Publisher {
        Publisher {
            client: events.map(EventsClient::new),
            queue: OnceLock::new(),
        }
    }

    /// Whether events go anywhere.
    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Publishes `typ`/`action` about `id` in namespace `ns`, with `attributes`.
    pub fn publish(
        &self,
        ns: &str,
        typ: &str,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
    ) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let event = Envelope {
            timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            namespace: ns.to_string(),
            r#type: typ.to_string(),
            action: action.to_string(),
            id: id.to_string(),
            attributes,
        };
        let queue = self.queue.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Envelope>();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    while let Some(event) = rx.recv().await {
                        let (ns, action, id) = (event.namespace.clone(), event.action.clone(), event.id.clone());
                        if let Err(e) = client.clone().publish(request(&ns, PublishRequest { event: Some(event) })).await {
                            tracing::warn!(%action, %id, error = %e.message(), "cannot publish event");
                        }
                    }
                });
            }
            tx
        });
        let _ = queue.send(event);
    }
}
