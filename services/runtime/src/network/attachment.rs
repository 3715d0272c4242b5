//! What a container's task gets from the networks ([`Attached`]): a network namespace of its
//! own with an address per network (`eth0`, `eth1`, …) and its published ports, or the host's,
//! or none, or another container's; and its hosts, resolv.conf and hostname files. Released
//! when the task ends ([`Networks::detach`]), swept after a crash, restored after a restart of
//! berthd; `network connect|disconnect` of a running container.

use super::bridge::host_lock;
use super::files::{
    extra_hosts, host_resolv_conf, own_hosts, resolv_conf, write_file, Peer, TaskFiles,
};
use super::ports::{
    exposed_ports, exposed_unpublished, port_mappings, reserve, wanted_bindings, Held,
};
use super::{
    effective_mode, net_err, netns, Mode, Network, Networks, CNI_DRIVER, DEFAULT_NETWORK,
    HOST_NETWORK,
};
use crate::error::{Error, Result};
use berth_api::containers::v1::{
    Container, ContainerConfig, Endpoint, NetworkSettings, PortBinding,
};
use berth_api::networks::v1::Network as NetworkRecord;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a task gets from [`Networks::attach`].
#[derive(Debug, Default)]
pub struct Attached {
    /// The network namespace the container joins; `None`: a new one of its own (none) or
    /// the host's.
    pub netns: Option<PathBuf>,
    /// Files bind-mounted into the container: (host file, path in the container).
    pub files: Vec<(PathBuf, &'static str)>,
    pub settings: NetworkSettings,
}

impl Networks {
    /// Sets up the network of a container's task: see [`Attached`]. `dir` is the
    /// container's own folder (for its hosts, resolv.conf and hostname files); `joined` the
    /// pid and folder of the container whose namespace it joins (`container:`). Undoes what
    /// it did when it fails.
    pub fn attach(
        &self,
        ns: &str,
        c: &Container,
        dir: &Path,
        hostname: &str,
        joined: Option<(u32, PathBuf)>,
    ) -> Result<Attached> {
        let config = c.config.clone().unwrap_or_default();
        let mode = Mode::of(&effective_mode(&config.network_mode, &c.networks));
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create folder", dir, e))?;
        // `host-gateway` is the default bridge's address on the host, as with Docker.
        let host_gateway = self
            .find(DEFAULT_NETWORK)
            .map(|r| r.gateway)
            .unwrap_or_default();
        let files = TaskFiles {
            dir,
            hostname,
            extra: extra_hosts(&config.extra_hosts, &host_gateway)?,
            resolv: resolv_conf(
                &host_resolv_conf(),
                &config.dns,
                &config.dns_search,
                &config.dns_options,
                mode == Mode::Host,
            ),
        };
        match mode {
            Mode::Container(_) => files.join(joined),
            Mode::Host => self.attach_to_host(&files),
            Mode::None => files.alone(),
            Mode::Bridge => self.attach_to_bridges(ns, c, &config, &files),
        }
    }

    /// `--network host`: the host's namespace and hosts file (with `--add-host`).
    fn attach_to_host(&self, files: &TaskFiles) -> Result<Attached> {
        let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        hosts.push_str(&files.extra);
        write_file(&files.path("hosts"), &hosts)?;
        let mut out = files.finish_alone()?;
        out.settings.endpoints.push(Endpoint {
            network: HOST_NETWORK.into(),
            network_id: self.find(HOST_NETWORK).map(|r| r.id).unwrap_or_default(),
            ..Default::default()
        });
        Ok(out)
    }

    /// Bridge networks: the ports held, a namespace of its own with an interface on each of
    /// its networks, its files, and its name in the hosts files of its peers.
    fn attach_to_bridges(
        &self,
        ns: &str,
        c: &Container,
        config: &ContainerConfig,
        files: &TaskFiles,
    ) -> Result<Attached> {
        let exposed = exposed_ports(&c.spec);
        let bindings = wanted_bindings(&config.port_bindings, config.publish_all, &exposed);
        let (held, published) = reserve(&bindings)?;
        let netns_path = self.netns_path(ns, &c.id);
        // A namespace left by a task that did not end cleanly.
        let _ = netns::remove(&netns_path);
        netns::create(&netns_path).map_err(|e| {
            net_err(format!(
                "cannot create a network namespace for {}: {e}",
                c.id
            ))
        })?;
        let mut out = Attached::default();
        let mut plugged: Vec<(Arc<Network>, String)> = Vec::new();
        let _attaching = Attaching::new(self, &c.networks);
        let endpoints = &mut out.settings.endpoints;
        let base = self
            .plug(c, &netns_path, &published, &mut plugged, endpoints)
            .and_then(|()| files.write_bridged(c, endpoints));
        let base = match base {
            Ok(base) => base,
            Err(e) => {
                for (net, ifname) in plugged.iter().rev() {
                    let _ = net.del(&c.id, &netns_path, ifname);
                }
                let _ = netns::remove(&netns_path);
                return Err(e);
            }
        };
        out.settings.ports = published;
        for p in exposed_unpublished(&exposed, &out.settings.ports) {
            out.settings.ports.push(p);
        }
        out.settings.sandbox_key = netns_path.display().to_string();
        out.netns = Some(netns_path);
        self.hold(
            ns,
            c,
            held,
            &out.settings.endpoints,
            &files.path("hosts"),
            &base,
        );
        let networks: Vec<String> = out
            .settings
            .endpoints
            .iter()
            .map(|e| e.network.clone())
            .collect();
        self.refresh_hosts(&networks, None);
        out.files = files.mounts();
        Ok(out)
    }

    /// An interface in the namespace at `netns_path` on each bridge network of `c` (`eth0`
    /// gets the published ports), each listed in `plugged` as soon as it exists, so a
    /// failure can take them out again.
    fn plug(
        &self,
        c: &Container,
        netns_path: &Path,
        published: &[PortBinding],
        plugged: &mut Vec<(Arc<Network>, String)>,
        endpoints: &mut Vec<Endpoint>,
    ) -> Result<()> {
        let args = cni_args(c);
        for (i, name) in c.networks.iter().enumerate() {
            let r = self.find(name)?;
            if r.driver != "bridge" && r.driver != CNI_DRIVER {
                continue;
            }
            let net = self.cni(&r)?;
            if r.driver == "bridge" && !self.inner().ready.contains(&r.name) {
                let _lock = host_lock()?;
                self.ensure_bridge(&r)?;
            }
            let ifname = format!("eth{i}");
            let mappings = if i == 0 {
                port_mappings(published)
            } else {
                Vec::new()
            };
            let a = net.add(&c.id, netns_path, &ifname, &mappings, &args)?;
            plugged.push((net, ifname.clone()));
            endpoints.push(Endpoint {
                network: r.name.clone(),
                network_id: r.id.clone(),
                ip_address: a.ip.to_string(),
                ip_prefix_len: a.prefix_len as u32,
                gateway: a.gateway.map(|g| g.to_string()).unwrap_or_default(),
                mac_address: a.mac.clone().unwrap_or_default(),
                interface: ifname,
            });
        }
        Ok(())
    }

    /// Keeps an attached task's port sockets and lists it as a peer on its user networks.
    fn hold(
        &self,
        ns: &str,
        c: &Container,
        held: Vec<Held>,
        endpoints: &[Endpoint],
        hosts: &Path,
        base: &str,
    ) {
        let key = format!("{ns}/{}", c.id);
        let mut inner = self.inner();
        inner.ports.insert(key.clone(), held);
        for e in endpoints {
            if e.network == DEFAULT_NETWORK {
                continue;
            }
            inner.peers.entry(e.network.clone()).or_default().insert(
                key.clone(),
                Peer::of(
                    c,
                    &e.network,
                    &e.ip_address,
                    hosts.to_path_buf(),
                    base.to_string(),
                ),
            );
        }
    }

    /// Releases what [`attach`](Self::attach) set up: addresses, veths, port rules and
    /// sockets, the namespace. Works from the stored settings after a restart, and without
    /// them (a crash before they were stored) from the CNI cache.
    pub fn detach(&self, ns: &str, id: &str, settings: Option<&NetworkSettings>) {
        let key = format!("{ns}/{id}");
        let netns_path = self.netns_path(ns, id);
        let mut endpoints: Vec<(String, String)> = settings
            .map(|s| {
                s.endpoints
                    .iter()
                    .filter(|e| !e.interface.is_empty())
                    .map(|e| (e.network.clone(), e.interface.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for cached in self.cached_attachments(id) {
            if !endpoints.contains(&cached) {
                endpoints.push(cached);
            }
        }
        // A file that is no longer a namespace (a reboot with a persistent state folder):
        // the plugins then release addresses and rules without entering it.
        if netns_path.exists() && !netns::is_netns(&netns_path) {
            let _ = std::fs::remove_file(&netns_path);
        }
        for (network, ifname) in endpoints.iter().rev() {
            let net = match self.find(network).and_then(|r| self.cni(&r)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(container = %id, network = %network, error = %e, "cannot detach from a network that is gone");
                    continue;
                }
            };
            if let Err(e) = net.del(id, &netns_path, ifname) {
                tracing::warn!(container = %id, network = %network, error = %e, "cannot detach container from network");
            }
        }
        if let Err(e) = netns::remove(&netns_path) {
            tracing::warn!(container = %id, error = %e, "cannot remove network namespace");
        }
        // Its peers: the networks it was on by the map and by its settings (a container that
        // ended while berthd was away was never put back in the map).
        let mut touched: Vec<String> = settings
            .map(|s| s.endpoints.iter().map(|e| e.network.clone()).collect())
            .unwrap_or_default();
        {
            let mut inner = self.inner();
            inner.ports.remove(&key);
            for (network, peers) in inner.peers.iter_mut() {
                if peers.remove(&key).is_some() && !touched.contains(network) {
                    touched.push(network.clone());
                }
            }
        }
        self.refresh_hosts(&touched, None);
    }

    /// (network, ifname) of the CNI results cached for a container.
    fn cached_attachments(&self, id: &str) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("cache")) else {
            return Vec::new();
        };
        let needle = format!("-{id}-");
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(".json")?;
                let at = stem.find(&needle)?;
                Some((
                    stem[..at].to_string(),
                    stem[at + needle.len()..].to_string(),
                ))
            })
            .collect()
    }

    /// After a restart of berthd: the ports and peers of containers that still run.
    pub fn restore(&self, ns: &str, c: &Container) {
        let Some(s) = c.network_settings.as_ref() else {
            return;
        };
        let key = format!("{ns}/{}", c.id);
        let wanted: Vec<PortBinding> = s
            .ports
            .iter()
            .filter(|p| p.host_port != 0)
            .cloned()
            .collect();
        match reserve(&wanted) {
            Ok((held, _)) => {
                self.inner().ports.insert(key.clone(), held);
            }
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e, "cannot hold the published ports of a running container again")
            }
        }
        let (hosts, base) = own_hosts(c);
        let mut inner = self.inner();
        for e in &s.endpoints {
            if e.network == DEFAULT_NETWORK || e.interface.is_empty() {
                continue;
            }
            inner.peers.entry(e.network.clone()).or_default().insert(
                key.clone(),
                Peer::of(c, &e.network, &e.ip_address, hosts.clone(), base.clone()),
            );
        }
    }

    /// Namespaces and cached attachments of tasks that no longer exist (a crash between
    /// their start and their end): released. `alive(ns, id)` tells whether a task exists.
    pub fn sweep(&self, alive: impl Fn(&str, &str) -> bool) {
        let root = self.dir.join("netns");
        let mut seen: Vec<String> = Vec::new();
        for ns_entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let ns = ns_entry.file_name().to_string_lossy().into_owned();
            for e in std::fs::read_dir(ns_entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let id = e.file_name().to_string_lossy().into_owned();
                seen.push(id.clone());
                if !alive(&ns, &id) {
                    tracing::info!(container = %id, "releasing the network of a task that is gone");
                    self.detach(&ns, &id, None);
                }
            }
        }
        // Cached results without a namespace file: the namespace is gone, the rules and
        // addresses may not be.
        let ids: Vec<String> = std::fs::read_dir(self.dir.join("cache"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json")?
                    .split('-')
                    .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_string)
            })
            .collect();
        for id in ids {
            if !seen.contains(&id) {
                tracing::info!(container = %id, "releasing a stale network attachment");
                self.detach("", &id, None);
            }
        }
    }

    /// `network connect`: records the network; a running container gets it now.
    pub fn connect_running(
        &self,
        ns: &str,
        c: &Container,
        network: &NetworkRecord,
    ) -> Result<Endpoint> {
        let mut settings = c.network_settings.clone().unwrap_or_default();
        let netns_path = self.netns_path(ns, &c.id);
        if !netns::is_netns(&netns_path) {
            return Err(Error::FailedPrecondition(format!(
                "container {} has no network namespace of its own to connect",
                c.name
            )));
        }
        let used: Vec<&str> = settings
            .endpoints
            .iter()
            .map(|e| e.interface.as_str())
            .collect();
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(&n.as_str()))
            .unwrap_or_else(|| "eth9".into());
        let net = self.cni(network)?;
        let a = net.add(&c.id, &netns_path, &ifname, &[], &cni_args(c))?;
        let e = Endpoint {
            network: network.name.clone(),
            network_id: network.id.clone(),
            ip_address: a.ip.to_string(),
            ip_prefix_len: a.prefix_len as u32,
            gateway: a.gateway.map(|g| g.to_string()).unwrap_or_default(),
            mac_address: a.mac.unwrap_or_default(),
            interface: ifname,
        };
        settings.endpoints.push(e.clone());
        if network.name != DEFAULT_NETWORK {
            let (hosts, base) = own_hosts(c);
            self.inner()
                .peers
                .entry(network.name.clone())
                .or_default()
                .insert(
                    format!("{ns}/{}", c.id),
                    Peer::of(c, &e.network, &e.ip_address, hosts, base),
                );
            self.refresh_hosts(std::slice::from_ref(&e.network), None);
        }
        Ok(e)
    }

    /// `network disconnect` of a running container.
    pub fn disconnect_running(
        &self,
        ns: &str,
        c: &Container,
        network: &NetworkRecord,
    ) -> Result<()> {
        let Some(e) = c
            .network_settings
            .as_ref()
            .and_then(|s| s.endpoints.iter().find(|e| e.network_id == network.id))
        else {
            return Ok(());
        };
        let net = self.cni(network)?;
        net.del(&c.id, &self.netns_path(ns, &c.id), &e.interface)?;
        let key = format!("{ns}/{}", c.id);
        if let Some(peers) = self.inner().peers.get_mut(&network.name) {
            peers.remove(&key);
        }
        // Its own file starts again from its own lines (the networks it is still on add
        // their peers back).
        let (hosts, base) = own_hosts(c);
        let mut networks: Vec<String> = c
            .network_settings
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|e| e.network.clone()))
            .collect();
        networks.retain(|n| *n != network.name);
        networks.push(network.name.clone());
        self.refresh_hosts(&networks, Some((hosts, base)));
        Ok(())
    }
}

/// Checks `cni_args` at create: CNI_ARGS is `K=V;K=V`, so neither may hold `;` or `=`
/// (a key) and keys are not empty.
pub fn check_cni_args(args: &std::collections::HashMap<String, String>) -> Result<()> {
    for (k, v) in args {
        let bad_key = k.is_empty() || k.contains([';', '=']) || k.chars().any(char::is_whitespace);
        if bad_key || v.contains(';') {
            return Err(Error::InvalidArgument(format!(
                "CNI argument {k:?}={v:?}: keys must be non-empty without ';', '=' or spaces, \
                 values without ';'"
            )));
        }
    }
    Ok(())
}

/// The `CNI_ARGS` of a container's attachments: its config's `cni_args` (sorted, so the
/// string is stable), `IgnoreUnknown=1` so plugins that know none of them accept them, and
/// `K8S_POD_INFRA_CONTAINER_ID` for a Kubernetes pod (`K8S_POD_NAME` given), which only
/// the runtime knows before the attachment. Empty without `cni_args`.
fn cni_args(c: &Container) -> String {
    let given = c
        .config
        .as_ref()
        .map(|cfg| cfg.cni_args.clone())
        .unwrap_or_default();
    if given.is_empty() {
        return String::new();
    }
    let mut args: std::collections::BTreeMap<String, String> = given.into_iter().collect();
    if args.contains_key("K8S_POD_NAME") {
        args.entry("K8S_POD_INFRA_CONTAINER_ID".into())
            .or_insert_with(|| c.id.clone());
    }
    args.insert("IgnoreUnknown".into(), "1".into());
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Counts a container's networks as being attached to while it lives, so `network rm`
/// does not take a network away under a container that is starting on it.
struct Attaching<'a> {
    owner: &'a Networks,
    networks: Vec<String>,
}

impl<'a> Attaching<'a> {
    fn new(owner: &'a Networks, networks: &[String]) -> Attaching<'a> {
        let mut inner = owner.inner();
        for n in networks {
            *inner.attaching.entry(n.clone()).or_default() += 1;
        }
        Attaching {
            owner,
            networks: networks.to_vec(),
        }
    }
}

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        let mut inner = self.owner.inner();
        for n in &self.networks {
            if let Some(c) = inner.attaching.get_mut(n) {
                *c = c.saturating_sub(1);
            }
        }
    }
}

/// The task's spec with its network: the namespace to join and the hosts, resolv.conf and
/// hostname files (unless the container bind-mounts its own at those paths).
pub fn apply_to_spec(spec: &[u8], attached: &Attached) -> Result<Vec<u8>> {
    let mut v: serde_json::Value =
        serde_json::from_slice(spec).map_err(|e| Error::Spec(e.to_string()))?;
    if let Some(path) = &attached.netns {
        let namespaces = v
            .pointer_mut("/linux/namespaces")
            .and_then(|n| n.as_array_mut())
            .ok_or_else(|| Error::Spec("the spec has no linux.namespaces".into()))?;
        let entry = serde_json::json!({"type": "network", "path": path});
        match namespaces
            .iter_mut()
            .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
        {
            Some(n) => *n = entry,
            None => namespaces.push(entry),
        }
    }
    if !attached.files.is_empty() {
        let obj = v
            .as_object_mut()
            .ok_or_else(|| Error::Spec("the spec is not an object".into()))?;
        let mounts = obj
            .entry("mounts")
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
            .ok_or_else(|| Error::Spec("the spec's mounts are not a list".into()))?;
        for (source, dest) in &attached.files {
            let taken = mounts
                .iter()
                .any(|m| m.get("destination").and_then(|d| d.as_str()) == Some(dest));
            if !taken {
                mounts.push(serde_json::json!({
                    "destination": dest,
                    "type": "bind",
                    "source": source,
                    "options": ["rbind", "rprivate"],
                }));
            }
        }
    }
    serde_json::to_vec(&v).map_err(|e| Error::Spec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cni_args_of_a_pod_and_bad_ones() {
        let mut c = Container {
            id: "abc".into(),
            ..Default::default()
        };
        assert_eq!(cni_args(&c), "");
        let args = HashMap::from([
            ("K8S_POD_NAMESPACE".to_string(), "default".to_string()),
            ("K8S_POD_NAME".to_string(), "web".to_string()),
        ]);
        assert!(check_cni_args(&args).is_ok());
        c.config = Some(ContainerConfig {
            cni_args: args,
            ..Default::default()
        });
        assert_eq!(
            cni_args(&c),
            "IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default"
        );
        for (k, v) in [("A;B", "x"), ("", "x"), ("A", "x;y"), ("A=B", "x")] {
            let bad = HashMap::from([(k.to_string(), v.to_string())]);
            assert!(check_cni_args(&bad).is_err(), "{k}={v}");
        }
    }
}
