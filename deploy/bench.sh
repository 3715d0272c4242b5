#!/usr/bin/env bash
# berth's benchmark: berth beside containerd 1.6 + runc (Debian's) on this machine, in one run.
#   deploy/bench.sh            (as root, after a release build: cargo build --release)
#   deploy/bench.sh cri        only the Kubernetes CRI section (critest -benchmark, both CRIs)
# Prints medians and ratios. Timings live here, never in tests: these machines are noisy.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
SECTION=${1:-all}
case $SECTION in
  all | cri) ;;
  *) echo "usage: $0 [all|cri]   (cri: only the Kubernetes CRI section)" >&2; exit 2 ;;
esac
BIN=${BERTH_BIN:-$repo/target/release}
RUNS=${RUNS:-20}
W=$(mktemp -d /tmp/berth-bench.XXXXXX)
PIDS=()
cleanup() {
  cri_cleanup
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  pkill -9 -f "berth-shim --id .* --bundle $W" 2>/dev/null
  # the networked dockerd's bridge, and the FORWARD policy it may have changed
  ip link del bnchdk0 2>/dev/null
  [ -n "${FWD_POLICY:-}" ] && iptables -P FORWARD "$FWD_POLICY" 2>/dev/null
  grep " $W" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  berth_bridges_cleanup
  rm -rf "$W"
}
# drop_rules REGEX: the iptables rules (nat, filter) whose -S line matches REGEX.
drop_rules() {
  local t line
  for t in nat filter; do
    iptables -w 5 -t "$t" -S 2>/dev/null | grep '^-A ' | grep -E -- "$1" |
      while read -r line; do eval "iptables -w 5 -t $t -D ${line#-A }" 2>/dev/null; done
  done
}
# berth_bridges_cleanup: the default bridge each berthd of the run made at start, named after
# its root (services/runtime/src/network/records.rs: "bth" + FNV-1a of ROOT/runtime), and its rules.
berth_bridges_cleanup() {
  local r b
  for r in "$W"/*/root/runtime; do
    [ -d "$r" ] || continue
    b=$(python3 -c 'import sys
h = 0xcbf29ce484222325
for c in sys.argv[1].encode(): h = ((h ^ c) * 0x100000001b3) & (2**64 - 1)
print("bth%08x" % (h & 0xffffffff))' "$(readlink -f "$r")")
    ip link del "$b" 2>/dev/null
    drop_rules "berth:$b\b"
  done
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s%N; }
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin.read().split()]; print("%.3f" % statistics.median(v))'; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null; }
ratio() { python3 -c "print('%.2f' % ($1/$2))" 2>/dev/null || echo "?"; }

# start_registry DIR: a docker-registry storing under DIR on a free loopback port; sets REG_ADDR.
start_registry() {
  REG_ADDR=127.0.0.1:$(free_port)
  mkdir -p "$1"
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' "$1/data" "$REG_ADDR" > "$1/config.yml"
  docker-registry serve "$1/config.yml" >/dev/null 2>&1 & PIDS+=($!)
  for _ in $(seq 50); do curl -fs "http://$REG_ADDR/v2/" >/dev/null && break; sleep 0.1; done
}

# ---- The Kubernetes CRI section: critest 1.27.1's lifecycle benchmarks against berth's CRI and
# containerd 1.6's, each with the stand-in images of deploy/cri-images.sh from a registry of its
# own (mirrors of registry.k8s.io, gcr.io, docker.io), the same CNI network shape (bridge,
# host-local, portmap; no masquerade) on bridges and subnets of their own. Everything it makes
# is removed by cri_cleanup: pods, daemons, shims, bridges, iptables rules, CNI results.
CRI_TOOLS=${BERTH_CRI_TOOLS:-$repo/../shared/tools/cri}
CRI_SOCKS=()
CRI_NETS="bench-cri-berth bench-cri-ctrd"
CRI_BRIDGES="bnchcri-b0 bnchcri-c0 bnchcri-rt0"
CRI_SUBNETS="10.231.1. 10.231.2. 10.231.0."

# cri_conflist NAME BRIDGE SUBNET: the pod network both engines get (host-local leases under $W).
cri_conflist() {
  cat <<JSON
{"cniVersion": "1.0.0", "name": "$1", "plugins": [
  {"type": "bridge", "bridge": "$2", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$3"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$W/cri-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
}

# cri_berthd REGISTRY: a berthd serving the CRI on $W/cri-berth/state/cri.sock; sets BCRI_SOCK.
cri_berthd() {
  local d=$W/cri-berth r
  mkdir -p "$d/cni"
  cri_conflist bench-cri-berth bnchcri-b0 10.231.1.0/24 > "$d/cni/10-bench.conflist"
  { printf 'root = "%s/root"\nstate = "%s/state"\n' "$d" "$d"
    printf '[runtime]\nbridge = "bnchcri-rt0"\nbridge_subnet = "10.231.0.0/24"\n'
    printf '[cri]\nsocket = "%s/state/cri.sock"\ncni_conf_dir = "%s/cni"\n' "$d" "$d"
    for r in registry.k8s.io gcr.io docker.io; do printf '[registries."%s"]\nmirrors = ["http://%s"]\n' "$r" "$1"; done
  } > "$d/config.toml"
  "$BIN/berthd" --config "$d/config.toml" >"$d/log" 2>&1 & PIDS+=($!)
  BCRI_SOCK=$d/state/cri.sock
}

# cri_containerd REGISTRY: a containerd 1.6 with its CRI plugin as CRI.md describes it, on its own
# root/state/socket; sets CCRI_SOCK.
cri_containerd() {
  local d=$W/cri-ctrd r
  mkdir -p "$d/cni"
  cri_conflist bench-cri-ctrd bnchcri-c0 10.231.2.0/24 > "$d/cni/10-bench.conflist"
  { printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\n' "$d" "$d"
    printf '[grpc]\n  address = "%s/sock"\n[ttrpc]\n  address = "%s/sock.ttrpc"\n' "$d" "$d"
    printf '[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "registry.k8s.io/pause:3.6"\n'
    printf '  restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n'
    printf '[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/lib/cni"\n  conf_dir = "%s/cni"\n' "$d"
    for r in registry.k8s.io gcr.io docker.io; do
      printf '[plugins."io.containerd.grpc.v1.cri".registry.mirrors."%s"]\n  endpoint = ["http://%s"]\n' "$r" "$1"
    done
  } > "$d/config.toml"
  containerd --config "$d/config.toml" >"$d/log" 2>&1 & PIDS+=($!)
  CCRI_SOCK=$d/sock
}

crictl_at() { "$CRI_TOOLS_DIR/crictl" --runtime-endpoint "unix://$1" --image-endpoint "unix://$1" --timeout 60s "${@:2}"; }

# cri_ready SOCK LOG: the CRI answers and has the images critest uses (pulled before timing).
cri_ready() {
  local i
  for i in $(seq 100); do crictl_at "$1" version >/dev/null 2>&1 && break; sleep 0.1; done
  CRI_SOCKS+=("$1")
  for i in registry.k8s.io/pause:3.6 registry.k8s.io/e2e-test-images/busybox:1.29-2; do
    crictl_at "$1" pull "$i" >/dev/null 2>"$W/cri-pull.err" || { echo "pull of $i failed: $(tail -n 3 "$W/cri-pull.err") (log: $2)" >&2; return 1; }
  done
}

# cri_critest NAME SOCK: critest's pod and container lifecycle benchmarks; JSON in $W/cri-out/NAME.
cri_critest() {
  local out=$W/cri-out/$1
  mkdir -p "$out"
  (cd "$out" && TMPDIR=$out "$CRI_TOOLS_DIR/critest" --runtime-endpoint "unix://$2" --image-endpoint "unix://$2" \
    -benchmark --benchmarking-params-file "$W/cri-params.yaml" --benchmarking-output-dir "$out" \
    --ginkgo.no-color --ginkgo.focus 'benchmark about (lifecycle of PodSandbox|basic operations on Container)' \
    >"$out/critest.log" 2>&1) || echo "critest -benchmark against $1 failed: $(grep -m 3 -E '\[FAIL\]|FAIL!|rror' "$out/critest.log")" >&2
}

# cri_median FILE OP…: the median over critest's samples of the sum of the named operations' seconds.
cri_median() {
  python3 - "$@" <<'PY' 2>/dev/null
import json, statistics, sys
data = json.load(open(sys.argv[1]))
idx = [data["operationsNames"].index(op) for op in sys.argv[2:]]
print("%.3f" % statistics.median(sum(d["operationsDurationsNs"][i] for i in idx) / 1e9 for d in data["datapoints"]))
PY
}

bench_cri() {
  echo
  echo "== Kubernetes CRI: critest 1.27.1 -benchmark, median of $RUNS pods and $RUNS containers (one container per pod)"
  echo "   (each engine: pods on a CNI bridge of its own, no masquerade; images pulled before; containerd 1.6 + runc)"
  command -v containerd >/dev/null || { echo "containerd is not installed: the CRI section needs it"; return; }
  [ -x "$CRI_TOOLS/unpack" ] || { echo "crictl/critest are not at $CRI_TOOLS (BERTH_CRI_TOOLS)"; return; }
  CRI_TOOLS_DIR=$("$CRI_TOOLS/unpack" "$W/cri-tools" | tail -n 1)
  start_registry "$W/cri-reg"
  "$repo/deploy/cri-images.sh" "$REG_ADDR" >/dev/null 2>"$W/cri-images.err" || { echo "deploy/cri-images.sh failed: $(tail -n 3 "$W/cri-images.err")"; return; }
  printf 'podsNumber: %s\npodsNumberParallel: 1\ncontainersNumber: %s\ncontainersNumberParallel: 1\n' "$RUNS" "$RUNS" > "$W/cri-params.yaml"
  cri_berthd "$REG_ADDR"; cri_containerd "$REG_ADDR"
  cri_ready "$BCRI_SOCK" "$W/cri-berth/log" && cri_critest berth "$BCRI_SOCK"
  cri_ready "$CCRI_SOCK" "$W/cri-ctrd/log" && cri_critest containerd "$CCRI_SOCK"
  local e pod ctr lif
  for e in berth containerd; do
    pod=$(cri_median "$W/cri-out/$e/pod_benchmark_data.json" CreatePod)
    ctr=$(cri_median "$W/cri-out/$e/container_benchmark_data.json" CreateContainer StartContainer)
    lif=$(cri_median "$W/cri-out/$e/container_benchmark_data.json" StopContainer RemoveContainer)
    eval "cri_${e}_pod=\$pod cri_${e}_ctr=\$ctr"
    printf '%-11s pod start (RunPodSandbox): %s s   container start (Create+Start): %s s   stop+remove: %s s\n' \
      "$e" "${pod:-?}" "${ctr:-?}" "${lif:-?}"
  done
  if [ -n "${cri_berth_pod:-}" ] && [ -n "${cri_containerd_pod:-}" ]; then
    echo "berth/containerd: pod start $(ratio "$cri_berth_pod" "$cri_containerd_pod"), container start $(ratio "${cri_berth_ctr:-0}" "${cri_containerd_ctr:-1}")"
  fi
  echo "target (issue #15): berth/containerd <= 0.5 for pod and container start"
}

# cri_cleanup: every pod of both CRIs removed while their daemons still run, then what outlives
# the daemons: containerd's shims, the bridges, iptables rules naming them or their subnets, CNI
# results cached under /var/lib/cni for the section's networks.
cri_cleanup() {
  local s b p n
  for s in "${CRI_SOCKS[@]}"; do crictl_at "$s" rmp -fa >/dev/null 2>&1; done
  [ "${#CRI_SOCKS[@]}" -gt 0 ] || return 0
  for p in $(pgrep -f "containerd-shim-runc-v2 -namespace k8s.io .*-address $W/"); do kill -9 "$p" 2>/dev/null; done
  for b in $CRI_BRIDGES; do ip link del "$b" 2>/dev/null; done
  drop_rules "bnchcri-|$(echo "$CRI_SUBNETS" | sed 's/ /|/g; s/\./\\./g')"
  for n in $CRI_NETS; do rm -rf /var/lib/cni/results/"$n"-* /var/lib/cni/networks/"$n"; done
}
if [ "$SECTION" = cri ]; then bench_cri; exit 0; fi

# a registry, the busybox image and a big multi-layer image (6 layers of incompressible data)
start_registry "$W/reg"; REG=$REG_ADDR
"$repo/deploy/make-busybox-image.sh" "$W/busybox.tar" busybox:latest
skopeo copy -q "oci-archive:$W/busybox.tar" "docker://$REG/busybox:latest" --dest-tls-verify=false
BIG_MB=${BIG_MB:-72}
( cd "$W" && umoci init --layout big >/dev/null && umoci new --image big:img >/dev/null &&
  for i in 1 2 3 4 5 6; do
    umoci unpack --image big:img b >/dev/null && mkdir -p b/rootfs/data &&
    head -c "$((BIG_MB << 20))" /dev/urandom > "b/rootfs/data/layer$i" &&
    umoci repack --image big:img b >/dev/null && rm -rf b
  done ) || { echo "making the big image failed" >&2; exit 1; }
skopeo copy -q "oci:$W/big:img" "docker://$REG/big:latest" --dest-tls-verify=false
echo "big image: 6 layers, $((6 * BIG_MB)) MiB of incompressible data"

# berthd
mkdir -p "$W/berth"
printf 'root = "%s/root"\nstate = "%s/state"\n[gateway]\nsocket = "%s/state/docker.sock"\n' "$W/berth" "$W/berth" "$W/berth" > "$W/berth/config.toml"
"$BIN/berthd" --config "$W/berth/config.toml" >"$W/berth/log" 2>&1 & BPID=$!; PIDS+=($BPID)
B=("$BIN/berth" --address "unix://$W/berth/state/berth.sock")
for _ in $(seq 100); do "${B[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
berth_idle=$(rss_kb $BPID)

# containerd, on its own root/state/socket
have_ctr=0
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
  mkdir -p "$W/ctrd"
  cat > "$W/ctrd/config.toml" <<TOML
version = 2
root = "$W/ctrd/root"
state = "$W/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/ctrd/sock"
[ttrpc]
  address = "$W/ctrd/sock.ttrpc"
TOML
  containerd --config "$W/ctrd/config.toml" >"$W/ctrd/log" 2>&1 & CPID=$!; PIDS+=($CPID)
  C=(ctr -a "$W/ctrd/sock" -n bench)
  for _ in $(seq 100); do "${C[@]}" version >/dev/null 2>&1 && have_ctr=1 && break; sleep 0.1; done
  sleep 1
  ctr_idle=$(rss_kb $CPID)
fi

echo
echo "== pull + unpack of the big image from a local registry"
t0=$(now); "${B[@]}" pull -q "$REG/big:latest" >/dev/null || echo "berth pull failed" >&2; t1=$(now)
berth_pull=$(python3 -c "print('%.2f' % (($t1-$t0)/1e9))")
echo "berth pull:      ${berth_pull} s"
if [ $have_ctr = 1 ]; then
  t0=$(now); "${C[@]}" images pull --plain-http "$REG/big:latest" >/dev/null || echo "ctr pull failed" >&2; t1=$(now)
  ctr_pull=$(python3 -c "print('%.2f' % (($t1-$t0)/1e9))")
  echo "ctr pull:        ${ctr_pull} s   (berth/ctr = $(ratio "$berth_pull" "$ctr_pull"))"
fi

echo
echo "== run --rm IMAGE true, median of $RUNS (without a network, as ctr runs it: a namespace with only lo)"
"${B[@]}" pull -q "$REG/busybox:latest" >/dev/null
"${B[@]}" run --rm --network none "$REG/busybox:latest" true
for _ in $(seq "$RUNS"); do t0=$(now); "${B[@]}" run --rm --network none "$REG/busybox:latest" true; t1=$(now); echo $(((t1-t0)/1000)); done > "$W/berth.runs"
berth_run=$(awk '{print $1/1e6}' "$W/berth.runs" | median)
echo "berth run --rm:  ${berth_run} s"
if [ $have_ctr = 1 ]; then
  "${C[@]}" images pull --plain-http "$REG/busybox:latest" >/dev/null
  for i in $(seq "$RUNS"); do t0=$(now); "${C[@]}" run --rm "$REG/busybox:latest" "b$i" true; t1=$(now); echo $(((t1-t0)/1000)); done > "$W/ctr.runs"
  ctr_run=$(awk '{print $1/1e6}' "$W/ctr.runs" | median)
  echo "ctr run --rm:    ${ctr_run} s   (berth/ctr = $(ratio "$berth_run" "$ctr_run"))"
fi

echo
echo "== 20 detached containers started one after another (sleep 120; without a network, as ctr's)"
t0=$(now); for i in $(seq 20); do "${B[@]}" run -d --network none --name "d$i" "$REG/busybox:latest" sleep 120 >/dev/null; done; t1=$(now)
berth_20=$(python3 -c "print('%.2f' % (($t1-$t0)/1e9))")
echo "berth run -d x20: ${berth_20} s"
sleep 1
berth_rss20=$(rss_kb $BPID)
shim_total=0; shim_n=0
for f in "$W"/berth/state/tasks/default/*/shim.pid; do p=$(cat "$f"); r=$(rss_kb "$p"); [ -n "$r" ] && shim_total=$((shim_total + r)) && shim_n=$((shim_n + 1)); done
if [ $have_ctr = 1 ]; then
  t0=$(now); for i in $(seq 20); do "${C[@]}" run -d "$REG/busybox:latest" "d$i" sleep 120 >/dev/null; done; t1=$(now)
  ctr_20=$(python3 -c "print('%.2f' % (($t1-$t0)/1e9))")
  echo "ctr run -d x20:   ${ctr_20} s   (berth/ctr = $(ratio "$berth_20" "$ctr_20"))"
  sleep 1
  ctr_rss20=$(rss_kb $CPID)
  cshim_total=0; cshim_n=0
  for p in $(pgrep -f "containerd-shim.*-namespace bench"); do r=$(rss_kb "$p"); [ -n "$r" ] && cshim_total=$((cshim_total + r)) && cshim_n=$((cshim_n + 1)); done
fi

echo
echo "== memory"
echo "berthd idle RSS:        $((berth_idle / 1024)) MB (after start, nothing running)"
echo "berthd RSS, 20 running: $((berth_rss20 / 1024)) MB"
[ "$shim_n" -gt 0 ] && echo "berth-shim RSS:         $((shim_total / shim_n)) kB on average over $shim_n shims"
if [ $have_ctr = 1 ]; then
  echo "containerd idle RSS:        $((ctr_idle / 1024)) MB"
  echo "containerd RSS, 20 running: $((ctr_rss20 / 1024)) MB"
  [ "$cshim_n" -gt 0 ] && echo "containerd-shim RSS:        $((cshim_total / cshim_n)) kB on average over $cshim_n shims"
  for i in $(seq 20); do "${C[@]}" tasks kill -s KILL "d$i" >/dev/null 2>&1; done
  sleep 1
  for i in $(seq 20); do "${C[@]}" tasks rm "d$i" >/dev/null 2>&1; "${C[@]}" containers rm "d$i" >/dev/null 2>&1; done
fi
"${B[@]}" rm -f $(for i in $(seq 20); do echo "d$i"; done) >/dev/null 2>&1

# A second, empty registry to push to.
start_registry "$W/reg2"; REG2=$REG_ADDR

# Docker (Debian's docker.io), when it starts here: its own root, no bridge, no iptables.
have_docker=0
if [ "${BENCH_DOCKER:-1}" = 1 ] && command -v dockerd >/dev/null && command -v docker >/dev/null; then
  mkdir -p "$W/dk"
  dockerd --data-root "$W/dk/root" --exec-root "$W/dk/exec" -H "unix://$W/dk/docker.sock" -p "$W/dk/pid" \
    --insecure-registry 127.0.0.0/8 --iptables=false --bridge=none >"$W/dk/log" 2>&1 & PIDS+=($!)
  D=(docker -H "unix://$W/dk/docker.sock")
  for _ in $(seq 100); do "${D[@]}" version >/dev/null 2>&1 && have_docker=1 && break; sleep 0.2; done
fi

echo
echo "== push of the big image to an empty registry"
"${B[@]}" tag "$REG/big:latest" "$REG2/berth/big:1"
t0=$(now); "${B[@]}" push -q "$REG2/berth/big:1" >/dev/null || echo "berth push failed" >&2; t1=$(now)
berth_push=$(python3 -c "print('%.2f' % (($t1-$t0)/1e9))")
echo "berth push:      ${berth_push} s"
if [ $have_ctr = 1 ]; then
  "${C[@]}" images tag "$REG/big:latest" "$REG2/ctr/big:1" >/dev/null
  t0=$(now); "${C[@]}" images push --plain-http "$REG2/ctr/big:1" >/dev/null 2>&1 || echo "ctr push failed" >&2; t1=$(now)
  ctr_push=$(python3 -c "print('%.2f' % (($t1-$t0)/1e9))")
  echo "ctr push:        ${ctr_push} s   (berth/ctr = $(ratio "$berth_push" "$ctr_push"))"
fi
if [ $have_docker = 1 ]; then
  "${D[@]}" pull -q "$REG/big:latest" >/dev/null && "${D[@]}" tag "$REG/big:latest" "$REG2/docker/big:1"
  t0=$(now); "${D[@]}" push "$REG2/docker/big:1" >/dev/null 2>&1 || echo "docker push failed" >&2; t1=$(now)
  docker_push=$(python3 -c "print('%.2f' % (($t1-$t0)/1e9))")
  echo "docker push:     ${docker_push} s   (berth/docker = $(ratio "$berth_push" "$docker_push"))"
fi

echo
echo "== commit of a container with an 8 MiB change, median of 5"
"${B[@]}" run --name cm "$REG/busybox:latest" sh -c 'head -c 8388608 /dev/urandom > /blob' >/dev/null
for i in 1 2 3 4 5; do t0=$(now); "${B[@]}" commit cm "bench/commit:$i" >/dev/null; t1=$(now); echo $(((t1-t0)/1000)); done > "$W/berth.commits"
berth_commit=$(awk '{print $1/1e6}' "$W/berth.commits" | median)
echo "berth commit:    ${berth_commit} s"
if [ $have_docker = 1 ]; then
  "${D[@]}" pull -q "$REG/busybox:latest" >/dev/null
  "${D[@]}" run --network none --name cm "$REG/busybox:latest" sh -c 'head -c 8388608 /dev/urandom > /blob' >/dev/null
  for i in 1 2 3 4 5; do t0=$(now); "${D[@]}" commit cm "bench/commit:$i" >/dev/null; t1=$(now); echo $(((t1-t0)/1000)); done > "$W/docker.commits"
  docker_commit=$(awk '{print $1/1e6}' "$W/docker.commits" | median)
  echo "docker commit:   ${docker_commit} s   (berth/docker = $(ratio "$berth_commit" "$docker_commit"))"
  "${D[@]}" rm -f cm >/dev/null 2>&1
fi
"${B[@]}" rm -f cm >/dev/null 2>&1

echo
LINK_MBPS=${LINK_MBPS:-100}
echo "== pull + unpack of the big image through a registry-proxy mirror (another berthd), cold then warm"
echo "   (upstream behind deploy/slowlink.py at $LINK_MBPS MB/s, standing for a registry across a network)"
lport=$(free_port); LINK=127.0.0.1:$lport
python3 "$repo/deploy/slowlink.py" "$lport" "$REG" "$LINK_MBPS" & PIDS+=($!)
pport=$(free_port)
mkdir -p "$W/proxy" "$W/q0" "$W/q1" "$W/q2"
printf 'root = "%s/root"\nstate = "%s/state"\n[registry_proxy]\nlisten = "127.0.0.1:%s"\n' "$W/proxy" "$W/proxy" "$pport" > "$W/proxy/config.toml"
"$BIN/berthd" --config "$W/proxy/config.toml" >"$W/proxy/log" 2>&1 & PIDS+=($!)
printf 'root = "%s/root"\nstate = "%s/state"\n' "$W/q0" "$W/q0" > "$W/q0/config.toml"
for q in q1 q2; do
  printf 'root = "%s/root"\nstate = "%s/state"\n[registries."%s"]\nmirrors = ["http://127.0.0.1:%s"]\n' "$W/$q" "$W/$q" "$LINK" "$pport" > "$W/$q/config.toml"
done
for q in q0 q1 q2; do "$BIN/berthd" --config "$W/$q/config.toml" >"$W/$q/log" 2>&1 & PIDS+=($!); done
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$pport/v2/" >/dev/null && break; sleep 0.1; done
Q0=("$BIN/berth" --address "unix://$W/q0/state/berth.sock")
Q1=("$BIN/berth" --address "unix://$W/q1/state/berth.sock"); Q2=("$BIN/berth" --address "unix://$W/q2/state/berth.sock")
for _ in $(seq 100); do "${Q0[@]}" version >/dev/null 2>&1 && "${Q1[@]}" version >/dev/null 2>&1 && "${Q2[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
timed() { local t0 t1; t0=$(now); "$@" >/dev/null || echo "failed: $*" >&2; t1=$(now); python3 -c "print('%.2f' % (($t1-$t0)/1e9))"; }
direct=$(timed "${Q0[@]}" pull -q "$LINK/big:latest")
cold=$(timed "${Q1[@]}" pull -q "$LINK/big:latest")
warm=$(timed "${Q2[@]}" pull -q "$LINK/big:latest")
echo "over the link, no proxy: ${direct} s"
echo "through the proxy, cold: ${cold} s   warm: ${warm} s   (warm/cold = $(ratio "$warm" "$cold"))"
echo "blobs in the proxy's cache: $(ls "$W/proxy/root/registry-proxy/blobs/sha256" 2>/dev/null | wc -l) (the big image has 8: 6 layers, config, manifest)"

echo
echo "== build of a seed-like Dockerfile, cold and cached, median of ${BUILD_RUNS:-5}"
# The walkthrough's shape: a base from the registry, config steps, one RUN, WORKDIR, ADD of a
# file (1 MiB standing for a static binary) and of a tar.gz that is unpacked.
BRUNS=${BUILD_RUNS:-5}
mkdir -p "$W/bctx/arch/etc"
head -c 1048576 /dev/urandom > "$W/bctx/app"
echo "bench" > "$W/bctx/arch/etc/motd"
tar -czf "$W/bctx/data.tar.gz" -C "$W/bctx/arch" etc && rm -rf "$W/bctx/arch"
cat > "$W/bctx/Dockerfile" <<DOCKERFILE
FROM $REG/busybox:latest
LABEL org.example.bench=yes
ENV GREETING=hello
RUN echo built > /built.txt
WORKDIR /app
ADD app /app/
ADD data.tar.gz /app/data/
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /built.txt"]
DOCKERFILE
# Median seconds of N runs of a command; nothing (and the error) when it fails.
tmedn() {
  local n=$1 i t0 t1; shift; : > "$W/tmed"
  for i in $(seq "$n"); do
    t0=$(now); "$@" >/dev/null 2>"$W/tmed.err" || { echo "failed: $*: $(tail -n 3 "$W/tmed.err")" >&2; return 1; }; t1=$(now)
    echo $(((t1-t0)/1000)) >> "$W/tmed"
  done
  awk '{print $1/1e6}' "$W/tmed" | median
}
# Median seconds of BRUNS runs of a command; nothing (and the error) when it fails.
tmed() { tmedn "$BRUNS" "$@"; }
# Each builder has the base image before it is timed: the figures are about building.
# RUN steps on the host network, as docker's below (its dockerd has no bridge).
"${B[@]}" build -q --network host -t bench/build "$W/bctx" >/dev/null || echo "berth build failed" >&2
berth_bcold=$(tmed "${B[@]}" build -q --network host --no-cache -t bench/build "$W/bctx")
berth_bwarm=$(tmed "${B[@]}" build -q --network host -t bench/build "$W/bctx")
echo "berth build:           cold ${berth_bcold} s   cached ${berth_bwarm} s"
if [ $have_docker = 1 ]; then
  "${D[@]}" pull -q "$REG/busybox:latest" >/dev/null
  # No bridge here: RUN steps use the host network.
  dk=(env DOCKER_BUILDKIT=0 "${D[@]}" build -q --network host -t bench/build "$W/bctx")
  if "${dk[@]}" >/dev/null 2>"$W/dk.err"; then
    dk_bcold=$(tmed "${dk[@]:0:$((${#dk[@]} - 1))}" --no-cache "$W/bctx")
    dk_bwarm=$(tmed "${dk[@]}")
    echo "docker build (classic): cold ${dk_bcold} s   cached ${dk_bwarm} s   (berth/docker = $(ratio "$berth_bcold" "$dk_bcold") cold, $(ratio "$berth_bwarm" "$dk_bwarm") cached)"
  else
    echo "docker build (classic) failed: $(tail -n 3 "$W/dk.err")"
  fi
  bk=(env DOCKER_BUILDKIT=1 "${D[@]}" build -q --network host -t bench/buildkit "$W/bctx")
  if "${bk[@]}" >/dev/null 2>"$W/bk.err"; then
    bk_bcold=$(tmed "${bk[@]:0:$((${#bk[@]} - 1))}" --no-cache "$W/bctx")
    bk_bwarm=$(tmed "${bk[@]}")
    echo "docker build (BuildKit): cold ${bk_bcold} s   cached ${bk_bwarm} s   (berth/BuildKit = $(ratio "$berth_bcold" "$bk_bcold") cold, $(ratio "$berth_bwarm" "$bk_bwarm") cached)"
  else
    echo "docker build (BuildKit) does not work with this dockerd: $(tail -n 3 "$W/bk.err")"
  fi
fi
echo "targets (issue #5): berth cold <= BuildKit cold; berth cached <= docker's cached"

echo
echo "== run --rm IMAGE true with a network, median of $RUNS (each engine on its default bridge, then --network none)"
"${B[@]}" run --rm "$REG/busybox:latest" true
berth_bridge=$(tmedn "$RUNS" "${B[@]}" run --rm "$REG/busybox:latest" true)
berth_none=$(tmedn "$RUNS" "${B[@]}" run --rm --network none "$REG/busybox:latest" true)
echo "berth run --rm:                  ${berth_bridge} s   --network none: ${berth_none} s"
# A dockerd with its bridge and iptables on, on a bridge of its own (removed at the end).
if [ "${BENCH_DOCKER:-1}" = 1 ] && command -v dockerd >/dev/null; then
  FWD_POLICY=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/{print $3}')
  ip link add bnchdk0 type bridge && ip addr add 10.78.255.1/24 dev bnchdk0 && ip link set bnchdk0 up
  mkdir -p "$W/dkn"
  dockerd --data-root "$W/dkn/root" --exec-root "$W/dkn/exec" -H "unix://$W/dkn/docker.sock" -p "$W/dkn/pid" \
    --insecure-registry 127.0.0.0/8 --bridge bnchdk0 >"$W/dkn/log" 2>&1 & PIDS+=($!)
  DN=(docker -H "unix://$W/dkn/docker.sock")
  for _ in $(seq 100); do "${DN[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
  if "${DN[@]}" pull -q "$REG/busybox:latest" >/dev/null 2>&1 && "${DN[@]}" run --rm "$REG/busybox:latest" true; then
    dk_bridge=$(tmedn "$RUNS" "${DN[@]}" run --rm "$REG/busybox:latest" true)
    dk_none=$(tmedn "$RUNS" "${DN[@]}" run --rm --network none "$REG/busybox:latest" true)
    echo "docker run --rm:                 ${dk_bridge} s   --network none: ${dk_none} s   (berth/docker = $(ratio "$berth_bridge" "$dk_bridge") bridge, $(ratio "$berth_none" "$dk_none") none)"
  else
    echo "docker with a bridge does not work here: $(tail -n 3 "$W/dkn/log")"
  fi
  # The same docker CLI through berth's Docker Engine API gateway (issue 14: <= 0.5 of dockerd's).
  G=(docker -H "unix://$W/berth/state/docker.sock")
  if [ -n "${dk_bridge:-}" ] && "${G[@]}" run --rm "$REG/busybox:latest" true >/dev/null 2>"$W/gw.err"; then
    gw_bridge=$(tmedn "$RUNS" "${G[@]}" run --rm "$REG/busybox:latest" true)
    echo "docker run --rm via berth's gateway: ${gw_bridge} s   (gateway/dockerd = $(ratio "$gw_bridge" "$dk_bridge"); target <= 0.5)"
  else
    echo "docker run --rm through berth's gateway failed: $(tail -n 3 "$W/gw.err")"
  fi
fi
if command -v podman >/dev/null; then
  PM=(podman --root "$W/pm/root" --runroot "$W/pm/run")
  if "${PM[@]}" pull -q --tls-verify=false "$REG/busybox:latest" >/dev/null 2>&1 && "${PM[@]}" run --rm "$REG/busybox:latest" true >/dev/null 2>&1; then
    pm_bridge=$(tmedn "$RUNS" "${PM[@]}" run --rm "$REG/busybox:latest" true)
    pm_none=$(tmedn "$RUNS" "${PM[@]}" run --rm --network none "$REG/busybox:latest" true)
    echo "podman run --rm:                 ${pm_bridge} s   --network none: ${pm_none} s   (berth/podman = $(ratio "$berth_bridge" "$pm_bridge") bridge)"
  else
    echo "podman does not run here"
  fi
fi
echo "target (issue #6): berth run --rm on its bridge <= half of docker's"

bench_cri
