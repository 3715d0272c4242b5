//! berth-shim: the per-container shim and the code that creates a container.
//!
//! The contract with the runtime service is `docs/shim.md`. Clients use [`protocol`] (wire
//! types and frame helpers) and [`bundle`] (file names, `rootfs.json` entries, annotations).

pub mod bundle;
pub mod cgroup;
pub mod container;
pub mod devices_bpf;
pub mod error;
pub mod exec;
pub mod logfile;
pub mod lookup;
pub mod memory;
pub mod mounts;
pub mod process;
pub mod protocol;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod trace;
pub mod user;

pub use error::{Error, Result};

/// Writes one diagnostic line (with a timestamp) to stderr, which is `shim.log` in the daemon.
pub fn log(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{} {msg}", logfile::now_rfc3339());
}
