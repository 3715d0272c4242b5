//! The Containers gRPC service: `berth.containers.v1.Containers` (create, get, list, delete,
//! prune, namespace usage) over the runtime's container records ([`crate::containers`]).

use crate::Runtime;
use berth_api::containers::v1::containers_server::Containers;
use berth_api::containers::v1::{
    CreateContainerRequest, CreateContainerResponse, DeleteContainerRequest,
    DeleteContainerResponse, GetContainerRequest, GetContainerResponse, ListContainersRequest,
    ListContainersResponse, PruneContainersRequest, PruneContainersResponse,
};
use berth_api::types::v1::{NamespaceUsageRequest, NamespaceUsageResponse};
use berth_core::grpc::namespace;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Containers gRPC service.
#[derive(Debug, Clone)]
pub struct ContainersService {
    runtime: Arc<Runtime>,
}

impl ContainersService {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        ContainersService { runtime }
    }
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("no container config given"))?;
        let container = self
            .runtime
            .create_container(&ns, &req.name, config)
            .await?;
        Ok(Response::new(CreateContainerResponse {
            container: Some(container),
        }))
    }

    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let container = self.runtime.store.resolve(&ns, &req.get_ref().id)?;
        Ok(Response::new(GetContainerResponse {
            container: Some(self.runtime.presented(&ns, container)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let containers = self
            .runtime
            .store
            .list(&ns)?
            .into_iter()
            .map(|c| self.runtime.presented(&ns, c))
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn delete(
        &self,
        req: Request<DeleteContainerRequest>,
    ) -> Result<Response<DeleteContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        self.runtime
            .delete_container(&ns, &r.id, r.force, r.remove_volumes)
            .await?;
        Ok(Response::new(DeleteContainerResponse {}))
    }

    async fn prune(
        &self,
        req: Request<PruneContainersRequest>,
    ) -> Result<Response<PruneContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let deleted = self.runtime.prune_containers(&ns).await?;
        Ok(Response::new(PruneContainersResponse { deleted }))
    }

    async fn namespace_usage(
        &self,
        _req: Request<NamespaceUsageRequest>,
    ) -> Result<Response<NamespaceUsageResponse>, Status> {
        let counts = self.runtime.store.container_counts()?;
        Ok(Response::new(crate::namespace_usage("containers", counts)))
    }
}
