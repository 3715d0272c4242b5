//! Namespaces a task joins from another running container (`pid_mode`, `ipc_mode`,
//! `uts_mode` = `container:NAME|ID`, as a pod's containers join its sandbox's): the stored
//! spec lists the type without a path; the path of the other container's init
//! (`/proc/<pid>/ns/<type>`) is filled in when the task is created, so the shim `setns`es
//! into it.

use super::Tasks;
use crate::error::{Error, Result};
use crate::lifecycle::state_of;
use crate::shim::Status as ShimStatus;
use crate::spec::{shared_namespace, SharedNamespace};
use berth_api::containers::v1::Container;
use oci_spec::runtime::LinuxNamespaceType;

impl Tasks {
    /// `spec` (a task's, as JSON) with the paths of the namespaces `container` joins.
    pub(super) async fn join_namespaces(
        &self,
        ns: &str,
        container: &Container,
        spec: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let config = container.config.clone().unwrap_or_default();
        let mut paths = Vec::new();
        for (typ, name, mode) in [
            (LinuxNamespaceType::Pid, "pid", &config.pid_mode),
            (LinuxNamespaceType::Ipc, "ipc", &config.ipc_mode),
            (LinuxNamespaceType::Uts, "uts", &config.uts_mode),
        ] {
            if let SharedNamespace::Container(other) = shared_namespace(typ, mode)? {
                let what = format!("{name} namespace");
                let (pid, _) = self.pid_to_join(ns, &other, &what).await?;
                paths.push((name, format!("/proc/{pid}/ns/{name}")));
            }
        }
        if paths.is_empty() {
            return Ok(spec);
        }
        with_namespace_paths(&spec, &paths)
    }

    /// The init pid and record of running container `other`, whose `what` namespace is to be
    /// joined (FailedPrecondition when it does not run).
    pub(super) async fn pid_to_join(
        &self,
        ns: &str,
        other: &str,
        what: &str,
    ) -> Result<(u32, Container)> {
        let o = self.store.resolve(ns, other)?;
        let pid = state_of(&o).pid;
        let running = self
            .task_state(ns, &o.id)
            .await?
            .is_some_and(|t| t.status == ShimStatus::Running);
        if !running || pid == 0 {
            return Err(Error::FailedPrecondition(format!(
                "cannot join the {what} of a non running container: {other}"
            )));
        }
        Ok((pid, o))
    }
}

/// The spec JSON with `path` set on the namespaces of the given types.
fn with_namespace_paths(spec: &[u8], paths: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut v: serde_json::Value =
        serde_json::from_slice(spec).map_err(|e| Error::Spec(format!("task spec: {e}")))?;
    let list = v
        .pointer_mut("/linux/namespaces")
        .and_then(|n| n.as_array_mut())
        .ok_or_else(|| Error::Spec("the task spec has no linux.namespaces".into()))?;
    for (typ, path) in paths {
        let entry = list
            .iter_mut()
            .find(|n| n.get("type").and_then(|t| t.as_str()) == Some(typ))
            .ok_or_else(|| Error::Spec(format!("the task spec has no {typ} namespace")))?;
        entry["path"] = serde_json::Value::String(path.clone());
    }
    serde_json::to_vec(&v).map_err(|e| Error::Spec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_in() {
        let spec = br#"{"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"mount"}]}}"#;
        let out = with_namespace_paths(spec, &[("ipc", "/proc/7/ns/ipc".into())]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["linux"]["namespaces"][1]["path"], "/proc/7/ns/ipc");
        assert!(v["linux"]["namespaces"][0].get("path").is_none());
        assert!(with_namespace_paths(spec, &[("uts", "/x".into())]).is_err());
    }
}
