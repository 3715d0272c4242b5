//! Published ports as Docker shows them: the PORTS column of `ps`, the `Ports` and
//! `PortBindings` maps of inspect, and the `publish=`/`expose=` filters of a container list.

use berth_api::containers::v1 as capi;
use std::collections::BTreeMap;

/// A port number, or a range `A-B`, of a `-p` spec: (first, last).
pub fn port_range(s: &str, what: &str) -> Result<(u16, u16), String> {
    let num = |p: &str| -> Result<u16, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} {p:?} is not a number"));
        }
        p.parse::<u16>()
            .map_err(|_| format!("{what} {p} is out of range (1-65535)"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if b < a {
        return Err(format!("{what} range {s} ends before it starts"));
    }
    Ok((a, b))
}

/// `80/tcp`: the key of Docker's port maps.
pub fn key(p: &capi::PortBinding) -> String {
    let proto = if p.protocol.is_empty() {
        "tcp"
    } else {
        p.protocol.as_str()
    };
    format!("{}/{proto}", p.container_port)
}

/// The host address a published port is shown with ("" is every address: 0.0.0.0).
pub fn host_ip(p: &capi::PortBinding) -> &str {
    if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &p.host_ip
    }
}

/// The address a running container's port is published on: "" when it is not published.
fn published_ip(p: &capi::PortBinding) -> &str {
    if p.host_port == 0 {
        ""
    } else {
        host_ip(p)
    }
}

/// A running container's ports sorted as Docker sorts them: by container port, host address,
/// host port, protocol.
pub fn sorted(ports: &[capi::PortBinding]) -> Vec<&capi::PortBinding> {
    let mut v: Vec<_> = ports.iter().collect();
    v.sort_by_key(|p| (p.container_port, published_ip(p), p.host_port, key(p)));
    v
}

/// The PORTS column of `ps`, as Docker's DisplayablePorts writes it: ports published on the
/// same number and unpublished ports grouped into consecutive ranges per address and protocol
/// (`0.0.0.0:80-81->80-81/tcp`, `5000/tcp`), then the ports published on another number
/// (`0.0.0.0:8080->80/tcp`).
pub fn ps_column(ports: &[capi::PortBinding]) -> String {
    // (address, protocol) of a group, in the order groups appear, with its (first, last).
    let mut groups: Vec<((String, String), (u32, u32))> = Vec::new();
    let mut result = Vec::new();
    let mut mappings = Vec::new();
    let form = |(ip, proto): &(String, String), (first, last): (u32, u32)| {
        let mut g = first.to_string();
        if first != last {
            g = format!("{g}-{last}");
        }
        if ip.is_empty() {
            format!("{g}/{proto}")
        } else {
            format!("{ip}:{g}->{g}/{proto}")
        }
    };
    for p in sorted(ports) {
        let proto = key(p).split_once('/').map(|(_, p)| p.to_string());
        let proto = proto.unwrap_or_default();
        let ip = published_ip(p).to_string();
        if !ip.is_empty() && p.host_port != p.container_port {
            mappings.push(format!(
                "{ip}:{}->{}/{proto}",
                p.host_port, p.container_port
            ));
            continue;
        }
        let k = (ip, proto);
        let current = p.container_port;
        match groups.iter_mut().find(|(gk, _)| *gk == k) {
            None => groups.push((k, (current, current))),
            Some((_, g)) if current == g.1 + 1 => g.1 = current,
            Some((gk, g)) => {
                result.push(form(gk, *g));
                *g = (current, current);
            }
        }
    }
    for (k, g) in &groups {
        result.push(form(k, *g));
    }
    result.extend(mappings);
    result.join(", ")
}

/// A JSON map keyed `80/tcp`, each key to `[{HostIp, HostPort}, …]`. `configured` bindings
/// (HostConfig.PortBindings) show the address and port as given ("" for any); a running
/// container's ports show 0.0.0.0 for any address, and a port that is exposed but not
/// published maps to null, as in Docker's NetworkSettings.Ports.
pub fn bindings_json(ports: &[capi::PortBinding], configured: bool) -> serde_json::Value {
    let mut m: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for p in ports {
        let e = m.entry(key(p)).or_default();
        if configured || p.host_port != 0 {
            e.push(serde_json::json!({
                "HostIp": if configured { p.host_ip.as_str() } else { host_ip(p) },
                "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() },
            }));
        }
    }
    serde_json::Value::Object(
        m.into_iter()
            .map(|(k, v)| {
                let v = if v.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::Array(v)
                };
                (k, v)
            })
            .collect(),
    )
}

/// A `ps` filter's `PORT[/PROTO]` or `FIRST-LAST[/PROTO]` (publish=, expose=).
pub fn parse_port_filter(v: &str) -> Result<(u16, u16, String), String> {
    let (ports, proto) = match v.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (v, "tcp".to_string()),
    };
    let (a, b) = port_range(ports, "port").map_err(|e| format!("invalid filter {v:?}: {e}"))?;
    if proto != "tcp" && proto != "udp" {
        return Err(format!("invalid filter {v:?}: unknown protocol {proto:?}"));
    }
    Ok((a, b, proto))
}

/// Whether a port matches a `ps` filter value (see parse_port_filter).
pub fn port_filter_matches(v: &str, port: u32, protocol: &str) -> bool {
    let protocol = if protocol.is_empty() { "tcp" } else { protocol };
    parse_port_filter(v).is_ok_and(|(a, b, proto)| {
        proto == protocol && (u32::from(a)..=u32::from(b)).contains(&port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(ip: &str, host: u32, container: u32, proto: &str) -> capi::PortBinding {
        capi::PortBinding {
            host_ip: ip.into(),
            host_port: host,
            container_port: container,
            protocol: proto.into(),
        }
    }

    #[test]
    fn ps_column_like_docker() {
        assert_eq!(ps_column(&[]), "");
        assert_eq!(
            ps_column(&[b("", 8080, 80, "tcp"), b("", 0, 5000, "tcp")]),
            "5000/tcp, 0.0.0.0:8080->80/tcp"
        );
        assert_eq!(
            ps_column(&[b("", 0, 5000, "tcp"), b("", 80, 80, "tcp")]),
            "0.0.0.0:80->80/tcp, 5000/tcp"
        );
        assert_eq!(
            ps_column(&[
                b("", 8001, 81, "tcp"),
                b("", 8000, 80, "tcp"),
                b("127.0.0.1", 5353, 53, "udp")
            ]),
            "127.0.0.1:5353->53/udp, 0.0.0.0:8000->80/tcp, 0.0.0.0:8001->81/tcp"
        );
        // Same numbers outside and inside group into ranges.
        assert_eq!(
            ps_column(&[
                b("", 81, 81, "tcp"),
                b("", 80, 80, "tcp"),
                b("", 0, 90, "tcp"),
                b("", 0, 91, "tcp"),
                b("", 0, 93, "tcp"),
                b("", 0, 53, "udp"),
            ]),
            "90-91/tcp, 53/udp, 0.0.0.0:80-81->80-81/tcp, 93/tcp"
        );
    }

    #[test]
    fn port_maps() {
        let running = bindings_json(
            &[
                b("", 8080, 80, "tcp"),
                b("", 0, 5000, "tcp"),
                b("127.0.0.1", 8081, 80, "tcp"),
            ],
            false,
        );
        assert_eq!(
            running,
            serde_json::json!({
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                           {"HostIp": "127.0.0.1", "HostPort": "8081"}],
                "5000/tcp": null,
            })
        );
        let config = bindings_json(&[b("", 0, 80, "tcp"), b("", 8080, 81, "udp")], true);
        assert_eq!(
            config,
            serde_json::json!({
                "80/tcp": [{"HostIp": "", "HostPort": ""}],
                "81/udp": [{"HostIp": "", "HostPort": "8080"}],
            })
        );
    }
}
