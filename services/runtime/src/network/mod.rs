//! Container networking, built on the standard CNI plugins.
//!
//! [`Networks`] (here) is one berthd instance's networks and its containers' attachments to
//! them; each of its jobs has a room:
//! - [`records`]: the networks themselves (records in the runtime's database: the default
//!   `bridge`, `host`, `none`, and user networks, each bridge network with its own Linux bridge
//!   and subnet) — `network create|ls|rm`, and a container's network mode checked at create.
//! - [`attachment`]: what a container's task gets from them ([`Attached`]): a namespace, an
//!   address per network (`eth0`, `eth1`, …), published ports, its files; released again when
//!   the task ends, swept after a crash, restored after a restart; `network connect` of a
//!   running container.
//! - [`ports`]: published ports, held as bound sockets by berthd, so two containers — or a
//!   container and another program — never get the same host port.
//! - [`files`]: the task's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`. On user
//!   networks the hosts files of the containers list each other by name, and are rewritten in
//!   place as containers come and go.
//! - [`bridge`]: Linux bridges and subnets on the host (`ip` calls, the host's routes, a
//!   host-wide lock).
//! - [`cni`]: one bridge network run through the plugins of Debian's
//!   `containernetworking-plugins` (`bridge` with `host-local` addresses, then `portmap` when
//!   the container publishes ports).
//! - [`netns`]: network namespaces bind-mounted on files under `<state>/net/netns/<ns>/<id>`,
//!   so the plugins can set them up before the container's process exists.
//! - `firewall`: one set of iptables rules per bridge (masquerading, FORWARD accepts).
//!
//! Two instances with different roots never share a bridge: the default bridge of the
//! default root is `berth0`; any other root gets `bth<hash of the root>`; user networks get
//! `br-<id>`. Subnets are taken from 10.77.0.0/16 in /24 steps, skipping every subnet the host
//! routes already, under a host-wide lock (an abstract unix socket). Each bridge is marked
//! with its instance's root (`ifalias`), so a bridge whose instance is gone for good (its root
//! removed) is taken down when another one needs room.

pub mod attachment;
mod bridge;
pub mod cni;
mod files;
mod firewall;
pub mod netns;
mod ports;
pub mod records;

pub use attachment::{apply_to_spec, Attached};
pub use cni::{Attachment, CniError, Network, NetworkConfig, PortMapping, Protocol, Subnet};

use crate::error::Error;
use crate::metadata::Store;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The built-in networks.
pub const DEFAULT_NETWORK: &str = "bridge";
const HOST_NETWORK: &str = "host";
const NONE_NETWORK: &str = "none";
/// The driver of a network described by a CNI configuration list.
pub const CNI_DRIVER: &str = "cni";

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

#[derive(Debug, Default)]
struct Inner {
    cni: HashMap<String, Arc<Network>>,
    /// `<ns>/<id>` → its published ports.
    ports: HashMap<String, Vec<ports::Held>>,
    /// user network name → `<ns>/<id>` → peer.
    peers: HashMap<String, BTreeMap<String, files::Peer>>,
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

/// The networks of one berthd instance and the attachments of its containers to them.
#[derive(Debug)]
pub struct Networks {
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

impl Networks {
    pub fn new(store: Store, root: &Path, state: &Path, options: Options) -> Networks {
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
        Networks {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::of(""), Mode::Bridge);
        assert_eq!(Mode::of("mynet"), Mode::Bridge);
        assert_eq!(Mode::of("none"), Mode::None);
        assert_eq!(Mode::of("host"), Mode::Host);
        assert_eq!(Mode::of("container:web"), Mode::Container("web".into()));
        assert!(records::validate_name("my-net.1").is_ok());
        assert!(records::validate_name("-x").is_err());
        assert!(records::validate_name("a b").is_err());
    }
}
