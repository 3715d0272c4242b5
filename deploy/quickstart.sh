#!/usr/bin/env bash
# One command on a fresh Debian 12 machine, as root: install what is needed, build berth,
# start berthd, make a busybox image offline and run a container from it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
deploy/install-deps.sh
cargo build --release --bins
bin=${CARGO_TARGET_DIR:-target}/release
install -m 0755 "$bin/berth" "$bin/berthd" "$bin/berth-shim" /usr/local/bin/
# Shell completions and man pages, made by the berth just installed from its own command tree
install -d /usr/share/bash-completion/completions /usr/share/zsh/vendor-completions \
  /usr/share/fish/vendor_completions.d /usr/local/share/man/man1
berth completion bash >/usr/share/bash-completion/completions/berth
berth completion zsh >/usr/share/zsh/vendor-completions/_berth
berth completion fish >/usr/share/fish/vendor_completions.d/berth.fish
berth man /usr/local/share/man/man1
mkdir -p /etc/berth /var/lib/berth /run/berth
[ -f /etc/berth/config.toml ] || install -m 0644 deploy/config.toml /etc/berth/config.toml
if ! berth version >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    install -m 0644 deploy/berthd.service /etc/systemd/system/berthd.service
    systemctl daemon-reload && systemctl enable --now berthd
  else
    nohup berthd >>/var/log/berthd.log 2>&1 &
  fi
  for _ in $(seq 100); do berth version >/dev/null 2>&1 && break; sleep 0.1; done
fi
berth version
img=$(mktemp -d)/busybox.tar
deploy/make-busybox-image.sh "$img" busybox:latest
berth image import "$img"
berth run --rm busybox echo "hello from a berth container"
