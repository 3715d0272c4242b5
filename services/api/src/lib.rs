//! Generated gRPC code for berth's API (`proto/berth/*/v1`) and the Kubernetes CRI it serves
//! (`proto/k8s/cri/v1`). Nothing here is hand-written
//! but the module tree that mirrors the proto packages.

#![allow(missing_debug_implementations, clippy::all)]

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("berth_descriptor");

pub mod types {
    pub mod v1 {
        tonic::include_proto!("berth.types.v1");
    }
}
pub mod content {
    pub mod v1 {
        tonic::include_proto!("berth.content.v1");
    }
}
pub mod images {
    pub mod v1 {
        tonic::include_proto!("berth.images.v1");
    }
}
pub mod snapshots {
    pub mod v1 {
        tonic::include_proto!("berth.snapshots.v1");
    }
}
pub mod containers {
    pub mod v1 {
        tonic::include_proto!("berth.containers.v1");
    }
}
pub mod tasks {
    pub mod v1 {
        tonic::include_proto!("berth.tasks.v1");
    }
}
pub mod version {
    pub mod v1 {
        tonic::include_proto!("berth.version.v1");
    }
}
pub mod registry {
    pub mod v1 {
        tonic::include_proto!("berth.registry.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("berth.events.v1");
    }
}
pub mod volumes {
    pub mod v1 {
        tonic::include_proto!("berth.volumes.v1");
    }
}
pub mod networks {
    pub mod v1 {
        tonic::include_proto!("berth.networks.v1");
    }
}
pub mod build {
    pub mod v1 {
        tonic::include_proto!("berth.build.v1");
    }
}
pub mod namespaces {
    pub mod v1 {
        tonic::include_proto!("berth.namespaces.v1");
    }
}
pub mod leases {
    pub mod v1 {
        tonic::include_proto!("berth.leases.v1");
    }
}

/// The Kubernetes Container Runtime Interface (package `runtime.v1`, vendored in
/// `proto/k8s/cri/v1/api.proto`): served by the CRI front, `berth-cri`.
pub mod cri {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use prost_types;
