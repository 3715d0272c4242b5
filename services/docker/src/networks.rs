//! Docker's views of networks: `network inspect` (and the API's list entries), `network ls`
//! rows and filters, and the subnet checks of `network create`.

use crate::filters::{label_matches, name_matches, Filters};
use crate::time;
use berth_api::networks::v1 as napi;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Checks an IPv4 subnet in CIDR form (`10.77.0.0/24`): (address, prefix length).
pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid subnet {s:?}: use CIDR form, e.g. 10.77.0.0/24"))?;
    if ip.contains(':') {
        return Err(format!(
            "invalid subnet {s:?}: IPv6 subnets are not supported"
        ));
    }
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("invalid subnet {s:?}: {ip:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("invalid subnet {s:?}: the prefix length must be 0-32"))?;
    Ok((ip, len))
}

/// Checks a new network's subnet and gateway as Docker checks them: a gateway needs a
/// subnet, and must be inside it.
pub fn check_subnet_gateway(subnet: Option<&str>, gateway: Option<&str>) -> Result<(), String> {
    if let Some(g) = gateway {
        let Some(subnet) = subnet else {
            return Err("every ip-range or gateway must have a corresponding subnet".into());
        };
        let (net, len) = parse_subnet(subnet)?;
        let gw: Ipv4Addr = g
            .parse()
            .map_err(|_| format!("invalid gateway {g:?}: it is not an IPv4 address"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        if u32::from(gw) & mask != u32::from(net) & mask {
            return Err(format!("no matching subnet for gateway {g}"));
        }
    } else if let Some(subnet) = subnet {
        parse_subnet(subnet)?;
    }
    Ok(())
}

/// The networks Docker makes itself.
pub fn network_builtin(n: &napi::Network) -> bool {
    matches!(n.name.as_str(), "bridge" | "host" | "none")
}

/// The network's scope: `local` unless the service says otherwise.
pub fn network_scope(n: &napi::Network) -> &str {
    if n.scope.is_empty() {
        "local"
    } else {
        &n.scope
    }
}

/// Docker's network filters (`network ls -f`, `GET /networks?filters=`): which networks to
/// keep. `dangling` needs the networks' containers (Networks.Get's answer); see
/// [`needs_containers`].
pub fn network_filter(filters: &[String]) -> Result<impl Fn(&napi::Network) -> bool, String> {
    let filters = Filters::parse(filters, |k, v| match (k, v) {
        ("type", "custom" | "builtin") => Ok(()),
        ("type", _) => Err(format!("invalid filter: 'type'='{v}'")),
        ("dangling", "true" | "1" | "false" | "0") => Ok(()),
        ("dangling", _) => Err(format!("invalid filter 'dangling={v}'")),
        ("driver" | "id" | "label" | "name" | "scope", _) => Ok(()),
        _ => Err(format!("invalid filter '{k}'")),
    })?;
    Ok(move |n: &napi::Network| {
        filters.matches(|k, v| match k {
            "driver" => n.driver == v,
            "id" => n.id.starts_with(v),
            "name" => name_matches(&n.name, v),
            "scope" => network_scope(n) == v,
            "type" => network_builtin(n) == (v == "builtin"),
            "label" => label_matches(&n.labels, v),
            "dangling" => {
                (!network_builtin(n) && n.containers.is_empty()) == matches!(v, "true" | "1")
            }
            _ => false,
        })
    })
}

/// Whether these filters need each network's containers (a `dangling` filter).
pub fn needs_containers(filters: &[String]) -> bool {
    filters.iter().any(|f| f.starts_with("dangling="))
}

/// One network as `network ls --format` sees it (Docker's field names), its id as given
/// (full or short).
pub fn network_row(n: &napi::Network, id: &str) -> Value {
    let labels: BTreeMap<_, _> = n.labels.iter().collect();
    json!({
        "ID": id,
        "Name": n.name,
        "Driver": n.driver,
        "Scope": network_scope(n),
        "IPv6": "false",
        "Internal": n.internal.to_string(),
        "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "CreatedAt": time::created_at(n.created_at.as_ref()),
    })
}

/// Docker's `network inspect` object (also each entry of `GET /networks`).
pub fn network_inspect(n: &napi::Network) -> Value {
    let config = if n.subnet.is_empty() && n.gateway.is_empty() {
        json!([])
    } else {
        let mut c = serde_json::Map::new();
        c.insert("Subnet".into(), json!(n.subnet));
        if !n.gateway.is_empty() {
            c.insert("Gateway".into(), json!(n.gateway));
        }
        json!([c])
    };
    let containers: BTreeMap<&str, Value> = n
        .containers
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                json!({
                    "Name": c.name.trim_start_matches('/'),
                    "EndpointID": "",
                    "MacAddress": c.mac_address,
                    "IPv4Address": c.ip_address,
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let options = if n.driver == "bridge" && !n.bridge.is_empty() {
        json!({"com.docker.network.bridge.name": n.bridge})
    } else {
        json!({})
    };
    let labels: BTreeMap<_, _> = n.labels.iter().collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": time::rfc3339(n.created_at.as_ref()),
        "Scope": network_scope(n),
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": config,
        },
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str) -> napi::Network {
        napi::Network {
            id: format!("{name:x<64}"),
            name: name.into(),
            driver: "bridge".into(),
            ..Default::default()
        }
    }

    #[test]
    fn dangling_means_custom_and_unused() {
        let mut used = net("used");
        used.containers.push(napi::NetworkContainer::default());
        let nets = [net("bridge"), net("idle"), used];
        let kept = |f: &str| {
            let keep = network_filter(&[f.to_string()]).unwrap();
            nets.iter()
                .filter(|n| keep(n))
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept("dangling=true"), ["idle"]);
        assert_eq!(kept("dangling=false"), ["bridge", "used"]);
        assert!(network_filter(&["dangling=maybe".into()]).is_err());
        assert!(needs_containers(&["dangling=1".into()]));
        assert_eq!(network_inspect(&nets[1])["Scope"], "local");
        assert!(check_subnet_gateway(Some("10.1.0.0/16"), Some("10.1.2.3")).is_ok());
        assert!(check_subnet_gateway(None, Some("10.1.2.3")).is_err());
    }
}
