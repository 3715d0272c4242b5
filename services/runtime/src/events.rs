//! Publishing container and volume events to the Events service, through
//! [`berth_events::Publisher`] (ordered, never blocking, failures only logged).

use crate::Runtime;
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
        self.events.publish(ns, typ, action, id, attributes);
    }

    /// Publishes a container event with the container's name and image as attributes (when
    /// the record still exists) plus `extra`.
    pub fn publish_container(&self, ns: &str, id: &str, action: &str, extra: &[(&str, String)]) {
        if !self.events.enabled() {
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
