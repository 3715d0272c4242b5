//! How CRI objects are kept: a pod sandbox and each container in it is one berth container
//! in namespace `k8s.io`, and the CRI's view of it (its kind, pod, metadata, labels,
//! annotations, log path) travels in that container's berth labels under `io.berth.cri.*`,
//! as containerd keeps `io.cri-containerd.kind`. Nothing is stored beside berth's own
//! records, so a restarted berthd (or another CRI front) reads the same pods.
//!
//! Also here: what both kinds share — the kubelet's filters (id prefix, label selector) and
//! berth's timestamps in the CRI's nanoseconds.

use berth_api::containers::v1 as api;
use std::collections::HashMap;
use tonic::Status;

/// Label: `sandbox` or `container`.
pub const KIND: &str = "io.berth.cri.kind";
/// [`KIND`] of a pod sandbox.
pub const KIND_SANDBOX: &str = "sandbox";
/// [`KIND`] of a container in a sandbox.
pub const KIND_CONTAINER: &str = "container";
/// Label: the id of the sandbox a container belongs to.
pub const SANDBOX_ID: &str = "io.berth.cri.sandbox-id";
/// Labels of the metadata: name, uid (sandbox), namespace (sandbox), attempt.
pub const NAME: &str = "io.berth.cri.name";
pub const UID: &str = "io.berth.cri.uid";
pub const POD_NAMESPACE: &str = "io.berth.cri.namespace";
pub const ATTEMPT: &str = "io.berth.cri.attempt";
/// Label: the CRI labels, as a JSON object.
pub const LABELS: &str = "io.berth.cri.labels";
/// Label: the CRI annotations, as a JSON object.
pub const ANNOTATIONS: &str = "io.berth.cri.annotations";
/// Label (sandbox): its log directory; (container): its log path under it.
pub const LOG_DIRECTORY: &str = "io.berth.cri.log-directory";
pub const LOG_PATH: &str = "io.berth.cri.log-path";
/// Label (sandbox): its namespace modes, `network,pid,ipc` as the CRI numbers them.
pub const NAMESPACE_MODES: &str = "io.berth.cri.namespace-modes";
/// Label (container): the image as the kubelet named it.
pub const IMAGE: &str = "io.berth.cri.image";

/// A map as the JSON object kept in a label.
pub fn map_label(map: &HashMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

/// The map kept in label `key` of `c` (empty when absent or unreadable).
pub fn map_of(c: &api::Container, key: &str) -> HashMap<String, String> {
    c.labels
        .get(key)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Label `key` of `c`, or "".
pub fn label<'a>(c: &'a api::Container, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or("")
}

/// Whether `c` is a CRI object of `kind`.
pub fn is_kind(c: &api::Container, kind: &str) -> bool {
    label(c, KIND) == kind
}

/// The attempt number kept in `c`'s labels.
pub fn attempt(c: &api::Container) -> u32 {
    label(c, ATTEMPT).parse().unwrap_or(0)
}

/// The kubelet's filters, common to sandboxes and containers: the id (a prefix, as crictl
/// passes a short id) and every pair of the label selector among the CRI labels.
pub fn matches(c: &api::Container, id: &str, selector: &HashMap<String, String>) -> bool {
    if !id.is_empty() && !c.id.starts_with(id) {
        return false;
    }
    if selector.is_empty() {
        return true;
    }
    let labels = map_of(c, LABELS);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The kubelet's pod filter of containers: their sandbox id starts with `pod` (any when
/// empty).
pub fn in_pod(c: &api::Container, pod: &str) -> bool {
    pod.is_empty() || label(c, SANDBOX_ID).starts_with(pod)
}

/// A berth timestamp in nanoseconds since the epoch (0 when absent).
pub fn nanos(seconds: i64, nanos: i32) -> i64 {
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(nanos as i64)
}

/// The state of `c` as berth records it ("" for none).
pub fn status(c: &api::Container) -> &str {
    c.state.as_ref().map(|s| s.status.as_str()).unwrap_or("")
}

/// An id the kubelet must give.
pub fn required<'a>(what: &str, id: &'a str) -> Result<&'a str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{what} id is required")));
    }
    Ok(id)
}

/// A name part of a berth container name: what berth's names allow (`[a-zA-Z0-9_.-]`),
/// anything else as `-`.
pub fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, labels: &[(&str, &str)]) -> api::Container {
        api::Container {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_by_id_prefix_and_selector() {
        let cri = map_label(&HashMap::from([("app".into(), "web".into())]));
        let c = container("abcdef", &[(LABELS, &cri), (KIND, KIND_SANDBOX)]);
        assert!(matches(&c, "", &HashMap::new()));
        assert!(matches(&c, "abc", &HashMap::new()));
        assert!(!matches(&c, "abd", &HashMap::new()));
        assert!(matches(
            &c,
            "",
            &HashMap::from([("app".into(), "web".into())])
        ));
        assert!(!matches(
            &c,
            "",
            &HashMap::from([("app".into(), "db".into())])
        ));
        assert!(!matches(
            &c,
            "",
            &HashMap::from([("tier".into(), "x".into())])
        ));
        assert!(is_kind(&c, KIND_SANDBOX) && !is_kind(&c, KIND_CONTAINER));
        let member = container("c1", &[(SANDBOX_ID, "abcdef")]);
        assert!(in_pod(&member, "") && in_pod(&member, "abc") && !in_pod(&member, "x"));
    }

    #[test]
    fn names_and_times() {
        assert_eq!(name_part("my pod/1_x"), "my-pod-1-x");
        assert_eq!(nanos(2, 5), 2_000_000_005);
        assert!(required("sandbox", "").is_err());
    }
}
