//! `berth namespace ls|create|rm` (alias `ns`): containerd's namespaces, as `ctr namespaces`
//! shows them. A namespace exists once something is made in it; `create` records one with
//! labels, `ls` shows recorded ones and every one that holds anything, `rm` removes an empty
//! one (berthd refuses while it holds anything, and says what).

use crate::client::{Context, Error};
use crate::format;
use crate::template::ListFormat;
use crate::verbs::{done, each, parse_labels};
use berth_api::namespaces::v1 as api;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace
    Create {
        /// Set a label on the namespace (K=V)
        #[arg(long = "label")]
        label: Vec<String>,
        /// The namespace's name: lowercase letters, digits, '.', '_' and '-'
        name: String,
    },
    /// List namespaces: created ones and every one that holds anything
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        output: ListFormat,
    },
    /// Remove empty namespaces
    #[command(alias = "remove")]
    Rm {
        /// Namespaces by name
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs a namespace subcommand; gives the exit code.
pub async fn namespace(ctx: &Context, c: NamespaceCommand) -> u8 {
    match c {
        NamespaceCommand::Create { label, name } => done(
            async {
                let labels = parse_labels(&label).into_iter().collect();
                ctx.namespaces()
                    .create(ctx.req(api::CreateNamespaceRequest { name, labels }))
                    .await?;
                Ok(())
            }
            .await,
        ),
        NamespaceCommand::Ls { output } => done(ls(ctx, &output).await),
        NamespaceCommand::Rm { names } => {
            each(&names, |name| async move {
                ctx.namespaces()
                    .delete(ctx.req(api::DeleteNamespaceRequest { name: name.clone() }))
                    .await?;
                println!("{name}");
                Ok(())
            })
            .await
        }
    }
}

/// One namespace as `--format` sees it.
fn ls_json(n: &api::Namespace) -> Value {
    json!({
        "Name": n.name,
        "Labels": format::labels(&n.labels),
        "Created": n.recorded,
        "Objects": n.objects.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

const LS_COLUMNS: &[(&str, &str)] = &[("Name", "NAME"), ("Labels", "LABELS")];
const LS_TABLE: &str = "table {{.Name}}\t{{.Labels}}";

async fn ls(ctx: &Context, output: &ListFormat) -> Result<(), Error> {
    let list = ctx
        .namespaces()
        .list(ctx.req(api::ListNamespacesRequest {}))
        .await?
        .into_inner()
        .namespaces;
    let objects: Vec<Value> = list.iter().map(ls_json).collect();
    output.print_keyed("Name", LS_TABLE, LS_COLUMNS, &objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_reads_like_ctr() {
        let team = api::Namespace {
            name: "team".into(),
            labels: [("b".into(), "2".into()), ("a".into(), "1".into())].into(),
            recorded: true,
            ..Default::default()
        };
        let default = api::Namespace {
            name: "default".into(),
            objects: [("images".into(), 2)].into(),
            ..Default::default()
        };
        let objects: Vec<Value> = [default, team].iter().map(ls_json).collect();
        let out = ListFormat::default()
            .render_keyed("Name", LS_TABLE, LS_COLUMNS, &objects)
            .unwrap();
        assert_eq!(out, "NAME      LABELS\ndefault\nteam      a=1,b=2\n");
        assert_eq!(objects[0]["Objects"]["images"], 2);
        assert_eq!(objects[1]["Created"], true);
    }
}
