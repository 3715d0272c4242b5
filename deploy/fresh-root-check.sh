#!/usr/bin/env bash
# deploy/fresh-root-check.sh — proves the README's install path the way a fresh machine sees it.
#
# 1. Builds a minimal Debian 12 root (mmdebstrap, variant minbase: what a fresh container or
#    cloud image has, no recommends) and runs deploy/install-deps.sh in it, with this
#    machine's Rust toolchain bound in (the README asks for Rust and nothing else).
# 2. Checks that every command the project calls is then there: the words in command
#    position of quickstart.sh, install-deps.sh, make-busybox-image.sh, integration/run.sh,
#    .ci/run and the acceptance walkthrough (deploy/shell-commands.py finds them), and every
#    program the Rust code starts by name
#    (`Command::new("…")`, `have("…")`, `need("…")` in services/, cli/, integration/).
# 3. Builds berth-api in the root (its build script compiles the protos), offline from this
#    machine's crate cache: the step that failed on a fresh Debian when it needed protoc.
#
# The root is kept in $BERTH_FRESH_ROOT_CACHE (default /var/cache/berth-ci/fresh-root), one per
# content of install-deps.sh, so a run after an unchanged install-deps.sh skips step 1's
# downloads; the checks always run. Needs root, mmdebstrap and the Debian mirror.
# Exit status: 0 when everything is there, 1 with the missing commands listed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${BERTH_FRESH_ROOT_CACHE:-/var/cache/berth-ci/fresh-root}
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

[ "$(id -u)" = 0 ] || { echo "fresh-root-check: run as root" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "fresh-root-check: mmdebstrap is missing (deploy/install-deps.sh installs it)" >&2; exit 2; }

key=$(cat "$repo/deploy/install-deps.sh" | sha256sum | cut -c1-16)
root=$cache/$key
mkdir -p "$cache"
# roots made for an earlier install-deps.sh
find "$cache" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} +

# Runs a command inside $root (bash -c), in a mount namespace of its own: /proc, /sys, /dev,
# the host's resolv.conf, its Rust toolchain and crate cache at the same paths, the repository
# at /src. Nothing is left mounted afterwards.
in_root() {
  unshare --mount --propagation private -- bash -euo pipefail -c '
    root=$1 repo=$2 rustup_home=$3 cargo_home=$4; shift 4
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root/src" "$root$rustup_home" "$root$cargo_home"
    mount --bind "$repo" "$root/src"
    mount --bind -o ro "$rustup_home" "$root$rustup_home"
    mount --bind "$cargo_home" "$root$cargo_home"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
      PATH="$cargo_home/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      RUSTUP_HOME="$rustup_home" CARGO_HOME="$cargo_home" \
      bash -euo pipefail -c "$1"
  ' in_root "$root" "$repo" "$rustup_home" "$cargo_home" "$1"
}

if [ ! -e "$root/.install-deps-done" ]; then
  rm -rf "$root"
  echo "== mmdebstrap: a minimal Debian 12 in $root" >&2
  mmdebstrap --quiet --variant=minbase --mode=root \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    bookworm "$root" "$mirror"
  # Services a package would start (docker.io, containerd) stay stopped: this is a folder,
  # not a booted machine.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  echo "== deploy/install-deps.sh in the fresh root" >&2
  in_root 'cd /src && deploy/install-deps.sh'
  touch "$root/.install-deps-done"
fi

# Programs the Rust code starts by name.
rust_commands() {
  grep -rhoE --include='*.rs' '(Command::new|have|need|which)\("[A-Za-z0-9_.+-]+"\)' \
    "$repo/services" "$repo/cli" "$repo/integration" 2>/dev/null |
    sed -E 's/.*\("([^"]+)"\)/\1/' | sort -u
}

scripts=("$repo/deploy/quickstart.sh" "$repo/deploy/install-deps.sh" "$repo/deploy/make-busybox-image.sh"
         "$repo/integration/run.sh" "$repo/.ci/run")
for walk in lib.sh seed-walkthrough.sh; do
  [ -f "$repo/../shared/acceptance/$walk" ] && scripts+=("$repo/../shared/acceptance/$walk")
done
# Made by the build or by the engine, not installed: berth's own programs; what runs inside a
# container image (busybox's applets come from the image); the Rust toolchain (a prerequisite,
# bound in from this machine).
not_installed='^(berth|berthd|berth-shim|cargo|rustc|rustup|systemctl)$'
commands=$( { python3 "$repo/deploy/shell-commands.py" "${scripts[@]}"; rust_commands; } | sort -u | grep -Ev "$not_installed" || true)

echo "== $(echo "$commands" | wc -w) commands, looked for in the fresh root" >&2
missing=$(in_root "for c in $(echo $commands); do command -v \"\$c\" >/dev/null || echo \"\$c\"; done")
if [ -n "$missing" ]; then
  echo "fresh-root-check: after deploy/install-deps.sh a fresh Debian 12 lacks:" $missing >&2
  echo "(add their packages to deploy/install-deps.sh)" >&2
  exit 1
fi

echo "== cargo build -p berth-api in the fresh root (its build script compiles the protos)" >&2
in_root 'cd /src && CARGO_TARGET_DIR=/var/tmp/berth-target cargo build --offline --quiet -p berth-api'
echo "fresh-root-check: ok ($(echo "$commands" | wc -w) commands present; berth-api builds)"
