//! Leases: the work in flight of the image service, and what it keeps from garbage collection.
//!
//! Every pull, push, import, commit and export takes a [`Lease`] from [`Leases::acquire`]
//! for as long as it runs. A lease names the blobs and snapshots it uses ([`Lease::blob`],
//! [`Lease::snapshot`]), and everything created after it began is kept too, so that a blob
//! written a moment before its image record is never collected ([`Leases::unless_protected`]
//! is what the collector asks). Leases live in memory: a restart ends all work in flight.
//!
//! `Leases.Delete` (`berth lease rm`) releases a lease by stopping its work: the work runs
//! inside [`Lease::guard`] (or watches [`Lease::cancelled`]), which drops it at its next
//! await and fails the call with Aborted. That is as safe as a client going away or berthd
//! being killed mid-way, which every operation already survives: blobs are verified or
//! absent, layers committed or not, the image record written last. Releasing the lease
//! without stopping its work would let a collection remove blobs the work is about to name.

use crate::error::ImageError;
use berth_core::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify};

/// What the work holding a lease does: pull, push, import, commit, export.
pub const LABEL_OPERATION: &str = "berth.lease.operation";
/// The image the work is about, when there is one.
pub const LABEL_IMAGE: &str = "berth.lease.image";

#[derive(Debug)]
struct Held {
    namespace: String,
    since: SystemTime,
    labels: BTreeMap<String, String>,
    blobs: BTreeSet<Digest>,
    snapshots: BTreeSet<String>,
    /// Set to `true` to stop the work that holds the lease.
    stop: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    held: HashMap<String, Held>,
}

/// The leases of the image service.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    table: Arc<Mutex<Table>>,
    /// Notified whenever a lease ends.
    ended: Arc<Notify>,
}

/// Work in flight; dropping it releases what it holds.
#[derive(Debug)]
pub struct Lease {
    id: String,
    leases: Leases,
    stop: watch::Receiver<bool>,
}

/// A lease as `Leases.List` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: String,
    pub namespace: String,
    pub created: SystemTime,
    pub labels: BTreeMap<String, String>,
    pub blobs: Vec<String>,
    pub snapshots: Vec<String>,
}

/// Why [`Leases::release`] did not release a lease.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("no lease {id} in namespace {namespace}")]
    NotFound { id: String, namespace: String },
    #[error("lease {id} was told to stop, but its work has not ended after {waited:?}; it is released when it does")]
    StillRunning { id: String, waited: Duration },
}

impl Leases {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease of namespace `ns` for `operation` (pull, push, …) on `image`.
    pub fn acquire(&self, ns: &str, operation: &str, image: Option<&str>) -> Lease {
        let mut labels = BTreeMap::from([(LABEL_OPERATION.to_string(), operation.to_string())]);
        if let Some(image) = image.filter(|i| !i.is_empty()) {
            labels.insert(LABEL_IMAGE.to_string(), image.to_string());
        }
        let (stop, rx) = watch::channel(false);
        let mut t = self.table();
        t.next += 1;
        let id = format!("{operation}-{}", t.next);
        t.held.insert(
            id.clone(),
            Held {
                namespace: ns.to_string(),
                since: SystemTime::now(),
                labels,
                blobs: BTreeSet::new(),
                snapshots: BTreeSet::new(),
                stop,
            },
        );
        Lease {
            id,
            leases: self.clone(),
            stop: rx,
        }
    }

    /// The leases of namespace `ns`, oldest first.
    pub fn list(&self, ns: &str) -> Vec<LeaseInfo> {
        let mut out: Vec<LeaseInfo> = self
            .table()
            .held
            .iter()
            .filter(|(_, h)| h.namespace == ns)
            .map(|(id, h)| LeaseInfo {
                id: id.clone(),
                namespace: h.namespace.clone(),
                created: h.since,
                labels: h.labels.clone(),
                blobs: h.blobs.iter().map(Digest::to_string).collect(),
                snapshots: h.snapshots.iter().cloned().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        out
    }

    /// How many leases each namespace holds (namespaces without any are absent).
    pub fn count_by_namespace(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for h in self.table().held.values() {
            *out.entry(h.namespace.clone()).or_default() += 1;
        }
        out
    }

    /// Stops the work that holds lease `id` of namespace `ns`, and waits (at most `wait`)
    /// until it has ended and released the lease.
    pub async fn release(&self, ns: &str, id: &str, wait: Duration) -> Result<(), ReleaseError> {
        {
            let t = self.table();
            match t.held.get(id) {
                Some(h) if h.namespace == ns => {
                    let _ = h.stop.send(true);
                }
                _ => {
                    return Err(ReleaseError::NotFound {
                        id: id.to_string(),
                        namespace: ns.to_string(),
                    })
                }
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so an end between the two is not missed.
            ended.as_mut().enable();
            if !self.table().held.contains_key(id) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return Err(ReleaseError::StillRunning {
                    id: id.to_string(),
                    waited: wait,
                });
            }
        }
    }

    /// Runs `f` unless a current lease protects the object — names the blob or snapshot, or
    /// began before it was `created` (less a second, for the coarse clock file times come
    /// from) — with the leases locked, so that no lease can take the object while `f`
    /// removes it. `Err` carries the id of a lease that protects it.
    pub(crate) fn unless_protected<T>(
        &self,
        digest: Option<&Digest>,
        snapshot: Option<&str>,
        created: Option<SystemTime>,
        f: impl FnOnce() -> T,
    ) -> Result<T, String> {
        let t = self.table();
        let holder = t.held.iter().find(|(_, h)| {
            digest.is_some_and(|d| h.blobs.contains(d))
                || snapshot.is_some_and(|n| h.snapshots.contains(n))
                || created.is_some_and(|c| c + Duration::from_secs(1) >= h.since)
        });
        match holder {
            Some((id, _)) => Err(id.clone()),
            None => Ok(f()),
        }
    }
}

impl Lease {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Keeps blob `d` from collection while the lease lasts.
    pub fn blob(&self, d: &Digest) {
        if let Some(h) = self.leases.table().held.get_mut(&self.id) {
            h.blobs.insert(d.clone());
        }
    }

    /// Keeps snapshot `name` from collection while the lease lasts.
    pub fn snapshot(&self, name: &str) {
        if let Some(h) = self.leases.table().held.get_mut(&self.id) {
            h.snapshots.insert(name.to_string());
        }
    }

    /// Resolves once `Leases.Delete` asked the work to stop.
    pub async fn cancelled(&self) {
        let mut stop = self.stop.clone();
        // The sender lives as long as the lease, so this only ends when told to stop.
        let _ = stop.wait_for(|s| *s).await;
    }

    /// A watch that turns `true` when the work is asked to stop (for blocking work that
    /// cannot await [`Lease::cancelled`]), with the error to end with then.
    pub fn stop_signal(&self) -> (watch::Receiver<bool>, String) {
        (self.stop.clone(), self.stopped_message())
    }

    fn stopped_message(&self) -> String {
        let t = self.leases.table();
        let labels = t.held.get(&self.id).map(|h| &h.labels);
        let what = labels
            .and_then(|l| l.get(LABEL_OPERATION))
            .map(String::as_str)
            .unwrap_or("the operation");
        let image = labels
            .and_then(|l| l.get(LABEL_IMAGE))
            .map(|i| format!(" of {i}"))
            .unwrap_or_default();
        format!(
            "{what}{image} stopped: its lease {} was removed (berth lease rm)",
            self.id
        )
    }

    /// Runs `work` until it ends, or until the lease is removed: then `work` is dropped at
    /// its next await and the result is [`ImageError::Aborted`].
    pub async fn guard<T>(
        &self,
        work: impl Future<Output = Result<T, ImageError>>,
    ) -> Result<T, ImageError> {
        tokio::select! {
            r = work => r,
            () = self.cancelled() => Err(ImageError::Aborted(self.stopped_message())),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases.table().held.remove(&self.id);
        self.leases.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_list_per_namespace_and_end_with_their_work() {
        let leases = Leases::default();
        let a = leases.acquire("default", "pull", Some("docker.io/library/busybox:latest"));
        let _b = leases.acquire("team", "export", None);
        let d = Digest::sha256_of(b"x");
        a.blob(&d);
        a.snapshot("sha256:chain");
        let listed = leases.list("default");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, a.id());
        assert!(a.id().starts_with("pull-"), "{}", a.id());
        assert_eq!(
            listed[0].labels.get(LABEL_IMAGE).map(String::as_str),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(listed[0].blobs, [d.to_string()]);
        assert_eq!(listed[0].snapshots, ["sha256:chain"]);
        assert_eq!(
            leases.count_by_namespace(),
            BTreeMap::from([("default".to_string(), 1), ("team".to_string(), 1)])
        );
        drop(a);
        assert!(leases.list("default").is_empty());
    }

    #[tokio::test]
    async fn protection_names_the_lease() {
        let leases = Leases::default();
        let old = SystemTime::now() - Duration::from_secs(60);
        let d = Digest::sha256_of(b"x");
        assert_eq!(
            leases.unless_protected(Some(&d), None, Some(old), || 7),
            Ok(7)
        );
        let l = leases.acquire("default", "commit", None);
        // Old and not named: not protected.
        assert_eq!(
            leases.unless_protected(Some(&d), None, Some(old), || 7),
            Ok(7)
        );
        // Made after the lease began: protected.
        let fresh = SystemTime::now();
        assert_eq!(
            leases.unless_protected(None, None, Some(fresh), || 7),
            Err(l.id().to_string())
        );
        l.blob(&d);
        assert_eq!(
            leases.unless_protected(Some(&d), None, Some(old), || 7),
            Err(l.id().to_string())
        );
        l.snapshot("s");
        assert!(leases
            .unless_protected(None, Some("s"), None, || ())
            .is_err());
        drop(l);
        assert!(leases
            .unless_protected(None, Some("s"), Some(fresh), || ())
            .is_ok());
    }

    #[tokio::test]
    async fn release_stops_the_work_and_waits_for_it() {
        let leases = Leases::default();
        let l = leases.acquire("default", "pull", Some("busybox"));
        let id = l.id().to_string();
        let work = tokio::spawn(async move {
            // Work that would never end by itself.
            let r = l
                .guard(std::future::pending::<Result<(), ImageError>>())
                .await;
            drop(l);
            r
        });
        let e = leases
            .release("other", &id, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(e, ReleaseError::NotFound { .. }), "{e}");
        leases
            .release("default", &id, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            leases.list("default").is_empty(),
            "released when it returns"
        );
        let e = work.await.unwrap().unwrap_err();
        assert!(matches!(e, ImageError::Aborted(_)), "{e}");
        assert!(
            e.to_string().contains(&format!(
                "pull of busybox stopped: its lease {id} was removed"
            )),
            "{e}"
        );
        let e = leases
            .release("default", &id, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, ReleaseError::NotFound { .. }), "{e}");
    }

    #[tokio::test]
    async fn release_reports_work_that_does_not_stop() {
        let leases = Leases::default();
        // Work that never looks at its lease.
        let l = leases.acquire("default", "export", None);
        let id = l.id().to_string();
        let e = leases
            .release("default", &id, Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(matches!(e, ReleaseError::StillRunning { .. }), "{e}");
        drop(l);
        assert!(leases.list("default").is_empty());
    }
}
