//! Linux bridges and subnets on the host: a network's bridge set up (`ip`) with its gateway
//! address and firewall rules, bridges of instances that are gone reclaimed, free subnets
//! found among the host's routes, all under one host-wide lock.

use super::{firewall, net_err, Networks, Subnet};
use crate::error::Result;
use berth_api::networks::v1::Network as NetworkRecord;
use std::net::Ipv4Addr;
use std::path::Path;

/// Where subnets of new networks come from, in /24 steps.
pub(super) const POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 16);
pub(super) const POOL_STEP: u8 = 24;

/// Prefix of the `ifalias` that marks a bridge as one of berth's.
const ALIAS_PREFIX: &str = "berth:";

impl Networks {
    /// The bridge of a network exists, is up, has the gateway address and its rules.
    pub(super) fn ensure_bridge(&self, r: &NetworkRecord) -> Result<()> {
        let sys = Path::new("/sys/class/net").join(&r.bridge);
        let subnet: Subnet = r.subnet.parse()?;
        let alias = format!("{ALIAS_PREFIX}{}", self.owner);
        if sys.exists() {
            let current = std::fs::read_to_string(sys.join("ifalias")).unwrap_or_default();
            let current = current.trim();
            let Some(other) = current
                .strip_prefix(ALIAS_PREFIX)
                .filter(|_| sys.join("bridge").exists())
            else {
                return Err(net_err(format!(
                    "interface {} exists and is not a bridge of berth's: choose another name with \
                     [runtime] bridge in the config",
                    r.bridge
                )));
            };
            if other != self.owner && Path::new(other).exists() {
                return Err(net_err(format!(
                    "bridge {} belongs to another berthd (root {other}); give this one its \
                     own with [runtime] bridge in the config",
                    r.bridge
                )));
            }
        } else {
            // After a reboot another instance may have taken the subnet meanwhile.
            if let Some(dev) = routed_elsewhere(&subnet, &r.bridge) {
                return Err(net_err(format!(
                    "the subnet {subnet} of network {} is in use on this host (on {dev}): remove \
                     that network, or give this one another subnet",
                    r.name
                )));
            }
            ip(&["link", "add", "name", &r.bridge, "type", "bridge"])?;
        }
        let prefix = subnet.prefix_len();
        let addr = format!("{}/{prefix}", r.gateway);
        let has_addr = std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", &r.bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {addr} ")))
            .unwrap_or(false);
        if !has_addr {
            ip(&["addr", "add", &addr, "dev", &r.bridge])?;
        }
        ip(&["link", "set", "dev", &r.bridge, "alias", &alias, "up"])?;
        firewall::ensure(&r.bridge, &r.subnet, r.internal).map_err(net_err)?;
        self.inner().ready.insert(r.name.clone());
        Ok(())
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| net_err(format!("cannot run ip (install iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(net_err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

pub(super) fn remove_bridge(bridge: &str) {
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .output();
    firewall::remove(bridge);
}

/// Whether nothing is plugged into a bridge (or it does not exist).
pub(super) fn bridge_is_empty(bridge: &str) -> bool {
    std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// The interface (other than `except`) through which the host routes part of `subnet`.
fn routed_elsewhere(subnet: &Subnet, except: &str) -> Option<String> {
    routes()
        .into_iter()
        .find(|(dev, s)| dev != except && overlaps(s, subnet))
        .map(|(dev, _)| dev)
}

/// Bridges marked by an instance whose root is gone, with nothing plugged in: removed.
pub(super) fn reclaim_orphan_bridges() {
    for e in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = e.path();
        if !dir.join("bridge").exists() {
            continue;
        }
        let alias = std::fs::read_to_string(dir.join("ifalias")).unwrap_or_default();
        let Some(owner) = alias.trim().strip_prefix(ALIAS_PREFIX) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if bridge_is_empty(&name) && !Path::new(owner).exists() {
            tracing::info!(bridge = %name, owner = %owner, "removing the bridge of a berthd whose root is gone");
            remove_bridge(&name);
        }
    }
}

/// The IPv4 routes of the host (`/proc/net/route`) as (interface, subnet), default route
/// excluded.
fn routes() -> Vec<(String, Subnet)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let len = u32::from_str_radix(f.get(7)?, 16).ok()?.count_ones() as u8;
            if len == 0 {
                return None;
            }
            // The file prints the addresses' bytes in host (little-endian) order.
            let addr = Ipv4Addr::from(dest.to_le_bytes());
            Some((f[0].to_string(), Subnet::new(addr, len.min(30)).ok()?))
        })
        .collect()
}

/// The IPv4 subnets the host routes.
pub(super) fn host_routes() -> Vec<Subnet> {
    routes().into_iter().map(|(_, s)| s).collect()
}

pub(super) fn overlaps(a: &Subnet, b: &Subnet) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

pub(super) fn free_subnet(taken: &[Subnet]) -> Option<Subnet> {
    let base = u32::from(POOL.0);
    let count = 1u32 << (POOL_STEP - POOL.1);
    (0..count)
        .filter_map(|i| Subnet::new(Ipv4Addr::from(base + (i << (32 - POOL_STEP))), POOL_STEP).ok())
        .find(|s| !taken.iter().any(|t| overlaps(t, s)))
}

/// A host-wide lock for choosing subnets and bridges: an abstract unix socket, released when
/// the process ends, leaving no file behind.
pub(super) fn host_lock() -> Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"berth-network-setup")
        .map_err(|e| net_err(format!("cannot make the network lock's address: {e}")))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(net_err(format!("cannot take the host's network lock: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_avoid_what_is_taken() {
        let taken = vec![
            "10.77.0.0/24".parse::<Subnet>().unwrap(),
            "10.77.1.0/24".parse().unwrap(),
        ];
        assert_eq!(free_subnet(&taken).unwrap().to_string(), "10.77.2.0/24");
        let all = vec!["10.0.0.0/8".parse::<Subnet>().unwrap()];
        assert!(free_subnet(&all).is_none());
        assert!(!host_routes().is_empty() || std::fs::read_to_string("/proc/net/route").is_err());
    }
}
