//! The Networks service: `network create|ls|rm|inspect|connect|disconnect|prune` over the
//! [`crate::network::Manager`] of the runtime.

use crate::error::{Error, Result};
use crate::Runtime;
use berth_api::containers::v1::Container;
use berth_api::networks::v1::networks_server::Networks;
use berth_api::networks::v1::{
    ConnectRequest, ConnectResponse, CreateNetworkRequest, DisconnectRequest, DisconnectResponse,
    GetNetworkRequest, ListNetworksRequest, ListNetworksResponse, Network, NetworkContainer,
    PruneNetworksRequest, PruneNetworksResponse, RemoveNetworkRequest, RemoveNetworkResponse,
};
use berth_core::grpc::namespace;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct NetworksService {
    runtime: Arc<Runtime>,
}

impl NetworksService {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        NetworksService { runtime }
    }
}

impl Runtime {
    /// Every container of every namespace, with its namespace.
    fn all_containers(&self) -> Result<Vec<(String, Container)>> {
        let mut out = Vec::new();
        for ns in self.store.namespaces()? {
            for c in self.store.list(&ns)? {
                out.push((ns.clone(), c));
            }
        }
        Ok(out)
    }

    /// A network with the running containers attached to it.
    fn network_with_containers(&self, mut n: Network) -> Result<Network> {
        for (ns, c) in self.all_containers()? {
            let Some(e) = c
                .network_settings
                .as_ref()
                .and_then(|s| s.endpoints.iter().find(|e| e.network_id == n.id))
            else {
                continue;
            };
            n.containers.push(NetworkContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                namespace: ns,
                ip_address: if e.ip_address.is_empty() {
                    String::new()
                } else {
                    format!("{}/{}", e.ip_address, e.ip_prefix_len)
                },
                mac_address: e.mac_address.clone(),
            });
        }
        Ok(n)
    }

    /// `network connect`: the network is added to the container's networks; a running
    /// container gets an interface on it now.
    pub async fn connect_network(&self, ns: &str, network: &str, container: &str) -> Result<()> {
        let n = self.networks.find(network)?;
        let c = self.store.resolve(ns, container)?;
        let _guard = self.lock(ns, &c.id).await;
        let c = self.store.resolve(ns, &c.id)?;
        let mode = c
            .config
            .as_ref()
            .map(|c| c.network_mode.as_str())
            .unwrap_or("");
        if n.driver != "bridge"
            || !matches!(crate::network::Mode::of(mode), crate::network::Mode::Bridge)
        {
            return Err(Error::FailedPrecondition(format!(
                "container {} cannot be connected to network {}: only containers on bridge \
                 networks can join other bridge networks",
                c.name, n.name
            )));
        }
        if c.networks.contains(&n.name) {
            return Err(Error::FailedPrecondition(format!(
                "endpoint with name {} already exists in network {}",
                c.name, n.name
            )));
        }
        let running = c
            .network_settings
            .as_ref()
            .is_some_and(|s| !s.sandbox_key.is_empty());
        if running {
            let manager = self.networks.clone();
            let (ns2, c2, n2) = (ns.to_string(), c.clone(), n.clone());
            let e = tokio::task::spawn_blocking(move || manager.connect_running(&ns2, &c2, &n2))
                .await
                .map_err(|e| Error::Network(e.to_string()))??;
            self.store.update(ns, &c.id, |c| {
                c.networks.push(n.name.clone());
                c.network_settings
                    .get_or_insert_with(Default::default)
                    .endpoints
                    .push(e.clone());
            })?;
        } else {
            self.store
                .update(ns, &c.id, |c| c.networks.push(n.name.clone()))?;
        }
        self.publish_container(ns, &c.id, "connect", &[("network", n.name.clone())]);
        Ok(())
    }

    /// `network disconnect`.
    pub async fn disconnect_network(&self, ns: &str, network: &str, container: &str) -> Result<()> {
        let n = self.networks.find(network)?;
        let c = self.store.resolve(ns, container)?;
        let _guard = self.lock(ns, &c.id).await;
        let c = self.store.resolve(ns, &c.id)?;
        if !c.networks.contains(&n.name) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not connected to network {}",
                c.name, n.name
            )));
        }
        if c.network_settings
            .as_ref()
            .is_some_and(|s| !s.sandbox_key.is_empty())
        {
            let manager = self.networks.clone();
            let (ns2, c2, n2) = (ns.to_string(), c.clone(), n.clone());
            tokio::task::spawn_blocking(move || manager.disconnect_running(&ns2, &c2, &n2))
                .await
                .map_err(|e| Error::Network(e.to_string()))??;
        }
        self.store.update(ns, &c.id, |c| {
            c.networks.retain(|x| *x != n.name);
            if let Some(s) = c.network_settings.as_mut() {
                s.endpoints.retain(|e| e.network_id != n.id);
            }
        })?;
        self.publish_container(ns, &c.id, "disconnect", &[("network", n.name.clone())]);
        Ok(())
    }
}

#[tonic::async_trait]
impl Networks for NetworksService {
    async fn create(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let r = req.into_inner();
        let manager = self.runtime.networks.clone();
        let n = tokio::task::spawn_blocking(move || {
            manager.create(
                &r.name, &r.driver, &r.subnet, &r.gateway, r.internal, r.labels,
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        tracing::info!(network = %n.name, bridge = %n.bridge, subnet = %n.subnet, "network created");
        Ok(Response::new(n))
    }

    async fn get(&self, req: Request<GetNetworkRequest>) -> Result<Response<Network>, Status> {
        let n = self.runtime.networks.find(&req.get_ref().name)?;
        Ok(Response::new(self.runtime.network_with_containers(n)?))
    }

    async fn list(
        &self,
        _req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        Ok(Response::new(ListNetworksResponse {
            networks: self.runtime.networks.list()?,
        }))
    }

    async fn remove(
        &self,
        req: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        let users = self.runtime.all_containers()?;
        let manager = self.runtime.networks.clone();
        let name = req.into_inner().name;
        let n = tokio::task::spawn_blocking(move || manager.remove(&name, &users))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        tracing::info!(network = %n.name, "network removed");
        Ok(Response::new(RemoveNetworkResponse {}))
    }

    async fn attach(
        &self,
        req: Request<ConnectRequest>,
    ) -> Result<Response<ConnectResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.runtime
            .connect_network(&ns, &r.network, &r.container)
            .await?;
        Ok(Response::new(ConnectResponse {}))
    }

    async fn detach(
        &self,
        req: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.runtime
            .disconnect_network(&ns, &r.network, &r.container)
            .await?;
        Ok(Response::new(DisconnectResponse {}))
    }

    async fn prune(
        &self,
        _req: Request<PruneNetworksRequest>,
    ) -> Result<Response<PruneNetworksResponse>, Status> {
        let users = self.runtime.all_containers()?;
        let mut deleted = Vec::new();
        for n in self.runtime.networks.list()? {
            let builtin = matches!(n.name.as_str(), "bridge" | "host" | "none");
            let used = users.iter().any(|(_, c)| c.networks.contains(&n.name));
            if builtin || used {
                continue;
            }
            let manager = self.runtime.networks.clone();
            let (name, u) = (n.name.clone(), users.clone());
            match tokio::task::spawn_blocking(move || manager.remove(&name, &u)).await {
                Ok(Ok(_)) => deleted.push(n.name),
                Ok(Err(e)) => tracing::warn!(network = %n.name, error = %e, "cannot prune network"),
                Err(e) => tracing::warn!(network = %n.name, error = %e, "cannot prune network"),
            }
        }
        Ok(Response::new(PruneNetworksResponse { deleted }))
    }
}
