//! The image domain: pulling through the registry service, unpacking through the snapshot
//! service, names in the image database, and what `image ls` / `image inspect` show.

use crate::content::ContentStore;
use crate::error::ImageError;
use crate::manifest::{self, Descriptor, Manifest};
use crate::metadata::{DescriptorRecord, ImageDb, ImageRecord};
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::images::v1 as api;
use berth_api::registry::v1::{registry_client::RegistryClient, FetchRequest, ResolveRequest};
use berth_api::snapshots::v1::{
    apply_request, snapshots_client::SnapshotsClient, ApplyHeader, ApplyRequest, SnapshotKey,
};
use berth_api::types::v1 as types;
use berth_api::volumes::v1::volumes_client::VolumesClient;
use berth_core::digest::chain_id;
use berth_core::grpc::request;
use berth_core::{media, Digest, Reference};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;

pub const LABEL_ID: &str = "berth.image.id";
pub const LABEL_MANIFEST: &str = "berth.image.manifest";
pub const LABEL_CREATED: &str = "berth.image.created";
pub const LABEL_SIZE: &str = "berth.image.size";
pub const LABEL_SNAPSHOTTER: &str = "berth.image.snapshotter";

/// Progress lines of a pull or import go here; a closed receiver does not stop the work.
pub type ProgressTx = mpsc::Sender<Result<api::PullResponse, tonic::Status>>;

#[derive(Debug, Clone)]
pub struct ImageStore {
    pub content: ContentStore,
    pub db: ImageDb,
    pub(crate) registry: RegistryClient<Channel>,
    pub(crate) snapshots: SnapshotsClient<Channel>,
    pub(crate) containers: Option<ContainersClient<Channel>>,
    /// The runtime's Volumes service, asked what each namespace holds.
    pub(crate) volumes: Option<VolumesClient<Channel>>,
    default_snapshotter: String,
    events: std::sync::Arc<berth_events::Publisher>,
    pub(crate) leases: crate::lease::Leases,
    downloads: Downloads,
    /// What one archive given to `image import` may unpack ([limits] of berthd's config).
    pub(crate) limits: berth_core::config::Limits,
    /// Bytes pulled and pushed, garbage collections.
    pub(crate) metrics: std::sync::Arc<crate::metrics::Counters>,
}

/// Blobs being downloaded, so that concurrent pulls fetch each blob once.
#[derive(Debug, Clone, Default)]
struct Downloads(
    std::sync::Arc<std::sync::Mutex<HashMap<Digest, std::sync::Weak<tokio::sync::Mutex<()>>>>>,
);

impl Downloads {
    /// The lock of one blob's download, shared by everyone fetching it right now.
    fn gate(&self, d: &Digest) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(g) = map.get(d).and_then(|w| w.upgrade()) {
            return g;
        }
        let g = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        map.insert(d.clone(), std::sync::Arc::downgrade(&g));
        g
    }
}

pub(crate) async fn progress(tx: &ProgressTx, id: &str, action: &str, current: i64, total: i64) {
    let _ = tx
        .send(Ok(api::PullResponse {
            item: Some(api::pull_response::Item::Progress(types::Progress {
                id: id.to_string(),
                action: action.to_string(),
                current,
                total,
                message: String::new(),
            })),
        }))
        .await;
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// What a stored image resolves to: its manifest, config and layers.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub record: ImageRecord,
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub diff_ids: Vec<Digest>,
    pub created: Option<String>,
}

impl ImageStore {
    pub fn new(
        content: ContentStore,
        db: ImageDb,
        registry: RegistryClient<Channel>,
        snapshots: SnapshotsClient<Channel>,
        default_snapshotter: String,
        events: berth_events::Publisher,
    ) -> ImageStore {
        ImageStore {
            content,
            db,
            registry,
            snapshots,
            containers: None,
            volumes: None,
            default_snapshotter,
            events: std::sync::Arc::new(events),
            leases: Default::default(),
            downloads: Default::default(),
            limits: Default::default(),
            metrics: Default::default(),
        }
    }

    /// Bounds what an imported archive may unpack (entries, bytes) by `limits`.
    pub fn with_limits(mut self, limits: berth_core::config::Limits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// Asks the runtime service at `channel` which containers use an image before deleting it,
    /// and what its containers and volumes hold of a namespace before removing that.
    pub fn with_runtime(mut self, channel: Channel) -> ImageStore {
        self.containers = Some(ContainersClient::new(channel.clone()));
        self.volumes = Some(VolumesClient::new(channel));
        self
    }

    /// Publishes an image event (`pull`, `import`, `delete`) about `name`.
    pub(crate) fn publish(&self, ns: &str, action: &str, name: &str) {
        let shown = Reference::parse(name)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| name.to_string());
        let attributes = [("name".to_string(), shown.clone())].into_iter().collect();
        self.events.publish(ns, "image", action, &shown, attributes);
    }

    pub(crate) fn default_snapshotter_name(&self) -> String {
        self.default_snapshotter.clone()
    }

    fn snapshotter(&self, asked: &str) -> String {
        if asked.is_empty() {
            self.default_snapshotter.clone()
        } else {
            asked.to_string()
        }
    }

    /// Fetches a manifest, index or config (at most 4 MiB) into the store unless present.
    async fn fetch_small(
        &self,
        ns: &str,
        reference: &Reference,
        desc: &Descriptor,
        manifest: bool,
        auth: Option<&types::RegistryAuth>,
    ) -> Result<Vec<u8>, ImageError> {
        let what = if manifest { "manifest" } else { "config" };
        let what = format!("{what} {} of {}", desc.digest, reference.repository());
        let digest = desc.digest(&what)?;
        if desc.size as u64 > media::MAX_MANIFEST_SIZE {
            return Err(crate::content::ContentError::TooLarge {
                what,
                size: desc.size as u64,
                limit: media::MAX_MANIFEST_SIZE,
            }
            .into());
        }
        if self.content.contains(&digest) {
            return Ok(self.content.read_small(&digest, media::MAX_MANIFEST_SIZE)?);
        }
        let mut stream = self
            .registry
            .clone()
            .fetch(request(
                ns,
                FetchRequest {
                    reference: reference.to_string(),
                    descriptor: Some(to_api_desc(desc)),
                    manifest,
                    auth: auth.cloned(),
                },
            ))
            .await?
            .into_inner();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.try_next().await? {
            self.metrics.pulled(chunk.data.len());
            buf.extend_from_slice(&chunk.data);
            if buf.len() as u64 > media::MAX_MANIFEST_SIZE {
                return Err(crate::content::ContentError::TooLarge {
                    what,
                    size: buf.len() as u64,
                    limit: media::MAX_MANIFEST_SIZE,
                }
                .into());
            }
        }
        let expected_size = if desc.size > 0 {
            Some(desc.size as u64)
        } else {
            None
        };
        let mut w = self
            .content
            .writer(what, Some(digest), expected_size)
            .await?;
        w.write(&buf).await?;
        w.commit().await?;
        Ok(buf)
    }

    async fn fetch_blob(
        &self,
        ns: &str,
        reference: &Reference,
        desc: &Descriptor,
        auth: Option<&types::RegistryAuth>,
        tx: &ProgressTx,
    ) -> Result<(), ImageError> {
        let what = format!("layer {} of {}", desc.digest, reference.repository());
        let digest = desc.digest(&what)?;
        let id = digest.short().to_string();
        if self.content.contains(&digest) {
            progress(tx, &id, "exists", desc.size, desc.size).await;
            return Ok(());
        }
        // One download per blob: a concurrent pull of the same blob waits for this one.
        let gate = self.downloads.gate(&digest);
        let _downloading = match gate.try_lock() {
            Ok(g) => g,
            Err(_) => {
                progress(tx, &id, "waiting", 0, desc.size).await;
                gate.lock().await
            }
        };
        if self.content.contains(&digest) {
            progress(tx, &id, "exists", desc.size, desc.size).await;
            return Ok(());
        }
        let mut stream = self
            .registry
            .clone()
            .fetch(request(
                ns,
                FetchRequest {
                    reference: reference.to_string(),
                    descriptor: Some(to_api_desc(desc)),
                    manifest: false,
                    auth: auth.cloned(),
                },
            ))
            .await?
            .into_inner();
        let mut w = self
            .content
            .writer(what, Some(digest), Some(desc.size as u64))
            .await?;
        let mut last = 0u64;
        progress(tx, &id, "downloading", 0, desc.size).await;
        while let Some(chunk) = stream.try_next().await? {
            self.metrics.pulled(chunk.data.len());
            w.write(&chunk.data).await?;
            if w.written() - last >= 1 << 20 {
                last = w.written();
                progress(tx, &id, "downloading", last as i64, desc.size).await;
            }
        }
        progress(tx, &id, "verifying", w.written() as i64, desc.size).await;
        w.commit().await?;
        progress(tx, &id, "downloaded", desc.size, desc.size).await;
        Ok(())
    }

    /// Pulls `reference` and (optionally) unpacks it; returns the stored record.
    pub async fn pull(
        &self,
        ns: &str,
        req: api::PullRequest,
        tx: &ProgressTx,
    ) -> Result<ImageRecord, ImageError> {
        let reference = Reference::parse(&req.reference)?;
        let lease = self
            .leases
            .acquire(ns, "pull", Some(&reference.to_string()));
        lease
            .guard(self.pull_leased(ns, reference, req, tx, &lease))
            .await
    }

    async fn pull_leased(
        &self,
        ns: &str,
        reference: Reference,
        req: api::PullRequest,
        tx: &ProgressTx,
        lease: &crate::lease::Lease,
    ) -> Result<ImageRecord, ImageError> {
        progress(tx, &reference.familiar(), "resolving", 0, 0).await;
        let resolved = self
            .registry
            .clone()
            .resolve(request(
                ns,
                ResolveRequest {
                    reference: reference.to_string(),
                    auth: req.auth.clone(),
                },
            ))
            .await?
            .into_inner();
        let top = from_api_desc(resolved.descriptor.ok_or_else(|| {
            ImageError::InvalidArgument(format!("the registry resolved {reference} to nothing"))
        })?);
        if let Ok(d) = top.digest.parse() {
            lease.blob(&d);
        }
        let platform = req.platform.unwrap_or_default();
        let (os, arch) = (
            if platform.os.is_empty() {
                "linux".to_string()
            } else {
                platform.os
            },
            match (
                platform.architecture.is_empty(),
                platform.variant.is_empty(),
            ) {
                (true, _) => host_arch().to_string(),
                (false, true) => platform.architecture,
                (false, false) => format!("{}/{}", platform.architecture, platform.variant),
            },
        );
        let top_bytes = self
            .fetch_small(ns, &reference, &top, true, req.auth.as_ref())
            .await?;
        let manifest_desc = if media::is_index(&top.media_type) {
            let what = format!("index {} of {reference}", top.digest);
            let index = manifest::parse_index(&what, &top_bytes)?;
            let d = manifest::select_platform(&what, &index, &os, &arch)?.clone();
            self.fetch_small(ns, &reference, &d, true, req.auth.as_ref())
                .await?;
            d
        } else {
            top.clone()
        };
        let mbytes = self.content.read_small(
            &manifest_desc.digest(&reference.to_string())?,
            media::MAX_MANIFEST_SIZE,
        )?;
        let what = format!("manifest {} of {reference}", manifest_desc.digest);
        let m = manifest::parse_manifest(&what, &manifest_desc.media_type, &mbytes)?;
        for d in std::iter::once(&manifest_desc)
            .chain(std::iter::once(&m.config))
            .chain(&m.layers)
        {
            if let Ok(d) = d.digest.parse() {
                lease.blob(&d);
            }
        }
        let config = self
            .fetch_small(ns, &reference, &m.config, false, req.auth.as_ref())
            .await?;
        let (cfg, diff_ids) = manifest::parse_config(
            &format!("config {} of {reference}", m.config.digest),
            &config,
            m.layers.len(),
        )?;
        for i in 0..diff_ids.len() {
            if let Some(c) = chain_id(&diff_ids[..=i]) {
                lease.snapshot(&c.to_string());
            }
        }

        // Layers download in parallel (at most four at a time) and each is unpacked as soon
        // as it is here: extraction overlaps the downloads of the layers above it.
        let sn = self.snapshotter(&req.snapshotter);
        let unpacked = self
            .fetch_and_unpack(
                ns,
                (&reference, req.auth.as_ref()),
                &m,
                &diff_ids,
                req.unpack.then_some(sn.as_str()),
                tx,
            )
            .await?;

        let mut labels = BTreeMap::new();
        labels.insert(LABEL_ID.to_string(), m.config.digest.clone());
        labels.insert(LABEL_MANIFEST.to_string(), manifest_desc.digest.clone());
        labels.insert(
            LABEL_CREATED.to_string(),
            cfg.created.clone().unwrap_or_default(),
        );
        let layer_total: i64 = m.layers.iter().map(|l| l.size).sum();
        labels.insert(LABEL_SIZE.to_string(), layer_total.to_string());
        if req.unpack {
            labels.insert(LABEL_SIZE.to_string(), unpacked.to_string());
            labels.insert(LABEL_SNAPSHOTTER.to_string(), sn);
        }
        let rec = self
            .store_name(ns, &reference.to_string(), &top, labels)
            .await?;
        self.publish(ns, "pull", &rec.name);
        progress(tx, &reference.familiar(), "done", 0, 0).await;
        Ok(rec)
    }

    pub(crate) async fn store_name(
        &self,
        ns: &str,
        name: &str,
        target: &Descriptor,
        labels: BTreeMap<String, String>,
    ) -> Result<ImageRecord, ImageError> {
        let created = self
            .db
            .get(ns, name)?
            .map(|r| r.created)
            .unwrap_or_else(now);
        let rec = ImageRecord {
            name: name.to_string(),
            target: DescriptorRecord {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
            },
            labels,
            created,
            updated: now(),
        };
        self.put_name(ns, &rec).await?;
        Ok(rec)
    }

    /// Downloads the layers of `m` (four at a time) and, with a snapshotter, unpacks each as
    /// soon as it is downloaded and the Apply of the layer below has started: the snapshot
    /// service extracts layers in parallel and commits them in order. Returns the unpacked
    /// size. `remote` is where the layers come from: the reference, and the request's own
    /// registry credentials when it brought some.
    async fn fetch_and_unpack(
        &self,
        ns: &str,
        remote: (&Reference, Option<&types::RegistryAuth>),
        m: &Manifest,
        diff_ids: &[Digest],
        snapshotter: Option<&str>,
        tx: &ProgressTx,
    ) -> Result<i64, ImageError> {
        use tokio::sync::watch;
        let (reference, auth) = remote;
        // Per layer: 0 waiting, 1 its Apply started (or it was there), 2 committed, 3 failed.
        let states: Vec<(watch::Sender<u8>, watch::Receiver<u8>)> =
            (0..m.layers.len()).map(|_| watch::channel(0u8)).collect();
        let downloads = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        let extractions = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
        let tasks: Vec<_> = m
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (store, ns, reference, l, tx) = (
                    self.clone(),
                    ns.to_string(),
                    reference.clone(),
                    l.clone(),
                    tx.clone(),
                );
                let (downloads, extractions) = (downloads.clone(), extractions.clone());
                let mine = states[i].0.clone();
                let below = (i > 0).then(|| states[i - 1].1.clone());
                let chain = chain_id(&diff_ids[..=i]).map(|c| c.to_string());
                let parent = (i > 0)
                    .then(|| chain_id(&diff_ids[..i]).map(|c| c.to_string()))
                    .flatten()
                    .unwrap_or_default();
                let diff_id = diff_ids[i].clone();
                let sn = snapshotter.map(str::to_string);
                let auth = auth.cloned();
                tokio::spawn(tracing::Instrument::in_current_span(async move {
                    let r = async {
                        {
                            let _permit = downloads.acquire_owned().await;
                            store
                                .fetch_blob(&ns, &reference, &l, auth.as_ref(), &tx)
                                .await?;
                        }
                        let (Some(sn), Some(chain)) = (sn, chain) else {
                            return Ok(0);
                        };
                        let wait_below = |want: u8| {
                            let below = below.clone();
                            async move {
                                let Some(mut below) = below else {
                                    return Ok(());
                                };
                                let state =
                                    *below.wait_for(|s| *s >= want).await.map_err(|_| {
                                        ImageError::InvalidArgument(
                                            "the layer below was abandoned".into(),
                                        )
                                    })?;
                                if state == 3 {
                                    return Err(ImageError::InvalidArgument(
                                        "the layer below failed to unpack".into(),
                                    ));
                                }
                                Ok(())
                            }
                        };
                        wait_below(1).await?;
                        let _permit = extractions.acquire_owned().await;
                        let _ = mine.send(1);
                        let mut first = true;
                        loop {
                            match store
                                .apply_layer(&ns, &sn, &chain, &parent, &l, &diff_id, &tx)
                                .await
                            {
                                Ok(size) => return Ok(size),
                                // The Apply below had not reached the snapshot service yet:
                                // wait until it is committed and try once more.
                                Err(ImageError::Remote(s))
                                    if first
                                        && s.code() == tonic::Code::FailedPrecondition
                                        && !parent.is_empty() =>
                                {
                                    first = false;
                                    wait_below(2).await?;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    .await;
                    let _ = mine.send(if r.is_ok() { 2 } else { 3 });
                    r
                }))
            })
            .collect();
        let mut total = 0;
        let mut failed = None;
        for t in tasks {
            match t.await {
                Ok(Ok(size)) => total += size,
                Ok(Err(e)) => {
                    // The first real error, not a "below failed" that follows from it.
                    failed.get_or_insert(e);
                }
                Err(e) => {
                    failed.get_or_insert(ImageError::InvalidArgument(format!(
                        "download task failed: {e}"
                    )));
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Unpacks one stored layer as snapshot `chain` over `parent` unless it is there; returns
    /// its unpacked size.
    #[allow(clippy::too_many_arguments)]
    async fn apply_layer(
        &self,
        ns: &str,
        snapshotter: &str,
        chain: &str,
        parent: &str,
        layer: &Descriptor,
        diff_id: &Digest,
        tx: &ProgressTx,
    ) -> Result<i64, ImageError> {
        let key = SnapshotKey {
            snapshotter: snapshotter.to_string(),
            key: chain.to_string(),
        };
        let digest = layer.digest("layer")?;
        let id = digest.short().to_string();
        if self
            .snapshots
            .clone()
            .stat(request(ns, key.clone()))
            .await
            .is_ok()
        {
            let u = self.snapshots.clone().usage(request(ns, key)).await?;
            return Ok(u.into_inner().size);
        }
        progress(tx, &id, "extracting", 0, layer.size).await;
        let path = self.content.path(&digest);
        let header = ApplyRequest {
            item: Some(apply_request::Item::Header(ApplyHeader {
                snapshotter: snapshotter.to_string(),
                name: chain.to_string(),
                parent: parent.to_string(),
                media_type: layer.media_type.clone(),
                diff_id: diff_id.to_string(),
                labels: Default::default(),
            })),
        };
        let file = tokio::fs::File::open(&path).await.map_err(|source| {
            crate::content::ContentError::Io {
                path: path.clone(),
                source,
            }
        })?;
        let data = futures::stream::unfold(Some(file), |f| async move {
            let mut f = f?;
            let mut buf = vec![0u8; 256 << 10];
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        ApplyRequest {
                            item: Some(apply_request::Item::Data(buf)),
                        },
                        Some(f),
                    ))
                }
            }
        });
        let stream = futures::stream::once(async { header }).chain(data);
        let resp = self
            .snapshots
            .clone()
            .apply(request(ns, stream))
            .await?
            .into_inner();
        progress(tx, &id, "extracted", layer.size, layer.size).await;
        Ok(resp.size)
    }

    /// Applies each layer onto the one below it, once per chain: layers shared between images
    /// are unpacked once. Returns the unpacked size.
    pub async fn unpack(
        &self,
        ns: &str,
        snapshotter: &str,
        m: &Manifest,
        diff_ids: &[Digest],
        tx: &ProgressTx,
    ) -> Result<i64, ImageError> {
        let mut parent = String::new();
        let mut total = 0i64;
        for (i, layer) in m.layers.iter().enumerate() {
            let chain = chain_id(&diff_ids[..=i])
                .expect("at least one layer")
                .to_string();
            total += self
                .apply_layer(ns, snapshotter, &chain, &parent, layer, &diff_ids[i], tx)
                .await?;
            parent = chain;
        }
        Ok(total)
    }

    /// Finds an image by reference, `sha256:<id>`, or a unique id prefix, as Docker does.
    pub fn find(&self, ns: &str, name: &str) -> Result<ImageRecord, ImageError> {
        if let Ok(r) = Reference::parse(name) {
            if let Some(rec) = self.db.get(ns, &r.to_string())? {
                return Ok(rec);
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits: Vec<ImageRecord> = self
                .db
                .list(ns)?
                .into_iter()
                .filter(|r| {
                    r.labels
                        .get(LABEL_ID)
                        .is_some_and(|id| id.trim_start_matches("sha256:").starts_with(hex))
                })
                .collect();
            hits.sort_by(|a, b| a.name.cmp(&b.name));
            if let Some(first) = hits.first() {
                return Ok(first.clone());
            }
        }
        Err(ImageError::NotFound(name.to_string()))
    }

    pub fn resolve(&self, rec: ImageRecord) -> Result<Resolved, ImageError> {
        let what = format!("manifest of {}", rec.name);
        let manifest_digest: Digest = rec
            .labels
            .get(LABEL_MANIFEST)
            .cloned()
            .unwrap_or_else(|| rec.target.digest.clone())
            .parse()
            .map_err(|e| ImageError::InvalidArgument(format!("{what}: {e}")))?;
        let mbytes = self
            .content
            .read_small(&manifest_digest, media::MAX_MANIFEST_SIZE)?;
        let m = manifest::parse_manifest(&what, "", &mbytes)?;
        let config_digest = m.config.digest(&what)?;
        let config = self
            .content
            .read_small(&config_digest, media::MAX_MANIFEST_SIZE)?;
        let (cfg, diff_ids) =
            manifest::parse_config(&format!("config of {}", rec.name), &config, m.layers.len())?;
        Ok(Resolved {
            manifest_desc: Descriptor {
                media_type: m
                    .media_type
                    .clone()
                    .unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
                digest: manifest_digest.to_string(),
                size: mbytes.len() as i64,
                platform: None,
                annotations: None,
            },
            record: rec,
            manifest: m,
            config,
            config_digest,
            diff_ids,
            created: cfg.created,
        })
    }

    pub fn summary(&self, rec: &ImageRecord) -> api::ImageSummary {
        let created = rec
            .labels
            .get(LABEL_CREATED)
            .and_then(|c| crate::manage::parse_time(c));
        api::ImageSummary {
            image: Some(to_api_image(rec)),
            id: rec.labels.get(LABEL_ID).cloned().unwrap_or_default(),
            size: rec
                .labels
                .get(LABEL_SIZE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            created,
        }
    }

    pub fn inspect(&self, ns: &str, name: &str) -> Result<api::InspectImageResponse, ImageError> {
        let rec = self.find(ns, name)?;
        let r = self.resolve(rec.clone())?;
        let id = r.config_digest.to_string();
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for other in self.db.list(ns)? {
            if other.labels.get(LABEL_ID) != Some(&id) || crate::manage::is_dangling(&other) {
                continue;
            }
            if let Ok(reference) = Reference::parse(&other.name) {
                if reference.tag().is_some() && reference.digest().is_none() {
                    repo_tags.push(reference.familiar());
                }
                if let Ok(d) = other.target.digest.parse::<Digest>() {
                    let rd = reference.with_digest(&d).familiar();
                    if !repo_digests.contains(&rd) {
                        repo_digests.push(rd);
                    }
                }
            }
        }
        repo_tags.sort();
        repo_digests.sort();
        Ok(api::InspectImageResponse {
            summary: Some(self.summary(&rec)),
            repo_tags,
            repo_digests,
            config: r.config.clone(),
            manifest: Some(to_api_desc(&r.manifest_desc)),
            layers: r.manifest.layers.iter().map(to_api_desc).collect(),
            diff_ids: r.diff_ids.iter().map(|d| d.to_string()).collect(),
            chain_id: chain_id(&r.diff_ids)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            snapshotter: rec
                .labels
                .get(LABEL_SNAPSHOTTER)
                .cloned()
                .unwrap_or_else(|| self.default_snapshotter.clone()),
        })
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

pub fn to_api_desc(d: &Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

pub fn from_api_desc(d: types::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        platform: None,
        annotations: if d.annotations.is_empty() {
            None
        } else {
            Some(d.annotations.into_iter().collect())
        },
    }
}

fn ts(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

pub fn to_api_image(r: &ImageRecord) -> api::Image {
    api::Image {
        name: r.name.clone(),
        target: Some(types::Descriptor {
            media_type: r.target.media_type.clone(),
            digest: r.target.digest.clone(),
            size: r.target.size,
            annotations: Default::default(),
        }),
        labels: r.labels.clone().into_iter().collect(),
        created_at: Some(ts(r.created)),
        updated_at: Some(ts(r.updated)),
    }
}
