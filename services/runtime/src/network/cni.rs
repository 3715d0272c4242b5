//! A CNI driver: runs the plugin binaries of a network configuration list as the CNI 1.0
//! specification describes.
//!
//! A [`Network`] is built from a [`NetworkConfig`] (bridge name, [`Subnet`], gateway, the
//! plugin folder and the folders for addresses and cached results, so that two berthd
//! instances with different roots use different bridges and never share state). It holds two
//! lists:
//! - `<name>-loopback`: the `loopback` plugin, run with `CNI_IFNAME=lo`. It is a list of its
//!   own because its result (an address on `lo`) must not become the `prevResult` of the
//!   bridge list.
//! - `<name>`: `bridge` with `host-local` IPAM, then `portmap`, which declares the
//!   `portMappings` capability and so receives the container's [`PortMapping`]s in
//!   `runtimeConfig`.
//!
//! A network of driver `cni` is built instead from a configuration list given whole
//! ([`Network::from_conflist`]): its plugins run as listed, after `loopback`, with the
//! container's `CNI_ARGS`, which are cached with the result for CHECK and DEL.
//!
//! ADD runs the plugins in order, each getting the previous one's result as `prevResult`, and
//! caches the final result (with the port mappings) under the cache folder; CHECK passes that
//! cached result to every plugin in order; DEL passes it to every plugin in reverse order and
//! then forgets it. A plugin that fails prints the spec's error object (`code`, `msg`,
//! `details`), which becomes [`CniError::Plugin`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

/// The CNI version berth speaks to the plugins.
pub const CNI_VERSION: &str = "1.0.0";

/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Linux's limit on an interface name (IFNAMSIZ less the terminating NUL).
const MAX_IFNAME: usize = 15;

/// Everything that can go wrong while attaching a container to a network.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The network's configuration cannot work (bad name, subnet or gateway).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),

    #[error(
        "CNI plugin {0} not found: install the Debian package containernetworking-plugins, \
         or name the plugins' folder with [runtime] cni_plugin_dir in berthd's config"
    )]
    PluginNotFound(PathBuf),

    #[error("cannot run CNI plugin {plugin}: {source}")]
    Exec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },

    /// The plugin reported an error object (CNI spec, "Error").
    #[error("CNI plugin {plugin} failed ({command}): {msg} (code {code}){}", details_suffix(.details))]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },

    /// The plugin's output is not what the spec says it prints.
    #[error("CNI plugin {plugin} printed an unreadable {what}: {detail}")]
    BadOutput {
        plugin: String,
        what: &'static str,
        detail: String,
    },

    #[error("network {network} gave container {container_id} no IPv4 address on {ifname}")]
    NoAddress {
        network: String,
        container_id: String,
        ifname: String,
    },

    #[error("CNI cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

/// An IPv4 subnet, `a.b.c.d/n`, with its address masked to the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Subnet {
    /// The subnet of `addr`/`prefix_len`, or an error for a prefix the bridge cannot use.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Subnet, CniError> {
        if !(1..=30).contains(&prefix_len) {
            return Err(CniError::InvalidConfig(format!(
                "subnet prefix /{prefix_len} leaves no room for a gateway and containers \
                 (use /1 to /30)"
            )));
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `addr` lies in the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(addr) & mask == u32::from(self.network)
    }

    /// The first host address, the usual gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | (u32::MAX >> self.prefix_len))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Subnet {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Subnet, CniError> {
        let bad = || CniError::InvalidConfig(format!("subnet {s:?} is not of the form a.b.c.d/n"));
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Subnet::new(addr, len)
    }
}

/// A published port: traffic to `host_ip:host_port` on the host reaches `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only this host address; `None` for all of them.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What a bridge network is: the parameters two berthd instances must not share.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The CNI network name (also the folder of its addresses under `ipam_dir`).
    pub name: String,
    /// The Linux bridge the plugin creates if missing.
    pub bridge: String,
    pub subnet: Subnet,
    /// The bridge's address and the containers' default route; the subnet's first host if
    /// `None`.
    pub gateway: Option<Ipv4Addr>,
    /// Masquerade traffic leaving the subnet (the bridge plugin's per-container rules).
    pub ip_masq: bool,
    /// Bring up `lo` with the `loopback` plugin (off when the caller does it itself).
    pub loopback: bool,
    /// Where the plugin binaries are.
    pub plugin_dir: PathBuf,
    /// `host-local`'s folder of leased addresses.
    pub ipam_dir: PathBuf,
    /// Where the ADD results are kept for CHECK and DEL.
    pub cache_dir: PathBuf,
}

/// The container's side of an attachment, read from the ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The MAC address of the container's interface.
    pub mac: Option<String>,
    /// The container's interface (`eth0`).
    pub ifname: String,
    /// The host end of the veth pair, if the plugin named it.
    pub host_ifname: Option<String>,
    pub port_mappings: Vec<PortMapping>,
    /// The final ADD result as the plugins printed it.
    pub result: Value,
}

/// One plugin's configuration inside a list, as serialized (`type` plus its own keys).
#[derive(Debug, Clone, Serialize)]
struct PluginConf {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// A network configuration list (CNI spec, "Configuration format").
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfList {
    cni_version: String,
    name: String,
    plugins: Vec<PluginConf>,
}

/// What is cached between ADD and CHECK/DEL.
#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    result: Value,
    port_mappings: Vec<PortMapping>,
    /// The `CNI_ARGS` of the ADD, given again to CHECK and DEL.
    #[serde(default)]
    args: String,
}

/// One network, attached to and detached from containers by running the plugins: a bridge
/// network berth describes ([`Network::new`]) or a configuration list given whole
/// ([`Network::from_conflist`]).
#[derive(Debug, Clone)]
pub struct Network {
    /// berth's name of the network: its cached results are `<name>-<id>-<ifname>.json`.
    name: String,
    /// Whether `lo` is brought up by the `loopback` plugin.
    run_loopback: bool,
    plugin_dir: PathBuf,
    cache_dir: PathBuf,
    /// A bridge network's parameters and gateway (`None` for a given list).
    bridge_config: Option<(NetworkConfig, Ipv4Addr)>,
    loopback: ConfList,
    /// `bridge` alone, for containers without published ports (one plugin less to run).
    bridge: ConfList,
    /// `bridge` then `portmap`.
    bridge_ports: ConfList,
}

/// Which CNI operation is run.
#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Check,
    Del,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Check => "CHECK",
            Op::Del => "DEL",
        }
    }
}

/// The per-container arguments of an invocation.
#[derive(Debug, Clone, Copy)]
struct Invocation<'a> {
    container_id: &'a str,
    netns: &'a Path,
    ifname: &'a str,
    /// `CNI_ARGS`: `K=V;K=V`.
    args: &'a str,
}

impl Network {
    /// Checks the configuration and builds the two lists; runs nothing.
    pub fn new(config: NetworkConfig) -> Result<Network, CniError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(&config.name) {
            return Err(CniError::InvalidConfig(format!(
                "network name {:?}: use letters, digits, '-', '_' and '.'",
                config.name
            )));
        }
        if !name_ok(&config.bridge) || config.bridge.len() > MAX_IFNAME {
            return Err(CniError::InvalidConfig(format!(
                "bridge name {:?}: at most {MAX_IFNAME} letters, digits, '-', '_' or '.'",
                config.bridge
            )));
        }
        let subnet = config.subnet;
        let gateway = config.gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.contains(gateway) || gateway == subnet.network() || gateway == subnet.broadcast()
        {
            return Err(CniError::InvalidConfig(format!(
                "gateway {gateway} is not a host address of subnet {subnet}"
            )));
        }
        let plugin = |kind: &str, rest: Value| PluginConf {
            kind: kind.to_string(),
            rest: match rest {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        };
        let loopback = ConfList {
            cni_version: CNI_VERSION.into(),
            name: format!("{}-loopback", config.name),
            plugins: vec![plugin("loopback", json!({}))],
        };
        let bridge_ports = ConfList {
            cni_version: CNI_VERSION.into(),
            name: config.name.clone(),
            plugins: vec![
                plugin(
                    "bridge",
                    json!({
                        "bridge": config.bridge,
                        "isGateway": true,
                        "ipMasq": config.ip_masq,
                        "hairpinMode": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{ "subnet": subnet.to_string(), "gateway": gateway.to_string() }]],
                            "routes": [{ "dst": "0.0.0.0/0" }],
                            "dataDir": config.ipam_dir,
                        },
                    }),
                ),
                plugin(
                    "portmap",
                    json!({ "capabilities": { "portMappings": true }, "snat": true }),
                ),
            ],
        };
        let bridge = ConfList {
            plugins: bridge_ports.plugins[..1].to_vec(),
            ..bridge_ports.clone()
        };
        Ok(Network {
            name: config.name.clone(),
            run_loopback: config.loopback,
            plugin_dir: config.plugin_dir.clone(),
            cache_dir: config.cache_dir.clone(),
            bridge_config: Some((config, gateway)),
            loopback,
            bridge,
            bridge_ports,
        })
    }

    /// The parameters of a bridge network ([`Network::new`]); `None` for a given list.
    pub fn config(&self) -> Option<&NetworkConfig> {
        self.bridge_config.as_ref().map(|(c, _)| c)
    }

    /// The gateway of a bridge network; `None` for a given list.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.bridge_config.as_ref().map(|(_, g)| *g)
    }

    /// The network `name` whose containers are attached by the plugins of `conflist`: a
    /// configuration list (`plugins`) or a single plugin's configuration (`type`), checked
    /// as libcni checks it. `lo` is brought up by the `loopback` plugin first.
    pub fn from_conflist(
        name: &str,
        conflist: &Value,
        plugin_dir: PathBuf,
        cache_dir: PathBuf,
    ) -> Result<Network, CniError> {
        let list = parse_conflist(conflist)?;
        let loopback = ConfList {
            cni_version: list.cni_version.clone(),
            name: format!("{}-loopback", list.name),
            plugins: vec![PluginConf {
                kind: "loopback".into(),
                rest: serde_json::Map::new(),
            }],
        };
        Ok(Network {
            name: name.into(),
            run_loopback: true,
            plugin_dir,
            cache_dir,
            bridge_config: None,
            loopback,
            bridge: list.clone(),
            bridge_ports: list,
        })
    }

    /// The network configuration list of the bridge network with published ports, as given
    /// to the plugins.
    pub fn conflist(&self) -> Value {
        serde_json::to_value(&self.bridge_ports).expect("a ConfList serializes")
    }

    /// The list that attaches a container with these published ports.
    fn list_for(&self, port_mappings: &[PortMapping]) -> &ConfList {
        if port_mappings.is_empty() {
            &self.bridge
        } else {
            &self.bridge_ports
        }
    }

    /// Attaches the container in `netns` to the network: `lo` up, `ifname` with an address,
    /// the published ports. On failure what was already set up is deleted again.
    pub fn add(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        port_mappings: &[PortMapping],
        args: &str,
    ) -> Result<Attachment, CniError> {
        let inv = Invocation {
            container_id,
            netns,
            ifname,
            args,
        };
        let lo = Invocation {
            ifname: "lo",
            ..inv
        };
        if self.run_loopback {
            self.run_list(&self.loopback, Op::Add, lo, None, &[])?;
        }
        let list = self.list_for(port_mappings);
        // Recorded before the plugins run: a berthd killed during ADD leaves a record that
        // the next start finds and releases (a DEL without a result).
        self.store_cache(
            inv,
            &Cached {
                result: Value::Null,
                port_mappings: port_mappings.to_vec(),
                args: args.into(),
            },
        )?;
        let forget = || {
            let _ = std::fs::remove_file(self.cache_path(inv));
        };
        let result = match self.run_list(list, Op::Add, inv, None, port_mappings) {
            Ok(r) => r,
            Err(e) => {
                // The spec asks for a DEL after a failed ADD so partial state is released.
                let _ = self.run_list(list, Op::Del, inv, None, port_mappings);
                forget();
                return Err(e);
            }
        };
        let attachment = match attachment_of(&result, ifname, port_mappings) {
            Some(a) => a,
            None => {
                let _ = self.run_list(list, Op::Del, inv, Some(&result), port_mappings);
                forget();
                return Err(CniError::NoAddress {
                    network: self.name.clone(),
                    container_id: container_id.into(),
                    ifname: ifname.into(),
                });
            }
        };
        self.store_cache(
            inv,
            &Cached {
                result,
                port_mappings: port_mappings.to_vec(),
                args: args.into(),
            },
        )?;
        Ok(attachment)
    }

    /// Checks that the attachment made by [`add`](Self::add) is still as the plugins left it.
    pub fn check(&self, container_id: &str, netns: &Path, ifname: &str) -> Result<(), CniError> {
        let inv = Invocation {
            container_id,
            netns,
            ifname,
            args: "",
        };
        let cached = self.load_cache(inv)?.ok_or_else(|| {
            CniError::InvalidConfig(format!(
                "container {container_id} has no recorded attachment to network {} on {ifname}",
                self.name
            ))
        })?;
        let inv = Invocation {
            args: &cached.args,
            ..inv
        };
        let lo = Invocation {
            ifname: "lo",
            ..inv
        };
        if self.run_loopback {
            self.run_list(&self.loopback, Op::Check, lo, None, &[])?;
        }
        self.run_list(
            self.list_for(&cached.port_mappings),
            Op::Check,
            inv,
            Some(&cached.result),
            &cached.port_mappings,
        )?;
        Ok(())
    }

    /// Detaches the container: its address, veth and port rules are released. Succeeds when
    /// there is nothing left to release, and works without the namespace (it may be gone).
    pub fn del(&self, container_id: &str, netns: &Path, ifname: &str) -> Result<(), CniError> {
        let inv = Invocation {
            container_id,
            netns,
            ifname,
            args: "",
        };
        let cached = self.load_cache(inv)?;
        let inv = Invocation {
            args: cached.as_ref().map_or("", |c| c.args.as_str()),
            ..inv
        };
        let (prev, ports) = match &cached {
            // A record made before an ADD that never finished has no result.
            Some(c) => (
                Some(&c.result).filter(|r| !r.is_null()),
                c.port_mappings.as_slice(),
            ),
            None => (None, &[][..]),
        };
        // Without a cached result the ports are unknown: portmap's DEL then finds its rules by
        // container id.
        let list = if cached.is_none() {
            &self.bridge_ports
        } else {
            self.list_for(ports)
        };
        self.run_list(list, Op::Del, inv, prev, ports)?;
        if self.run_loopback {
            let lo = Invocation {
                ifname: "lo",
                ..inv
            };
            self.run_list(&self.loopback, Op::Del, lo, None, &[])?;
        }
        let path = self.cache_path(inv);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }

    /// Runs every plugin of `list` for `op`: ADD in order chaining `prevResult`, CHECK in
    /// order and DEL in reverse, both with the cached result. Returns the last ADD result.
    fn run_list(
        &self,
        list: &ConfList,
        op: Op,
        inv: Invocation<'_>,
        cached: Option<&Value>,
        port_mappings: &[PortMapping],
    ) -> Result<Value, CniError> {
        let mut prev = cached.cloned();
        let mut order: Vec<&PluginConf> = list.plugins.iter().collect();
        if matches!(op, Op::Del) {
            order.reverse();
        }
        for plugin in order {
            let conf = self.plugin_config(list, plugin, prev.as_ref(), port_mappings);
            let out = self.exec(plugin, &conf, op, inv)?;
            if let (Op::Add, Some(result)) = (op, out) {
                prev = Some(result);
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// The configuration one plugin reads on stdin (CNI spec, "Deriving execution
    /// configuration from plugin configuration").
    fn plugin_config(
        &self,
        list: &ConfList,
        plugin: &PluginConf,
        prev: Option<&Value>,
        port_mappings: &[PortMapping],
    ) -> Value {
        let mut conf = plugin.rest.clone();
        conf.insert("type".into(), Value::String(plugin.kind.clone()));
        conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        conf.insert("name".into(), Value::String(list.name.clone()));
        let wants_ports = plugin
            .rest
            .get("capabilities")
            .and_then(|c| c.get("portMappings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if wants_ports {
            conf.insert(
                "runtimeConfig".into(),
                json!({ "portMappings": port_mappings }),
            );
        }
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }

    /// Runs one plugin binary; `Some(result)` for a successful ADD.
    fn exec(
        &self,
        plugin: &PluginConf,
        conf: &Value,
        op: Op,
        inv: Invocation<'_>,
    ) -> Result<Option<Value>, CniError> {
        let path = self.plugin_dir.join(&plugin.kind);
        if !path.is_file() {
            return Err(CniError::PluginNotFound(path));
        }
        let exec_err = |source| CniError::Exec {
            plugin: plugin.kind.clone(),
            source,
        };
        let mut child = Command::new(&path)
            .env_clear()
            // The plugins run iptables, ip and friends through PATH.
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("CNI_COMMAND", op.as_str())
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", inv.args)
            .env("CNI_PATH", &self.plugin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(exec_err)?;
        let input = serde_json::to_vec(conf).expect("a JSON value serializes");
        {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            // A plugin that exits without reading its input closes the pipe; its exit status
            // and error object then tell what happened.
            let _ = stdin.write_all(&input);
        }
        let out = child.wait_with_output().map_err(exec_err)?;
        if !out.status.success() {
            return Err(plugin_error(&plugin.kind, op, &out.stdout, &out.stderr));
        }
        match op {
            Op::Add => {
                let result: Value =
                    serde_json::from_slice(&out.stdout).map_err(|e| CniError::BadOutput {
                        plugin: plugin.kind.clone(),
                        what: "ADD result",
                        detail: e.to_string(),
                    })?;
                Ok(Some(result))
            }
            Op::Check | Op::Del => Ok(None),
        }
    }

    fn cache_path(&self, inv: Invocation<'_>) -> PathBuf {
        self.cache_dir.join(format!(
            "{}-{}-{}.json",
            self.name, inv.container_id, inv.ifname
        ))
    }

    fn store_cache(&self, inv: Invocation<'_>, cached: &Cached) -> Result<(), CniError> {
        let path = self.cache_path(inv);
        let cache_err = |source| CniError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(cache_err)?;
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec(cached).expect("the cache serializes");
        std::fs::write(&tmp, data).map_err(cache_err)?;
        std::fs::rename(&tmp, &path).map_err(cache_err)
    }

    fn load_cache(&self, inv: Invocation<'_>) -> Result<Option<Cached>, CniError> {
        let path = self.cache_path(inv);
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| CniError::Cache {
                    path,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }
}

/// A configuration list as given by a user (`plugins`), or one plugin's configuration
/// (`type`) made a list of one, checked as libcni loads them: a `name` fit for the host-local
/// folder, and every plugin with a `type` that names a binary (no path).
fn parse_conflist(conf: &Value) -> Result<ConfList, CniError> {
    let bad = |what: String| CniError::InvalidConfig(format!("CNI configuration: {what}"));
    let obj = conf
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .ok_or_else(|| bad("\"name\" must be letters, digits, '-', '_' or '.'".into()))?;
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(CNI_VERSION)
        .to_string();
    let raw: Vec<serde_json::Map<String, Value>> = match (obj.get("plugins"), obj.get("type")) {
        (Some(list), _) => list
            .as_array()
            .ok_or_else(|| bad("\"plugins\" is not a list".into()))?
            .iter()
            .map(|p| {
                p.as_object()
                    .cloned()
                    .ok_or_else(|| bad("a plugin is not an object".into()))
            })
            .collect::<Result<_, _>>()?,
        (None, Some(_)) => vec![obj.clone()],
        (None, None) => return Err(bad("neither \"plugins\" nor \"type\"".into())),
    };
    if raw.is_empty() {
        return Err(bad("\"plugins\" is empty".into()));
    }
    let plugins = raw
        .into_iter()
        .map(|mut rest| {
            let kind = rest
                .remove("type")
                .and_then(|t| t.as_str().map(str::to_string))
                .filter(|t| !t.is_empty() && !t.contains('/') && t != "..")
                .ok_or_else(|| bad("a plugin without a plain \"type\"".into()))?;
            for key in ["cniVersion", "name"] {
                rest.remove(key);
            }
            Ok(PluginConf { kind, rest })
        })
        .collect::<Result<_, CniError>>()?;
    Ok(ConfList {
        cni_version,
        name: name.into(),
        plugins,
    })
}

/// The spec's error object, printed on stdout by a failing plugin.
#[derive(Debug, Deserialize)]
struct ErrorObject {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

fn plugin_error(plugin: &str, op: Op, stdout: &[u8], stderr: &[u8]) -> CniError {
    match serde_json::from_slice::<ErrorObject>(stdout) {
        Ok(e) => CniError::Plugin {
            plugin: plugin.into(),
            command: op.as_str(),
            code: e.code,
            msg: e.msg,
            details: e.details,
        },
        // No error object: report what the plugin printed at all.
        Err(_) => {
            let text = String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout });
            CniError::Plugin {
                plugin: plugin.into(),
                command: op.as_str(),
                code: 999,
                msg: text.trim().to_string(),
                details: String::new(),
            }
        }
    }
}

/// The container's IPv4 address on `ifname` in a CNI 1.0 ADD result.
fn attachment_of(result: &Value, ifname: &str, ports: &[PortMapping]) -> Option<Attachment> {
    let interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let in_container = |i: &Value| {
        i.get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let container_idx = interfaces
        .iter()
        .position(|i| in_container(i) && i.get("name").and_then(Value::as_str) == Some(ifname));
    let ips = result.get("ips").and_then(Value::as_array)?;
    let ip = ips.iter().find_map(|ip| {
        let on_ours = match (ip.get("interface").and_then(Value::as_u64), container_idx) {
            (Some(i), Some(c)) => i as usize == c,
            _ => true,
        };
        let (addr, len) = ip.get("address")?.as_str()?.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        on_ours.then_some((addr, len.parse::<u8>().ok()?, ip.get("gateway")))
    })?;
    let mac = container_idx
        .and_then(|c| interfaces[c].get("mac"))
        .and_then(Value::as_str)
        .map(str::to_string);
    // The bridge plugin lists the bridge, then the host end of the veth, then the container's.
    let host_ifname = interfaces
        .iter()
        .filter(|i| !in_container(i))
        .filter_map(|i| i.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with("veth"))
        .map(str::to_string);
    Some(Attachment {
        ip: ip.0,
        prefix_len: ip.1,
        gateway: ip.2.and_then(Value::as_str).and_then(|g| g.parse().ok()),
        mac,
        ifname: ifname.into(),
        host_ifname,
        port_mappings: ports.to_vec(),
        result: result.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bridge: &str, subnet: &str) -> NetworkConfig {
        NetworkConfig {
            name: "berth".into(),
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            gateway: None,
            ip_masq: true,
            loopback: true,
            plugin_dir: DEFAULT_PLUGIN_DIR.into(),
            ipam_dir: "/tmp/ipam".into(),
            cache_dir: "/tmp/cache".into(),
        }
    }

    #[test]
    fn subnet_parses_and_masks() {
        let s: Subnet = "10.88.3.7/16".parse().unwrap();
        assert_eq!(s.to_string(), "10.88.0.0/16");
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 88, 0, 1));
        assert!(s.contains(Ipv4Addr::new(10, 88, 255, 1)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert!("10.88.0.0".parse::<Subnet>().is_err());
        assert!("10.88.0.0/31".parse::<Subnet>().is_err());
    }

    #[test]
    fn conflist_names_bridge_subnet_and_chains_portmap() {
        let net = Network::new(config("bt0", "10.99.0.0/24")).unwrap();
        let list = net.conflist();
        assert_eq!(list["cniVersion"], "1.0.0");
        assert_eq!(list["plugins"][0]["type"], "bridge");
        assert_eq!(list["plugins"][0]["bridge"], "bt0");
        assert_eq!(
            list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.99.0.0/24"
        );
        assert_eq!(
            list["plugins"][0]["ipam"]["ranges"][0][0]["gateway"],
            "10.99.0.1"
        );
        assert_eq!(list["plugins"][1]["type"], "portmap");
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None,
        }];
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        assert_eq!(
            net.bridge.plugins.len(),
            1,
            "without ports: the bridge alone"
        );
        let conf = net.plugin_config(
            &net.bridge_ports,
            &net.bridge_ports.plugins[1],
            Some(&prev),
            &ports,
        );
        assert_eq!(conf["name"], "berth");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(
            conf["runtimeConfig"]["portMappings"][0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})
        );
        let bridge = net.plugin_config(&net.bridge, &net.bridge.plugins[0], None, &ports);
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());
    }

    #[test]
    fn bad_configs_are_refused() {
        let long = Network::new(config("a-bridge-name-too-long", "10.99.0.0/24")).unwrap_err();
        assert!(long.to_string().contains("bridge name"), "{long}");
        let mut c = config("bt0", "10.99.0.0/24");
        c.gateway = Some(Ipv4Addr::new(10, 98, 0, 1));
        let gw = Network::new(c).unwrap_err();
        assert!(gw.to_string().contains("not a host address"), "{gw}");
    }

    #[test]
    fn given_conflists_are_checked_and_run_whole() {
        let list = json!({
            "cniVersion": "0.4.0",
            "name": "pods",
            "plugins": [
                {"type": "bridge", "bridge": "cni9", "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        let net = Network::from_conflist("cri-pods", &list, "/p".into(), "/c".into()).unwrap();
        assert!(net.config().is_none() && net.gateway().is_none());
        assert_eq!(
            net.bridge.plugins.len(),
            2,
            "ports or not, the whole list runs"
        );
        let conf = net.plugin_config(&net.bridge, &net.bridge.plugins[0], None, &[]);
        assert_eq!(
            (conf["name"].as_str(), conf["cniVersion"].as_str()),
            (Some("pods"), Some("0.4.0"))
        );
        assert_eq!(conf["bridge"], "cni9");
        // One plugin's configuration is a list of one.
        let single = json!({"name": "one", "type": "bridge"});
        let net = Network::from_conflist("n", &single, "/p".into(), "/c".into()).unwrap();
        assert_eq!(net.bridge.plugins[0].kind, "bridge");
        for bad in [
            json!([]),
            json!({"name": "x"}),
            json!({"name": "a b", "type": "bridge"}),
            json!({"name": "x", "plugins": []}),
            json!({"name": "x", "plugins": [{"type": "../sh"}]}),
        ] {
            let e = Network::from_conflist("n", &bad, "/p".into(), "/c".into()).unwrap_err();
            assert!(e.to_string().contains("CNI configuration"), "{bad}: {e}");
        }
    }

    #[test]
    fn plugin_error_object_is_read() {
        let e = plugin_error(
            "bridge",
            Op::Add,
            br#"{"cniVersion":"1.0.0","code":7,"msg":"bad thing","details":"why"}"#,
            b"",
        );
        assert_eq!(
            e.to_string(),
            "CNI plugin bridge failed (ADD): bad thing (code 7): why"
        );
    }

    #[test]
    fn attachment_is_the_container_interface() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "bt0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 2}]
        });
        let a = attachment_of(&result, "eth0", &[]).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(a.prefix_len, 24);
        assert_eq!(a.gateway, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(a.mac.as_deref(), Some("cc:cc:cc:cc:cc:cc"));
        assert_eq!(a.host_ifname.as_deref(), Some("veth1234"));
    }
}
