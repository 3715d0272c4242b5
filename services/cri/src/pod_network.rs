//! The pod network: the CNI configuration of `[cri] cni_conf_dir` made a berth network of
//! driver `cni`, which the runtime attaches every sandbox that does not use the host's
//! network to.
//!
//! - A folder without any configuration file gets [`default_conflist`] written (as
//!   containerd's setup): a `bridge` on `berth-cni0` that is the pods' gateway, `host-local`
//!   addresses from the pod CIDR of UpdateRuntimeConfig or 10.88.0.0/16, masquerading of
//!   traffic leaving it, and `portmap` for host ports; `lo` is brought up by the runtime.
//! - The file libcni would load ([`crate::network::ready_network`]) becomes network
//!   `cri-<its name>-<hash of its text>`, created through Networks.Create once; a changed
//!   file makes a new network for new pods while running pods keep theirs.
//! - The sandbox gets the Kubernetes CNI_ARGS (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`; the
//!   runtime adds `K8S_POD_INFRA_CONTAINER_ID`, the sandbox's id), and its host ports go to
//!   the plugins with the `portMappings` capability.

use crate::{from_service, req, Backends};
use berth_api::cri::v1 as cri;
use berth_api::networks::v1 as napi;
use berth_api::networks::v1::networks_client::NetworksClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tonic::{Code, Status};

/// The file written into an empty configuration folder.
pub const DEFAULT_CONFLIST_FILE: &str = "10-berth-pods.conflist";
/// The bridge of the default configuration.
pub const DEFAULT_BRIDGE: &str = "berth-cni0";
/// The pods' subnet of the default configuration without a pod CIDR.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";

/// What a sandbox's container needs to be on the pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The berth network (`network_mode`).
    pub network: String,
    /// Its CNI_ARGS.
    pub cni_args: HashMap<String, String>,
}

/// The default configuration list: bridge + host-local on `subnet`, then portmap.
pub fn default_conflist(subnet: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berth-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": DEFAULT_BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
}

/// The pod network of a sandbox, `None` with the host's network.
pub async fn for_sandbox(
    b: &Backends,
    config: &cri::PodSandboxConfig,
    pod_cidr: Option<String>,
) -> Result<Option<PodNetwork>, Status> {
    let host_network = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32);
    if host_network {
        return Ok(None);
    }
    let file = config_file(&b.cni_conf_dir, &b.cni_bin_dirs, pod_cidr.as_deref())?;
    let network = ensure_network(b, &file).await?;
    let meta = config.metadata.clone().unwrap_or_default();
    let cni_args = HashMap::from([
        ("K8S_POD_NAMESPACE".to_string(), meta.namespace),
        ("K8S_POD_NAME".to_string(), meta.name),
    ]);
    Ok(Some(PodNetwork { network, cni_args }))
}

/// The configuration file pods use; the default one written first into a folder without
/// any. A folder whose files are all unusable is an error, not overwritten.
pub fn config_file(
    conf_dir: &Path,
    bin_dirs: &[PathBuf],
    pod_cidr: Option<&str>,
) -> Result<PathBuf, Status> {
    write_default_if_none(conf_dir, pod_cidr)?;
    crate::network::ready_network(conf_dir, bin_dirs)
        .map(|n| n.file)
        .map_err(|e| Status::failed_precondition(format!("no pod network: {e}")))
}

/// Writes the default configuration into a folder without any configuration file (at the
/// CRI's start, so that NetworkReady holds for the kubelet, and before a sandbox's network).
pub fn write_default_if_none(conf_dir: &Path, pod_cidr: Option<&str>) -> Result<(), Status> {
    let has_any = std::fs::read_dir(conf_dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            matches!(
                e.path().extension().and_then(|x| x.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
    });
    if has_any {
        return Ok(());
    }
    write_default(conf_dir, pod_cidr)
}

/// UpdateRuntimeConfig's pod CIDR: berth's own default file, as written (only its subnet
/// differs), is written again with it; a configuration of someone else's is left alone.
pub fn follow_pod_cidr(conf_dir: &Path, pod_cidr: &str) -> Result<(), Status> {
    let file = conf_dir.join(DEFAULT_CONFLIST_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(());
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    let subnet = json["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap_or_default();
    if json == default_conflist(subnet) {
        write_default(conf_dir, Some(pod_cidr))?;
    }
    Ok(())
}

/// Writes [`default_conflist`] (the first range of the pod CIDR, else
/// [`DEFAULT_SUBNET`]) atomically.
fn write_default(conf_dir: &Path, pod_cidr: Option<&str>) -> Result<(), Status> {
    let subnet = pod_cidr
        .and_then(|c| c.split(',').map(str::trim).find(|c| !c.contains(':')))
        .unwrap_or(DEFAULT_SUBNET);
    let io = |what: &str, e: std::io::Error| {
        Status::internal(format!(
            "cannot {what} the default CNI configuration in {} ([cri] cni_conf_dir): {e}",
            conf_dir.display()
        ))
    };
    std::fs::create_dir_all(conf_dir).map_err(|e| io("make the folder of", e))?;
    let text = serde_json::to_string_pretty(&default_conflist(subnet)).expect("JSON");
    let tmp = conf_dir.join(format!(".{DEFAULT_CONFLIST_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, conf_dir.join(DEFAULT_CONFLIST_FILE)).map_err(|e| io("write", e))?;
    tracing::info!(folder = %conf_dir.display(), subnet, "default pod network configuration written");
    Ok(())
}

/// The berth network name of a configuration: its CNI name and a hash of its text.
pub fn network_name(cni_name: &str, text: &str) -> String {
    // FNV-1a: stable across berthd versions, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let name: String = cni_name.chars().take(40).collect();
    format!("cri-{name}-{:08x}", h as u32)
}

/// The berth network of configuration `file`, created when missing.
async fn ensure_network(b: &Backends, file: &Path) -> Result<String, Status> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Status::failed_precondition(format!("cannot read {}: {e}", file.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Status::failed_precondition(format!("{} is not JSON: {e}", file.display())))?;
    let cni_name = json.get("name").and_then(|n| n.as_str()).unwrap_or("pods");
    let name = network_name(cni_name, &text);
    let mut client = NetworksClient::new(b.runtime.clone());
    match client
        .get(req(napi::GetNetworkRequest { name: name.clone() }))
        .await
    {
        Ok(_) => return Ok(name),
        Err(e) if e.code() == Code::NotFound => {}
        Err(e) => return Err(from_service("looking up the pod network", e)),
    }
    let created = client
        .create(req(napi::CreateNetworkRequest {
            name: name.clone(),
            driver: "cni".into(),
            conflist: text,
            labels: HashMap::from([(
                "io.berth.cri.cni-file".to_string(),
                file.display().to_string(),
            )]),
            ..Default::default()
        }))
        .await;
    match created {
        Ok(_) => Ok(name),
        // Another RunPodSandbox made it meanwhile.
        Err(e)
            if e.code() == Code::FailedPrecondition && e.message().contains("already exists") =>
        {
            Ok(name)
        }
        Err(e) => Err(from_service(
            &format!("making the pod network of {}", file.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_folder_gets_the_default_list_with_the_pod_cidr() {
        let dir = std::env::temp_dir().join(format!("berth-cri-podnet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bins = vec![PathBuf::from("/nonexistent")];
        // Written, then refused as its plugins are missing from the folder given.
        let e = config_file(&dir, &bins, Some("10.99.0.0/16,fd00::/64")).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        let text = std::fs::read_to_string(dir.join(DEFAULT_CONFLIST_FILE)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.99.0.0/16"
        );
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        // The pod CIDR given later replaces the subnet of berth's own file.
        follow_pod_cidr(&dir, "10.98.0.0/16").unwrap();
        let text = std::fs::read_to_string(dir.join(DEFAULT_CONFLIST_FILE)).unwrap();
        assert!(text.contains("10.98.0.0/16"), "{text}");
        // A folder with a file of its own is left alone.
        std::fs::write(dir.join(DEFAULT_CONFLIST_FILE), "{}").unwrap();
        let _ = config_file(&dir, &bins, None);
        follow_pod_cidr(&dir, "10.97.0.0/16").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(DEFAULT_CONFLIST_FILE)).unwrap(),
            "{}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn network_names_follow_the_text() {
        let a = network_name("berth-pods", "{1}");
        assert!(a.starts_with("cri-berth-pods-"), "{a}");
        assert_ne!(a, network_name("berth-pods", "{2}"));
        assert_eq!(a, network_name("berth-pods", "{1}"));
        assert!(network_name(&"x".repeat(90), "").len() <= 64);
    }
}
