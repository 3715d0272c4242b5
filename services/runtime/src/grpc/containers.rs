//! The Containers gRPC service: `berth.containers.v1.Containers` (create, get, list, delete,
//! prune, namespace usage) over the runtime's container records ([`crate::containers`]).

use crate::containers::Containers as ContainerRoom;
use crate::tasks::Tasks;
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
    containers: Arc<ContainerRoom>,
    /// Deleting a container ends its task first.
    tasks: Arc<Tasks>,
}

impl ContainersService {
    pub fn new(containers: Arc<ContainerRoom>, tasks: Arc<Tasks>) -> Self {
        ContainersService { containers, tasks }
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
            .containers
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
        let container = self.containers.store().resolve(&ns, &req.get_ref().id)?;
        Ok(Response::new(GetContainerResponse {
            container: Some(self.containers.presented(&ns, container)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let containers = self
            .containers
            .store()
            .list(&ns)?
            .into_iter()
            .map(|c| self.containers.presented(&ns, c))
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn delete(
        &self,
        req: Request<DeleteContainerRequest>,
    ) -> Result<Response<DeleteContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        self.tasks
            .delete_container(&ns, &r.id, r.force, r.remove_volumes)
            .await?;
        Ok(Response::new(DeleteContainerResponse {}))
    }

    async fn prune(
        &self,
        req: Request<PruneContainersRequest>,
    ) -> Result<Response<PruneContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let deleted = self.tasks.prune_containers(&ns).await?;
        Ok(Response::new(PruneContainersResponse { deleted }))
    }

    async fn namespace_usage(
        &self,
        _req: Request<NamespaceUsageRequest>,
    ) -> Result<Response<NamespaceUsageResponse>, Status> {
        let counts = self.containers.store().container_counts()?;
        Ok(Response::new(crate::namespace_usage("containers", counts)))
    }
}
