//! `berth snapshot ls|info|usage|mounts|rm|tree` (alias `snapshots`), as `ctr snapshots`:
//! the snapshots of one snapshotter (`--snapshotter`, berthd's default — overlayfs — when not
//! given; berth also has `native`) in the namespace.

use crate::client::{Context, Error};
use crate::format;
use crate::template::ListFormat;
use crate::verbs::{done, each};
use berth_api::snapshots::v1 as api;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The snapshotter: overlayfs or native (default: berthd's, overlayfs unless it fell back)
    #[arg(long, global = true)]
    pub snapshotter: Option<String>,
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        output: ListFormat,
    },
    /// Show a snapshot's details as JSON
    Info {
        /// The snapshot's key
        key: String,
    },
    /// Show the disk usage of snapshots (every one without keys)
    Usage {
        /// Show sizes in bytes
        #[arg(short = 'b')]
        bytes: bool,
        #[command(flatten)]
        output: ListFormat,
        /// Snapshot keys
        keys: Vec<String>,
    },
    /// Print the mount commands of an active snapshot or a view, mounted at TARGET
    Mounts {
        /// Where it would be mounted
        target: String,
        /// The snapshot's key
        key: String,
    },
    /// Remove snapshots (nothing may be built on them)
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm {
        /// Snapshot keys
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Draw the snapshots as a tree of parents and children
    Tree,
}

/// Runs a snapshot subcommand; gives the exit code.
pub async fn snapshot(ctx: &Context, a: SnapshotArgs) -> u8 {
    let sn = a.snapshotter.unwrap_or_default();
    match a.command {
        SnapshotCommand::Ls { output } => done(ls(ctx, &sn, &output).await),
        SnapshotCommand::Info { key } => done(info(ctx, &sn, key).await),
        SnapshotCommand::Usage {
            bytes,
            output,
            keys,
        } => done(usage(ctx, &sn, bytes, &output, keys).await),
        SnapshotCommand::Mounts { target, key } => done(mounts(ctx, &sn, &target, key).await),
        SnapshotCommand::Rm { keys } => {
            let sn = &sn;
            each(&keys, |key| async move {
                ctx.snapshots()
                    .remove(ctx.req(api::SnapshotKey {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    }))
                    .await?;
                println!("{key}");
                Ok(())
            })
            .await
        }
        SnapshotCommand::Tree => done(tree(ctx, &sn).await),
    }
}

fn kind(k: i32) -> &'static str {
    match api::Kind::try_from(k) {
        Ok(api::Kind::View) => "View",
        Ok(api::Kind::Active) => "Active",
        Ok(api::Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

async fn list(ctx: &Context, sn: &str) -> Result<Vec<api::SnapshotInfo>, Error> {
    let mut all = ctx
        .snapshots()
        .list(ctx.req(api::ListSnapshotsRequest {
            snapshotter: sn.to_string(),
        }))
        .await?
        .into_inner()
        .info;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// One snapshot as `ls --format` sees it.
fn ls_json(i: &api::SnapshotInfo) -> Value {
    json!({
        "Key": i.name,
        "Parent": i.parent,
        "Kind": kind(i.kind),
        "Labels": format::labels(&i.labels),
        "Created": format::rfc3339(i.created_at.as_ref()),
        "Updated": format::rfc3339(i.updated_at.as_ref()),
    })
}

const LS_COLUMNS: &[(&str, &str)] = &[("Key", "KEY"), ("Parent", "PARENT"), ("Kind", "KIND")];
const LS_TABLE: &str = "table {{.Key}}\t{{.Parent}}\t{{.Kind}}";

async fn ls(ctx: &Context, sn: &str, output: &ListFormat) -> Result<(), Error> {
    let objects: Vec<Value> = list(ctx, sn).await?.iter().map(ls_json).collect();
    output.print_keyed("Key", LS_TABLE, LS_COLUMNS, &objects)
}

/// containerd's snapshots.Info as `ctr snapshot info` prints it (fields in its order; an
/// empty parent and no labels left out).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct InfoJson<'a> {
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    parent: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a String, &'a String>,
    created: String,
    updated: String,
}

/// Indented with four spaces, as ctr's PrintAsJSON.
fn info_text(i: &api::SnapshotInfo) -> String {
    let v = InfoJson {
        kind: kind(i.kind),
        name: &i.name,
        parent: &i.parent,
        labels: i.labels.iter().collect(),
        created: format::rfc3339(i.created_at.as_ref()),
        updated: format::rfc3339(i.updated_at.as_ref()),
    };
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    v.serialize(&mut ser)
        .expect("a snapshot's info always serializes");
    String::from_utf8_lossy(&out).into_owned()
}

async fn info(ctx: &Context, sn: &str, key: String) -> Result<(), Error> {
    let i = ctx
        .snapshots()
        .stat(ctx.req(api::SnapshotKey {
            snapshotter: sn.to_string(),
            key,
        }))
        .await?
        .into_inner()
        .info
        .unwrap_or_default();
    println!("{}", info_text(&i));
    Ok(())
}

const USAGE_COLUMNS: &[(&str, &str)] = &[("Key", "KEY"), ("Size", "SIZE"), ("Inodes", "INODES")];
const USAGE_TABLE: &str = "table {{.Key}}\t{{.Size}}\t{{.Inodes}}";

async fn usage(
    ctx: &Context,
    sn: &str,
    bytes: bool,
    output: &ListFormat,
    keys: Vec<String>,
) -> Result<(), Error> {
    let keys = if keys.is_empty() {
        list(ctx, sn).await?.into_iter().map(|i| i.name).collect()
    } else {
        keys
    };
    let mut objects = Vec::new();
    for key in keys {
        let u = ctx
            .snapshots()
            .usage(ctx.req(api::SnapshotKey {
                snapshotter: sn.to_string(),
                key: key.clone(),
            }))
            .await?
            .into_inner();
        let size = if bytes {
            u.size.to_string()
        } else {
            format::size(u.size)
        };
        objects.push(json!({"Key": key, "Size": size, "Inodes": u.inodes}));
    }
    output.print_keyed("Key", USAGE_TABLE, USAGE_COLUMNS, &objects)
}

/// The `mount(8)` command of each mount, as `ctr snapshot mounts` prints it.
fn mount_commands(target: &str, mounts: &[berth_api::types::v1::Mount]) -> String {
    mounts
        .iter()
        .map(|m| {
            let at = match m.target.trim_start_matches('/') {
                "" => target.to_string(),
                sub => std::path::Path::new(target).join(sub).display().to_string(),
            };
            format!(
                "mount -t {} {} {at} -o {}\n",
                m.r#type,
                m.source,
                m.options.join(",")
            )
        })
        .collect()
}

async fn mounts(ctx: &Context, sn: &str, target: &str, key: String) -> Result<(), Error> {
    let m = ctx
        .snapshots()
        .mounts(ctx.req(api::SnapshotKey {
            snapshotter: sn.to_string(),
            key,
        }))
        .await?
        .into_inner()
        .mounts;
    print!("{}", mount_commands(target, &m));
    Ok(())
}

/// The snapshots as ctr draws them: each root, then its children indented below it.
fn tree_text(all: &[api::SnapshotInfo]) -> String {
    let names: std::collections::HashSet<&str> = all.iter().map(|i| i.name.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut roots = Vec::new();
    for i in all {
        if i.parent.is_empty() || !names.contains(i.parent.as_str()) {
            roots.push(i.name.as_str());
        } else {
            children.entry(&i.parent).or_default().push(&i.name);
        }
    }
    roots.sort_unstable();
    children.values_mut().for_each(|c| c.sort_unstable());
    let mut out = String::new();
    // Depth first, without recursion: (name, level).
    let mut todo: Vec<(&str, usize)> = roots.iter().rev().map(|r| (*r, 0)).collect();
    while let Some((name, level)) = todo.pop() {
        let prefix = "  ".repeat(level) + if level > 0 { "\\_" } else { "" };
        out.push_str(&format!("{prefix} {name}\n"));
        if let Some(c) = children.get(name) {
            todo.extend(c.iter().rev().map(|c| (*c, level + 1)));
        }
    }
    out
}

async fn tree(ctx: &Context, sn: &str) -> Result<(), Error> {
    print!("{}", tree_text(&list(ctx, sn).await?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::prost_types::Timestamp;

    fn snap(name: &str, parent: &str, k: api::Kind) -> api::SnapshotInfo {
        api::SnapshotInfo {
            name: name.into(),
            parent: parent.into(),
            kind: k as i32,
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            updated_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ls_reads_like_ctr() {
        let objects: Vec<Value> = [
            snap("sha256:a", "", api::Kind::Committed),
            snap("web", "sha256:a", api::Kind::Active),
        ]
        .iter()
        .map(ls_json)
        .collect();
        let out = ListFormat::default()
            .render_keyed("Key", LS_TABLE, LS_COLUMNS, &objects)
            .unwrap();
        assert_eq!(
            out,
            "KEY        PARENT     KIND\nsha256:a              Committed\nweb        sha256:a   Active\n"
        );
    }

    #[test]
    fn info_is_ctr_shaped_json() {
        let mut s = snap("web", "sha256:a", api::Kind::Active);
        s.labels.insert("x".into(), "1".into());
        let text = info_text(&s);
        assert_eq!(
            text,
            "{\n    \"Kind\": \"Active\",\n    \"Name\": \"web\",\n    \"Parent\": \"sha256:a\",\n    \
             \"Labels\": {\n        \"x\": \"1\"\n    },\n    \"Created\": \"2023-11-14T22:13:20Z\",\n    \
             \"Updated\": \"2023-11-14T22:13:20Z\"\n}"
        );
        let root = info_text(&snap("sha256:a", "", api::Kind::Committed));
        assert!(
            !root.contains("Parent") && !root.contains("Labels"),
            "{root}"
        );
    }

    #[test]
    fn mounts_print_as_mount_commands() {
        let m = berth_api::types::v1::Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/l".into(),
            ],
        };
        assert_eq!(
            mount_commands("/mnt/x", &[m]),
            "mount -t overlay overlay /mnt/x -o workdir=/w,upperdir=/u,lowerdir=/l\n"
        );
    }

    #[test]
    fn trees_are_drawn_like_ctr() {
        let all = [
            snap("c", "b", api::Kind::Active),
            snap("b", "a", api::Kind::Committed),
            snap("a", "", api::Kind::Committed),
            snap("v", "a", api::Kind::View),
            snap("lost", "gone", api::Kind::Committed),
        ];
        assert_eq!(tree_text(&all), " a\n  \\_ b\n    \\_ c\n  \\_ v\n lost\n");
        assert_eq!(tree_text(&[]), "");
    }
}
