//! What the shim's integration tests share.

use std::path::PathBuf;
use std::sync::OnceLock;

pub use berth_core::testing::skip;

fn own_mount() -> PathBuf {
    std::env::temp_dir().join(format!("berth-test-cgroup2-{}", std::process::id()))
}

extern "C" fn unmount_own() {
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(own_mount())
        .status();
    let _ = std::fs::remove_dir(own_mount());
}

/// The cgroup2 mount (`None` after a [`skip`] when there is none and none can be made). On a
/// cgroup v1 host the v2 hierarchy is mounted for this test process (device programs need no
/// controller; a hybrid host has it at `/sys/fs/cgroup/unified`) and unmounted when it exits.
pub fn cgroup2() -> Option<PathBuf> {
    static M: OnceLock<Option<PathBuf>> = OnceLock::new();
    let m = M.get_or_init(|| {
        if let Some(m) = berth_shim::cgroup::cgroup2_mount() {
            return Some(m);
        }
        let m = own_mount();
        std::fs::create_dir_all(&m).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(&m)
            .status()
            .is_ok_and(|s| s.success());
        // SAFETY: registers a plain extern "C" function without arguments.
        unsafe { libc::atexit(unmount_own) };
        mounted.then_some(m)
    });
    if m.is_none() {
        skip("no cgroup2 mount, and mounting one failed");
    }
    m.clone()
}
