//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox over berth's Containers and Tasks services.
//!
//! A sandbox is a berth container of the sandbox image (`[cri] sandbox_image`, a pause
//! image) in namespace `k8s.io`, labelled `io.berth.cri.kind=sandbox` (see [`crate::objects`]).
//! Its task holds the pod's network namespace — the runtime sets it up on the pod network
//! ([`crate::pod_network`], a CNI network of `[cri] cni_conf_dir`) with the pod's published ports, DNS and host
//! name, or uses the host's for `NamespaceMode::NODE` — and the pod's containers join it
//! (`network_mode = container:<sandbox id>`), taking its hosts and resolv.conf. The sandbox
//! is READY while its task runs. Stopping it stops its containers, then deletes its task,
//! which releases the network (veth, address, port rules, CNI cache) in the runtime; the
//! runtime's records make that hold after a berthd restart too.

use crate::objects::{self, label, map_label, map_of};
use crate::{from_service, req, Backends};
use berth_api::containers::v1 as api;
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::cri::v1 as cri;
use berth_api::tasks::v1 as tasks;
use berth_api::tasks::v1::tasks_client::TasksClient;
use std::collections::HashMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The sandbox image when `[cri] sandbox_image` is not set (containerd 1.6's default).
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";

pub(crate) fn containers(b: &Backends) -> ContainersClient<Channel> {
    ContainersClient::new(b.runtime.clone()).max_decoding_message_size(64 << 20)
}

pub(crate) fn tasks(b: &Backends) -> TasksClient<Channel> {
    TasksClient::new(b.runtime.clone())
}

/// The namespace modes of a sandbox config (network, pid, ipc).
fn namespace_modes(config: &cri::PodSandboxConfig) -> cri::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// The berth container config of a sandbox: the sandbox image, its network, ports, DNS and
/// hostname, and the CRI's view in labels.
pub fn sandbox_container(
    image: &str,
    config: &cri::PodSandboxConfig,
) -> Result<api::ContainerConfig, Status> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("the sandbox config has no metadata"))?;
    if meta.name.is_empty() || meta.uid.is_empty() || meta.namespace.is_empty() {
        return Err(Status::invalid_argument(
            "the sandbox metadata needs a name, a uid and a namespace",
        ));
    }
    let modes = namespace_modes(config);
    let node = cri::NamespaceMode::Node as i32;
    let host_network = modes.network == node;
    let host_if = |mode: i32| if mode == node { "host" } else { "" }.to_string();
    let sysctls = config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    let dns = config.dns_config.clone().unwrap_or_default();
    let mut port_bindings = Vec::new();
    for p in &config.port_mappings {
        // The kubelet sends container ports without a host port too: nothing to publish.
        if p.host_port <= 0 {
            continue;
        }
        let protocol = match cri::Protocol::try_from(p.protocol) {
            Ok(cri::Protocol::Tcp) => "tcp",
            Ok(cri::Protocol::Udp) => "udp",
            _ => {
                return Err(Status::invalid_argument(format!(
                    "port mapping {}:{}: berth publishes tcp and udp ports only",
                    p.host_port, p.container_port
                )))
            }
        };
        if !(1..=65535).contains(&p.container_port) || p.host_port > 65535 {
            return Err(Status::invalid_argument(format!(
                "port mapping {}:{} is out of range (1-65535)",
                p.host_port, p.container_port
            )));
        }
        port_bindings.push(api::PortBinding {
            host_ip: p.host_ip.clone(),
            host_port: p.host_port as u32,
            container_port: p.container_port as u32,
            protocol: protocol.into(),
        });
    }
    let labels = HashMap::from([
        (objects::KIND.to_string(), objects::KIND_SANDBOX.to_string()),
        (objects::NAME.to_string(), meta.name.clone()),
        (objects::UID.to_string(), meta.uid.clone()),
        (objects::POD_NAMESPACE.to_string(), meta.namespace.clone()),
        (objects::ATTEMPT.to_string(), meta.attempt.to_string()),
        (objects::LABELS.to_string(), map_label(&config.labels)),
        (
            objects::ANNOTATIONS.to_string(),
            map_label(&config.annotations),
        ),
        (
            objects::LOG_DIRECTORY.to_string(),
            config.log_directory.clone(),
        ),
        (
            objects::NAMESPACE_MODES.to_string(),
            format!("{},{},{}", modes.network, modes.pid, modes.ipc),
        ),
    ]);
    Ok(api::ContainerConfig {
        image: image.to_string(),
        network_mode: if host_network { "host" } else { "bridge" }.into(),
        // With the host's network the host's name stays, as the kubelet expects.
        hostname: if host_network {
            String::new()
        } else {
            config.hostname.clone()
        },
        dns: dns.servers,
        dns_search: dns.searches,
        dns_options: dns.options,
        port_bindings,
        labels,
        // The pod's IPC and UTS namespaces live in the sandbox; its pid namespace too, which
        // containers join with NamespaceMode::POD.
        ipc_mode: host_if(modes.ipc),
        uts_mode: host_if(modes.network),
        pid_mode: host_if(modes.pid),
        sysctls,
        cgroup_parent: config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default(),
        oom_score_adj: crate::resources::SANDBOX_OOM_SCORE_ADJ,
        ..Default::default()
    })
}

/// The berth name of a sandbox: unique per pod and attempt, as the kubelet expects
/// (AlreadyExists for a second RunPodSandbox of the same attempt).
fn sandbox_name(meta: &cri::PodSandboxMetadata) -> String {
    format!(
        "k8s_POD_{}_{}_{}_{}",
        objects::name_part(&meta.name),
        objects::name_part(&meta.namespace),
        objects::name_part(&meta.uid),
        meta.attempt
    )
}

/// RunPodSandbox: the sandbox's container created and started; on any failure what was
/// made is removed again.
pub async fn run(
    b: &Backends,
    image: &str,
    config: cri::PodSandboxConfig,
    network: Option<crate::pod_network::PodNetwork>,
) -> Result<String, Status> {
    let mut cfg = sandbox_container(image, &config)?;
    if let Some(n) = network {
        cfg.network_mode = n.network;
        cfg.cni_args = n.cni_args;
    }
    let name = sandbox_name(config.metadata.as_ref().unwrap_or(&Default::default()));
    let id = create(b, name, cfg, "pod sandbox").await?;
    if let Err(e) = start_task(b, &id).await {
        let _ = containers(b)
            .delete(req(api::DeleteContainerRequest {
                id: id.clone(),
                force: true,
                remove_volumes: true,
            }))
            .await;
        return Err(from_service("starting the pod sandbox", e));
    }
    Ok(id)
}

/// Containers.Create of CRI object `what` (`pod sandbox`, `container`): its id.
pub(crate) async fn create(
    b: &Backends,
    name: String,
    config: api::ContainerConfig,
    what: &str,
) -> Result<String, Status> {
    containers(b)
        .create(req(api::CreateContainerRequest {
            name,
            config: Some(config),
        }))
        .await
        .map_err(|e| from_service(&format!("creating the {what}"), e))?
        .into_inner()
        .container
        .map(|c| c.id)
        .ok_or_else(|| Status::internal(format!("the runtime created a {what} without a record")))
}

/// Tasks.Create then Tasks.Start of container `id`.
pub(crate) async fn start_task(b: &Backends, id: &str) -> Result<(), Status> {
    let mut t = tasks(b);
    t.create(req(tasks::CreateTaskRequest {
        container_id: id.to_string(),
    }))
    .await?;
    t.start(req(tasks::StartTaskRequest {
        container_id: id.to_string(),
    }))
    .await?;
    Ok(())
}

/// The berth container of CRI object `id` of `kind`; NotFound names what was asked for.
pub(crate) async fn get(b: &Backends, id: &str, kind: &str) -> Result<api::Container, Status> {
    let what = if kind == objects::KIND_SANDBOX {
        "pod sandbox"
    } else {
        "container"
    };
    objects::required(what, id)?;
    let found = containers(b)
        .get(req(api::GetContainerRequest { id: id.to_string() }))
        .await;
    match found {
        Ok(r) => match r.into_inner().container {
            Some(c) if objects::is_kind(&c, kind) => Ok(c),
            _ => Err(Status::not_found(format!("{what} {id:?} not found"))),
        },
        Err(e) if e.code() == Code::NotFound => {
            Err(Status::not_found(format!("{what} {id:?} not found")))
        }
        Err(e) => Err(from_service(&format!("looking up {what} {id}"), e)),
    }
}

/// Every CRI object of `kind` in `k8s.io`.
pub(crate) async fn list(b: &Backends, kind: &str) -> Result<Vec<api::Container>, Status> {
    let all = containers(b)
        .list(req(api::ListContainersRequest {}))
        .await
        .map_err(|e| from_service("listing containers", e))?
        .into_inner()
        .containers;
    Ok(all
        .into_iter()
        .filter(|c| objects::is_kind(c, kind))
        .collect())
}

/// The containers of sandbox `id`.
pub(crate) async fn members(b: &Backends, id: &str) -> Result<Vec<api::Container>, Status> {
    Ok(list(b, objects::KIND_CONTAINER)
        .await?
        .into_iter()
        .filter(|c| label(c, objects::SANDBOX_ID) == id)
        .collect())
}

/// Tasks.Stop (`timeout` seconds) and Tasks.Delete of `id`; a container without a task is
/// left as it is.
pub(crate) async fn stop_task(b: &Backends, id: &str, timeout: i64) -> Result<(), Status> {
    let mut t = tasks(b);
    let stopped = t
        .stop(req(tasks::StopTaskRequest {
            container_id: id.to_string(),
            timeout: timeout.clamp(0, i32::MAX as i64) as i32,
            has_timeout: true,
        }))
        .await;
    match stopped {
        Ok(_) => {}
        Err(e) if e.code() == Code::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Tasks.Delete of `id`: its shim, bundle and network go. No task is not an error.
async fn delete_task(b: &Backends, id: &str) -> Result<(), Status> {
    match tasks(b)
        .delete(req(tasks::DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
        Err(e) => Err(e),
    }
}

/// StopPodSandbox: its containers killed, then its own task stopped and deleted, which
/// releases the pod's network. Idempotent; an unknown sandbox is success.
pub async fn stop(b: &Backends, id: &str) -> Result<(), Status> {
    // An unknown sandbox is success, as the kubelet expects: it may stop a pod whose
    // sandbox was already removed (or never made it) when it cleans up.
    let sandbox = match get(b, id, objects::KIND_SANDBOX).await {
        Ok(s) => s,
        Err(e) if e.code() == Code::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for c in members(b, &sandbox.id).await? {
        stop_task(b, &c.id, 0)
            .await
            .map_err(|e| from_service(&format!("stopping container {}", c.id), e))?;
    }
    stop_task(b, &sandbox.id, 0)
        .await
        .map_err(|e| from_service("stopping the pod sandbox", e))?;
    delete_task(b, &sandbox.id)
        .await
        .map_err(|e| from_service("releasing the pod sandbox", e))
}

/// RemovePodSandbox: stopped first, then its containers and itself removed. An unknown
/// sandbox is success (the CRI's idempotence).
pub async fn remove(b: &Backends, id: &str) -> Result<(), Status> {
    let sandbox = match get(b, id, objects::KIND_SANDBOX).await {
        Ok(s) => s,
        Err(e) if e.code() == Code::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    stop(b, &sandbox.id).await?;
    for c in members(b, &sandbox.id).await? {
        crate::containers::delete(b, &c.id).await?;
    }
    crate::containers::delete(b, &sandbox.id).await
}

/// The CRI state of a sandbox: ready while its task runs.
fn state(c: &api::Container) -> cri::PodSandboxState {
    if objects::status(c) == "running" {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    }
}

fn metadata(c: &api::Container) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: label(c, objects::NAME).into(),
        uid: label(c, objects::UID).into(),
        namespace: label(c, objects::POD_NAMESPACE).into(),
        attempt: objects::attempt(c),
    }
}

fn created_at(c: &api::Container) -> i64 {
    c.created_at
        .as_ref()
        .map(|t| objects::nanos(t.seconds, t.nanos))
        .unwrap_or(0)
}

/// The namespace options kept at RunPodSandbox.
pub(crate) fn namespace_options(c: &api::Container) -> cri::NamespaceOption {
    let modes: Vec<i32> = label(c, objects::NAMESPACE_MODES)
        .split(',')
        .map(|m| m.parse().unwrap_or(0))
        .collect();
    cri::NamespaceOption {
        network: modes.first().copied().unwrap_or(0),
        pid: modes.get(1).copied().unwrap_or(0),
        ipc: modes.get(2).copied().unwrap_or(0),
        ..Default::default()
    }
}

/// PodSandboxStatus of the berth container `c`.
pub fn status(c: &api::Container) -> cri::PodSandboxStatus {
    let state = state(c);
    let ip = if state == cri::PodSandboxState::SandboxReady {
        c.network_settings
            .as_ref()
            .and_then(|n| n.endpoints.first())
            .map(|e| e.ip_address.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    cri::PodSandboxStatus {
        id: c.id.clone(),
        metadata: Some(metadata(c)),
        state: state as i32,
        created_at: created_at(c),
        network: Some(cri::PodSandboxNetworkStatus {
            ip,
            additional_ips: Vec::new(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(namespace_options(c)),
            }),
        }),
        labels: map_of(c, objects::LABELS),
        annotations: map_of(c, objects::ANNOTATIONS),
        runtime_handler: String::new(),
    }
}

/// ListPodSandbox with the kubelet's filter.
pub async fn list_filtered(
    b: &Backends,
    filter: Option<cri::PodSandboxFilter>,
) -> Result<Vec<cri::PodSandbox>, Status> {
    let filter = filter.unwrap_or_default();
    Ok(list(b, objects::KIND_SANDBOX)
        .await?
        .iter()
        .filter(|c| objects::matches(c, &filter.id, &filter.label_selector))
        .filter(|c| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == state(c) as i32)
        })
        .map(|c| cri::PodSandbox {
            id: c.id.clone(),
            metadata: Some(metadata(c)),
            state: state(c) as i32,
            created_at: created_at(c),
            labels: map_of(c, objects::LABELS),
            annotations: map_of(c, objects::ANNOTATIONS),
            runtime_handler: String::new(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 1,
            }),
            hostname: "web-host".into(),
            labels: HashMap::from([("app".into(), "web".into())]),
            port_mappings: vec![
                cri::PortMapping {
                    protocol: cri::Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: 8080,
                    host_ip: String::new(),
                },
                cri::PortMapping {
                    protocol: cri::Protocol::Tcp as i32,
                    container_port: 81,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.local".into()],
                options: vec!["ndots:5".into()],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sandbox_config_carries_the_pod() {
        let c = sandbox_container("pause", &config()).unwrap();
        assert_eq!(c.network_mode, "bridge");
        assert_eq!(c.hostname, "web-host");
        assert_eq!(c.port_bindings.len(), 1);
        assert_eq!(c.port_bindings[0].host_port, 8080);
        assert_eq!(c.dns, vec!["10.0.0.10"]);
        let record = api::Container {
            labels: c.labels.clone(),
            ..Default::default()
        };
        let s = status(&record);
        assert_eq!(s.metadata.unwrap().name, "web");
        assert_eq!(s.labels["app"], "web");
        assert_eq!(s.state, cri::PodSandboxState::SandboxNotready as i32);
        assert_eq!(
            sandbox_name(config().metadata.as_ref().unwrap()),
            "k8s_POD_web_default_u1_1"
        );
    }

    #[test]
    fn host_network_and_bad_input() {
        let mut cfg = config();
        cfg.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let c = sandbox_container("pause", &cfg).unwrap();
        assert_eq!((c.network_mode.as_str(), c.hostname.as_str()), ("host", ""));
        assert_eq!((c.uts_mode.as_str(), c.ipc_mode.as_str()), ("host", ""));
        let record = api::Container {
            labels: c.labels,
            ..Default::default()
        };
        assert_eq!(
            namespace_options(&record).network,
            cri::NamespaceMode::Node as i32
        );
        cfg.metadata = None;
        assert_eq!(
            sandbox_container("pause", &cfg).unwrap_err().code(),
            Code::InvalidArgument
        );
        let mut cfg = config();
        cfg.port_mappings[0].protocol = cri::Protocol::Sctp as i32;
        assert!(sandbox_container("pause", &cfg).is_err());
    }
}
