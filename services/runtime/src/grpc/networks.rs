//! The Networks gRPC service: `network create|ls|rm|inspect|connect|disconnect|prune` over
//! the runtime's [`crate::network::Networks`] and [`crate::connections`].

use crate::connections::Connections;
use crate::network::Networks as NetworkRoom;
use berth_api::networks::v1::networks_server::Networks;
use berth_api::networks::v1::{
    ConnectRequest, ConnectResponse, CreateNetworkRequest, DisconnectRequest, DisconnectResponse,
    GetNetworkRequest, ListNetworksRequest, ListNetworksResponse, Network, PruneNetworksRequest,
    PruneNetworksResponse, RemoveNetworkRequest, RemoveNetworkResponse,
};
use berth_core::grpc::namespace;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct NetworksService {
    networks: Arc<NetworkRoom>,
    connections: Arc<Connections>,
}

impl NetworksService {
    pub fn new(networks: Arc<NetworkRoom>, connections: Arc<Connections>) -> Self {
        NetworksService {
            networks,
            connections,
        }
    }
}

#[tonic::async_trait]
impl Networks for NetworksService {
    async fn create(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let manager = self.networks.clone();
        let n = tokio::task::spawn_blocking(move || manager.create(&r))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        tracing::info!(network = %n.name, bridge = %n.bridge, subnet = %n.subnet, "network created");
        self.connections
            .events()
            .publish_network(&ns, &n, "create", None);
        Ok(Response::new(n))
    }

    async fn get(&self, req: Request<GetNetworkRequest>) -> Result<Response<Network>, Status> {
        let n = self.networks.find(&req.get_ref().name)?;
        Ok(Response::new(self.connections.network_with_containers(n)?))
    }

    async fn list(
        &self,
        _req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        Ok(Response::new(ListNetworksResponse {
            networks: self.networks.list()?,
        }))
    }

    async fn remove(
        &self,
        req: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        let ns = namespace(&req)?;
        let users = self.connections.all_containers()?;
        let manager = self.networks.clone();
        let name = req.into_inner().name;
        let n = tokio::task::spawn_blocking(move || manager.remove(&name, &users))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        tracing::info!(network = %n.name, "network removed");
        self.connections
            .events()
            .publish_network(&ns, &n, "destroy", None);
        Ok(Response::new(RemoveNetworkResponse {}))
    }

    async fn attach(
        &self,
        req: Request<ConnectRequest>,
    ) -> Result<Response<ConnectResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.connections
            .connect_network(&ns, &r.network, &r.container, r.aliases)
            .await?;
        Ok(Response::new(ConnectResponse {}))
    }

    async fn detach(
        &self,
        req: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.connections
            .disconnect_network(&ns, &r.network, &r.container)
            .await?;
        Ok(Response::new(DisconnectResponse {}))
    }

    async fn prune(
        &self,
        req: Request<PruneNetworksRequest>,
    ) -> Result<Response<PruneNetworksResponse>, Status> {
        let ns = namespace(&req)?;
        let users = self.connections.all_containers()?;
        let mut deleted = Vec::new();
        for n in self.networks.list()? {
            let builtin = matches!(n.name.as_str(), "bridge" | "host" | "none");
            let used = users.iter().any(|(_, c)| c.networks.contains(&n.name));
            if builtin || used {
                continue;
            }
            let manager = self.networks.clone();
            let (name, u) = (n.name.clone(), users.clone());
            match tokio::task::spawn_blocking(move || manager.remove(&name, &u)).await {
                Ok(Ok(removed)) => {
                    self.connections
                        .events()
                        .publish_network(&ns, &removed, "destroy", None);
                    deleted.push(n.name)
                }
                Ok(Err(e)) => tracing::warn!(network = %n.name, error = %e, "cannot prune network"),
                Err(e) => tracing::warn!(network = %n.name, error = %e, "cannot prune network"),
            }
        }
        Ok(Response::new(PruneNetworksResponse { deleted }))
    }
}
