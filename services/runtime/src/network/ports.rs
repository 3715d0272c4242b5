//! Published ports: `-p` and `-P` turned into bindings, checked at create, and held by berthd
//! as bound sockets while the container runs, so two containers — or a container and another
//! program — never get the same host port; the `portmap` plugin's mappings.

use super::{PortMapping, Protocol};
use crate::error::{Error, Result};
use berth_api::containers::v1::PortBinding;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// A published port held by berthd while its container runs.
#[derive(Debug)]
pub(super) enum Held {
    // Never read: holding the socket is the point.
    #[allow(dead_code)]
    Tcp(TcpListener),
    #[allow(dead_code)]
    Udp(UdpSocket),
}

pub(super) fn check_binding(p: &PortBinding) -> Result<()> {
    if p.container_port == 0 || p.container_port > 65535 || p.host_port > 65535 {
        return Err(Error::InvalidArgument(format!(
            "invalid port mapping {}:{}: ports go from 1 to 65535",
            p.host_port, p.container_port
        )));
    }
    if !matches!(p.protocol.as_str(), "" | "tcp" | "udp") {
        return Err(Error::InvalidArgument(format!(
            "invalid protocol {:?} for port {}: use tcp or udp",
            p.protocol, p.container_port
        )));
    }
    if !p.host_ip.is_empty() && p.host_ip.parse::<Ipv4Addr>().is_err() {
        return Err(Error::InvalidArgument(format!(
            "invalid host address {:?} for port {}: give an IPv4 address",
            p.host_ip, p.container_port
        )));
    }
    Ok(())
}

fn proto(p: &str) -> &str {
    if p.is_empty() {
        "tcp"
    } else {
        p
    }
}

/// The image's exposed ports from the spec's annotation, as (port, protocol).
pub(super) fn exposed_ports(spec: &[u8]) -> Vec<(u32, String)> {
    crate::lifecycle::spec_annotation(spec, crate::spec::ANNOTATION_EXPOSED_PORTS)
        .map(|s| {
            s.split(',')
                .filter_map(|p| {
                    let (port, pr) = p.split_once('/').unwrap_or((p, "tcp"));
                    Some((port.trim().parse().ok()?, pr.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `-p` bindings, plus each exposed port on a free host port with `-P`.
pub(super) fn wanted_bindings(
    given: &[PortBinding],
    all: bool,
    exposed: &[(u32, String)],
) -> Vec<PortBinding> {
    let mut out: Vec<PortBinding> = given
        .iter()
        .map(|p| PortBinding {
            protocol: proto(&p.protocol).to_string(),
            ..p.clone()
        })
        .collect();
    if all {
        for (port, pr) in exposed {
            if !out
                .iter()
                .any(|b| b.container_port == *port && b.protocol == *pr)
            {
                out.push(PortBinding {
                    host_ip: String::new(),
                    host_port: 0,
                    container_port: *port,
                    protocol: pr.clone(),
                });
            }
        }
    }
    out
}

pub(super) fn exposed_unpublished(
    exposed: &[(u32, String)],
    published: &[PortBinding],
) -> Vec<PortBinding> {
    exposed
        .iter()
        .filter(|(port, pr)| {
            !published
                .iter()
                .any(|b| b.container_port == *port && b.protocol == *pr)
        })
        .map(|(port, pr)| PortBinding {
            container_port: *port,
            protocol: pr.clone(),
            ..Default::default()
        })
        .collect()
}

/// Binds every host port (a free one for port 0) and keeps the sockets: the ports are
/// berthd's until the container stops. Fails, holding nothing, on the first port in use.
pub(super) fn reserve(bindings: &[PortBinding]) -> Result<(Vec<Held>, Vec<PortBinding>)> {
    let mut held = Vec::new();
    let mut published = Vec::new();
    for b in bindings {
        let ip: Ipv4Addr = if b.host_ip.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            b.host_ip.parse().map_err(|_| {
                Error::InvalidArgument(format!("invalid host address {}", b.host_ip))
            })?
        };
        let addr = (ip, b.host_port as u16);
        let shown = format!("{ip}:{}", b.host_port);
        let taken = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                Error::FailedPrecondition(format!(
                    "Bind for {shown} failed: port is already allocated"
                ))
            } else {
                Error::FailedPrecondition(format!("cannot bind {shown}/{}: {e}", b.protocol))
            }
        };
        let (h, port) = if b.protocol == "udp" {
            let s = UdpSocket::bind(addr).map_err(taken)?;
            let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
            (Held::Udp(s), port)
        } else {
            let s = TcpListener::bind(addr).map_err(taken)?;
            let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
            (Held::Tcp(s), port)
        };
        held.push(h);
        published.push(PortBinding {
            host_port: port as u32,
            ..b.clone()
        });
    }
    Ok((held, published))
}

pub(super) fn port_mappings(published: &[PortBinding]) -> Vec<PortMapping> {
    published
        .iter()
        .map(|p| PortMapping {
            host_port: p.host_port as u16,
            container_port: p.container_port as u16,
            protocol: if p.protocol == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            host_ip: p.host_ip.parse().ok(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_and_exposed_ports() {
        let exposed = vec![(80, "tcp".to_string()), (53, "udp".to_string())];
        let given = vec![PortBinding {
            host_port: 8080,
            container_port: 80,
            ..Default::default()
        }];
        let w = wanted_bindings(&given, true, &exposed);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].protocol, "tcp");
        assert_eq!((w[1].container_port, w[1].host_port), (53, 0));
        let unpublished = exposed_unpublished(&exposed, &given_with_proto(&given));
        assert_eq!(unpublished.len(), 1);
        assert_eq!(unpublished[0].container_port, 53);
        assert!(check_binding(&PortBinding {
            container_port: 0,
            ..Default::default()
        })
        .is_err());
        assert!(check_binding(&PortBinding {
            container_port: 80,
            protocol: "sctp".into(),
            ..Default::default()
        })
        .is_err());
    }

    fn given_with_proto(g: &[PortBinding]) -> Vec<PortBinding> {
        wanted_bindings(g, false, &[])
    }

    #[test]
    fn reserving_a_port_twice_fails_clearly() {
        let b = vec![PortBinding {
            host_ip: "127.0.0.1".into(),
            host_port: 0,
            container_port: 80,
            protocol: "tcp".into(),
        }];
        let (_held, published) = reserve(&b).unwrap();
        let again = vec![PortBinding {
            host_port: published[0].host_port,
            ..b[0].clone()
        }];
        let err = reserve(&again).unwrap_err().to_string();
        assert!(err.contains("port is already allocated"), "{err}");
    }
}
