//! `berth lease ls|rm` (alias `leases`), as `ctr leases`: the work in flight of the image
//! service (pulls, pushes, imports, commits, exports) and what it keeps from garbage
//! collection. `rm` stops the work that holds a lease (it fails with "… its lease was
//! removed"); berthd answers once the lease is gone.

use crate::client::{Context, Error};
use crate::format;
use crate::template::ListFormat;
use crate::verbs::{done, each};
use berth_api::leases::v1 as api;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// List leases
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        output: ListFormat,
    },
    /// Remove leases: stop the work that holds them
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm {
        /// Lease ids
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Runs a lease subcommand; gives the exit code.
pub async fn lease(ctx: &Context, c: LeaseCommand) -> u8 {
    match c {
        LeaseCommand::Ls { output } => done(ls(ctx, &output).await),
        LeaseCommand::Rm { ids } => {
            each(&ids, |id| async move {
                ctx.leases()
                    .delete(ctx.req(api::DeleteLeaseRequest { id: id.clone() }))
                    .await?;
                println!("{id}");
                Ok(())
            })
            .await
        }
    }
}

/// One lease as `ls --format` sees it: ctr's fields, and what it holds.
fn ls_json(l: &api::Lease) -> Value {
    let created = l
        .created_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default();
    json!({
        "ID": l.id,
        "CreatedAt": created,
        "Labels": format::labels(&l.labels),
        "Blobs": l.blobs,
        "Snapshots": l.snapshots,
    })
}

const LS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("CreatedAt", "CREATED AT"),
    ("Labels", "LABELS"),
];
const LS_TABLE: &str = "table {{.ID}}\t{{.CreatedAt}}\t{{.Labels}}";

async fn ls(ctx: &Context, output: &ListFormat) -> Result<(), Error> {
    let leases = ctx
        .leases()
        .list(ctx.req(api::ListLeasesRequest {}))
        .await?
        .into_inner()
        .leases;
    let objects: Vec<Value> = leases.iter().map(ls_json).collect();
    output.print_keyed("ID", LS_TABLE, LS_COLUMNS, &objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_reads_like_ctr() {
        let l = api::Lease {
            id: "export-3".into(),
            created_at: Some(berth_api::prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            labels: [
                ("berth.lease.operation".into(), "export".into()),
                ("berth.lease.image".into(), "big:1".into()),
            ]
            .into(),
            blobs: vec!["sha256:aa".into()],
            snapshots: vec![],
        };
        let o = ls_json(&l);
        let created = o["CreatedAt"].as_str().unwrap().to_string();
        assert!(
            chrono::DateTime::parse_from_rfc3339(&created)
                .is_ok_and(|t| t.timestamp() == 1_700_000_000),
            "{created}"
        );
        let out = ListFormat::default()
            .render_keyed("ID", LS_TABLE, LS_COLUMNS, std::slice::from_ref(&o))
            .unwrap();
        let mut lines = out.lines();
        let head = lines.next().unwrap();
        assert!(head.starts_with("ID         CREATED AT"), "{out}");
        assert!(head.ends_with("LABELS"), "{out}");
        assert_eq!(
            lines.next().unwrap(),
            format!("export-3   {created}   berth.lease.image=big:1,berth.lease.operation=export")
        );
        assert_eq!(o["Blobs"], json!(["sha256:aa"]));
    }
}
