#!/usr/bin/env bash
# Runs every test of berth, as root on Debian 12:
#   formatting and clippy, unit and integration tests (release build: the integration tests
#   start real berthd instances, a real docker-registry and real containers), then the
#   acceptance walkthrough sections of the resolved issues when ../shared is beside the repo.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
deploy/install-deps.sh
target=${CARGO_TARGET_DIR:-$repo/target}
export CARGO_TARGET_DIR=$target

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build --release"
cargo build --release --bins --quiet
echo "== cargo test --release"
set +e
cargo test --release --workspace --no-fail-fast 2>&1 | tee "$target/test.log" | grep -Ev '^(test .* \.\.\. ok|running 0 tests)$'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "unit/integration tests failed (cargo test exited $status)" >&2
  exit 1
fi
# A test whose prerequisite is missing prints a SKIP line (berth_core::testing::skip) and
# passes; under CI it fails instead, and so does any SKIP line left in the log.
skips=$(grep -E '\bSKIP(PED)?\b' "$target/test.log" || true)
if [ -n "$skips" ]; then
  echo "== $(printf '%s\n' "$skips" | wc -l) skipped test(s):"
  printf '%s\n' "$skips"
  ci=${CI:-}
  case "${ci,,}" in
    ''|0|false) ;;
    *) echo "tests were skipped under CI (CI=$CI): install what they need (deploy/install-deps.sh)" >&2
       exit 1 ;;
  esac
fi

walk=$repo/../shared/acceptance/seed-walkthrough.sh
sections=$(grep -v '^#' "$repo/.ci/walkthrough-sections" 2>/dev/null | xargs || true)
if [ -f "$walk" ] && [ -n "$sections" ]; then
  echo "== acceptance walkthrough: $sections"
  BERTH_BIN=$target/release REPO=$repo bash "$walk" $sections
fi
# The same walkthrough driven by Debian's docker CLI through berth's Docker Engine API gateway.
docker_sections=$(grep -v '^#' "$repo/.ci/walkthrough-docker-sections" 2>/dev/null | xargs || true)
if [ -f "$walk" ] && [ -n "$docker_sections" ]; then
  echo "== acceptance walkthrough with the docker CLI through the gateway: $docker_sections"
  BERTH_BIN=$target/release WALK=$walk DOCKER_CLI=/usr/bin/docker integration/walkthrough-docker.sh $docker_sections
fi
