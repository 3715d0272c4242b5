//! The Containers gRPC service: `berth.containers.v1.Containers` (create, get, list, delete,
//! prune, namespace usage, rename, update) over the runtime's container records
//! ([`crate::containers`]); its file RPCs (changes, export, archive) are [`super::files`].

use super::files::{self, ChunkStream};
use crate::containers::Containers as ContainerRoom;
use crate::tasks::Tasks;
use berth_api::containers::v1::containers_server::Containers;
use berth_api::containers::v1::{
    ArchivePathRequest, ArchivePutRequest, ArchivePutResponse, ContainerChangesRequest,
    ContainerChangesResponse, ContainerSizesRequest, ContainerSizesResponse,
    CreateContainerRequest, CreateContainerResponse, DeleteContainerRequest,
    DeleteContainerResponse, ExportContainerRequest, GetContainerRequest, GetContainerResponse,
    ListContainersRequest, ListContainersResponse, PathStat, PruneContainersRequest,
    PruneContainersResponse, RenameContainerRequest, RenameContainerResponse,
    UpdateContainerRequest, UpdateContainerResponse,
};
use berth_api::types::v1::{NamespaceUsageRequest, NamespaceUsageResponse};
use berth_core::grpc::namespace;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

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

    async fn sizes(
        &self,
        req: Request<ContainerSizesRequest>,
    ) -> Result<Response<ContainerSizesResponse>, Status> {
        let ns = namespace(&req)?;
        let store = self.containers.store();
        let containers = match req.get_ref().ids.as_slice() {
            [] => store.list(&ns)?,
            ids => ids
                .iter()
                .map(|id| store.resolve(&ns, id))
                .collect::<Result<_, _>>()?,
        };
        let mut sizes = std::collections::HashMap::new();
        for c in containers {
            let size = self.containers.size(&ns, &c).await?;
            sizes.insert(c.id, size);
        }
        Ok(Response::new(ContainerSizesResponse { sizes }))
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

    async fn rename(
        &self,
        req: Request<RenameContainerRequest>,
    ) -> Result<Response<RenameContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        self.containers.rename(&ns, &r.id, &r.new_name).await?;
        Ok(Response::new(RenameContainerResponse {}))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let warnings = self.tasks.update_container(&ns, req.get_ref()).await?;
        Ok(Response::new(UpdateContainerResponse { warnings }))
    }

    async fn changes(
        &self,
        req: Request<ContainerChangesRequest>,
    ) -> Result<Response<ContainerChangesResponse>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(
            files::changes(&self.tasks, &ns, &req.get_ref().id).await?,
        ))
    }

    type ExportStream = ChunkStream;

    async fn export(
        &self,
        req: Request<ExportContainerRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(
            files::export(&self.tasks, &ns, &req.get_ref().id).await?,
        ))
    }

    async fn archive_stat(
        &self,
        req: Request<ArchivePathRequest>,
    ) -> Result<Response<PathStat>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(
            files::archive_stat(&self.tasks, &ns, req.into_inner()).await?,
        ))
    }

    type ArchiveGetStream = ChunkStream;

    async fn archive_get(
        &self,
        req: Request<ArchivePathRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(
            files::archive_get(&self.tasks, &ns, req.into_inner()).await?,
        ))
    }

    async fn archive_put(
        &self,
        req: Request<Streaming<ArchivePutRequest>>,
    ) -> Result<Response<ArchivePutResponse>, Status> {
        let ns = namespace(&req)?;
        let stream = req.into_inner();
        Ok(Response::new(
            files::archive_put(self.tasks.clone(), &ns, stream).await?,
        ))
    }
}
