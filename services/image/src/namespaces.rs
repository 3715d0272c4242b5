//! The namespace registry (`berth.namespaces.v1.Namespaces`, `berth namespace …`).
//!
//! Namespaces are implicit: each object lives in the namespace of the call that made it
//! (`berth-namespace` metadata), in whichever service keeps it. The registry adds what an
//! implicit namespace lacks, a record with labels (`namespace create`), kept in this
//! service's database ([`crate::metadata::ImageDb`]). What a namespace holds is asked of
//! every service that keeps namespaced objects each time ([`ImageStore::namespace_usage`]):
//! images and leases here, snapshots, containers and volumes through their NamespaceUsage
//! calls. So `ls` also shows namespaces nobody recorded, and `rm` is refused while anything
//! is left. Content is shared by all namespaces and held through images; networks belong to
//! the berthd instance.

use crate::error::ImageError;
use crate::images::ImageStore;
use crate::metadata::NamespaceRecord;
use berth_api::namespaces::v1 as api;
use berth_api::types::v1::{NamespaceUsageRequest, NamespaceUsageResponse};
use berth_core::grpc::{request, validate_namespace, DEFAULT_NAMESPACE};
use std::collections::{BTreeMap, BTreeSet};
use tonic::Status;

/// What each namespace holds: namespace → kind (`images`, `snapshots/overlayfs`, …) → count.
pub type Usage = BTreeMap<String, BTreeMap<String, i64>>;

fn add(usage: &mut Usage, kind: &str, counts: BTreeMap<String, i64>) {
    for (ns, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
        *usage
            .entry(ns)
            .or_default()
            .entry(kind.to_string())
            .or_default() += n;
    }
}

fn merge(usage: &mut Usage, answer: NamespaceUsageResponse) {
    for u in answer.namespaces {
        for (kind, n) in u.objects.into_iter().filter(|(_, n)| *n > 0) {
            *usage
                .entry(u.namespace.clone())
                .or_default()
                .entry(kind)
                .or_default() += n;
        }
    }
}

/// What a namespace holds, for a person: "2 images, 1 container, 3 snapshots (overlayfs)".
pub fn describe(objects: &BTreeMap<String, i64>) -> String {
    objects
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| {
            let (noun, what) = match kind.split_once('/') {
                Some((noun, sub)) => (noun, format!(" ({sub})")),
                None if kind == "leases" => (kind.as_str(), " (work in flight)".to_string()),
                None => (kind.as_str(), String::new()),
            };
            let noun = match n {
                1 => noun.strip_suffix('s').unwrap_or(noun),
                _ => noun,
            };
            format!("{n} {noun}{what}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

impl ImageStore {
    /// What every namespace holds, in this service (images, leases) and in the Snapshots,
    /// Containers and Volumes services. With `strict`, a service that cannot be asked fails
    /// the call (Unavailable); without, it is left out and logged.
    pub async fn namespace_usage(&self, strict: bool) -> Result<Usage, Status> {
        let mut usage = Usage::new();
        add(
            &mut usage,
            "images",
            self.db.image_counts().map_err(ImageError::from)?,
        );
        add(&mut usage, "leases", self.leases.count_by_namespace());
        let ask = || request(DEFAULT_NAMESPACE, NamespaceUsageRequest {});
        let mut snapshot_client = self.snapshots.clone();
        let (snapshots, containers, volumes) = tokio::join!(
            snapshot_client.namespace_usage(ask()),
            async {
                match self.containers.clone() {
                    Some(mut c) => Some(c.namespace_usage(ask()).await),
                    None => None,
                }
            },
            async {
                match self.volumes.clone() {
                    Some(mut v) => Some(v.namespace_usage(ask()).await),
                    None => None,
                }
            },
        );
        let answers = [
            ("snapshot", Some(snapshots)),
            ("runtime (containers)", containers),
            ("runtime (volumes)", volumes),
        ];
        for (service, answer) in answers {
            match answer {
                // Not part of this deployment: it holds nothing.
                None => {}
                Some(Ok(a)) => merge(&mut usage, a.into_inner()),
                Some(Err(s)) if strict => {
                    return Err(Status::unavailable(format!(
                        "cannot tell what the namespaces hold: the {service} service did not \
                         answer ({}: {}); nothing was changed",
                        s.code(),
                        s.message()
                    )))
                }
                Some(Err(s)) => {
                    tracing::warn!(service, error = %s.message(), "namespaces: a service did not say what it holds")
                }
            }
        }
        Ok(usage)
    }

    /// Namespaces.Create.
    pub async fn create_namespace(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<api::Namespace, Status> {
        validate_namespace(name)?;
        if let Some(k) = labels.keys().find(|k| k.is_empty()) {
            return Err(Status::invalid_argument(format!(
                "a label needs a key: {k:?}=…"
            )));
        }
        let rec = NamespaceRecord {
            labels,
            created: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        };
        if !self
            .db
            .create_namespace(name, &rec)
            .await
            .map_err(ImageError::from)?
        {
            return Err(Status::already_exists(format!(
                "namespace {name} already exists"
            )));
        }
        tracing::info!(namespace = name, "namespace created");
        Ok(api::Namespace {
            name: name.to_string(),
            labels: rec.labels.into_iter().collect(),
            recorded: true,
            created_at: Some(timestamp(rec.created)),
            objects: Default::default(),
        })
    }

    /// Namespaces.List: recorded ones and those holding anything, by name.
    pub async fn list_namespaces(&self) -> Result<Vec<api::Namespace>, Status> {
        let mut usage = self.namespace_usage(false).await?;
        let records: BTreeMap<String, NamespaceRecord> = self
            .db
            .namespaces()
            .map_err(ImageError::from)?
            .into_iter()
            .collect();
        let names: BTreeSet<String> = records.keys().chain(usage.keys()).cloned().collect();
        Ok(names
            .into_iter()
            .map(|name| {
                let rec = records.get(&name);
                api::Namespace {
                    labels: rec
                        .map(|r| r.labels.clone().into_iter().collect())
                        .unwrap_or_default(),
                    recorded: rec.is_some(),
                    created_at: rec.map(|r| timestamp(r.created)),
                    objects: usage
                        .remove(&name)
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    name,
                }
            })
            .collect())
    }

    /// Namespaces.Delete: only a namespace that holds nothing, as every service says.
    pub async fn delete_namespace(&self, name: &str) -> Result<(), Status> {
        validate_namespace(name)?;
        let usage = self.namespace_usage(true).await?;
        if let Some(objects) = usage.get(name).filter(|o| o.values().any(|n| *n > 0)) {
            return Err(Status::failed_precondition(format!(
                "namespace {name} is not empty: it holds {}; remove them first \
                 (berth -n {name} …), then the namespace",
                describe(objects)
            )));
        }
        if !self
            .db
            .delete_namespace(name)
            .await
            .map_err(ImageError::from)?
        {
            return Err(Status::not_found(format!(
                "namespace {name} not found: it was never created and holds nothing"
            )));
        }
        tracing::info!(namespace = name, "namespace removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(kinds: &[(&str, i64)]) -> BTreeMap<String, i64> {
        kinds.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn holdings_read_as_a_sentence() {
        assert_eq!(
            describe(&objects(&[
                ("images", 2),
                ("containers", 1),
                ("snapshots/overlayfs", 3),
                ("snapshots/native", 1),
                ("leases", 1),
                ("volumes", 0),
            ])),
            "1 container, 2 images, 1 lease (work in flight), 1 snapshot (native), 3 snapshots (overlayfs)"
        );
        assert_eq!(describe(&objects(&[("volumes", 1)])), "1 volume");
        assert_eq!(describe(&BTreeMap::new()), "");
    }

    #[test]
    fn usage_adds_up_across_services() {
        let mut u = Usage::new();
        add(&mut u, "images", objects(&[("default", 2), ("empty", 0)]));
        merge(
            &mut u,
            NamespaceUsageResponse {
                namespaces: vec![
                    berth_api::types::v1::NamespaceUsage {
                        namespace: "default".into(),
                        objects: [("snapshots/overlayfs".to_string(), 4)].into(),
                    },
                    berth_api::types::v1::NamespaceUsage {
                        namespace: "team".into(),
                        objects: [("containers".to_string(), 1)].into(),
                    },
                ],
            },
        );
        assert_eq!(u.len(), 2, "{u:?}");
        assert_eq!(
            u["default"],
            objects(&[("images", 2), ("snapshots/overlayfs", 4)])
        );
        assert_eq!(u["team"], objects(&[("containers", 1)]));
    }

    #[test]
    fn record_times_convert() {
        let t = timestamp(1_700_000_000_123_456_789);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_789));
    }
}
