//! Containers joining and leaving networks: `network connect|disconnect` (under the
//! container's lock, a running container gets or loses its interface at once), and the
//! containers a network has, for `network inspect|rm|prune`.
//!
//! [`Connections`] owns nothing of its own: it joins the networks ([`crate::network`]) and the
//! container records, under the containers' locks it shares with the task lifecycle.

use crate::error::{Error, Result};
use crate::events::Events;
use crate::locks::ContainerLocks;
use crate::metadata::Store;
use crate::network::Networks;
use berth_api::containers::v1::{Container, NetworkAliases};
use berth_api::networks::v1::{Network, NetworkContainer};
use std::sync::Arc;

/// The containers' connections to networks.
#[derive(Debug)]
pub struct Connections {
    store: Store,
    networks: Arc<Networks>,
    locks: Arc<ContainerLocks>,
    events: Arc<Events>,
}

impl Connections {
    /// Connections between the containers of `store` and `networks`.
    pub fn new(
        store: Store,
        networks: Arc<Networks>,
        locks: Arc<ContainerLocks>,
        events: Arc<Events>,
    ) -> Connections {
        Connections {
            store,
            networks,
            locks,
            events,
        }
    }

    /// Where network events are published.
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// Every container of every namespace, with its namespace.
    pub(crate) fn all_containers(&self) -> Result<Vec<(String, Container)>> {
        let mut out = Vec::new();
        for ns in self.store.namespaces()? {
            for c in self.store.list(&ns)? {
                out.push((ns.clone(), c));
            }
        }
        Ok(out)
    }

    /// A network with the running containers attached to it.
    pub(crate) fn network_with_containers(&self, mut n: Network) -> Result<Network> {
        for (ns, c) in self.all_containers()? {
            let Some(e) = c
                .network_settings
                .as_ref()
                .and_then(|s| s.endpoints.iter().find(|e| e.network_id == n.id))
            else {
                continue;
            };
            n.containers.push(NetworkContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                namespace: ns,
                ip_address: if e.ip_address.is_empty() {
                    String::new()
                } else {
                    format!("{}/{}", e.ip_address, e.ip_prefix_len)
                },
                mac_address: e.mac_address.clone(),
            });
        }
        Ok(n)
    }

    /// `network connect`: the network is added to the container's networks; a running
    /// container gets an interface on it now.
    pub async fn connect_network(
        &self,
        ns: &str,
        network: &str,
        container: &str,
        aliases: Vec<String>,
    ) -> Result<()> {
        let n = self.networks.find(network)?;
        let c = self.store.resolve(ns, container)?;
        let _guard = self.locks.lock(ns, &c.id).await;
        let mut c = self.store.resolve(ns, &c.id)?;
        let mode = c
            .config
            .as_ref()
            .map(|c| c.network_mode.as_str())
            .unwrap_or("");
        if n.driver != "bridge"
            || !matches!(crate::network::Mode::of(mode), crate::network::Mode::Bridge)
        {
            return Err(Error::FailedPrecondition(format!(
                "container {} cannot be connected to network {}: only containers on bridge \
                 networks can join other bridge networks",
                c.name, n.name
            )));
        }
        if c.networks.contains(&n.name) {
            return Err(Error::FailedPrecondition(format!(
                "endpoint with name {} already exists in network {}",
                c.name, n.name
            )));
        }
        if !aliases.is_empty() {
            if n.name == crate::network::DEFAULT_NETWORK {
                return Err(Error::InvalidArgument(
                    "network-scoped aliases are supported only for user-defined networks".into(),
                ));
            }
            let entry = NetworkAliases {
                network: n.name.clone(),
                aliases,
            };
            // Stored first, so the running container's peers list them as it joins.
            c = self
                .store
                .update(ns, &c.id, |c| {
                    c.network_aliases.retain(|a| a.network != entry.network);
                    c.network_aliases.push(entry.clone());
                })?
                .ok_or_else(|| Error::NotFound(format!("No such container: {container}")))?;
        }
        let running = c
            .network_settings
            .as_ref()
            .is_some_and(|s| !s.sandbox_key.is_empty());
        if running {
            let manager = self.networks.clone();
            let (ns2, c2, n2) = (ns.to_string(), c.clone(), n.clone());
            let e = tokio::task::spawn_blocking(move || manager.connect_running(&ns2, &c2, &n2))
                .await
                .map_err(|e| Error::Network(e.to_string()))??;
            self.store.update(ns, &c.id, |c| {
                c.networks.push(n.name.clone());
                c.network_settings
                    .get_or_insert_with(Default::default)
                    .endpoints
                    .push(e.clone());
            })?;
        } else {
            self.store
                .update(ns, &c.id, |c| c.networks.push(n.name.clone()))?;
        }
        self.events.publish_network(ns, &n, "connect", Some(&c.id));
        Ok(())
    }

    /// `network disconnect`.
    pub async fn disconnect_network(&self, ns: &str, network: &str, container: &str) -> Result<()> {
        let n = self.networks.find(network)?;
        let c = self.store.resolve(ns, container)?;
        let _guard = self.locks.lock(ns, &c.id).await;
        let c = self.store.resolve(ns, &c.id)?;
        if !c.networks.contains(&n.name) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not connected to network {}",
                c.name, n.name
            )));
        }
        if c.network_settings
            .as_ref()
            .is_some_and(|s| !s.sandbox_key.is_empty())
        {
            let manager = self.networks.clone();
            let (ns2, c2, n2) = (ns.to_string(), c.clone(), n.clone());
            tokio::task::spawn_blocking(move || manager.disconnect_running(&ns2, &c2, &n2))
                .await
                .map_err(|e| Error::Network(e.to_string()))??;
        }
        self.store.update(ns, &c.id, |c| {
            c.networks.retain(|x| *x != n.name);
            c.network_aliases.retain(|a| a.network != n.name);
            if let Some(s) = c.network_settings.as_mut() {
                s.endpoints.retain(|e| e.network_id != n.id);
            }
        })?;
        self.events
            .publish_network(ns, &n, "disconnect", Some(&c.id));
        Ok(())
    }
}
