//! Which containers a listing shows and how each reads: the filters of `docker ps -f` and of
//! `GET /containers/json?filters=` ([`PsFilters`], Docker's: status, name, id, label,
//! ancestor, exited, network, publish, expose), the fields of a `ps` row ([`ps_row`]) and an
//! entry of the Engine API's container list ([`list_entry`]).

use crate::containers::{command_of, image_shown, network_names, state_name};
use crate::filters::{label_matches, name_matches, Filters};
use crate::format;
use berth_api::containers::v1 as capi;
use std::collections::BTreeMap;

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

/// Refuses a filter `ps` does not know, or a value it cannot match.
fn check(k: &str, v: &str) -> Result<(), String> {
    match k {
        "status" if !STATUSES.contains(&v) => Err(format!(
            "invalid filter 'status={v}' (use one of {})",
            STATUSES.join(", ")
        )),
        "publish" | "expose" => crate::ports::parse_port_filter(v).map(|_| ()),
        "status" | "name" | "ancestor" | "id" | "label" | "exited" | "network" | "before"
        | "since" => Ok(()),
        _ => Err(format!("invalid filter '{k}'")),
    }
}

impl PsFilters {
    /// The CLI's `-f KEY=VALUE` filters.
    pub fn parse(filters: &[String]) -> Result<PsFilters, String> {
        Filters::parse(filters, check).map(PsFilters)
    }

    /// The Engine API's `filters` JSON.
    pub fn from_json(filters: &str) -> Result<PsFilters, String> {
        Filters::from_json(filters, check).map(PsFilters)
    }

    /// Whether a status filter is given (Docker then lists stopped containers too).
    pub fn has_status(&self) -> bool {
        self.0.has("status") || self.0.has("exited")
    }

    /// The containers a listing shows, newest first: those that run (every one with `all` or
    /// a status filter) and pass the filters. `before=`/`since=` name a container of `list`
    /// (id, id prefix or name); one that is not there is an error, as with Docker.
    pub fn select<'a>(
        &self,
        list: &'a [capi::Container],
        all: bool,
    ) -> Result<Vec<&'a capi::Container>, String> {
        let created = |c: &capi::Container| secs(c.created_at.as_ref());
        let bound = |key: &str| -> Result<Vec<i64>, String> {
            self.0
                .values(key)
                .iter()
                .map(|r| {
                    find(list, r)
                        .map(created)
                        .ok_or_else(|| format!("No such container: {r}"))
                })
                .collect()
        };
        let (before, since) = (bound("before")?, bound("since")?);
        let all = all || self.has_status();
        let mut shown: Vec<&capi::Container> = list
            .iter()
            .filter(|c| (all || is_live(c)) && self.matches(c))
            .filter(|c| before.iter().all(|t| created(c) < *t))
            .filter(|c| since.iter().all(|t| created(c) > *t))
            .collect();
        shown.sort_by_key(|c| std::cmp::Reverse(created(c)));
        Ok(shown)
    }

    /// Whether a container passes the filters (`before` and `since` are [`PsFilters::select`]'s).
    pub fn matches(&self, c: &capi::Container) -> bool {
        let st = c.state.clone().unwrap_or_default();
        let status = state_name(&st);
        self.0.matches(|k, v| match k {
            "status" => status == v,
            "exited" => status == "exited" && v.parse::<i32>() == Ok(st.exit_code),
            "name" => name_matches(&c.name, v),
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
            "before" | "since" => true,
            _ => false,
        })
    }
}

/// The container of `list` named by `r`: its id, its name, or a unique prefix of its id.
fn find<'a>(list: &'a [capi::Container], r: &str) -> Option<&'a capi::Container> {
    let r = r.trim_start_matches('/');
    if let Some(c) = list.iter().find(|c| c.id == r || c.name == r) {
        return Some(c);
    }
    let mut prefixed = list.iter().filter(|c| !r.is_empty() && c.id.starts_with(r));
    match (prefixed.next(), prefixed.next()) {
        (Some(c), None) => Some(c),
        _ => None,
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

pub fn secs(t: Option<&berth_api::prost_types::Timestamp>) -> i64 {
    t.map(|t| t.seconds).unwrap_or(0)
}

/// The ports a running container has (none when it does not run).
pub fn live_ports(c: &capi::Container) -> &[capi::PortBinding] {
    c.network_settings
        .as_ref()
        .map(|n| n.ports.as_slice())
        .unwrap_or_default()
}

/// The fields of one `ps` row (Docker's names, as `--format` reads them); `id` is the id as
/// shown (short or full), `trunc` cuts the command as Docker does without `--no-trunc`.
pub fn ps_row(c: &capi::Container, id: &str, trunc: bool, now: i64) -> serde_json::Value {
    let st = c.state.clone().unwrap_or_default();
    let labels: BTreeMap<_, _> = c.labels.iter().collect();
    serde_json::json!({
        "ID": id,
        "Image": image_shown(c),
        "Command": format::command(&command_of(c), trunc),
        "CreatedAt": format::created_at(c.created_at.as_ref()),
        "RunningFor": format::ago(secs(c.created_at.as_ref())),
        "Ports": crate::ports::ps_column(live_ports(c)),
        "State": state_name(&st),
        "Status": status_text(&st, now),
        "Names": c.name.trim_start_matches('/'),
        "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Mounts": mount_names(c).join(","),
        "Networks": network_names(c).join(","),
    })
}

/// Docker's `SizeRw` and `SizeRootFs` of a container (the Engine API's `size=1`), added to
/// its list entry or inspect JSON; without `size=1` Docker leaves both out.
pub fn add_size(json: &mut serde_json::Value, size: &capi::ContainerSize) {
    if let Some(o) = json.as_object_mut() {
        o.insert("SizeRw".into(), size.rw.into());
        o.insert("SizeRootFs".into(), size.root_fs.into());
    }
}

/// The SIZE column of `ps -s`, as Docker's: the writable layer, then the whole root
/// filesystem ("12B (virtual 4.26MB)").
pub fn size_column(size: &capi::ContainerSize) -> String {
    let rw = crate::progress::human_size(size.rw);
    if size.root_fs > 0 {
        format!(
            "{rw} (virtual {})",
            crate::progress::human_size(size.root_fs)
        )
    } else {
        rw
    }
}

/// The STATUS text of a container ("Up 3 seconds", "Exited (0) 2 minutes ago").
fn status_text(st: &capi::ContainerState, now: i64) -> String {
    format::status_text(
        state_name(st),
        st.exit_code,
        secs(st.started_at.as_ref()),
        secs(st.finished_at.as_ref()),
        now,
    )
}

/// A container's mounts by volume name, else source.
fn mount_names(c: &capi::Container) -> Vec<&str> {
    c.mounts
        .iter()
        .map(|m| {
            if m.name.is_empty() {
                &m.source
            } else {
                &m.name
            }
        })
        .map(String::as_str)
        .collect()
}

/// Whether a listing without `all` shows the container (it runs, restarts or is paused).
pub fn is_live(c: &capi::Container) -> bool {
    let status = c.state.as_ref().map(|s| s.status.as_str()).unwrap_or("");
    matches!(status, "running" | "restarting" | "paused")
}

/// One entry of `GET /containers/json`, Docker's shape; `network_ids` maps network names to
/// ids for the networks of a container that does not run.
pub fn list_entry(
    c: &capi::Container,
    network_ids: &BTreeMap<String, String>,
    now: i64,
) -> serde_json::Value {
    use serde_json::json;
    let st = c.state.clone().unwrap_or_default();
    let ports: Vec<_> = crate::ports::sorted(live_ports(c))
        .into_iter()
        .map(|p| {
            let mut e = json!({
                "PrivatePort": p.container_port,
                "Type": if p.protocol.is_empty() { "tcp" } else { p.protocol.as_str() },
            });
            if p.host_port != 0 {
                e["IP"] = json!(crate::ports::host_ip(p));
                e["PublicPort"] = json!(p.host_port);
            }
            e
        })
        .collect();
    let inspect = crate::containers::container_json(c, None, network_ids);
    let network_mode = inspect["HostConfig"]["NetworkMode"].clone();
    let labels: BTreeMap<_, _> = c.labels.iter().collect();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name.trim_start_matches('/'))],
        "Image": image_shown(c),
        "ImageID": c.image_id,
        "Command": command_line(&command_of(c)),
        "Created": secs(c.created_at.as_ref()),
        "Ports": ports,
        "Labels": labels,
        "State": state_name(&st),
        "Status": status_text(&st, now),
        "HostConfig": {"NetworkMode": network_mode},
        "NetworkSettings": {"Networks": inspect["NetworkSettings"]["Networks"]},
        "Mounts": inspect["Mounts"],
    })
}

/// The command as Docker's list shows it: the arguments joined by spaces, those with a space
/// in single quotes.
fn command_line(args: &[String]) -> String {
    serde_json::from_str(&format::command(args, false)).unwrap_or_default()
}

/// The filters of a container prune: `until` (created before a time: unix seconds, RFC 3339,
/// or a Go duration before now such as `24h`) and `label` / `label!` (`KEY` or `KEY=VALUE`).
#[derive(Debug, Default, PartialEq)]
pub struct PruneFilters(Filters);

impl PruneFilters {
    /// The Engine API's `filters` JSON.
    pub fn from_json(filters: &str) -> Result<PruneFilters, String> {
        let now = chrono::Utc::now().timestamp();
        Filters::from_json(filters, |k, v| match k {
            "until" => until_seconds(v, now).map(|_| ()),
            "label" | "label!" => Ok(()),
            _ => Err(format!("invalid filter '{k}'")),
        })
        .map(PruneFilters)
    }

    /// Whether no filter is given (every stopped container goes).
    pub fn is_empty(&self) -> bool {
        *self == PruneFilters::default()
    }

    /// Whether a prune removes the container: it does not run, and passes the filters.
    pub fn prunes(&self, c: &capi::Container, now: i64) -> bool {
        let created = secs(c.created_at.as_ref());
        !is_live(c)
            && self.0.matches(|k, v| match k {
                "until" => until_seconds(v, now).is_ok_and(|t| created < t),
                "label" => label_matches(&c.labels, v),
                "label!" => !label_matches(&c.labels, v),
                _ => false,
            })
    }
}

/// An `until` filter as unix seconds: a number, an RFC 3339 time, or a duration before `now`
/// (`10m`, `24h`, `1h30m`).
fn until_seconds(v: &str, now: i64) -> Result<i64, String> {
    if let Ok(n) = v.parse::<f64>() {
        return Ok(n as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp());
    }
    let bad = || {
        format!("invalid filter 'until={v}': use a timestamp, an RFC 3339 time or a duration such as 24h")
    };
    let mut total = 0f64;
    let mut number = String::new();
    for ch in v.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            number.push(ch);
            continue;
        }
        let n: f64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match ch {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || v.is_empty() {
        return Err(bad());
    }
    Ok(now - total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_shows_them() {
        let size = capi::ContainerSize {
            rw: 12,
            root_fs: 4_260_000,
        };
        assert_eq!(size_column(&size), "12B (virtual 4.26MB)");
        let mut j = serde_json::json!({"Id": "x"});
        add_size(&mut j, &size);
        assert_eq!(
            (j["SizeRw"].as_i64(), j["SizeRootFs"].as_i64()),
            (Some(12), Some(4_260_000))
        );
    }

    fn container(name: &str, status: &str, created: i64) -> capi::Container {
        capi::Container {
            id: format!("{name:0<64}"),
            name: name.into(),
            image: "docker.io/library/busybox:latest".into(),
            image_id: "sha256:abc".into(),
            config: Some(capi::ContainerConfig {
                image: "busybox".into(),
                cmd: vec!["sleep".into(), "30".into()],
                ..Default::default()
            }),
            created_at: Some(berth_api::prost_types::Timestamp {
                seconds: created,
                nanos: 0,
            }),
            labels: [("tier".to_string(), "web".to_string())].into(),
            state: Some(capi::ContainerState {
                status: status.into(),
                exit_code: 3,
                started_at: Some(berth_api::prost_types::Timestamp {
                    seconds: created + 1,
                    nanos: 0,
                }),
                finished_at: Some(berth_api::prost_types::Timestamp {
                    seconds: created + 2,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn list_entries_are_dockers() {
        let mut c = container("web", "running", 100);
        c.network_settings = Some(capi::NetworkSettings {
            ports: vec![capi::PortBinding {
                host_ip: String::new(),
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
            }],
            ..Default::default()
        });
        let e = list_entry(&c, &BTreeMap::new(), 104);
        assert_eq!(e["Names"], serde_json::json!(["/web"]));
        assert_eq!(e["Image"], "busybox");
        assert_eq!(e["Command"], "sleep 30");
        assert_eq!(e["Created"], 100);
        assert_eq!(e["State"], "running");
        assert_eq!(e["Status"], "Up 3 seconds");
        assert_eq!(e["Labels"]["tier"], "web");
        assert_eq!(e["HostConfig"]["NetworkMode"], "default");
        assert_eq!(
            e["Ports"],
            serde_json::json!([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}])
        );
        let e = list_entry(&container("db", "exited", 100), &BTreeMap::new(), 162);
        assert_eq!(e["Status"], "Exited (3) About a minute ago");
        assert_eq!(e["Ports"], serde_json::json!([]));
        let row = ps_row(&c, "webwebweb", true, 104);
        assert_eq!(
            (row["ID"].as_str(), row["Status"].as_str()),
            (Some("webwebweb"), Some("Up 3 seconds"))
        );
    }

    #[test]
    fn api_filters_and_prune_filters() {
        let f = PsFilters::from_json(r#"{"status":["exited"],"label":["tier=web"]}"#).unwrap();
        assert!(f.has_status());
        assert!(f.matches(&container("db", "exited", 1)));
        assert!(!f.matches(&container("web", "running", 1)));
        assert!(PsFilters::from_json(r#"{"colour":["red"]}"#).is_err());

        let list = [
            container("a", "exited", 1),
            container("b", "running", 2),
            container("c", "exited", 3),
        ];
        let names = |f: &str, all: bool| -> Vec<String> {
            let f = PsFilters::from_json(f).unwrap();
            let shown = f.select(&list, all).unwrap();
            shown.iter().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names("", false), ["b"]);
        assert_eq!(names("", true), ["c", "b", "a"]);
        assert_eq!(names(r#"{"before":["c"]}"#, true), ["b", "a"]);
        assert_eq!(names(r#"{"since":["a"]}"#, true), ["c", "b"]);
        assert_eq!(
            names(r#"{"status":["exited"],"since":["a"]}"#, false),
            ["c"]
        );
        let f = PsFilters::from_json(r#"{"before":["nosuch"]}"#).unwrap();
        assert_eq!(
            f.select(&list, true).unwrap_err(),
            "No such container: nosuch"
        );

        let now = 10_000;
        let old = container("old", "exited", 100);
        let new = container("new", "exited", 9_990);
        let up = container("up", "running", 100);
        let p = PruneFilters::from_json("").unwrap();
        assert!(p.is_empty() && p.prunes(&old, now) && !p.prunes(&up, now));
        let p = PruneFilters::from_json(r#"{"until":["1h"]}"#).unwrap();
        assert!(p.prunes(&old, now) && !p.prunes(&new, now));
        let p = PruneFilters::from_json(r#"{"until":["5000"]}"#).unwrap();
        assert!(p.prunes(&old, now) && !p.prunes(&new, now));
        let p = PruneFilters::from_json(r#"{"label!":["tier"]}"#).unwrap();
        assert!(!p.prunes(&old, now));
        let p = PruneFilters::from_json(r#"{"label":["tier=web"]}"#).unwrap();
        assert!(p.prunes(&old, now));
        assert!(PruneFilters::from_json(r#"{"until":["yesterday"]}"#).is_err());
        assert!(PruneFilters::from_json(r#"{"status":["exited"]}"#).is_err());
        assert_eq!(until_seconds("1h30m", 10_000), Ok(10_000 - 5_400));
        assert_eq!(until_seconds("2023-11-14T22:13:20Z", 0), Ok(1_700_000_000));
    }
}
