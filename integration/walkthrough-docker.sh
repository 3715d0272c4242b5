#!/usr/bin/env bash
# The acceptance walkthrough driven by a real docker CLI through berth's Docker Engine API
# gateway: starts a berthd (its own root and state in a temporary folder) serving
# `[gateway] socket`, then runs ../shared/acceptance/seed-walkthrough.sh in its docker mode
# (ENGINE=docker DOCKER_HOST=unix://…) with the docker CLI asked for. Needs root.
#   integration/walkthrough-docker.sh [SECTION…]
# Environment:
#   BERTH_BIN   folder holding berth, berthd, berth-shim (default: target/release of the checkout)
#   DOCKER_CLI  the docker CLI to drive it with (default /usr/bin/docker, Debian's 20.10)
#   WALK        the walkthrough script (default ../shared/acceptance/seed-walkthrough.sh)
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
BERTH_BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}
WALK=${WALK:-$repo/../shared/acceptance/seed-walkthrough.sh}
[ -x "$DOCKER_CLI" ] || { echo "no docker CLI at $DOCKER_CLI (apt-get install docker.io)" >&2; exit 1; }
[ -f "$WALK" ] || { echo "no walkthrough at $WALK" >&2; exit 1; }

work=$(mktemp -d /tmp/berth-walk-docker.XXXXXX)
mkdir -p "$work/root" "$work/state" "$work/bin" "$work/docker-config"
cat > "$work/config.toml" <<TOML
root = "$work/root"
state = "$work/state"
[gateway]
socket = "$work/state/docker.sock"
TOML
"$BERTH_BIN/berthd" --config "$work/config.toml" >"$work/berthd.log" 2>&1 &
berthd=$!
cleanup() {
  # what the walkthrough left running, so that no shim outlives the run
  ids=$("$BERTH_BIN/berth" --address "unix://$work/state/berth.sock" ps -aq 2>/dev/null)
  [ -z "$ids" ] || "$BERTH_BIN/berth" --address "unix://$work/state/berth.sock" rm -f $ids >/dev/null 2>&1
  kill "$berthd" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$berthd" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$berthd" 2>/dev/null
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
sock=$work/state/docker.sock
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "berthd did not serve $sock; its log:" >&2; tail -n 20 "$work/berthd.log" >&2; exit 1; }

# The walkthrough calls `docker`: this CLI, first on PATH. DOCKER_CONFIG: nothing of the
# user's own docker config; DOCKER_BUILDKIT=0: the classic builder's API (/build), which a
# current CLI would otherwise hand to buildx.
ln -s "$DOCKER_CLI" "$work/bin/docker"
echo "== walkthrough with $("$DOCKER_CLI" --version) through berth's gateway" >&2
PATH="$work/bin:$PATH" ENGINE=docker DOCKER_HOST="unix://$sock" DOCKER_CONFIG="$work/docker-config" \
  DOCKER_BUILDKIT=0 bash "$WALK" "$@"
status=$?
[ $status -eq 0 ] || { echo "berthd's log (last lines):" >&2; tail -n 30 "$work/berthd.log" >&2; }
exit $status
