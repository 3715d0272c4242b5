//! The network records: the built-in networks (`bridge`, `host`, `none`) and user networks,
//! stored in the runtime's database, each bridge network with its Linux bridge and subnet
//! ([`super::bridge`]). `network create|ls|rm|inspect`, a reference resolved to a network, a
//! container's network mode and ports checked at create.

use super::bridge::{
    bridge_is_empty, free_subnet, host_lock, host_routes, overlaps, reclaim_orphan_bridges,
    remove_bridge, POOL, POOL_STEP,
};
use super::{
    net_err, now, ports, Mode, Network, NetworkConfig, Networks, Subnet, CNI_DRIVER,
    DEFAULT_NETWORK, HOST_NETWORK, NONE_NETWORK,
};
use crate::error::{Error, Result};
use berth_api::containers::v1::{Container, PortBinding};
use berth_api::networks::v1::{CreateNetworkRequest, Network as NetworkRecord};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

impl Networks {
    fn default_bridge_name(&self) -> String {
        if let Some(b) = &self.options.bridge {
            return b.clone();
        }
        let default_root = Path::new(berth_core::config::DEFAULT_ROOT).join("runtime");
        if Path::new(&self.owner) == default_root {
            return "berth0".into();
        }
        // FNV-1a of the root: stable, and different for different roots.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.owner.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("bth{:08x}", h as u32)
    }

    /// At start: the built-in networks exist, every bridge network has its bridge and rules.
    /// A failure is also kept, to be told when a container needs the default network.
    pub fn init(&self) -> Result<()> {
        let result = self.init_networks();
        self.inner().init_error = result.as_ref().err().map(|e| e.to_string());
        result
    }

    fn init_networks(&self) -> Result<()> {
        let existing = self.store.list_networks()?;
        let has = |n: &str| existing.iter().any(|r| r.name == n);
        for (name, driver) in [(HOST_NETWORK, "host"), (NONE_NETWORK, "null")] {
            if !has(name) {
                self.store.create_network(&NetworkRecord {
                    id: crate::containers::new_id()?,
                    name: name.into(),
                    driver: driver.into(),
                    scope: "local".into(),
                    created_at: Some(now()),
                    ..Default::default()
                })?;
            }
        }
        let bridge = self.default_bridge_name();
        let wanted = match &self.options.subnet {
            Some(s) => Some(
                s.parse::<Subnet>()
                    .map_err(|e| net_err(format!("[runtime] bridge_subnet in the config: {e}")))?,
            ),
            None => None,
        };
        let current = existing.iter().find(|r| r.name == DEFAULT_NETWORK).cloned();
        let stale = current.as_ref().is_some_and(|r| {
            r.bridge != bridge || wanted.is_some_and(|w| r.subnet.parse::<Subnet>().ok() != Some(w))
        });
        if current.is_none() || stale {
            if let Some(old) = &current {
                tracing::info!(old = %old.bridge, new = %bridge, "the default bridge network changed in the config");
                // Its bridge goes (when nothing is plugged in), so its subnet is free again.
                if bridge_is_empty(&old.bridge) {
                    remove_bridge(&old.bridge);
                }
                self.store.delete_network(DEFAULT_NETWORK)?;
            }
            let made = self.create_record(
                DEFAULT_NETWORK,
                &bridge,
                wanted,
                None,
                false,
                Default::default(),
                current.as_ref().map(|c| c.id.clone()),
            );
            if let Err(e) = made {
                // Keep what worked before.
                if let Some(old) = &current {
                    self.store.create_network(old)?;
                }
                return Err(e);
            }
        }
        let _lock = host_lock()?;
        for r in self.store.list_networks()? {
            if r.driver == "bridge" {
                if let Err(e) = self.ensure_bridge(&r) {
                    tracing::warn!(network = %r.name, error = %e, "cannot set up the bridge of a network");
                }
            }
        }
        Ok(())
    }

    /// Allocates (or checks) a subnet, sets up the bridge and stores the record.
    #[allow(clippy::too_many_arguments)]
    fn create_record(
        &self,
        name: &str,
        bridge: &str,
        subnet: Option<Subnet>,
        gateway: Option<Ipv4Addr>,
        internal: bool,
        labels: HashMap<String, String>,
        id: Option<String>,
    ) -> Result<NetworkRecord> {
        let _lock = host_lock()?;
        reclaim_orphan_bridges();
        let ours = self.store.list_networks()?;
        let taken: Vec<Subnet> = host_routes()
            .into_iter()
            .chain(ours.iter().filter_map(|r| r.subnet.parse().ok()))
            .collect();
        let subnet = match subnet {
            Some(s) => {
                if let Some(t) = taken.iter().find(|t| overlaps(t, &s)) {
                    return Err(Error::InvalidArgument(format!(
                        "subnet {s} overlaps {t}, which is already in use on this host"
                    )));
                }
                s
            }
            None => free_subnet(&taken).ok_or_else(|| {
                net_err(format!(
                    "no free /{POOL_STEP} subnet is left in {}/{}: remove unused networks or give --subnet",
                    POOL.0, POOL.1
                ))
            })?,
        };
        let gateway = gateway.unwrap_or_else(|| subnet.first_host());
        // Checks the subnet/gateway pair the way the plugins will.
        Network::new(self.cni_config(name, bridge, subnet, Some(gateway)))?;
        let record = NetworkRecord {
            id: match id {
                Some(id) => id,
                None => crate::containers::new_id()?,
            },
            name: name.into(),
            driver: "bridge".into(),
            scope: "local".into(),
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
            bridge: bridge.into(),
            internal,
            labels,
            created_at: Some(now()),
            ..Default::default()
        };
        // The bridge with its address claims the subnet on the host (a route) before the
        // lock is let go.
        self.ensure_bridge(&record)?;
        if !self.store.create_network(&record)? {
            remove_bridge(bridge);
            return Err(Error::FailedPrecondition(format!(
                "network with name {name} already exists"
            )));
        }
        Ok(record)
    }

    fn cni_config(
        &self,
        name: &str,
        bridge: &str,
        subnet: Subnet,
        gateway: Option<Ipv4Addr>,
    ) -> NetworkConfig {
        NetworkConfig {
            name: name.into(),
            bridge: bridge.into(),
            subnet,
            gateway,
            // One rule per network (firewall.rs) instead of the plugin's chain per container.
            ip_masq: false,
            // netns::create brings lo up.
            loopback: false,
            plugin_dir: self.plugin_dir.clone(),
            ipam_dir: self.dir.join("ipam"),
            cache_dir: self.dir.join("cache"),
        }
    }

    /// The CNI driver of a bridge or `cni` network.
    pub(super) fn cni(&self, r: &NetworkRecord) -> Result<Arc<Network>> {
        if let Some(n) = self.inner().cni.get(&r.id) {
            return Ok(n.clone());
        }
        let n = if r.driver == CNI_DRIVER {
            Arc::new(self.conflist_network(&r.name, &r.conflist)?)
        } else {
            let gateway = r.gateway.parse().ok();
            Arc::new(Network::new(self.cni_config(
                &r.name,
                &r.bridge,
                r.subnet.parse()?,
                gateway,
            ))?)
        };
        self.inner().cni.insert(r.id.clone(), n.clone());
        Ok(n)
    }

    /// A network by name, full id or unique id prefix.
    pub fn find(&self, reference: &str) -> Result<NetworkRecord> {
        let all = self.store.list_networks()?;
        if let Some(r) = all
            .iter()
            .find(|r| r.name == reference || r.id == reference)
        {
            return Ok(r.clone());
        }
        let matches: Vec<&NetworkRecord> = if reference.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|r| r.id.starts_with(reference)).collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] if reference == DEFAULT_NETWORK => Err(net_err(format!(
                "the default network is not set up: {}",
                self.inner()
                    .init_error
                    .clone()
                    .unwrap_or_else(|| "see berthd's log".into())
            ))),
            [] => Err(Error::NotFound(format!("network {reference} not found"))),
            _ => Err(Error::InvalidArgument(format!(
                "network id prefix {reference} is ambiguous: it matches {} networks",
                matches.len()
            ))),
        }
    }

    pub fn list(&self) -> Result<Vec<NetworkRecord>> {
        self.store.list_networks()
    }

    /// The driver of a `cni` network: its configuration list, read and checked.
    fn conflist_network(&self, name: &str, conflist: &str) -> Result<Network> {
        let json: serde_json::Value = serde_json::from_str(conflist).map_err(|e| {
            Error::InvalidArgument(format!(
                "network {name}: the CNI configuration is not JSON: {e}"
            ))
        })?;
        Network::from_conflist(name, &json, self.plugin_dir.clone(), self.dir.join("cache"))
            .map_err(|e| Error::InvalidArgument(format!("network {name}: {e}")))
    }

    /// `network create`: a bridge network, or a `cni` one from a configuration list.
    pub fn create(&self, r: &CreateNetworkRequest) -> Result<NetworkRecord> {
        let name = r.name.as_str();
        validate_name(name)?;
        if !matches!(r.driver.as_str(), "" | "bridge" | CNI_DRIVER) {
            return Err(Error::InvalidArgument(format!(
                "network driver {:?} is not supported: use bridge, or cni with a configuration list",
                r.driver
            )));
        }
        if self.find(name).is_ok_and(|r| r.name == name) {
            return Err(Error::FailedPrecondition(format!(
                "network with name {name} already exists"
            )));
        }
        if r.driver == CNI_DRIVER {
            return self.create_cni(r);
        }
        if !r.conflist.is_empty() {
            return Err(Error::InvalidArgument(
                "a CNI configuration list goes with driver cni only".into(),
            ));
        }
        let (subnet, gateway) = (r.subnet.as_str(), r.gateway.as_str());
        let subnet = match subnet {
            "" => None,
            s => Some(
                s.parse::<Subnet>()
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?,
            ),
        };
        let gateway =
            match gateway {
                "" => None,
                g => Some(g.parse::<Ipv4Addr>().map_err(|_| {
                    Error::InvalidArgument(format!("invalid gateway address {g:?}"))
                })?),
            };
        if gateway.is_some() && subnet.is_none() {
            return Err(Error::InvalidArgument(
                "a gateway needs a --subnet to go with it".into(),
            ));
        }
        let id = crate::containers::new_id()?;
        let bridge = format!("br-{}", &id[..12]);
        self.create_record(
            name,
            &bridge,
            subnet,
            gateway,
            r.internal,
            r.labels.clone(),
            Some(id),
        )
    }

    /// A `cni` network: its list checked (plugins present), stored as given; its plugins
    /// make the bridges, addresses and rules when containers attach.
    fn create_cni(&self, r: &CreateNetworkRequest) -> Result<NetworkRecord> {
        if !r.subnet.is_empty() || !r.gateway.is_empty() || r.internal {
            return Err(Error::InvalidArgument(
                "a cni network takes its subnet, gateway and masquerading from its configuration list"
                    .into(),
            ));
        }
        if r.conflist.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "driver cni needs a CNI configuration list (conflist)".into(),
            ));
        }
        self.conflist_network(&r.name, &r.conflist)?;
        let record = NetworkRecord {
            id: crate::containers::new_id()?,
            name: r.name.clone(),
            driver: CNI_DRIVER.into(),
            scope: "local".into(),
            labels: r.labels.clone(),
            created_at: Some(now()),
            conflist: r.conflist.clone(),
            ..Default::default()
        };
        if !self.store.create_network(&record)? {
            return Err(Error::FailedPrecondition(format!(
                "network with name {} already exists",
                r.name
            )));
        }
        Ok(record)
    }

    /// `network rm`: refuses built-ins and networks in use by a running container.
    pub fn remove(&self, reference: &str, users: &[(String, Container)]) -> Result<NetworkRecord> {
        let r = self.find(reference)?;
        if matches!(
            r.name.as_str(),
            DEFAULT_NETWORK | HOST_NETWORK | NONE_NETWORK
        ) {
            return Err(Error::FailedPrecondition(format!(
                "{} is a pre-defined network and cannot be removed",
                r.name
            )));
        }
        let active: Vec<&str> = users
            .iter()
            .filter(|(_, c)| {
                c.network_settings
                    .as_ref()
                    .is_some_and(|s| s.endpoints.iter().any(|e| e.network_id == r.id))
            })
            .map(|(_, c)| c.name.as_str())
            .collect();
        if !active.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                r.name,
                r.id,
                active.join(", ")
            )));
        }
        // A container starting on it right now, or an attachment not yet released.
        let cached = format!("{}-", r.name);
        let mut inner = self.inner();
        let busy = inner.attaching.get(&r.name).copied().unwrap_or(0) > 0
            || std::fs::read_dir(self.dir.join("cache"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&cached));
        if busy {
            return Err(Error::FailedPrecondition(format!(
                "error while removing network: network {} id {} has active endpoints (a container \
                 is starting or stopping on it; try again)",
                r.name, r.id
            )));
        }
        self.store.delete_network(&r.name)?;
        inner.cni.remove(&r.id);
        inner.ready.remove(&r.name);
        drop(inner);
        if !r.bridge.is_empty() {
            remove_bridge(&r.bridge);
        }
        let _ = std::fs::remove_dir_all(self.dir.join("ipam").join(&r.name));
        Ok(r)
    }

    /// Checks a container's network mode and published ports at create; returns the
    /// networks it joins when it starts and the mode to store (a network named by id that
    /// is `host` or `none` becomes that mode).
    pub fn check_config(
        &self,
        network_mode: &str,
        ports: &[PortBinding],
    ) -> Result<(Vec<String>, String)> {
        for p in ports {
            ports::check_binding(p)?;
        }
        match Mode::of(network_mode) {
            Mode::Bridge => {
                let name = if network_mode.is_empty() {
                    DEFAULT_NETWORK
                } else {
                    network_mode
                };
                let r = self.find(name)?;
                match r.driver.as_str() {
                    "bridge" | CNI_DRIVER => Ok((vec![r.name], network_mode.to_string())),
                    "host" => Ok((Vec::new(), HOST_NETWORK.into())),
                    _ => Ok((Vec::new(), NONE_NETWORK.into())),
                }
            }
            Mode::Container(c) if c.is_empty() => Err(Error::InvalidArgument(
                "invalid --network container: name the container (container:NAME|ID)".into(),
            )),
            _ => Ok((Vec::new(), network_mode.to_string())),
        }
    }
}

pub(super) fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok && !name.starts_with("container") {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid network name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}
