//! Container networking, built on the standard CNI plugins.
//!
//! - [`cni`]: one bridge network run through the plugins of Debian's
//!   `containernetworking-plugins` (`bridge` with `host-local` addresses, then `portmap` when
//!   the container publishes ports).
//! - [`netns`]: network namespaces bind-mounted on files under `<state>/net/netns/<ns>/<id>`,
//!   so the plugins can set them up before the container's process exists.
//! - [`firewall`]: one set of iptables rules per bridge (masquerading, FORWARD accepts).
//! - [`Manager`] (here): the networks (records in the runtime's database: the default
//!   `bridge`, `host`, `none`, and user networks, each bridge network with its own Linux
//!   bridge and subnet), and what a container's task gets from them: a namespace, an address
//!   per network (`eth0`, `eth1`, …), published ports (held as bound sockets by berthd, so two
//!   containers — or a container and another program — never get the same host port), and
//!   its `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`. On user networks the hosts
//!   files of the containers list each other by name, and are rewritten in place as
//!   containers come and go.
//!
//! Two instances with different roots never share a bridge: the default bridge of the
//! default root is `berth0`; any other root gets `bth<hash of the root>`; user networks get
//! `br-<id>`. Subnets are taken from 10.77.0.0/16 in /24 steps, skipping every subnet the host
//! routes already, under a host-wide lock (an abstract unix socket). Each bridge is marked
//! with its instance's root (`ifalias`), so a bridge whose instance is gone for good (its root
//! removed) is taken down when another one needs room.

pub mod cni;
mod firewall;
pub mod netns;

pub use cni::{Attachment, CniError, Network, NetworkConfig, PortMapping, Protocol, Subnet};

use crate::error::{Error, Result};
use crate::metadata::Store;
use berth_api::containers::v1::{Container, Endpoint, NetworkSettings, PortBinding};
use berth_api::networks::v1::Network as NetworkRecord;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The built-in networks.
pub const DEFAULT_NETWORK: &str = "bridge";
const HOST_NETWORK: &str = "host";
const NONE_NETWORK: &str = "none";

/// Where subnets of new networks come from, in /24 steps.
const POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 16);
const POOL_STEP: u8 = 24;

/// Prefix of the `ifalias` that marks a bridge as one of berth's.
const ALIAS_PREFIX: &str = "berth:";

/// How a container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Bridge networks, the first is `eth0`.
    Bridge,
    None,
    Host,
    /// Another container's namespace (its reference).
    Container(String),
}

impl Mode {
    /// The mode of a `network_mode` string; a network's name means [`Mode::Bridge`].
    pub fn of(network_mode: &str) -> Mode {
        match network_mode {
            NONE_NETWORK => Mode::None,
            HOST_NETWORK => Mode::Host,
            m => match m.strip_prefix("container:") {
                Some(c) => Mode::Container(c.to_string()),
                None => Mode::Bridge,
            },
        }
    }
}

/// What a task gets from [`Manager::attach`].
#[derive(Debug, Default)]
pub struct Attached {
    /// The network namespace the container joins; `None`: a new one of its own (none) or
    /// the host's.
    pub netns: Option<PathBuf>,
    /// Files bind-mounted into the container: (host file, path in the container).
    pub files: Vec<(PathBuf, &'static str)>,
    pub settings: NetworkSettings,
}

/// A published port held by berthd while its container runs.
#[derive(Debug)]
enum Held {
    // Never read: holding the socket is the point.
    #[allow(dead_code)]
    Tcp(TcpListener),
    #[allow(dead_code)]
    Udp(UdpSocket),
}

/// A running container on a user network, as the others' hosts files list it.
#[derive(Debug, Clone)]
struct Peer {
    ip: String,
    names: Vec<String>,
    hosts: PathBuf,
    /// Its own lines (localhost, itself, --add-host), before the peers.
    base: String,
}

impl Peer {
    /// Container `c` at `ip`, listed by its name and short id, with its hosts file.
    fn of(c: &Container, ip: &str, hosts: PathBuf, base: String) -> Peer {
        Peer {
            ip: ip.to_string(),
            names: vec![c.name.clone(), c.id[..12.min(c.id.len())].to_string()],
            hosts,
            base,
        }
    }
}

/// A running container's hosts file and its own lines (`hosts.base`), as `attach` wrote
/// them beside its log.
fn own_hosts(c: &Container) -> (PathBuf, String) {
    let hosts = PathBuf::from(&c.log_path).with_file_name("hosts");
    let base = std::fs::read_to_string(hosts.with_extension("base")).unwrap_or_default();
    (hosts, base)
}

#[derive(Debug, Default)]
struct Inner {
    cni: HashMap<String, Arc<Network>>,
    /// `<ns>/<id>` → its published ports.
    ports: HashMap<String, Vec<Held>>,
    /// user network name → `<ns>/<id>` → peer.
    peers: HashMap<String, BTreeMap<String, Peer>>,
    /// network name → attachments being set up (not yet in any container's settings).
    attaching: HashMap<String, usize>,
    /// Networks whose bridge and rules were set up by this process.
    ready: std::collections::HashSet<String>,
    /// Why `init` failed, told to whoever needs the default network.
    init_error: Option<String>,
}

/// Settings of the networking part of the runtime.
#[derive(Debug, Clone)]
pub struct Options {
    /// The default bridge's name; derived from the root when `None`.
    pub bridge: Option<String>,
    /// The default bridge's subnet; a free one when `None`.
    pub subnet: Option<String>,
    /// Where the CNI plugins are.
    pub plugin_dir: Option<PathBuf>,
}

/// The networks of one berthd instance and the attachments of its containers.
#[derive(Debug)]
pub struct Manager {
    store: Store,
    /// The runtime's root: marks this instance's bridges.
    owner: String,
    /// `<state>/net`: netns files, CNI cache, address leases.
    dir: PathBuf,
    plugin_dir: PathBuf,
    options: Options,
    inner: Mutex<Inner>,
}

fn net_err(what: impl std::fmt::Display) -> Error {
    Error::Network(what.to_string())
}

impl Manager {
    pub fn new(store: Store, root: &Path, state: &Path, options: Options) -> Manager {
        let plugin_dir = options.plugin_dir.clone().unwrap_or_else(|| {
            [cni::DEFAULT_PLUGIN_DIR, "/opt/cni/bin"]
                .iter()
                .map(PathBuf::from)
                .find(|d| d.join("bridge").is_file())
                .unwrap_or_else(|| PathBuf::from(cni::DEFAULT_PLUGIN_DIR))
        });
        // The mark on this instance's bridges: absolute, as another instance checks whether
        // it still exists.
        let owner = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        Manager {
            store,
            owner: owner.display().to_string(),
            dir: state.join("net"),
            plugin_dir,
            options,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The namespace file of a container's task.
    pub fn netns_path(&self, ns: &str, id: &str) -> PathBuf {
        self.dir.join("netns").join(ns).join(id)
    }

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
            containers: Vec::new(),
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

    /// The bridge of a network exists, is up, has the gateway address and its rules.
    fn ensure_bridge(&self, r: &NetworkRecord) -> Result<()> {
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

    /// The CNI driver of a bridge network.
    fn cni(&self, r: &NetworkRecord) -> Result<Arc<Network>> {
        if let Some(n) = self.inner().cni.get(&r.id) {
            return Ok(n.clone());
        }
        let gateway = r.gateway.parse().ok();
        let n = Arc::new(Network::new(self.cni_config(
            &r.name,
            &r.bridge,
            r.subnet.parse()?,
            gateway,
        ))?);
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

    /// `network create`.
    pub fn create(
        &self,
        name: &str,
        driver: &str,
        subnet: &str,
        gateway: &str,
        internal: bool,
        labels: HashMap<String, String>,
    ) -> Result<NetworkRecord> {
        validate_name(name)?;
        if !matches!(driver, "" | "bridge") {
            return Err(Error::InvalidArgument(format!(
                "network driver {driver:?} is not supported: use bridge"
            )));
        }
        if self.find(name).is_ok_and(|r| r.name == name) {
            return Err(Error::FailedPrecondition(format!(
                "network with name {name} already exists"
            )));
        }
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
        self.create_record(name, &bridge, subnet, gateway, internal, labels, Some(id))
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
        remove_bridge(&r.bridge);
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
            check_binding(p)?;
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
                    "bridge" => Ok((vec![r.name], network_mode.to_string())),
                    "host" => Ok((Vec::new(), HOST_NETWORK.into())),
                    _ => Ok((Vec::new(), NONE_NETWORK.into())),
                }
            }
            Mode::Container(c) if c.is_empty() => Err(Error::InvalidArgument(
                "--network container: needs a container name or id".into(),
            )),
            _ => Ok((Vec::new(), network_mode.to_string())),
        }
    }

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
        let mut out = Attached::default();
        // `host-gateway` is the default bridge's address on the host, as with Docker.
        let host_gateway = self
            .find(DEFAULT_NETWORK)
            .map(|r| r.gateway)
            .unwrap_or_default();
        let extra = extra_hosts(&config.extra_hosts, &host_gateway)?;
        let resolv = resolv_conf(
            &host_resolv_conf(),
            &config.dns,
            &config.dns_search,
            &config.dns_options,
            mode == Mode::Host,
        );
        match &mode {
            Mode::Container(_) => {
                let (pid, other_dir) = joined.ok_or_else(|| {
                    Error::FailedPrecondition("the container to join is not running".into())
                })?;
                out.netns = Some(PathBuf::from(format!("/proc/{pid}/ns/net")));
                for (file, dest) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
                    let f = other_dir.join(file);
                    if f.exists() {
                        out.files.push((f, dest));
                    }
                }
                write_file(&dir.join("hostname"), &format!("{hostname}\n"))?;
                out.files.push((dir.join("hostname"), "/etc/hostname"));
                return Ok(out);
            }
            Mode::Host => {
                let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                hosts.push_str(&extra);
                write_file(&dir.join("hosts"), &hosts)?;
                out.settings.endpoints.push(Endpoint {
                    network: HOST_NETWORK.into(),
                    network_id: self.find(HOST_NETWORK).map(|r| r.id).unwrap_or_default(),
                    ..Default::default()
                });
            }
            Mode::None => {
                write_file(&dir.join("hosts"), &format!("{}{extra}", localhost_lines()))?;
            }
            Mode::Bridge => {}
        }
        if mode != Mode::Bridge {
            write_file(&dir.join("resolv.conf"), &resolv)?;
            write_file(&dir.join("hostname"), &format!("{hostname}\n"))?;
            out.files = vec![
                (dir.join("hosts"), "/etc/hosts"),
                (dir.join("resolv.conf"), "/etc/resolv.conf"),
                (dir.join("hostname"), "/etc/hostname"),
            ];
            return Ok(out);
        }

        let key = format!("{ns}/{}", c.id);
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
        let mut done: Vec<(Arc<Network>, String)> = Vec::new();
        let _attaching = Attaching::new(self, &c.networks);
        let hosts = dir.join("hosts");
        let mut base = localhost_lines();
        let result = (|| -> Result<()> {
            for (i, name) in c.networks.iter().enumerate() {
                let r = self.find(name)?;
                if r.driver != "bridge" {
                    continue;
                }
                let net = self.cni(&r)?;
                if !self.inner().ready.contains(&r.name) {
                    let _lock = host_lock()?;
                    self.ensure_bridge(&r)?;
                }
                let ifname = format!("eth{i}");
                let mappings = if i == 0 {
                    port_mappings(&published)
                } else {
                    Vec::new()
                };
                let a = net.add(&c.id, &netns_path, &ifname, &mappings)?;
                done.push((net, ifname.clone()));
                out.settings.endpoints.push(Endpoint {
                    network: r.name.clone(),
                    network_id: r.id.clone(),
                    ip_address: a.ip.to_string(),
                    ip_prefix_len: a.prefix_len as u32,
                    gateway: a.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    mac_address: a.mac.clone().unwrap_or_default(),
                    interface: ifname,
                });
            }
            // /etc/hosts: localhost, itself, --add-host, then (refresh_hosts) its peers on
            // user networks.
            if let Some(e) = out.settings.endpoints.first() {
                let mut names = vec![hostname.to_string()];
                if c.name != hostname {
                    names.push(c.name.clone());
                }
                base.push_str(&format!("{}\t{}\n", e.ip_address, names.join(" ")));
            }
            base.push_str(&extra);
            write_file(&dir.join("resolv.conf"), &resolv)?;
            write_file(&dir.join("hostname"), &format!("{hostname}\n"))?;
            write_file(&hosts, &base)?;
            write_file(&hosts.with_extension("base"), &base)
        })();
        if let Err(e) = result {
            for (net, ifname) in done.iter().rev() {
                let _ = net.del(&c.id, &netns_path, ifname);
            }
            let _ = netns::remove(&netns_path);
            return Err(e);
        }
        out.settings.ports = published;
        for p in exposed_unpublished(&exposed, &out.settings.ports) {
            out.settings.ports.push(p);
        }
        out.settings.sandbox_key = netns_path.display().to_string();
        out.netns = Some(netns_path);
        {
            let mut inner = self.inner();
            inner.ports.insert(key.clone(), held);
            for e in &out.settings.endpoints {
                if e.network == DEFAULT_NETWORK {
                    continue;
                }
                inner.peers.entry(e.network.clone()).or_default().insert(
                    key.clone(),
                    Peer::of(c, &e.ip_address, hosts.clone(), base.clone()),
                );
            }
        }
        let networks: Vec<String> = out
            .settings
            .endpoints
            .iter()
            .map(|e| e.network.clone())
            .collect();
        self.refresh_hosts(&networks, None);
        out.files = vec![
            (hosts, "/etc/hosts"),
            (dir.join("resolv.conf"), "/etc/resolv.conf"),
            (dir.join("hostname"), "/etc/hostname"),
        ];
        Ok(out)
    }

    /// Rewrites the hosts files of every container on the user networks `networks`, and
    /// `reset` (a container's file and its own lines) when it left them. Under the lock, so
    /// two rewrites never cross.
    fn refresh_hosts(&self, networks: &[String], reset: Option<(PathBuf, String)>) {
        let inner = self.inner();
        let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
        if let Some((path, base)) = reset {
            files.insert(path, base);
        }
        for n in networks {
            let Some(peers) = inner.peers.get(n) else {
                continue;
            };
            for p in peers.values() {
                files
                    .entry(p.hosts.clone())
                    .or_insert_with(|| p.base.clone());
            }
        }
        // Every file lists the peers of all the user networks its container is on.
        for (path, content) in files.iter_mut() {
            for peers in inner.peers.values() {
                if !peers.values().any(|p| &p.hosts == path) {
                    continue;
                }
                for p in peers.values().filter(|p| &p.hosts != path) {
                    let line = format!("{}\t{}\n", p.ip, p.names.join(" "));
                    if !content.contains(&line) {
                        content.push_str(&line);
                    }
                }
            }
        }
        for (path, content) in files {
            // In place: the file is bind-mounted into a running container.
            if let Err(e) = write_in_place(&path, &content) {
                tracing::debug!(file = %path.display(), error = %e, "cannot update a hosts file");
            }
        }
        drop(inner);
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
                Peer::of(c, &e.ip_address, hosts.clone(), base.clone()),
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
        let a = net.add(&c.id, &netns_path, &ifname, &[])?;
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
                    Peer::of(c, &e.ip_address, hosts, base),
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

/// Counts a container's networks as being attached to while it lives, so `network rm`
/// does not take a network away under a container that is starting on it.
struct Attaching<'a> {
    manager: &'a Manager,
    networks: Vec<String>,
}

impl<'a> Attaching<'a> {
    fn new(manager: &'a Manager, networks: &[String]) -> Attaching<'a> {
        let mut inner = manager.inner();
        for n in networks {
            *inner.attaching.entry(n.clone()).or_default() += 1;
        }
        Attaching {
            manager,
            networks: networks.to_vec(),
        }
    }
}

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        let mut inner = self.manager.inner();
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

/// The network mode in effect: a container created before networks existed has none.
fn effective_mode(network_mode: &str, networks: &[String]) -> String {
    match Mode::of(network_mode) {
        Mode::Bridge if networks.is_empty() => NONE_NETWORK.into(),
        _ => network_mode.into(),
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}

fn validate_name(name: &str) -> Result<()> {
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

fn check_binding(p: &PortBinding) -> Result<()> {
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
fn exposed_ports(spec: &[u8]) -> Vec<(u32, String)> {
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
fn wanted_bindings(
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

fn exposed_unpublished(exposed: &[(u32, String)], published: &[PortBinding]) -> Vec<PortBinding> {
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
fn reserve(bindings: &[PortBinding]) -> Result<(Vec<Held>, Vec<PortBinding>)> {
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

fn port_mappings(published: &[PortBinding]) -> Vec<PortMapping> {
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

fn localhost_lines() -> String {
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
     ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        .to_string()
}

/// `--add-host NAME:IP` as hosts lines; `host-gateway` stands for `gateway`.
fn extra_hosts(entries: &[String], gateway: &str) -> Result<String> {
    let mut out = String::new();
    for e in entries {
        let (name, ip) = e.split_once(':').ok_or_else(|| {
            Error::InvalidArgument(format!("invalid extra host {e:?}: use NAME:IP"))
        })?;
        let ip = if ip == "host-gateway" && !gateway.is_empty() {
            gateway
        } else {
            ip
        };
        if name.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "invalid extra host {e:?}: use NAME:IP with an IP address"
            )));
        }
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(out)
}

/// The host's resolv.conf; systemd-resolved's upstream list when the host points at its stub.
fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if main.contains("nameserver 127.0.0.53") {
        if let Ok(up) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return up;
        }
    }
    main
}

/// The container's resolv.conf from the host's: loopback nameservers dropped (unreachable from
/// a namespace of its own; Google's public ones if none is left), `--dns`, `--dns-search` and
/// `--dns-option` replacing their kind.
fn resolv_conf(
    host: &str,
    dns: &[String],
    search: &[String],
    options: &[String],
    host_net: bool,
) -> String {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut opts = Vec::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(s) = w.next() {
                    let loopback = s.starts_with("127.") || s == "::1";
                    if host_net || !loopback {
                        servers.push(s.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => searches = w.map(str::to_string).collect(),
            Some("options") => opts.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    if !dns.is_empty() {
        servers = dns.to_vec();
    } else if servers.is_empty() {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    if !search.is_empty() {
        searches = search
            .iter()
            .filter(|s| s.as_str() != ".")
            .cloned()
            .collect();
    }
    if !options.is_empty() {
        opts = options.to_vec();
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !opts.is_empty() {
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// Writes a file for a new task: a fresh inode (a running container still sees the old one).
fn write_file(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| Error::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))
}

/// Rewrites a file in place (same inode), for a file bind-mounted into a running container.
fn write_in_place(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(content.as_bytes())
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

fn remove_bridge(bridge: &str) {
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .output();
    firewall::remove(bridge);
}

/// Whether nothing is plugged into a bridge (or it does not exist).
fn bridge_is_empty(bridge: &str) -> bool {
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
fn reclaim_orphan_bridges() {
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
fn host_routes() -> Vec<Subnet> {
    routes().into_iter().map(|(_, s)| s).collect()
}

fn overlaps(a: &Subnet, b: &Subnet) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

fn free_subnet(taken: &[Subnet]) -> Option<Subnet> {
    let base = u32::from(POOL.0);
    let count = 1u32 << (POOL_STEP - POOL.1);
    (0..count)
        .filter_map(|i| Subnet::new(Ipv4Addr::from(base + (i << (32 - POOL_STEP))), POOL_STEP).ok())
        .find(|s| !taken.iter().any(|t| overlaps(t, s)))
}

/// A host-wide lock for choosing subnets and bridges: an abstract unix socket, released when
/// the process ends, leaving no file behind.
fn host_lock() -> Result<std::os::unix::net::UnixListener> {
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
    fn resolv_conf_drops_loopback_and_takes_overrides() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 192.168.1.1\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, &[], &[], &[], false),
            "search lan\nnameserver 192.168.1.1\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", &[], &[], &[], false),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf(
                host,
                &["1.1.1.1".into()],
                &["x.org".into()],
                &["ndots:2".into()],
                false
            ),
            "search x.org\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        assert!(resolv_conf(host, &[], &[], &[], true).contains("127.0.0.53"));
    }

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
        assert!(extra_hosts(&["db:10.0.0.9".into()], "").unwrap() == "10.0.0.9\tdb\n");
        assert!(extra_hosts(&["db".into()], "").is_err());
        assert_eq!(
            extra_hosts(&["h:host-gateway".into()], "10.77.0.1").unwrap(),
            "10.77.0.1\th\n"
        );
        assert!(extra_hosts(&["h:host-gateway".into()], "").is_err());
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

    #[test]
    fn modes() {
        assert_eq!(Mode::of(""), Mode::Bridge);
        assert_eq!(Mode::of("mynet"), Mode::Bridge);
        assert_eq!(Mode::of("none"), Mode::None);
        assert_eq!(Mode::of("host"), Mode::Host);
        assert_eq!(Mode::of("container:web"), Mode::Container("web".into()));
        assert!(validate_name("my-net.1").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a b").is_err());
    }
}
