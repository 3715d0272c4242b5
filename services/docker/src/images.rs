//! Docker's views of images: inspect, list rows and filters, history, delete reports.

use berth_api::images::v1 as api;
use serde_json::{json, Value};

/// Docker's REPOSITORY and TAG of an image record's name: `<none>` for what is not a tagged
/// reference (a dangling image's record is named by its id).
pub fn repo_tag(name: &str) -> (String, String) {
    let parsed = if name.starts_with("sha256:") {
        None
    } else {
        berth_core::Reference::parse(name).ok()
    };
    match parsed {
        Some(r) => (
            r.familiar_repository(),
            r.tag().unwrap_or("<none>").to_string(),
        ),
        None => ("<none>".to_string(), "<none>".to_string()),
    }
}

/// The Docker-shaped JSON of `image inspect` (`GET /images/{name}/json`).
pub fn image_inspect(r: &api::InspectImageResponse) -> Value {
    let config: Value = serde_json::from_slice(&r.config).unwrap_or(Value::Null);
    let summary = r.summary.clone().unwrap_or_default();
    let get = |k: &str| config.get(k).cloned().unwrap_or(Value::Null);
    let str_of = |k: &str| {
        config
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut cfg = get("config");
    if cfg.is_null() {
        cfg = json!({});
    }
    for (k, v) in [
        ("Hostname", json!("")),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(false)),
        ("AttachStderr", json!(false)),
        ("Tty", json!(false)),
        ("OpenStdin", json!(false)),
        ("StdinOnce", json!(false)),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Image", json!("")),
        ("Volumes", Value::Null),
        ("WorkingDir", json!("")),
        ("Entrypoint", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
    ] {
        if let Some(o) = cfg.as_object_mut() {
            o.entry(k).or_insert(v);
        }
    }
    json!({
        "Id": summary.id,
        "RepoTags": r.repo_tags,
        "RepoDigests": r.repo_digests,
        "Parent": "",
        "Comment": str_of("comment"),
        "Created": str_of("created"),
        "DockerVersion": str_of("docker_version"),
        "Author": str_of("author"),
        "Config": cfg,
        "Architecture": str_of("architecture"),
        "Os": str_of("os"),
        "Size": summary.size,
        "VirtualSize": summary.size,
        "GraphDriver": {"Name": r.snapshotter, "Data": {"ChainID": r.chain_id}},
        "RootFS": {"Type": "layers", "Layers": r.diff_ids},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })
}

/// Docker's image list (`GET /images/json`): one entry per image id, holding every name that
/// points at it (berth keeps one record per name), in the order the ids first appear.
pub fn image_list(images: &[api::ImageSummary]) -> Vec<Value> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_id: std::collections::HashMap<&str, Vec<&api::ImageSummary>> =
        std::collections::HashMap::new();
    for s in images {
        let e = by_id.entry(s.id.as_str()).or_default();
        if e.is_empty() {
            order.push(s.id.as_str());
        }
        e.push(s);
    }
    order
        .into_iter()
        .map(|id| {
            let records = &by_id[id];
            let mut tags = Vec::new();
            let mut digests = Vec::new();
            let mut labels = serde_json::Map::new();
            for s in records {
                let Some(image) = &s.image else { continue };
                // berth's own bookkeeping on the record (berth.image.*) is no label of the image.
                for (k, v) in &image.labels {
                    if !k.starts_with("berth.") {
                        labels.insert(k.clone(), json!(v));
                    }
                }
                let (repo, tag) = repo_tag(&image.name);
                if repo == "<none>" {
                    continue;
                }
                if tag != "<none>" {
                    tags.push(format!("{repo}:{tag}"));
                }
                if let Some(t) = &image.target {
                    let d = format!("{repo}@{}", t.digest);
                    if !digests.contains(&d) {
                        digests.push(d);
                    }
                }
            }
            let first = records[0];
            json!({
                "Id": id,
                "ParentId": "",
                "RepoTags": tags,
                "RepoDigests": digests,
                "Created": first.created.as_ref().map(|t| t.seconds).unwrap_or(0),
                "Size": first.size,
                "VirtualSize": first.size,
                "SharedSize": -1,
                "Labels": if labels.is_empty() { Value::Null } else { Value::Object(labels) },
                "Containers": -1,
            })
        })
        .collect()
}

/// Docker's image history (`GET /images/{name}/history`), newest step first as the service
/// returns it.
pub fn image_history(entries: &[api::HistoryEntry]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            json!({
                "Id": e.id,
                "Created": e.created.as_ref().map(|t| t.seconds).unwrap_or(0),
                "CreatedBy": e.created_by,
                "Tags": if e.tags.is_empty() { Value::Null } else { json!(e.tags) },
                "Size": e.size,
                "Comment": e.comment,
            })
        })
        .collect()
}

/// Docker's answer to an image delete: `{"Untagged": name}` for each name removed (in
/// Docker's familiar form, `busybox:latest`), then `{"Deleted": id}` for each image gone.
pub fn image_delete(r: &api::DeleteImageResponse) -> Vec<Value> {
    let familiar = |n: &str| {
        berth_core::Reference::parse(n)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| n.to_string())
    };
    r.untagged
        .iter()
        .map(|u| json!({ "Untagged": familiar(u) }))
        .chain(r.deleted.iter().map(|d| json!({ "Deleted": d })))
        .collect()
}

/// Docker's answer to an image prune: `{"ImagesDeleted": [...], "SpaceReclaimed": N}`, the
/// list in [`image_delete`]'s shape (`null` when nothing went, as Docker answers).
pub fn image_prune(r: &api::PruneImagesResponse) -> Value {
    let deleted = image_delete(&api::DeleteImageResponse {
        untagged: r.untagged.clone(),
        deleted: r.deleted.clone(),
    });
    let deleted = if deleted.is_empty() {
        Value::Null
    } else {
        Value::Array(deleted)
    };
    json!({ "ImagesDeleted": deleted, "SpaceReclaimed": r.space_reclaimed })
}

/// Docker's storage driver name for a berth snapshotter: `overlay2` for overlayfs, `vfs` for
/// the copying one (Docker's own copying driver), else the snapshotter's name.
pub fn storage_driver(snapshotter: &str) -> &str {
    match snapshotter {
        "overlayfs" | "overlay" => "overlay2",
        "native" => "vfs",
        other => other,
    }
}

/// The `filters` of Docker's image list that berth applies: `reference` (Docker's glob on
/// `repo` or `repo:tag`, any of them) and `dangling` (`true`: untagged images only; `false`:
/// tagged ones). Other keys are refused, never ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImageFilters {
    pub reference: Vec<String>,
    pub dangling: Option<bool>,
}

impl ImageFilters {
    /// Docker's `filters` JSON: `{"key":{"value":true}}`, or `{"key":["value"]}` from old
    /// clients. The error reads as Docker's.
    pub fn parse(filters: &str) -> Result<ImageFilters, String> {
        let mut out = ImageFilters::default();
        if filters.trim().is_empty() {
            return Ok(out);
        }
        let v: Value = serde_json::from_str(filters)
            .map_err(|e| format!("invalid filters {filters:?}: {e}"))?;
        let Some(o) = v.as_object() else {
            return Err(format!("invalid filters {filters:?}: not a JSON object"));
        };
        for (key, values) in o {
            let values: Vec<String> = match values {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                _ => return Err(format!("invalid filter '{key}'")),
            };
            if values.is_empty() {
                continue;
            }
            match key.as_str() {
                "reference" => out.reference.extend(values),
                "dangling" => {
                    let mut b = values.iter().map(|v| match v.as_str() {
                        "true" | "1" => Ok(true),
                        "false" | "0" => Ok(false),
                        _ => Err(format!("invalid filter 'dangling={v}'")),
                    });
                    let first = b.next().unwrap_or(Ok(true))?;
                    if b.any(|x| x != Ok(first)) {
                        return Err("conflicting values for filter 'dangling'".into());
                    }
                    out.dangling = Some(first);
                }
                other => return Err(format!("invalid filter '{other}'")),
            }
        }
        Ok(out)
    }

    /// Whether an entry of [`image_list`] passes.
    pub fn keep(&self, entry: &Value) -> bool {
        let tags: Vec<&str> = entry["RepoTags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        if let Some(d) = self.dangling {
            if d != tags.is_empty() {
                return false;
            }
        }
        self.reference.is_empty()
            || self.reference.iter().any(|pattern| {
                tags.iter().any(|t| {
                    let repo = t.rsplit_once(':').filter(|(_, tag)| !tag.contains('/'));
                    glob(pattern, t) || repo.is_some_and(|(r, _)| glob(pattern, r))
                })
            })
    }
}

/// Go's `path.Match` for `*` and `?` (neither crosses a `/`); other characters match
/// themselves.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn at(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| at(rest, &n[i..])),
            Some(('?', rest)) => n.first().is_some_and(|c| *c != '/') && at(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && at(rest, &n[1..]),
        }
    }
    at(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::images::v1::{Image, ImageSummary};
    use berth_api::types::v1::Descriptor;

    fn summary(name: &str, id: &str) -> ImageSummary {
        ImageSummary {
            image: Some(Image {
                name: name.into(),
                labels: [("berth.image.id".to_string(), id.to_string())].into(),
                target: Some(Descriptor {
                    digest: "sha256:m".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            id: id.into(),
            size: 42,
            created: Some(berth_api::prost_types::Timestamp {
                seconds: 7,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn names_split_like_docker() {
        assert_eq!(
            repo_tag("registry:5000/app:1.0"),
            ("registry:5000/app".into(), "1.0".into())
        );
        assert_eq!(repo_tag("sha256:abc"), ("<none>".into(), "<none>".into()));
    }

    #[test]
    fn one_list_entry_per_id_with_every_tag() {
        let l = image_list(&[
            summary("docker.io/library/busybox:latest", "sha256:a"),
            summary("sha256:b", "sha256:b"),
            summary("docker.io/library/busybox:mine", "sha256:a"),
        ]);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0]["RepoTags"], json!(["busybox:latest", "busybox:mine"]));
        assert_eq!(l[0]["RepoDigests"], json!(["busybox@sha256:m"]));
        assert_eq!(l[0]["Created"], json!(7));
        assert_eq!(l[1]["RepoTags"], json!([]));
        assert_eq!(l[1]["Containers"], json!(-1));
        assert_eq!(
            l[0]["Labels"],
            Value::Null,
            "berth's own record labels are not shown"
        );
    }

    #[test]
    fn image_filters_as_docker_reads_them() {
        let f =
            ImageFilters::parse(r#"{"reference":{"busy*":true},"dangling":["false"]}"#).unwrap();
        assert_eq!(f.reference, ["busy*"]);
        assert_eq!(f.dangling, Some(false));
        assert!(ImageFilters::parse(r#"{"label":{"a":true}}"#).is_err());
        assert!(ImageFilters::parse("[").is_err());
        assert_eq!(
            ImageFilters::parse(r#"{"dangling":{}}"#).unwrap(),
            ImageFilters::default()
        );

        let l = image_list(&[
            summary("docker.io/library/busybox:latest", "sha256:a"),
            summary("sha256:b", "sha256:b"),
            summary("127.0.0.1:5000/team/app:1.0", "sha256:c"),
        ]);
        let kept = |filters: &str| {
            let f = ImageFilters::parse(filters).unwrap();
            l.iter()
                .filter(|e| f.keep(e))
                .map(|e| e["Id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(r#"{"dangling":{"true":true}}"#), ["sha256:b"]);
        assert_eq!(
            kept(r#"{"dangling":{"false":true}}"#),
            ["sha256:a", "sha256:c"]
        );
        assert_eq!(kept(r#"{"reference":{"busybox":true}}"#), ["sha256:a"]);
        assert_eq!(kept(r#"{"reference":{"busybox:lat*":true}}"#), ["sha256:a"]);
        assert_eq!(
            kept(r#"{"reference":{"127.0.0.1:5000/*/app":true}}"#),
            ["sha256:c"]
        );
        assert_eq!(
            kept(r#"{"reference":{"*":true}}"#),
            ["sha256:a"],
            "* does not cross /"
        );
    }
}
