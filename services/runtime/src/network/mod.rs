//! Container networking, built on the standard CNI plugins.
//!
//! [`cni::Network`] is one bridge network (a bridge name, a subnet, a gateway) run through the
//! plugins of Debian's `containernetworking-plugins` as the CNI 1.0 specification describes:
//! `loopback` brings up `lo`, then the list `bridge` (with `host-local` addresses) and
//! `portmap` gives the container `eth0`, an address and its published ports.
//! [`cni::Network::add`] returns an [`cni::Attachment`] (address, gateway, MAC);
//! [`cni::Network::del`] releases all of it again.
//!
//! This is a library module only: nothing in the runtime calls it yet.

pub mod cni;

pub use cni::{Attachment, CniError, Network, NetworkConfig, PortMapping, Protocol, Subnet};
