//! `berth ps` (and `container ls`): which containers it lists (its `-f` filters, Docker's), and
//! the columns and `--format` fields it shows of each.

use crate::client::{Context, Error};
use crate::containers::{command_of, image_shown, network_names, state_name};
use crate::filters::{label_matches, Filters};
use crate::format;
use crate::template::ListFormat;
use berth_api::containers::v1 as capi;
use clap::Args;
use std::collections::BTreeMap;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows running ones)
    #[arg(short, long)]
    pub all: bool,
    /// Filter: status=…, name=…, ancestor=…, id=…, label=…, network=…, publish=…, expose=…
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    #[command(flatten)]
    pub output: crate::template::ListFormat,
}

/// `ps` filters.
#[derive(Debug, Default, PartialEq)]
pub struct PsFilters(Filters);

const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

impl PsFilters {
    pub fn parse(filters: &[String]) -> Result<PsFilters, String> {
        Filters::parse(filters, |k, v| match k {
            "status" if !STATUSES.contains(&v) => Err(format!(
                "invalid filter 'status={v}' (use one of {})",
                STATUSES.join(", ")
            )),
            "publish" | "expose" => crate::ports::parse_port_filter(v).map(|_| ()),
            "status" | "name" | "ancestor" | "id" | "label" | "exited" | "network" => Ok(()),
            _ => Err(format!("invalid filter '{k}'")),
        })
        .map(PsFilters)
    }

    /// Whether a status filter is given (Docker then lists stopped containers too).
    pub fn has_status(&self) -> bool {
        self.0.has("status") || self.0.has("exited")
    }

    pub fn matches(&self, c: &capi::Container) -> bool {
        let st = c.state.clone().unwrap_or_default();
        let status = state_name(&st);
        self.0.matches(|k, v| match k {
            "status" => status == v,
            "exited" => status == "exited" && v.parse::<i32>() == Ok(st.exit_code),
            "name" => crate::filters::name_matches(&c.name, v),
            "id" => c.id.starts_with(v),
            "ancestor" => ancestor_matches(c, v),
            "network" => network_names(c).iter().any(|n| n == v),
            "publish" => live_ports(c).iter().any(|p| {
                p.host_port != 0 && crate::ports::port_filter_matches(v, p.host_port, &p.protocol)
            }),
            "expose" => live_ports(c)
                .iter()
                .chain(c.config.iter().flat_map(|c| c.port_bindings.iter()))
                .any(|p| crate::ports::port_filter_matches(v, p.container_port, &p.protocol)),
            "label" => label_matches(&c.labels, v),
            _ => false,
        })
    }
}

fn ancestor_matches(c: &capi::Container, want: &str) -> bool {
    let id = c.image_id.trim_start_matches("sha256:");
    let w = want.trim_start_matches("sha256:");
    if !w.is_empty()
        && w.len() >= 4
        && id.starts_with(w)
        && w.chars().all(|c| c.is_ascii_hexdigit())
    {
        return true;
    }
    let given = c.config.as_ref().map(|c| c.image.as_str()).unwrap_or("");
    for have in [c.image.as_str(), given] {
        if have.is_empty() {
            continue;
        }
        if have == want {
            return true;
        }
        let (Ok(h), Ok(w)) = (
            berth_core::Reference::parse(have),
            berth_core::Reference::parse_name_only(want),
        ) else {
            continue;
        };
        let same = if w.tag().is_none() && w.digest().is_none() {
            h.repository() == w.repository()
        } else {
            h.to_string() == w.to_string()
        };
        if same {
            return true;
        }
    }
    false
}

fn secs(t: Option<&berth_api::prost_types::Timestamp>) -> i64 {
    t.map(|t| t.seconds).unwrap_or(0)
}

/// The ports a running container has (none when it does not run).
fn live_ports(c: &capi::Container) -> &[capi::PortBinding] {
    c.network_settings
        .as_ref()
        .map(|n| n.ports.as_slice())
        .unwrap_or_default()
}

/// One container as `ps --format` sees it (Docker's field names).
fn ps_json(c: &capi::Container, output: &ListFormat, now: i64) -> serde_json::Value {
    let st = c.state.clone().unwrap_or_default();
    let labels: BTreeMap<_, _> = c.labels.iter().collect();
    let mounts: Vec<&str> = c
        .mounts
        .iter()
        .map(|m| {
            if m.name.is_empty() {
                &m.source
            } else {
                &m.name
            }
        })
        .map(String::as_str)
        .collect();
    serde_json::json!({
        "ID": output.id(&c.id),
        "Image": image_shown(c),
        "Command": format::command(&command_of(c), !output.no_trunc),
        "CreatedAt": format::created_at(c.created_at.as_ref()),
        "RunningFor": format::ago(secs(c.created_at.as_ref())),
        "Ports": crate::ports::ps_column(live_ports(c)),
        "State": state_name(&st),
        "Status": format::status_text(
            state_name(&st),
            st.exit_code,
            secs(st.started_at.as_ref()),
            secs(st.finished_at.as_ref()),
            now,
        ),
        "Names": c.name.trim_start_matches('/'),
        "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Mounts": mounts.join(","),
        "Networks": network_names(c).join(","),
    })
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
];

pub async fn ps(ctx: &Context, a: PsArgs) -> Result<(), Error> {
    let filters = PsFilters::parse(&a.filter).map_err(Error::Local)?;
    let mut list = ctx
        .containers()
        .list(ctx.req(capi::ListContainersRequest {}))
        .await?
        .into_inner()
        .containers;
    let all = a.all || filters.has_status();
    list.retain(|c| {
        let status = c.state.as_ref().map(|s| s.status.as_str()).unwrap_or("");
        (all || matches!(status, "running" | "restarting" | "paused")) && filters.matches(c)
    });
    list.sort_by_key(|c| std::cmp::Reverse(secs(c.created_at.as_ref())));
    let now = chrono::Utc::now().timestamp();
    let objects: Vec<_> = list.iter().map(|c| ps_json(c, &a.output, now)).collect();
    let table = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
    a.output.print(table, PS_COLUMNS, &objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::examples::{container, networked};
    use crate::inspect::container_json;

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
