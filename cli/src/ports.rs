//! Published ports: the `-p/--publish` parser of `run`/`create` and the lines of `berth port`
//! (whose command is the binary's `port` module). How ports show in `ps` and `inspect` is
//! berth-docker's (`berth_docker::ports`).

use berth_api::containers::v1 as capi;
use berth_docker::ports::{host_ip, key, port_range, sorted};
use std::net::Ipv4Addr;

/// Parses one `-p` spec into its bindings: `[IP:][HOST:]CONTAINER[/PROTO]` with optional port
/// ranges (`8000-8001:80-81`), as Docker reads it. Errors name the spec.
pub fn parse_publish(spec: &str) -> Result<Vec<capi::PortBinding>, String> {
    let bad = |why: String| format!("invalid port specification: {spec:?}: {why}");
    let parts: Vec<&str> = spec.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    if ip.starts_with('[') || ip.contains(':') {
        return Err(bad("IPv6 host addresses are not supported".into()));
    }
    if !ip.is_empty() && ip.parse::<Ipv4Addr>().is_err() {
        return Err(bad(format!("{ip:?} is not an IPv4 address")));
    }
    let (container, protocol) = match container.split_once('/') {
        Some((c, "")) => (c, "tcp"),
        Some((c, p)) => (c, p),
        None => (container, "tcp"),
    };
    let protocol = protocol.to_ascii_lowercase();
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad(format!(
            "unknown protocol {protocol:?} (use tcp or udp)"
        )));
    }
    if container.is_empty() {
        return Err(bad("no container port".into()));
    }
    let (c0, c1) = port_range(container, "container port").map_err(bad)?;
    if c0 == 0 {
        return Err(bad("the container port cannot be 0".into()));
    }
    let count = u32::from(c1 - c0) + 1;
    let host_ports: Vec<u32> = if host.is_empty() {
        vec![0; count as usize]
    } else {
        let (h0, h1) = port_range(host, "host port").map_err(bad)?;
        let host_count = u32::from(h1 - h0) + 1;
        if count == 1 && host_count > 1 {
            return Err(bad(format!(
                "a host port range ({host}) for a single container port is not supported: \
                 give one host port"
            )));
        }
        if host_count != count {
            return Err(bad(format!(
                "the host range {host} and the container range {container} differ in length"
            )));
        }
        if host_count > 1 && h0 == 0 {
            return Err(bad("a host port range cannot start at 0".into()));
        }
        (0..count).map(|i| u32::from(h0) + i).collect()
    };
    Ok(host_ports
        .into_iter()
        .zip(u32::from(c0)..=u32::from(c1))
        .map(|(host_port, container_port)| capi::PortBinding {
            host_ip: ip.clone(),
            host_port,
            container_port,
            protocol: protocol.clone(),
        })
        .collect())
}

/// Every `-p` of a command line, in order.
pub fn parse_publishes(specs: &[String]) -> Result<Vec<capi::PortBinding>, String> {
    let mut out = Vec::new();
    for s in specs {
        out.extend(parse_publish(s)?);
    }
    Ok(out)
}

/// A `PRIVATE_PORT[/PROTO]` argument of `berth port`, as a map key (`80/tcp`).
pub fn private_port_key(s: &str) -> Result<String, String> {
    let (port, proto) = match s.split_once('/') {
        Some((p, "")) => (p, "tcp"),
        Some((p, proto)) => (p, proto),
        None => (s, "tcp"),
    };
    let n = port_range(port, "port")
        .ok()
        .filter(|(a, b)| a == b && *a > 0)
        .map(|(a, _)| a)
        .ok_or_else(|| format!("Invalid port: {s:?}"))?;
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        return Err(format!("Invalid protocol: {proto:?} (use tcp or udp)"));
    }
    Ok(format!("{n}/{proto}"))
}

/// The lines `berth port` prints for a container's published ports: every mapping
/// (`80/tcp -> 0.0.0.0:8080`), or only the host side of one container port.
pub fn port_lines(
    ports: &[capi::PortBinding],
    private: Option<&str>,
) -> Result<Vec<String>, String> {
    let published = sorted(ports).into_iter().filter(|p| p.host_port != 0);
    match private {
        None => Ok(published
            .map(|p| format!("{} -> {}:{}", key(p), host_ip(p), p.host_port))
            .collect()),
        Some(s) => {
            let want = private_port_key(s)?;
            Ok(published
                .filter(|p| key(p) == want)
                .map(|p| format!("{}:{}", host_ip(p), p.host_port))
                .collect())
        }
    }
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

    fn p(s: &str) -> Vec<(String, u32, u32, String)> {
        parse_publish(s)
            .unwrap()
            .into_iter()
            .map(|b| (b.host_ip, b.host_port, b.container_port, b.protocol))
            .collect()
    }

    fn one(ip: &str, host: u32, container: u32, proto: &str) -> Vec<(String, u32, u32, String)> {
        vec![(ip.into(), host, container, proto.into())]
    }

    #[test]
    fn publish_forms() {
        assert_eq!(p("80"), one("", 0, 80, "tcp"));
        assert_eq!(p("8080:80"), one("", 8080, 80, "tcp"));
        assert_eq!(p("127.0.0.1:8080:80"), one("127.0.0.1", 8080, 80, "tcp"));
        assert_eq!(p("127.0.0.1::80"), one("127.0.0.1", 0, 80, "tcp"));
        assert_eq!(p("53/udp"), one("", 0, 53, "udp"));
        assert_eq!(p("5353:53/udp"), one("", 5353, 53, "udp"));
        assert_eq!(p("8080:80/tcp"), one("", 8080, 80, "tcp"));
        assert_eq!(p("0.0.0.0:8080:80/udp"), one("0.0.0.0", 8080, 80, "udp"));
        assert_eq!(p("80/"), one("", 0, 80, "tcp"));
        assert_eq!(p("80/UDP"), one("", 0, 80, "udp"));
        assert_eq!(p("0:80"), one("", 0, 80, "tcp"));
        assert_eq!(p("65535:65535"), one("", 65535, 65535, "tcp"));
    }

    #[test]
    fn publish_ranges() {
        assert_eq!(
            p("8000-8001:80-81"),
            vec![
                ("".into(), 8000, 80, "tcp".into()),
                ("".into(), 8001, 81, "tcp".into())
            ]
        );
        assert_eq!(
            p("80-81"),
            vec![
                ("".into(), 0, 80, "tcp".into()),
                ("".into(), 0, 81, "tcp".into())
            ]
        );
        assert_eq!(
            p("127.0.0.1::80-81/udp"),
            vec![
                ("127.0.0.1".into(), 0, 80, "udp".into()),
                ("127.0.0.1".into(), 0, 81, "udp".into())
            ]
        );
        assert_eq!(p("8080-8080:80"), one("", 8080, 80, "tcp"));
        let e = parse_publish("8000-8001:80").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        let e = parse_publish("8000-8002:80-81").unwrap_err();
        assert!(e.contains("differ in length"), "{e}");
        assert!(parse_publish("8000:80-81").is_err());
        assert!(parse_publish("81-80").is_err());
        assert!(parse_publish("80-").is_err());
    }

    #[test]
    fn publish_errors_name_the_spec() {
        for spec in [
            "abc",
            "",
            "0",
            "65536",
            "8080:0",
            "70000:80",
            "x:80",
            "8080:",
            ":80/sctp",
            "80/sctp",
            "80/tcp/udp",
            "1.2.3:80:80",
            "localhost:80:80",
            "-1",
            "+80",
            "1:2:3:4:5",
        ] {
            let e = parse_publish(spec).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid port specification: {spec:?}")),
                "{spec}: {e}"
            );
        }
        assert_eq!(
            parse_publish("abc").unwrap_err(),
            "invalid port specification: \"abc\": container port \"abc\" is not a number"
        );
        assert!(parse_publish("80/sctp").unwrap_err().contains("sctp"));
    }

    #[test]
    fn ipv6_is_refused_clearly() {
        for spec in [
            "[::1]:80:80",
            "[::]::80",
            "::1:80:80",
            "[fe80::1]:8080:80/udp",
        ] {
            let e = parse_publish(spec).unwrap_err();
            assert!(
                e.contains("IPv6 host addresses are not supported"),
                "{spec}: {e}"
            );
        }
    }

    #[test]
    fn port_command_lines() {
        let ports = [
            b("", 8080, 80, "tcp"),
            b("127.0.0.1", 5353, 53, "udp"),
            b("", 0, 5000, "tcp"),
        ];
        assert_eq!(
            port_lines(&ports, None).unwrap(),
            vec!["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:8080"]
        );
        assert_eq!(
            port_lines(&ports, Some("80")).unwrap(),
            vec!["0.0.0.0:8080"]
        );
        assert_eq!(
            port_lines(&ports, Some("80/tcp")).unwrap(),
            vec!["0.0.0.0:8080"]
        );
        assert_eq!(
            port_lines(&ports, Some("53/udp")).unwrap(),
            vec!["127.0.0.1:5353"]
        );
        assert!(port_lines(&ports, Some("53")).unwrap().is_empty());
        assert!(port_lines(&ports, Some("5000")).unwrap().is_empty());
        assert!(port_lines(&ports, Some("81")).unwrap().is_empty());
        assert!(port_lines(&ports, Some("x")).is_err());
        assert!(port_lines(&ports, Some("80/sctp")).is_err());
    }
}
