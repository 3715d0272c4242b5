//! Docker's views of events: the API's event messages (`GET /events`) and the lines
//! `docker events` prints.

use crate::time;
use berth_api::events::v1 as eapi;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One line of `docker events`: time, type, action, id, then the attributes sorted by key.
pub fn event_line(e: &eapi::Envelope) -> String {
    let attrs: BTreeMap<_, _> = e.attributes.iter().collect();
    let attrs = attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = format!(
        "{} {} {} {}",
        time::rfc3339_nano_fixed(e.timestamp.as_ref()),
        e.r#type,
        e.action,
        e.id
    );
    if !attrs.is_empty() {
        line.push_str(&format!(" ({attrs})"));
    }
    line
}

/// Docker's event message: Type, Action, Actor {ID, Attributes}, scope, time, timeNano, and
/// for containers and images the legacy `status`, `id` (and `from`: the container's image).
pub fn event_message(e: &eapi::Envelope) -> Value {
    let t = e.timestamp.unwrap_or_default();
    let attributes: BTreeMap<_, _> = e.attributes.iter().collect();
    let mut m = json!({
        "Type": e.r#type,
        "Action": e.action,
        "Actor": {"ID": e.id, "Attributes": attributes},
        "scope": "local",
        "time": t.seconds,
        "timeNano": t.seconds as i128 * 1_000_000_000 + i128::from(t.nanos),
    });
    if matches!(e.r#type.as_str(), "container" | "image") {
        m["status"] = json!(e.action);
        m["id"] = json!(e.id);
        if let Some(image) = e
            .attributes
            .get("image")
            .filter(|_| e.r#type == "container")
        {
            m["from"] = json!(image);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_event_message() {
        let e = eapi::Envelope {
            timestamp: Some(berth_api::prost_types::Timestamp {
                seconds: 2,
                nanos: 5,
            }),
            namespace: "default".into(),
            r#type: "container".into(),
            action: "start".into(),
            id: "abc".into(),
            attributes: [("image".to_string(), "busybox".to_string())].into(),
        };
        let m = event_message(&e);
        assert_eq!(m["timeNano"], json!(2_000_000_005i64));
        assert_eq!(m["from"], "busybox");
        assert_eq!(m["status"], "start");
        assert_eq!(m["Actor"]["Attributes"]["image"], "busybox");
        let v = eapi::Envelope {
            r#type: "volume".into(),
            ..e
        };
        assert!(event_message(&v).get("status").is_none());
    }
}
