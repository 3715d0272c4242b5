//! What a test binary leaves behind, released when it exits.
//!
//! Fixtures kept in statics (a file's shared `Engine`, `Gateway::shared()`, the CRI's
//! berthd) are never dropped, so their `Drop` never runs. Every [`crate::TempDir`] and every
//! [`crate::Berthd`] is therefore noted here when made and forgotten when dropped; one
//! `atexit` hook releases whatever is still noted at exit: each berthd is killed, the shims
//! and containers of its state folder with it, its bridges (and their iptables rules)
//! deleted, then every folder unmounted and removed. A fixture needs nothing of its own for
//! this: being made through the harness registers it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, Once};

/// What is still held: berthds (their folder, the pid while one runs) and folders.
struct Held {
    berthds: Vec<(PathBuf, Option<u32>)>,
    dirs: Vec<PathBuf>,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    berthds: Vec::new(),
    dirs: Vec::new(),
});
static HOOK: Once = Once::new();

/// The record, the exit hook registered first.
fn held() -> MutexGuard<'static, Held> {
    HOOK.call_once(|| {
        // SAFETY: registers a plain extern "C" function without arguments.
        unsafe { libc::atexit(release_held) };
    });
    // A test that panicked while holding it poisoned nothing that matters: plain lists.
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Notes folder `dir`, to be removed at exit unless [`forget_dir`] comes first.
pub(crate) fn note_dir(dir: &Path) {
    held().dirs.push(dir.to_path_buf());
}

pub(crate) fn forget_dir(dir: &Path) {
    held().dirs.retain(|d| d != dir);
}

/// Notes the berthd of folder `dir`, running as `pid` (None: not running now).
pub(crate) fn note_berthd(dir: &Path, pid: Option<u32>) {
    let mut h = held();
    match h.berthds.iter_mut().find(|(d, _)| d == dir) {
        Some(entry) => entry.1 = pid,
        None => h.berthds.push((dir.to_path_buf(), pid)),
    }
}

pub(crate) fn forget_berthd(dir: &Path) {
    held().berthds.retain(|(d, _)| d != dir);
}

extern "C" fn release_held() {
    let (berthds, dirs) = {
        let mut h = HELD.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut h.berthds), std::mem::take(&mut h.dirs))
    };
    for (dir, pid) in berthds {
        if let Some(pid) = pid {
            // SAFETY: kill(2) and waitpid(2) on our own child, not reaped yet (the harness
            // notes `None` when it reaps it).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
        crate::kill_shims_in(&dir.join("state"));
        remove_bridges_of(&dir);
    }
    for dir in dirs.iter().rev() {
        crate::remove_tree(dir);
    }
}

/// Deletes the bridges a berthd rooted under `dir` made (their alias is `berth:<its
/// runtime root>`) and the iptables rules it tagged for them (`--comment berth:<bridge>`).
pub(crate) fn remove_bridges_of(dir: &Path) {
    let Ok(links) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    for link in links.flatten() {
        let alias = std::fs::read_to_string(link.path().join("ifalias")).unwrap_or_default();
        let owned = alias
            .trim()
            .strip_prefix("berth:")
            .is_some_and(|owner| Path::new(owner).starts_with(dir));
        if !owned || !link.path().join("bridge").exists() {
            continue;
        }
        let bridge = link.file_name().to_string_lossy().into_owned();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        drop_tagged_rules(&format!("berth:{bridge}"));
    }
}

/// Deletes the rules of the filter and nat tables whose comment is `tag`.
fn drop_tagged_rules(tag: &str) {
    for table in ["filter", "nat"] {
        let Ok(listed) = Command::new("iptables")
            .args(["-w", "5", "-t", table, "-S"])
            .output()
        else {
            return;
        };
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        let tagged = text.lines().filter(|rule| {
            rule.split_whitespace()
                .any(|word| word.trim_matches('"') == tag)
        });
        for rule in tagged {
            let Some(spec) = rule.strip_prefix("-A ") else {
                continue;
            };
            let _ = Command::new("iptables")
                .args(["-w", "5", "-t", table, "-D"])
                .args(spec.split_whitespace().map(|w| w.trim_matches('"')))
                .output();
        }
    }
}
