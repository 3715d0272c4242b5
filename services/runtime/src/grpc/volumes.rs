//! The Volumes gRPC service: `berth.volumes.v1.Volumes` (create, get, list, remove, prune,
//! namespace usage) over the runtime's volumes ([`crate::volumes`]).

use crate::volumes::Volumes as VolumeRoom;
use berth_api::types::v1::{NamespaceUsageRequest, NamespaceUsageResponse};
use berth_api::volumes::v1::volumes_server::Volumes;
use berth_api::volumes::v1::{
    CreateVolumeRequest, GetVolumeRequest, ListVolumesRequest, ListVolumesResponse,
    PruneVolumesRequest, PruneVolumesResponse, RemoveVolumeRequest, RemoveVolumeResponse, Volume,
};
use berth_core::grpc::namespace;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Volumes gRPC service.
#[derive(Debug, Clone)]
pub struct VolumesService {
    volumes: Arc<VolumeRoom>,
}

impl VolumesService {
    pub fn new(volumes: Arc<VolumeRoom>) -> Self {
        VolumesService { volumes }
    }
}

#[tonic::async_trait]
impl Volumes for VolumesService {
    async fn create(&self, req: Request<CreateVolumeRequest>) -> Result<Response<Volume>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let name = if req.name.is_empty() {
            crate::containers::new_id()?
        } else {
            req.name
        };
        Ok(Response::new(
            self.volumes.create_volume(&ns, &name, req.labels, false)?,
        ))
    }

    async fn get(&self, req: Request<GetVolumeRequest>) -> Result<Response<Volume>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(
            self.volumes.get_volume(&ns, &req.get_ref().name)?,
        ))
    }

    async fn list(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(ListVolumesResponse {
            volumes: self.volumes.list_with_usage(&ns, req.get_ref().usage)?,
        }))
    }

    async fn remove(
        &self,
        req: Request<RemoveVolumeRequest>,
    ) -> Result<Response<RemoveVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        self.volumes.remove_volume(&ns, &r.name, r.force)?;
        Ok(Response::new(RemoveVolumeResponse {}))
    }

    async fn prune(
        &self,
        req: Request<PruneVolumesRequest>,
    ) -> Result<Response<PruneVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        let (deleted, space_reclaimed) = self.volumes.prune_volumes(&ns, r.all, &r.filters)?;
        Ok(Response::new(PruneVolumesResponse {
            deleted,
            space_reclaimed,
        }))
    }

    async fn namespace_usage(
        &self,
        _req: Request<NamespaceUsageRequest>,
    ) -> Result<Response<NamespaceUsageResponse>, Status> {
        let counts = self.volumes.store().volume_counts()?;
        Ok(Response::new(crate::namespace_usage("volumes", counts)))
    }
}
