//! Publishing container and volume events to the Events service: [`Events`] owns the
//! [`berth_events::Publisher`] (ordered, never blocking, failures only logged) and reads a
//! container's name and image from the records for the event's attributes.

use crate::metadata::Store;
use std::collections::HashMap;

/// Where the runtime's rooms publish what happened to containers and volumes.
#[derive(Debug)]
pub struct Events {
    publisher: berth_events::Publisher,
    store: Store,
}

impl Events {
    /// Events published through `publisher`, with attributes read from `store`.
    pub fn new(publisher: berth_events::Publisher, store: Store) -> Events {
        Events { publisher, store }
    }

    /// Publishes `type`/`action` about `id` in namespace `ns`, with `attributes`.
    pub fn publish(
        &self,
        ns: &str,
        typ: &str,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
    ) {
        self.publisher.publish(ns, typ, action, id, attributes);
    }

    /// Publishes a container event with the container's name and image as attributes (when
    /// the record still exists) plus `extra`.
    pub fn publish_container(&self, ns: &str, id: &str, action: &str, extra: &[(&str, String)]) {
        if !self.publisher.enabled() {
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
