//! The Containers service: creating, finding and deleting container records.

use crate::error::{Error, Result};
use crate::lifecycle::{state_of, Policy, STATUS_CREATED, STATUS_DEAD, STATUS_EXITED};
use crate::shim::{Request as ShimRequest, Status as ShimStatus};
use crate::spec::{self, ImageConfig};
use crate::volumes::{Bind, Tmpfs};
use crate::Runtime;
use berth_api::containers::v1::containers_server::Containers;
use berth_api::containers::v1::{
    Container, ContainerConfig, ContainerState, CreateContainerRequest, CreateContainerResponse,
    DeleteContainerRequest, DeleteContainerResponse, GetContainerRequest, GetContainerResponse,
    ListContainersRequest, ListContainersResponse, MountPoint, PruneContainersRequest,
    PruneContainersResponse,
};
use berth_api::images::v1::{InspectImageRequest, InspectImageResponse};
use berth_api::snapshots::v1::{PrepareSnapshotRequest, SnapshotKey};
use berth_api::types::v1::{NamespaceUsageRequest, NamespaceUsageResponse};
use berth_core::grpc::{namespace, request};
use berth_core::Reference;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// Checks a container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as Docker allows.
pub fn validate_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// A new container id: 64 hex digits from the kernel's random source. Like Docker, never one
/// whose short form is all digits (it would read as a number).
pub fn new_id() -> Result<String> {
    loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::io(
                "cannot read random bytes",
                "getrandom",
                std::io::Error::other(e),
            )
        })?;
        let id = hex::encode(bytes);
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return Ok(id);
        }
    }
}

const ADJECTIVES: [&str; 24] = [
    "admiring", "bold", "brave", "clever", "eager", "elegant", "focused", "gentle", "happy",
    "jolly", "keen", "kind", "loving", "modest", "nice", "peaceful", "quirky", "relaxed", "serene",
    "sharp", "stoic", "tender", "vibrant", "zealous",
];
const SURNAMES: [&str; 24] = [
    "babbage", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler", "faraday", "gauss",
    "hopper", "hypatia", "kepler", "knuth", "lovelace", "mccarthy", "newton", "noether", "pascal",
    "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak",
];

/// A Docker-style random name (`focused_turing`) not yet used in the namespace.
fn random_name(store: &crate::metadata::Store, namespace: &str) -> Result<String> {
    let mut bytes = [0u8; 4];
    for attempt in 0..20 {
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::io(
                "cannot read random bytes",
                "getrandom",
                std::io::Error::other(e),
            )
        })?;
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[bytes[0] as usize % ADJECTIVES.len()],
            SURNAMES[bytes[1] as usize % SURNAMES.len()]
        );
        if attempt > 0 {
            name.push_str(&(u16::from_be_bytes([bytes[2], bytes[3]]) % 100).to_string());
        }
        if store.name_owner(namespace, &name)?.is_none() {
            return Ok(name);
        }
    }
    // 20 misses in a row means a crowded namespace: fall back to something unique.
    Ok(format!("berth_{}", &new_id()?[..12]))
}

/// The image reference as stored: normalized when it is a reference, as given when it names
/// the image by id.
fn normalized_image(given: &str, inspect: &InspectImageResponse) -> String {
    let id = inspect
        .summary
        .as_ref()
        .map(|s| s.id.as_str())
        .unwrap_or_default();
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    let given_hex = given.strip_prefix("sha256:").unwrap_or(given);
    if !given_hex.is_empty() && hex.starts_with(given_hex) {
        return given.to_string();
    }
    Reference::parse(given)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| given.to_string())
}

impl Runtime {
    /// Creates a container: image → spec → writable snapshot → record.
    pub async fn create_container(
        &self,
        ns: &str,
        name: &str,
        mut config: ContainerConfig,
    ) -> Result<Container> {
        let name = name.strip_prefix('/').unwrap_or(name);
        let (binds, tmpfs) = self.check_create(ns, name, &config)?;
        let inspect = self.inspect_image(ns, &config.image).await?;
        let image = ImageConfig::from_json(&config.image, &inspect.config)?;

        let id = new_id()?;
        let name = if name.is_empty() {
            random_name(&self.store, ns)?
        } else {
            name.to_string()
        };
        // The spec first: a bad request must not leave a snapshot behind.
        let (spec, networks, mounts) =
            self.container_spec(ns, &id, &mut config, &image, &binds, &tmpfs)?;

        if inspect.chain_id.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "image {} has no unpacked rootfs; pull it again to unpack it",
                config.image
            )));
        }
        let snapshotter = if config.snapshotter.is_empty() {
            inspect.snapshotter.clone()
        } else {
            config.snapshotter.clone()
        };
        self.prepare_rootfs(ns, &id, &snapshotter, &inspect.chain_id, &mounts)
            .await?;

        let mut labels: std::collections::HashMap<String, String> =
            spec::image_labels(&image).into_iter().collect();
        labels.extend(config.labels.clone());
        let container = Container {
            id: id.clone(),
            name,
            image: normalized_image(&config.image, &inspect),
            image_id: inspect
                .summary
                .as_ref()
                .map(|s| s.id.clone())
                .unwrap_or_default(),
            config: Some(config),
            spec,
            snapshotter: snapshotter.clone(),
            snapshot_key: id.clone(),
            created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            labels,
            state: Some(ContainerState {
                status: STATUS_CREATED.to_string(),
                ..Default::default()
            }),
            mounts,
            log_path: self.log_path(ns, &id).display().to_string(),
            networks,
            network_settings: None,
        };
        if let Err(e) = self.store.create(ns, &container) {
            // Lost a race for the name (or the disk failed): give the snapshot back.
            self.drop_new_volumes(ns, &id, &container.mounts);
            if let Err(re) = self.remove_snapshot(ns, &snapshotter, &id).await {
                tracing::warn!(container = %id, error = %re, "cannot remove the snapshot of a container that was not stored");
            }
            return Err(e);
        }
        tracing::info!(container = %container.id, name = %container.name, image = %container.image, "container created");
        self.publish_container(ns, &container.id, "create", &[]);
        Ok(container)
    }

    /// The checks of a create request that need neither the image nor a snapshot: the name
    /// (free, as far as can be told now), the image given, restart policy, stop signal, binds
    /// and tmpfs mounts (parsed, no destination twice).
    fn check_create(
        &self,
        ns: &str,
        name: &str,
        config: &ContainerConfig,
    ) -> Result<(Vec<Bind>, Vec<Tmpfs>)> {
        if !name.is_empty() {
            validate_name(name)?;
            // Checked again in the transaction that stores the record; this early check only
            // spares the image and snapshot work.
            if let Some(id) = self.store.name_owner(ns, name)? {
                return Err(Error::NameInUse {
                    name: name.to_string(),
                    id,
                });
            }
        }
        if config.image.is_empty() {
            return Err(Error::InvalidArgument(
                "no image given: name the image to create the container from".into(),
            ));
        }
        Policy::validate(config.restart_policy.as_ref())?;
        if config.auto_remove && !matches!(Policy::of(config.restart_policy.as_ref()), Policy::No) {
            return Err(Error::InvalidArgument(
                "conflicting options: cannot specify both --restart and --rm".into(),
            ));
        }
        if !config.stop_signal.is_empty() {
            crate::lifecycle::parse_signal(&config.stop_signal)?;
        }
        let binds = crate::volumes::parse_binds(&config.binds)?;
        let tmpfs = config
            .tmpfs
            .iter()
            .map(|t| crate::volumes::parse_tmpfs(t))
            .collect::<Result<Vec<_>>>()?;
        for t in &tmpfs {
            let same = |d: &str| d == t.destination;
            if binds.iter().any(|b| same(&b.destination))
                || tmpfs.iter().filter(|o| same(&o.destination)).count() > 1
            {
                return Err(Error::InvalidArgument(format!(
                    "Duplicate mount point: {}",
                    t.destination
                )));
            }
        }
        Ok((binds, tmpfs))
    }

    /// The image a container is created from, as the Images service describes it.
    async fn inspect_image(&self, ns: &str, image: &str) -> Result<InspectImageResponse> {
        Ok(self
            .images
            .clone()
            .inspect(request(
                ns,
                InspectImageRequest {
                    name: image.to_string(),
                },
            ))
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => Error::NoSuchImage(image.to_string()),
                _ => Error::service("images", s),
            })?
            .into_inner())
    }

    /// The container's spec (as stored, JSON) with its network mode checked (`config`'s
    /// mode is set to the one stored), its volumes and tmpfs mounts; the networks it joins
    /// when it starts, and its mount points (new anonymous volumes made here).
    fn container_spec(
        &self,
        ns: &str,
        id: &str,
        config: &mut ContainerConfig,
        image: &ImageConfig,
        binds: &[Bind],
        tmpfs: &[Tmpfs],
    ) -> Result<(Vec<u8>, Vec<String>, Vec<MountPoint>)> {
        let (networks, mode) = self
            .networks
            .check_config(&config.network_mode, &config.port_bindings)?;
        config.network_mode = mode;
        if let crate::network::Mode::Container(other) =
            crate::network::Mode::of(&config.network_mode)
        {
            self.store.resolve(ns, &other)?;
        }
        let mut spec = spec::build(id, ns, config, image, &self.spec_options)?;
        let image_volumes: Vec<String> = image
            .volumes
            .as_ref()
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        // A tmpfs on an image volume's path takes its place, as with Docker.
        let image_volumes: Vec<String> = image_volumes
            .into_iter()
            .filter(|v| {
                let v = crate::volumes::clean(v);
                !tmpfs.iter().any(|t| t.destination == v)
            })
            .collect();
        let mounts = self.container_mounts(ns, binds, &image_volumes)?;
        crate::volumes::add_to_spec(&mut spec, &mounts)?;
        crate::volumes::add_tmpfs_to_spec(&mut spec, tmpfs)?;
        let spec_json = serde_json::to_vec(&spec).map_err(|e| Error::Spec(e.to_string()))?;
        Ok((spec_json, networks, mounts))
    }

    /// Prepares the container's writable snapshot (key = its id) on the image's chain, and
    /// fills its new volumes with what the image has at their paths. The new volumes are
    /// removed again when the snapshot cannot be made.
    async fn prepare_rootfs(
        &self,
        ns: &str,
        id: &str,
        snapshotter: &str,
        chain_id: &str,
        mounts: &[MountPoint],
    ) -> Result<()> {
        let prepared = match self
            .snapshots
            .clone()
            .prepare(request(
                ns,
                PrepareSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: id.to_string(),
                    parent: chain_id.to_string(),
                    labels: Default::default(),
                },
            ))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.drop_new_volumes(ns, id, mounts);
                return Err(Error::service("snapshots", s));
            }
        };
        // A new (empty) volume starts with what the image has at its path.
        let rootfs: Vec<_> = prepared
            .mounts
            .into_iter()
            .map(crate::bundle::rootfs_mount)
            .collect();
        for m in mounts.iter().filter(|m| m.r#type == "volume") {
            let (layers, dst, target) = (
                crate::copyup::layer_dirs(&rootfs),
                m.destination.clone(),
                std::path::PathBuf::from(&m.source),
            );
            let copied = tokio::task::spawn_blocking(move || {
                crate::copyup::copy_up_if_empty(&layers, &dst, &target)
            })
            .await;
            if let Ok(Err(e)) = copied {
                tracing::warn!(container = %id, volume = %m.name, error = %e, "cannot fill the new volume with the image's content");
            }
        }
        Ok(())
    }

    /// Removes the anonymous volumes made for a container `id` that was not created.
    fn drop_new_volumes(&self, ns: &str, id: &str, mounts: &[MountPoint]) {
        self.remove_anonymous_volumes(
            ns,
            &Container {
                id: id.to_string(),
                mounts: mounts.to_vec(),
                ..Default::default()
            },
        )
    }

    async fn remove_snapshot(&self, ns: &str, snapshotter: &str, key: &str) -> Result<()> {
        match self
            .snapshots
            .clone()
            .remove(request(
                ns,
                SnapshotKey {
                    snapshotter: snapshotter.to_string(),
                    key: key.to_string(),
                },
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::service("snapshots", s)),
        }
    }

    /// Deletes a container: its stopped task, its snapshot, its log, its record (and its
    /// anonymous volumes with `remove_volumes`). A running container is refused, unless
    /// `force`, which kills it first.
    pub async fn delete_container(
        &self,
        ns: &str,
        reference: &str,
        force: bool,
        remove_volumes: bool,
    ) -> Result<()> {
        let container = self.store.resolve(ns, reference)?;
        let id = container.id.clone();
        let _guard = self.lock(ns, &id).await;
        if let Some(task) = self.task_state(ns, &id).await? {
            if task.status == ShimStatus::Running {
                if !force {
                    return Err(Error::FailedPrecondition(format!(
                        "You cannot remove a running container {id}. Stop the container before \
                         attempting removal or force remove"
                    )));
                }
                let shim = self.shim(ns, &id);
                shim.call_ok(&ShimRequest::Kill {
                    signal: libc::SIGKILL,
                    all: true,
                })
                .await?;
                self.thaw_if_paused(ns, &id).await;
                self.publish_container(ns, &id, "kill", &[("signal", "9".to_string())]);
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    shim.call(&ShimRequest::Wait),
                )
                .await;
            }
        }
        self.delete_container_locked(ns, &container, remove_volumes)
            .await?;
        drop(_guard);
        self.forget_lock(ns, &id);
        self.forget_mounts(ns, &id);
        Ok(())
    }

    /// Deletes a container whose lock is held and whose task is not running.
    pub(crate) async fn delete_container_locked(
        &self,
        ns: &str,
        container: &Container,
        remove_volumes: bool,
    ) -> Result<()> {
        let id = container.id.as_str();
        if let Some(task) = self.task_state(ns, id).await? {
            self.delete_task_of(ns, id, &task).await?;
        }
        self.remove_snapshot(ns, &container.snapshotter, &container.snapshot_key)
            .await?;
        self.store.delete(ns, id)?;
        let dir = self.container_dir(ns, id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(container = %id, error = %e, "cannot remove the container's folder");
            }
        }
        if remove_volumes {
            self.remove_anonymous_volumes(ns, container);
        }
        tracing::info!(container = %id, "container deleted");
        self.publish(
            ns,
            "container",
            "destroy",
            id,
            [
                ("name".to_string(), container.name.clone()),
                ("image".to_string(), container.image.clone()),
            ]
            .into(),
        );
        Ok(())
    }

    /// Deletes every container that is not running (created, exited, dead). Returns their
    /// ids.
    pub async fn prune_containers(&self, ns: &str) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        for c in self.store.list(ns)? {
            let st = state_of(&c);
            if ![STATUS_CREATED, STATUS_EXITED, STATUS_DEAD].contains(&st.status.as_str()) {
                continue;
            }
            match self.delete_container(ns, &c.id, false, false).await {
                Ok(()) => deleted.push(c.id),
                Err(e) => tracing::info!(container = %c.id, error = %e, "prune: container kept"),
            }
        }
        Ok(deleted)
    }

    /// A container as Get and List show it: its state (`created` for an old record) and log
    /// path filled in.
    pub(crate) fn presented(&self, ns: &str, mut c: Container) -> Container {
        c.state = Some(state_of(&c));
        if c.log_path.is_empty() {
            c.log_path = self.log_path(ns, &c.id).display().to_string();
        }
        c
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "my_app.v2-1", "0abc"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "_x", "-x", ".x", "a b", "a/b", "ü"] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        }
        assert_eq!(
            validate_name("a b").unwrap_err().to_string(),
            "Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        );
    }

    #[test]
    fn ids() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn generated_names_are_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::metadata::Store::open(dir.path()).unwrap();
        let n = random_name(&store, "default").unwrap();
        validate_name(&n).unwrap();
        assert!(n.contains('_'));
    }

    #[test]
    fn image_names_are_normalized() {
        let inspect = InspectImageResponse {
            summary: Some(berth_api::images::v1::ImageSummary {
                id: "sha256:abcdef0123".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            normalized_image("busybox", &inspect),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalized_image("abcdef", &inspect), "abcdef");
        assert_eq!(normalized_image("sha256:abcdef", &inspect), "sha256:abcdef");
    }
}
