//! A task's network: set up before its shim starts (a namespace, addresses, published
//! ports, its hosts/resolv.conf/hostname files, or another running container's network) and
//! released when the task is deleted or fails to start, through [`crate::network::Networks`]
//! (blocking work, off the async threads). The container's record keeps its network settings
//! while the task lives.

use super::Tasks;
use crate::error::{Error, Result};
use berth_api::containers::v1::Container;

impl Tasks {
    /// Sets up the network of a task about to be created (blocking work: plugins, sockets).
    pub(super) async fn attach_network(
        &self,
        ns: &str,
        container: &Container,
        spec: &[u8],
    ) -> Result<crate::network::Attached> {
        let hostname = serde_json::from_slice::<serde_json::Value>(spec)
            .ok()
            .and_then(|v| {
                v.get("hostname")
                    .and_then(|h| h.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let mode = container
            .config
            .as_ref()
            .map(|c| c.network_mode.clone())
            .unwrap_or_default();
        let joined = match crate::network::Mode::of(&mode) {
            crate::network::Mode::Container(other) => {
                let (pid, o) = self.pid_to_join(ns, &other, "network").await?;
                Some((pid, self.logs.container_dir(ns, &o.id)))
            }
            _ => None,
        };
        let manager = self.networks.clone();
        let (ns2, c, dir) = (
            ns.to_string(),
            container.clone(),
            self.logs.container_dir(ns, &container.id),
        );
        tokio::task::spawn_blocking(move || manager.attach(&ns2, &c, &dir, &hostname, joined))
            .await
            .map_err(|e| Error::Network(format!("network setup failed: {e}")))?
    }

    /// Releases the network of a task (never fails: what cannot be released is logged) and
    /// clears the container's network settings.
    pub(crate) async fn detach_network(
        &self,
        ns: &str,
        id: &str,
        settings: Option<berth_api::containers::v1::NetworkSettings>,
    ) {
        let manager = self.networks.clone();
        let (ns2, id2) = (ns.to_string(), id.to_string());
        let _ = tokio::task::spawn_blocking(move || manager.detach(&ns2, &id2, settings.as_ref()))
            .await;
        let _ = self.store.update(ns, id, |c| c.network_settings = None);
    }

    /// [`Tasks::detach_network`] with the settings the container's record holds.
    pub(crate) async fn release_network(&self, ns: &str, id: &str) {
        let settings = self
            .store
            .get(ns, id)
            .ok()
            .flatten()
            .and_then(|c| c.network_settings);
        self.detach_network(ns, id, settings).await;
    }
}
