#!/usr/bin/env bash
# Installs what berth needs to build, run and test on Debian 12, as root. Idempotent: packages
# already present are not fetched again. Every tool a test needs is here: under CI (CI=true)
# a missing one fails its test instead of skipping it (berth_core::testing::skip).
set -euo pipefail
pkgs=(
  pkg-config libssl-dev gcc                          # build: openssl, C parts of -sys crates (protos are compiled by protox)
  libc6-dev                                          # tests: a static C program (network.rs's UDP receiver)
  libseccomp-dev                                     # build: seccomp filters (libseccomp)
  busybox-static umoci skopeo docker-registry        # test images and a real registry
  openssl tar                                        # tests: TLS certificates (push_auth.rs), archives
  util-linux bsdutils curl iptables iproute2 python3 python3-venv  # script(1) (bsdutils on Debian 12), probes; ip and iptables for networks; Python gRPC clients
  containernetworking-plugins                        # networking: bridge, host-local, portmap, loopback (/usr/lib/cni)
  containerd runc hyperfine                          # benchmark peers
  docker.io docker-compose                           # the docker CLI and docker-compose, against berth's registry and its gateway
  mmdebstrap git                                     # deploy/fresh-root-check.sh; the walkthrough finds the repo with git
  procps                                             # ps: `top` with ps options runs the host's ps on the container's pids
)
# tests: the Node gRPC client (grpc_clients.rs). Debian's Node.js and npm only when the machine
# has none of its own (a Node.js from elsewhere brings its npm, and Debian's npm conflicts with it).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
