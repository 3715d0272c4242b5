//! The README's install path as a fresh Debian 12 sees it: `deploy/fresh-root-check.sh` builds
//! a minimal root with mmdebstrap, runs `deploy/install-deps.sh` in it, checks that every
//! command the scripts and the code call is there, and builds berth-api in it (no protoc). A
//! package missing from install-deps.sh fails here, not on a newcomer's machine.
//!
//! The root is cached per content of install-deps.sh (`/var/cache/berth-ci/fresh-root`), so
//! only a run after a change to it downloads packages.

use berth_integration::{have, skip};
use std::path::Path;
use std::process::Command;

#[test]
fn install_deps_gives_a_fresh_debian_every_command() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("mmdebstrap and chroot need root");
    }
    if !have("mmdebstrap") {
        return skip("mmdebstrap is not installed (deploy/install-deps.sh installs it)");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fresh-root-check.sh");
    let o = Command::new(&script)
        .output()
        .expect("run fresh-root-check.sh");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("fresh-root-check: ok"), "{out}\n{err}");
}

/// The command finder the check relies on finds what it must and nothing it must not: a
/// program hidden in a function, a pipeline, `$( … )` or behind `timeout` is found; builtins,
/// functions, assignments, arrays, case patterns, heredocs and strings are not.
#[test]
fn the_command_finder_reads_shell_as_bash_does() {
    if !have("python3") {
        return skip("python3 is not installed");
    }
    let dir = std::env::temp_dir().join(format!("berth-shcmds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("s.sh");
    std::fs::write(
        &script,
        r#"#!/bin/bash
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkgs=(
  notacommand alsonot   # packages
)
helper() { jq . "$1" | sort -u; }
N=$((N+1)); X=${Y:-a b c}
case "$x" in
  pattern) echo "; fake ;" ;;
  *) timeout 30 realtool -q ;;
esac
cat <<EOF
heredoccmd ; also
EOF
B=( docker ); after
if ! command -v probed >/dev/null; then helper x; fi
out="$(printf '%s' "$y" | tail -n 3 | tr '\n' ' ')"
"$VAR" arg; $other arg
"#,
    )
    .unwrap();
    let o = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/shell-commands.py"))
        .arg(&script)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let found: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        found,
        ["after", "cat", "dirname", "jq", "pwd", "realtool", "sort", "tail", "timeout", "tr"],
        "found: {found:?}"
    );
}
