//! The image service's metrics: bytes pulled from and pushed to registries, garbage
//! collections, and the content store's size (measured when scraped).

use crate::content::ContentStore;
use berth_core::metrics::{counter, gauge_value};
use prometheus_client::encoding::DescriptorEncoder;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the image service counts as it works.
#[derive(Debug, Default)]
pub struct Counters {
    pulled: AtomicU64,
    pushed: AtomicU64,
    gc_runs: AtomicU64,
    gc_blobs: AtomicU64,
    gc_snapshots: AtomicU64,
    gc_bytes: AtomicU64,
}

impl Counters {
    /// `n` bytes of a blob arrived from a registry.
    pub(crate) fn pulled(&self, n: usize) {
        self.pulled.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes of a blob went to a registry.
    pub(crate) fn pushed(&self, n: usize) {
        self.pushed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A garbage collection ended, having removed what `c` says.
    pub(crate) fn collected(&self, c: &crate::gc::Collected) {
        self.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.gc_blobs
            .fetch_add(c.blobs.max(0) as u64, Ordering::Relaxed);
        self.gc_snapshots
            .fetch_add(c.snapshots.max(0) as u64, Ordering::Relaxed);
        self.gc_bytes
            .fetch_add(c.bytes.max(0) as u64, Ordering::Relaxed);
    }
}

/// The image service's metrics for a Prometheus registry (berthd's `[metrics]`).
#[derive(Debug)]
pub struct Collector {
    pub(crate) counters: Arc<Counters>,
    pub(crate) content: ContentStore,
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "berth_image_pulled_bytes",
            "Bytes of blobs (manifests, configs, layers) fetched from registries into the content store.",
            get(&c.pulled),
        )?;
        counter(
            &mut e,
            "berth_image_pushed_bytes",
            "Bytes of blobs uploaded to registries (blobs a registry had or mounted count nothing).",
            get(&c.pushed),
        )?;
        counter(
            &mut e,
            "berth_image_gc_runs",
            "Garbage collections of blobs and snapshots that no image holds.",
            get(&c.gc_runs),
        )?;
        counter(
            &mut e,
            "berth_image_gc_removed_blobs",
            "Blobs removed by garbage collection.",
            get(&c.gc_blobs),
        )?;
        counter(
            &mut e,
            "berth_image_gc_removed_snapshots",
            "Committed snapshots removed by garbage collection.",
            get(&c.gc_snapshots),
        )?;
        counter(
            &mut e,
            "berth_image_gc_reclaimed_bytes",
            "Bytes freed by garbage collection (blobs, and snapshots' disk use).",
            get(&c.gc_bytes),
        )?;
        let blobs = self.content.list().unwrap_or_default();
        let bytes: u64 = blobs.iter().map(|b| b.size).sum();
        gauge_value(
            &mut e,
            "berth_content_store_bytes",
            "Bytes of the blobs in the content store.",
            bytes as i64,
        )?;
        gauge_value(
            &mut e,
            "berth_content_store_blobs",
            "Blobs in the content store.",
            blobs.len() as i64,
        )
    }
}
