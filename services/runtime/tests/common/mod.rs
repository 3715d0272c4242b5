//! What the runtime's integration tests share.

pub use berth_core::testing::skip;

use std::path::{Path, PathBuf};

/// The shim to test against (`$BERTH_SHIM`, or `berth-shim` in the target folder), or why
/// there is none.
pub fn shim_binary() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root: containers need namespaces and cgroups".into());
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err("no /bin/busybox for the test rootfs (Debian package busybox-static)".into());
    }
    let path = match std::env::var_os("BERTH_SHIM") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("berth-shim"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no shim at {} (run `cargo build -p berth-shim`, or set BERTH_SHIM)",
            path.display()
        ))
    }
}
