//! `runtime.v1.RuntimeService`: Version, Status (RuntimeReady from the runtime service's
//! health, NetworkReady from the CNI configuration), RuntimeConfig (the cgroupfs driver, as
//! berth's runtime manages cgroups through cgroupfs) and UpdateRuntimeConfig (the pod CIDR),
//! answered here; pods ([`crate::sandboxes`]), their containers ([`crate::containers`]),
//! ExecSync ([`crate::exec`]), container stats ([`crate::stats`]) and the streaming RPCs
//! Exec, Attach and PortForward ([`crate::stream`]) delegated.
//!
//! Container events ([`crate::events`]), pod stats ([`crate::pod_stats`]), log reopening
//! ([`crate::log_rotation`]) and resource updates ([`crate::resources`]) are delegated too.
//! Checkpoints and metric descriptors answer `Unimplemented` with the RPC's name: a kubelet or
//! critest sees plainly what berth cannot do.

use crate::{
    containers, events, exec, network, objects, pod_stats, sandboxes, stats, stream, Backends,
};
use berth_api::cri::v1 as cri;
use berth_api::cri::v1::runtime_service_server::RuntimeService;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The runtime's name in Version.
pub const RUNTIME_NAME: &str = "berth";
/// The CRI version served.
pub const RUNTIME_API_VERSION: &str = "v1";
/// Version's `version`: the version of the kubelet's API this speaks (as containerd answers).
pub const KUBELET_API_VERSION: &str = "0.1.0";

/// The CRI's RuntimeService.
#[derive(Debug)]
pub struct Runtime {
    backends: Arc<Backends>,
    /// The image service's side, for the sandbox image.
    images: crate::images::Images,
    /// The pod CIDR the kubelet gave with UpdateRuntimeConfig.
    pod_cidr: Mutex<Option<String>>,
    /// The streaming server of Exec, Attach and PortForward.
    streaming: Arc<stream::Streaming>,
}

impl Runtime {
    pub fn new(backends: Arc<Backends>, streaming: Arc<stream::Streaming>) -> Runtime {
        if let Err(e) = crate::pod_network::write_default_if_none(&backends.cni_conf_dir, None) {
            tracing::warn!(error = %e.message(), "no default pod network configuration");
        }
        Runtime {
            images: crate::images::Images::new(backends.clone()),
            backends,
            pod_cidr: Mutex::new(None),
            streaming,
        }
    }

    /// RuntimeReady: the runtime service answers its health check as serving.
    async fn runtime_condition(&self) -> cri::RuntimeCondition {
        let check = HealthClient::new(self.backends.runtime.clone())
            .check(HealthCheckRequest {
                service: "berth.runtime".into(),
            })
            .await;
        let problem = match check {
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => None,
            Ok(r) => Some(format!("the runtime service is {:?}", r.get_ref().status())),
            Err(e) => Some(format!(
                "the runtime service does not answer: {}",
                e.message()
            )),
        };
        condition("RuntimeReady", "RuntimeServiceUnavailable", problem)
    }

    /// NetworkReady, and the network found.
    fn network_condition(&self) -> (cri::RuntimeCondition, Result<network::Network, String>) {
        let found =
            network::ready_network(&self.backends.cni_conf_dir, &self.backends.cni_bin_dirs);
        let problem = found.as_ref().err().cloned();
        (
            condition("NetworkReady", "NetworkPluginNotReady", problem),
            found,
        )
    }

    /// Status' verbose `info`: the CNI setup and what it found, as JSON values.
    fn verbose_info(&self, found: &Result<network::Network, String>) -> HashMap<String, String> {
        let pod_cidr = self.pod_cidr.lock().map(|c| c.clone()).unwrap_or_default();
        let bin_dirs: Vec<String> = self
            .backends
            .cni_bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let cni = serde_json::json!({
            "confDir": self.backends.cni_conf_dir.display().to_string(),
            "binDirs": bin_dirs,
            "podCIDR": pod_cidr,
            "network": found.as_ref().ok().map(|n| serde_json::json!({
                "name": n.name,
                "file": n.file.display().to_string(),
                "plugins": n.plugins,
            })),
            "lastCNILoadStatus": match found { Ok(_) => "OK".to_string(), Err(e) => e.clone() },
        });
        let config = serde_json::json!({
            "namespace": crate::NAMESPACE,
            "snapshotter": self.backends.snapshotter,
            "cgroupDriver": "cgroupfs",
        });
        HashMap::from([
            ("cni".to_string(), cni.to_string()),
            ("config".to_string(), config.to_string()),
        ])
    }
}

/// A condition, true without a problem.
fn condition(kind: &str, reason: &str, problem: Option<String>) -> cri::RuntimeCondition {
    cri::RuntimeCondition {
        r#type: kind.to_string(),
        status: problem.is_none(),
        reason: if problem.is_some() {
            reason.to_string()
        } else {
            String::new()
        },
        message: problem.unwrap_or_default(),
    }
}

/// The verbose `info` of a sandbox or container: berth's record of it, as containerd gives
/// its own (`info` → JSON).
fn verbose(c: &berth_api::containers::v1::Container) -> HashMap<String, String> {
    let st = c.state.clone().unwrap_or_default();
    let info = serde_json::json!({
        "id": c.id,
        "name": c.name,
        "pid": st.pid,
        "status": st.status,
        "image": c.image,
        "imageId": c.image_id,
        "labels": c.labels,
        "sandboxKey": c.network_settings.as_ref().map(|n| n.sandbox_key.clone()),
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

/// A CIDR: an IPv4 or IPv6 address, `/`, a prefix length that fits it.
fn valid_cidr(cidr: &str) -> bool {
    let Some((addr, len)) = cidr.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

/// The answer of an RPC a later slice of issue 15 implements.
fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "runtime.v1.RuntimeService/{rpc} is not implemented by berth yet (it comes in a later slice of its CRI)"
    ))
}

/// RPCs answered with [`not_yet`]: (method, request type, response type, RPC name).
macro_rules! not_yet {
    ($($method:ident($req:ident) -> $resp:ident = $rpc:literal;)*) => {
        $(
            // Written as `#[tonic::async_trait]` expands an `async fn`: that attribute runs
            // before this macro, so it cannot rewrite the methods the macro makes.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<cri::$req>,
            ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<cri::$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(not_yet($rpc)) })
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: KUBELET_API_VERSION.into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let runtime = self.runtime_condition().await;
        let (network, found) = self.network_condition();
        let info = if request.get_ref().verbose {
            self.verbose_info(&found)
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            ..Default::default()
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        // Empty: the kubelet has none to give; what was given before stays.
        if !cidr.is_empty() {
            let first = cidr.split(',').map(str::trim);
            if let Some(bad) = first.clone().find(|c| !valid_cidr(c)) {
                return Err(Status::invalid_argument(format!(
                    "pod CIDR {bad:?} is not a CIDR (e.g. 10.88.0.0/16)"
                )));
            }
            crate::pod_network::follow_pod_cidr(&self.backends.cni_conf_dir, &cidr)?;
            if let Ok(mut kept) = self.pod_cidr.lock() {
                *kept = Some(cidr);
            }
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    type GetContainerEventsStream = events::ContainerEvents;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(
            events::subscribe(self.backends.clone()).await?,
        ))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let r = request.into_inner();
        if !r.runtime_handler.is_empty() {
            return Err(Status::invalid_argument(format!(
                "runtime handler {:?}: berth has only its default one (\"\")",
                r.runtime_handler
            )));
        }
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a sandbox config"))?;
        let image = &self.backends.sandbox_image;
        self.images.ensure(image).await?;
        let pod_cidr = self.pod_cidr.lock().ok().and_then(|c| c.clone());
        let network = crate::pod_network::for_sandbox(&self.backends, &config, pod_cidr).await?;
        let pod_sandbox_id = sandboxes::run(&self.backends, image, config, network).await?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        sandboxes::stop(&self.backends, &request.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        objects::required("pod sandbox", &id)?;
        sandboxes::remove(&self.backends, &id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let r = request.into_inner();
        let c = sandboxes::get(&self.backends, &r.pod_sandbox_id, objects::KIND_SANDBOX).await?;
        let info = if r.verbose {
            verbose(&c)
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(sandboxes::status(&c)),
            info,
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = sandboxes::list_filtered(&self.backends, request.into_inner().filter).await?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let r = request.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer needs a container config"))?;
        let container_id = containers::create(
            &self.backends,
            &r.pod_sandbox_id,
            config,
            r.sandbox_config.as_ref(),
        )
        .await?;
        Ok(Response::new(cri::CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        containers::start(&self.backends, &request.into_inner().container_id).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = request.into_inner();
        containers::stop(&self.backends, &r.container_id, r.timeout).await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        objects::required("container", &id)?;
        containers::remove(&self.backends, &id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let containers =
            containers::list_filtered(&self.backends, request.into_inner().filter).await?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        Ok(Response::new(
            exec::exec_sync(&self.backends, request.into_inner()).await?,
        ))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let stats = stats::one(&self.backends, &request.into_inner().container_id).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let stats = stats::list(&self.backends, request.into_inner().filter).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let stats = pod_stats::one(&self.backends, &request.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let stats = pod_stats::list(&self.backends, request.into_inner().filter).await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let r = request.into_inner();
        let c = sandboxes::get(&self.backends, &r.container_id, objects::KIND_CONTAINER).await?;
        let info = if r.verbose {
            verbose(&c)
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(containers::status(&c)),
            info,
        }))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        crate::log_rotation::reopen(&self.backends, &request.into_inner().container_id).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            stream::exec(&self.backends, &self.streaming, r).await?,
        ))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            stream::attach(&self.backends, &self.streaming, r).await?,
        ))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            stream::port_forward(&self.backends, &self.streaming, r).await?,
        ))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let r = request.into_inner();
        crate::resources::update(&self.backends, &r.container_id, r.linux).await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    not_yet! {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = "ListPodSandboxMetrics";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        for ok in ["10.88.0.0/16", "fd00::/64", "0.0.0.0/0"] {
            assert!(valid_cidr(ok), "{ok}");
        }
        for bad in ["10.88.0.0", "10.88.0.0/33", "x/8", "fd00::/129", ""] {
            assert!(!valid_cidr(bad), "{bad}");
        }
    }

    #[test]
    fn conditions_say_why() {
        let ok = condition("NetworkReady", "NetworkPluginNotReady", None);
        assert!(ok.status && ok.reason.is_empty() && ok.message.is_empty());
        let not = condition(
            "NetworkReady",
            "NetworkPluginNotReady",
            Some("no config".into()),
        );
        assert!(!not.status);
        assert_eq!(
            (not.reason.as_str(), not.message.as_str()),
            ("NetworkPluginNotReady", "no config")
        );
        assert!(not_yet("RunPodSandbox").message().contains("RunPodSandbox"));
    }
}
