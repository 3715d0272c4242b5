//! `berth ps` (and `container ls`): which containers it lists (its `-f` filters, Docker's), and
//! the columns and `--format` fields it shows of each.

use crate::client::{Context, Error};
use crate::template::ListFormat;
use berth_api::containers::v1 as capi;
use berth_docker::ps::PsFilters;
use clap::Args;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows running ones)
    #[arg(short, long)]
    pub all: bool,
    /// Filter: status=…, name=…, ancestor=…, id=…, label=…, network=…, publish=…, expose=…,
    /// before=…, since=…
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Display total file sizes (the writable layer, and the whole root filesystem)
    #[arg(short, long)]
    pub size: bool,
    #[command(flatten)]
    pub output: crate::template::ListFormat,
}

/// One container as `ps --format` sees it (Docker's field names).
fn ps_json(c: &capi::Container, output: &ListFormat, now: i64) -> serde_json::Value {
    berth_docker::ps::ps_row(c, &output.id(&c.id), !output.no_trunc, now)
}

const PS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("Size", "SIZE"),
];

pub async fn ps(ctx: &Context, a: PsArgs) -> Result<(), Error> {
    let filters = PsFilters::parse(&a.filter).map_err(Error::Local)?;
    let list = ctx
        .containers()
        .list(ctx.req(capi::ListContainersRequest {}))
        .await?
        .into_inner()
        .containers;
    let shown = filters.select(&list, a.all).map_err(Error::Local)?;
    let now = chrono::Utc::now().timestamp();
    // As Docker's, a format that shows .Size asks for the sizes too.
    let sized = a.size
        || a.output
            .format
            .as_deref()
            .is_some_and(|f| f.contains(".Size"));
    let sizes = if sized && !shown.is_empty() {
        let ids = shown.iter().map(|c| c.id.clone()).collect();
        ctx.containers()
            .sizes(ctx.req(capi::ContainerSizesRequest { ids }))
            .await?
            .into_inner()
            .sizes
    } else {
        Default::default()
    };
    let objects: Vec<_> = shown
        .iter()
        .map(|c| {
            let mut row = ps_json(c, &a.output, now);
            if let Some(size) = sizes.get(&c.id) {
                row["Size"] = berth_docker::ps::size_column(size).into();
            }
            row
        })
        .collect();
    let mut table = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}".to_string();
    if a.size {
        table.push_str("\t{{.Size}}");
    }
    a.output.print(&table, PS_COLUMNS, &objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::examples::{container, networked};
    use berth_docker::containers::container_json;
    use berth_docker::containers::state_name;
    use std::collections::BTreeMap;

    fn f(s: &[&str]) -> PsFilters {
        PsFilters::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn ps_filters_parse() {
        assert!(PsFilters::parse(&["status=bogus".into()]).is_err());
        assert!(PsFilters::parse(&["colour=red".into()]).is_err());
        assert!(PsFilters::parse(&["nonsense".into()]).is_err());
        assert!(f(&["status=exited"]).has_status());
        assert!(!f(&["name=x"]).has_status());
    }

    #[test]
    fn ps_filters_match_like_docker() {
        let web = container("web", "running", "busybox");
        let db = container("db", "exited", "127.0.0.1:5000/busybox:1.0");
        assert!(f(&["status=running"]).matches(&web));
        assert!(!f(&["status=running"]).matches(&db));
        // The same key ORs.
        let either = f(&["status=running", "status=exited"]);
        assert!(either.matches(&web) && either.matches(&db));
        // Different keys AND.
        assert!(!f(&["status=running", "name=db"]).matches(&web));
        assert!(f(&["status=exited", "name=db"]).matches(&db));
        assert!(f(&["name=we"]).matches(&web));
        assert!(f(&["ancestor=busybox"]).matches(&web));
        assert!(f(&["ancestor=busybox:latest"]).matches(&web));
        assert!(!f(&["ancestor=busybox"]).matches(&db));
        assert!(f(&["ancestor=127.0.0.1:5000/busybox"]).matches(&db));
        assert!(f(&["ancestor=abcdef"]).matches(&db));
        assert!(f(&["exited=3"]).matches(&db));
        assert!(!f(&["exited=0"]).matches(&db));
    }

    #[test]
    fn a_paused_container_shows_as_docker_does() {
        let mut c = container("web", "running", "busybox");
        let st = c.state.as_mut().unwrap();
        st.paused = true;
        st.started_at = Some(berth_api::prost_types::Timestamp {
            seconds: 100,
            nanos: 0,
        });
        let j = ps_json(&c, &ListFormat::default(), 105);
        assert_eq!(j["State"], "paused");
        assert_eq!(j["Status"], "Up 5 seconds (Paused)");
        assert!(f(&["status=paused"]).matches(&c));
        assert!(!f(&["status=running"]).matches(&c));
        let i = container_json(&c, None, &BTreeMap::new());
        assert_eq!(i["State"]["Status"], "paused");
        assert_eq!(i["State"]["Paused"], true);
        assert_eq!(i["State"]["Running"], true);
        // Thawed, it is running again.
        c.state.as_mut().unwrap().paused = false;
        let j = ps_json(&c, &ListFormat::default(), 105);
        assert_eq!(j["State"], "running");
        assert_eq!(j["Status"], "Up 5 seconds");
        assert!(f(&["status=running"]).matches(&c) && !f(&["status=paused"]).matches(&c));
        let i = container_json(&c, None, &BTreeMap::new());
        assert_eq!(i["State"]["Paused"], false);
        assert_eq!(i["State"]["Status"], "running");
        // `paused` means nothing once the container stopped.
        let st = c.state.as_mut().unwrap();
        st.status = "exited".into();
        st.paused = true;
        assert_eq!(state_name(st), "exited");
        assert_eq!(state_name(&capi::ContainerState::default()), "created");
    }

    #[test]
    fn ps_shows_ports_and_networks() {
        let c = networked();
        let j = ps_json(&c, &ListFormat::default(), 0);
        assert_eq!(
            j["Ports"],
            "5000/tcp, 0.0.0.0:8080->80/tcp, 127.0.0.1:32768->81/tcp"
        );
        assert_eq!(j["Networks"], "bridge,front");
        let out = crate::template::list("{{.Names}}: {{.Ports}}", PS_COLUMNS, &[j]).unwrap();
        assert_eq!(
            out,
            "web: 5000/tcp, 0.0.0.0:8080->80/tcp, 127.0.0.1:32768->81/tcp\n"
        );
        assert!(f(&["network=front"]).matches(&c));
        assert!(!f(&["network=back"]).matches(&c));
        assert!(f(&["publish=8080"]).matches(&c));
        assert!(f(&["publish=8000-8100/tcp"]).matches(&c));
        assert!(!f(&["publish=80"]).matches(&c));
        assert!(!f(&["publish=8080/udp"]).matches(&c));
        assert!(f(&["expose=5000"]).matches(&c));
        assert!(f(&["expose=80"]).matches(&c));
        assert!(PsFilters::parse(&["publish=x".into()]).is_err());
        let stopped = container("db", "exited", "busybox");
        assert_eq!(ps_json(&stopped, &ListFormat::default(), 0)["Ports"], "");
    }
}
