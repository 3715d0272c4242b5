//! Publishing container and volume events to the Events service. A publish never blocks the
//! caller and never fails it: events go through one queue, published in order by one task,
//! and a failure is only logged.

use crate::Runtime;
use berth_api::events::v1::{Envelope, PublishRequest};
use berth_core::grpc::request;
use std::collections::HashMap;

impl Runtime {
    /// Publishes `type`/`action` about `id` in namespace `ns`, with `attributes`.
    pub fn publish(
        &self,
        ns: &str,
        typ: &str,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
    ) {
        let Some(client) = self.events.clone() else {
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
        let queue = self.event_queue.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Envelope>();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    while let Some(event) = rx.recv().await {
                        let (ns, action, id) =
                            (event.namespace.clone(), event.action.clone(), event.id.clone());
                        if let Err(e) = client
                            .clone()
                            .publish(request(&ns, PublishRequest { event: Some(event) }))
                            .await
                        {
                            tracing::warn!(%action, %id, error = %e.message(), "cannot publish event");
                        }
                    }
                });
            }
            tx
        });
        let _ = queue.send(event);
    }

    /// Publishes a container event with the container's name and image as attributes (when
    /// the record still exists) plus `extra`.
    pub fn publish_container(&self, ns: &str, id: &str, action: &str, extra: &[(&str, String)]) {
        if self.events.is_none() {
            return;
        }
        let mut attributes = HashMap::new();
        if let Ok(Some(c)) = self.store.get(ns, id) {
            attributes.insert("name".to_string(), c.name.clone());
            attributes.insert("image".to_string(), c.image.clone());
        }
        for (k, v) in extra {
            attributes.insert(k.to_string(), v.clone());
        }
        self.publish(ns, "container", action, id, attributes);
    }
}
