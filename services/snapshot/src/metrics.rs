//! The snapshot service's metrics, measured when scraped: snapshots by snapshotter and kind,
//! and the disk they use.
//!
//! A committed snapshot never changes, so its size is measured once and remembered by its id;
//! active snapshots (containers' writable layers) and views are measured at every scrape.

use crate::snapshots::{disk_usage, Snapshots};
use crate::Kind;
use berth_core::metrics::gauge;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The `kind` label of a snapshot.
fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Committed => "committed",
        Kind::Active => "active",
        Kind::View => "view",
    }
}

/// The snapshot service's metrics for a Prometheus registry (berthd's `[metrics]`).
#[derive(Debug)]
pub struct Collector {
    snapshots: Arc<Snapshots>,
    /// (snapshotter, id) → bytes of committed snapshots.
    committed: Mutex<HashMap<(&'static str, u64), i64>>,
}

impl Collector {
    pub fn new(snapshots: Arc<Snapshots>) -> Collector {
        Collector {
            snapshots,
            committed: Mutex::default(),
        }
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.snapshots.inventory().unwrap_or_default();
        let mut counts: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
        for sn in [crate::overlay::NAME, crate::native::NAME] {
            for kind in [Kind::Committed, Kind::Active, Kind::View] {
                counts.insert((sn, label(kind)), (0, 0));
            }
        }
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashMap::new();
        for (sn, kind, id, fs) in all {
            let measure = || disk_usage(&fs).map(|u| u.size).unwrap_or(0);
            let bytes = if kind == Kind::Committed {
                *committed.entry((sn, id)).or_insert_with(measure)
            } else {
                measure()
            };
            if kind == Kind::Committed {
                seen.insert((sn, id), bytes);
            }
            let c = counts.entry((sn, label(kind))).or_default();
            c.0 += 1;
            c.1 += bytes;
        }
        // Forget the ones that are gone.
        *committed = seen;
        drop(committed);
        let labels =
            |sn: &str, kind: &str| [("snapshotter", sn.to_string()), ("kind", kind.to_string())];
        let samples = |f: fn(&(i64, i64)) -> i64| -> Vec<_> {
            counts
                .iter()
                .map(|((sn, kind), c)| (labels(sn, kind), f(c)))
                .collect()
        };
        gauge(
            &mut e,
            "berth_snapshots",
            "Snapshots of every namespace, by snapshotter and kind (committed layers, active writable layers, views).",
            &samples(|c| c.0),
        )?;
        gauge(
            &mut e,
            "berth_snapshot_usage_bytes",
            "Disk used by snapshots' own folders (a native snapshot is a full copy), by snapshotter and kind.",
            &samples(|c| c.1),
        )
    }
}
