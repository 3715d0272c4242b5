//! Container definitions: [`Containers`] creates them (image → spec → writable snapshot →
//! record) and removes what a deleted container leaves (snapshot, record, folder, anonymous
//! volumes). It owns the clients of the Images and Snapshots services for that, and the
//! host's spec options. Deleting a container ends its task first, so it is the task
//! lifecycle's ([`crate::tasks::Tasks::delete_container`]), which calls [`Containers::remove`].
//! The gRPC shell over both is [`crate::grpc::containers`].

use crate::error::{Error, Result};
use crate::events::Events;
use crate::lifecycle::{state_of, Policy, STATUS_CREATED};
use crate::logs::Logs;
use crate::metadata::Store;
use crate::network::Networks;
use crate::spec::{self, ImageConfig};
use crate::volumes::{Bind, Tmpfs, Volumes};
use berth_api::containers::v1::{
    Container, ContainerConfig, ContainerSize, ContainerState, MountPoint,
};
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::images::v1::{InspectImageRequest, InspectImageResponse};
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::snapshots::v1::{PrepareSnapshotRequest, SnapshotKey};
use berth_core::grpc::request;
use berth_core::Reference;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::Code;

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

/// Docker's conflicts between a `container:NAME` network mode and the options that belong to
/// a container's own network (published ports, DNS, hosts entries, host name): the other
/// container's network is used as it is.
pub fn check_network_options(config: &ContainerConfig) -> Result<()> {
    if !config.network_mode.starts_with("container:") {
        return Ok(());
    }
    let conflict = |what: &str| {
        Err(Error::InvalidArgument(format!(
            "Conflicting options: {what} and the network mode"
        )))
    };
    if !config.port_bindings.is_empty() || config.publish_all {
        return Err(Error::InvalidArgument(
            "Conflicting options: port publishing and the container type network mode".into(),
        ));
    }
    if !config.dns.is_empty() || !config.dns_search.is_empty() || !config.dns_options.is_empty() {
        return conflict("dns");
    }
    if !config.extra_hosts.is_empty() {
        return conflict("custom host-to-IP mapping");
    }
    if !config.hostname.is_empty() {
        return conflict("hostname");
    }
    Ok(())
}

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

/// The container definitions: what creating one needs (the Images and Snapshots services, the
/// volumes, the networks' checks, the host's spec options) and the records they end up in.
#[derive(Debug)]
pub struct Containers {
    /// The container records.
    store: Store,
    /// Resolves the image a container is created from.
    images: ImagesClient<Channel>,
    /// Prepares and removes the container's writable snapshot.
    snapshots: SnapshotsClient<Channel>,
    /// The container's binds and volumes, made at create.
    volumes: Arc<Volumes>,
    /// Checks the network mode and published ports of a create request.
    networks: Arc<Networks>,
    /// What the host allows in a spec (CPUs, capabilities, seccomp, log size).
    spec_options: spec::Options,
    /// The container's folder and log path.
    logs: Logs,
    events: Arc<Events>,
}

impl Containers {
    /// The parts a container definition is made of; see each field.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        images: ImagesClient<Channel>,
        snapshots: SnapshotsClient<Channel>,
        volumes: Arc<Volumes>,
        networks: Arc<Networks>,
        spec_options: spec::Options,
        logs: Logs,
        events: Arc<Events>,
    ) -> Containers {
        Containers {
            store,
            images,
            snapshots,
            volumes,
            networks,
            spec_options,
            logs,
            events,
        }
    }

    /// The container records.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What the host allows in a spec.
    pub(crate) fn spec_options(&self) -> &spec::Options {
        &self.spec_options
    }

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
        let user_network = !matches!(config.network_mode.as_str(), "" | "default")
            && config.network_mode != crate::network::DEFAULT_NETWORK
            && matches!(
                crate::network::Mode::of(&config.network_mode),
                crate::network::Mode::Bridge
            );
        if !config.network_aliases.is_empty() && !user_network {
            return Err(Error::InvalidArgument(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
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
            log_path: self.logs.log_path(ns, &id).display().to_string(),
            networks,
            network_settings: None,
            network_aliases: Vec::new(),
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
        self.events
            .publish_container(ns, &container.id, "create", &[]);
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
                "Conflicting options: --restart and --rm".into(),
            ));
        }
        check_network_options(config)?;
        crate::logs::check_log_config(config)?;
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
        crate::network::attachment::check_cni_args(&config.cni_args)?;
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
        let mounts = self.volumes.container_mounts(ns, binds, &image_volumes)?;
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
        self.volumes.remove_anonymous_volumes(
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

    /// Removes what a container whose task is gone leaves behind: its snapshot, its record,
    /// its folder (log, network files) and, with `remove_volumes`, its anonymous volumes;
    /// publishes `destroy`. The task lifecycle calls it under the container's lock, once the
    /// task is deleted ([`crate::tasks::Tasks::delete_container`]).
    pub(crate) async fn remove(
        &self,
        ns: &str,
        container: &Container,
        remove_volumes: bool,
    ) -> Result<()> {
        let id = container.id.as_str();
        self.remove_snapshot(ns, &container.snapshotter, &container.snapshot_key)
            .await?;
        self.store.delete(ns, id)?;
        let dir = self.logs.container_dir(ns, id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(container = %id, error = %e, "cannot remove the container's folder");
            }
        }
        if remove_volumes {
            self.volumes.remove_anonymous_volumes(ns, container);
        }
        tracing::info!(container = %id, "container deleted");
        self.events.publish(
            ns,
            "container",
            "destroy",
            id,
            crate::events::container_attributes(container),
        );
        Ok(())
    }

    /// Containers.Rename: a new name (Docker's rules and conflict), the peers' hosts files
    /// updated, a `rename` event with the old name.
    pub async fn rename(&self, ns: &str, reference: &str, new_name: &str) -> Result<()> {
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        validate_name(new_name)?;
        let c = self.store.resolve(ns, reference)?;
        if c.name == new_name {
            return Err(Error::InvalidArgument(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        self.store
            .rename(ns, &c.id, new_name)?
            .ok_or_else(|| Error::NoSuchContainer(reference.to_string()))?;
        self.networks.rename_peer(ns, &c.id, new_name);
        tracing::info!(container = %c.id, old = %c.name, new = %new_name, "container renamed");
        self.events
            .publish_container(ns, &c.id, "rename", &[("oldName", format!("/{}", c.name))]);
        Ok(())
    }

    /// Docker's sizes of `c`: its writable layer as the snapshot service measures it, and
    /// that plus its image's unpacked size (the writable layer alone when the image is gone).
    pub(crate) async fn size(&self, ns: &str, c: &Container) -> Result<ContainerSize> {
        let rw = if c.snapshot_key.is_empty() {
            0
        } else {
            let key = SnapshotKey {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            };
            match self.snapshots.clone().usage(request(ns, key)).await {
                Ok(u) => u.into_inner().size,
                // Removed under it (a container being deleted): nothing to count.
                Err(s) if s.code() == Code::NotFound => 0,
                Err(s) => return Err(Error::service("snapshots", s)),
            }
        };
        let image = if c.image_id.is_empty() {
            &c.image
        } else {
            &c.image_id
        };
        let image_size = match self.inspect_image(ns, image).await {
            Ok(i) => i.summary.map_or(0, |s| s.size),
            Err(Error::NoSuchImage(_)) => 0,
            Err(e) => return Err(e),
        };
        Ok(ContainerSize {
            rw,
            root_fs: rw + image_size,
        })
    }

    /// A container as Get and List show it: its state (`created` for an old record) and log
    /// path filled in.
    pub(crate) fn presented(&self, ns: &str, mut c: Container) -> Container {
        c.state = Some(state_of(&c));
        if c.log_path.is_empty() {
            c.log_path = self.logs.log_path(ns, &c.id).display().to_string();
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_network_takes_no_network_options() {
        let mut c = ContainerConfig {
            network_mode: "container:db".into(),
            ..Default::default()
        };
        assert!(check_network_options(&c).is_ok());
        let refused = |c: &ContainerConfig| check_network_options(c).unwrap_err().to_string();
        c.hostname = "h".into();
        assert_eq!(
            refused(&c),
            "Conflicting options: hostname and the network mode"
        );
        c.extra_hosts = vec!["a:1.2.3.4".into()];
        assert_eq!(
            refused(&c),
            "Conflicting options: custom host-to-IP mapping and the network mode"
        );
        c.dns = vec!["1.1.1.1".into()];
        assert_eq!(refused(&c), "Conflicting options: dns and the network mode");
        c.publish_all = true;
        assert_eq!(
            refused(&c),
            "Conflicting options: port publishing and the container type network mode"
        );
        c.network_mode = "bridge".into();
        assert!(check_network_options(&c).is_ok());
    }

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
