//! Publishing container, network and volume events to the Events service: [`Events`] owns the
//! [`berth_events::Publisher`] (ordered, never blocking, failures only logged) and reads a
//! container's name and image from the records for the event's attributes.

use crate::metadata::Store;
use berth_api::containers::v1::Container;
use berth_api::networks::v1::Network;
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

    /// Publishes a container event with the container's labels, name and image as attributes
    /// (when the record still exists) plus `extra`.
    pub fn publish_container(&self, ns: &str, id: &str, action: &str, extra: &[(&str, String)]) {
        if !self.publisher.enabled() {
            return;
        }
        let mut attributes = match self.store.get(ns, id) {
            Ok(Some(c)) => container_attributes(&c),
            _ => HashMap::new(),
        };
        for (k, v) in extra {
            attributes.insert(k.to_string(), v.clone());
        }
        self.publish(ns, "container", action, id, attributes);
    }

    /// Publishes Docker's network event: `create`, `destroy`, `connect` or `disconnect` about
    /// network `n`, its name and driver (`type`) as attributes, and for the last two the
    /// container's id.
    pub fn publish_network(&self, ns: &str, n: &Network, action: &str, container: Option<&str>) {
        self.publish(
            ns,
            "network",
            action,
            &n.id,
            network_attributes(n, container),
        );
    }
}

/// Docker's attributes of a container event: the container's labels, then its `name` and
/// `image` (which win over labels of the same keys). With the labels there, a subscriber
/// (the CRI's event stream, `--filter label=`) knows what a `destroy` was about after the
/// record is gone.
pub fn container_attributes(c: &Container) -> HashMap<String, String> {
    let mut attributes = c.labels.clone();
    attributes.insert("name".to_string(), c.name.clone());
    attributes.insert("image".to_string(), c.image.clone());
    attributes
}

/// Docker's attributes of a network event: `name`, `type`, and `container` when one joins
/// or leaves.
fn network_attributes(n: &Network, container: Option<&str>) -> HashMap<String, String> {
    let mut attributes = HashMap::from([
        ("name".to_string(), n.name.clone()),
        ("type".to_string(), n.driver.clone()),
    ]);
    if let Some(c) = container {
        attributes.insert("container".to_string(), c.to_string());
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_event_carries_its_labels_under_its_name_and_image() {
        let c = Container {
            name: "web".into(),
            image: "busybox".into(),
            labels: HashMap::from([
                ("io.berth.cri.kind".to_string(), "container".to_string()),
                ("name".to_string(), "a label".to_string()),
            ]),
            ..Default::default()
        };
        let a = container_attributes(&c);
        assert_eq!(a["io.berth.cri.kind"], "container");
        assert_eq!(
            (a["name"].as_str(), a["image"].as_str()),
            ("web", "busybox")
        );
    }

    #[test]
    fn a_network_event_names_the_network_and_the_container() {
        let n = Network {
            id: "f00d".into(),
            name: "appnet".into(),
            driver: "bridge".into(),
            ..Default::default()
        };
        let created = network_attributes(&n, None);
        assert_eq!(created.len(), 2);
        assert_eq!(created["name"], "appnet");
        assert_eq!(created["type"], "bridge");
        assert_eq!(network_attributes(&n, Some("c1"))["container"], "c1");
    }
}
