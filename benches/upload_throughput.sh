#!/usr/bin/env bash
# Upload throughput and memory: N concurrent chunked uploads of SIZE bytes each
# (POST, then PATCH with Transfer-Encoding: chunked, then PUT ?digest=) sent
#   A) straight to a registry node over plain HTTP, and
#   B) through registry-edge over TLS (HTTP/1.1) to the same node,
# alternating A/B for REPS rounds; prints medians, the ratio B/A and the edge's peak RSS.
#
#   benches/upload_throughput.sh [N=8] [SIZE_MIB=256] [REPS=3]
# Registry data goes to /dev/shm when it exists, so the disk is not what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-8}
SIZE_MIB=${2:-256}
REPS=${3:-3}

scripts/install-deps
cargo build --release --bin registry-edge
edge_bin=$PWD/target/release/registry-edge

base=/tmp
[ -d /dev/shm ] && base=/dev/shm
work=$(mktemp -d "$base/registry-edge-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
reg_port=$(free_port); tls_port=$(free_port)

"$edge_bin" gen-certs --dir "$work/certs" --host localhost >/dev/null
cat >"$work/registry.yml" <<YAML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/data } }
http: { addr: 127.0.0.1:$reg_port, secret: bench }
YAML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
cat >"$work/edge.yaml" <<YAML
server: { https_listen: ["127.0.0.1:$tls_port"], http_listen: [], threads: 2, shutdown_grace: 1s }
tls: { certificates: [ { cert: certs/tls.crt, key: certs/tls.key } ] }
upstream: { nodes: ["127.0.0.1:$reg_port"], health_check: { interval: 1s } }
YAML
REGISTRY_EDGE_LOG=warn "$edge_bin" run --config "$work/edge.yaml" >"$work/edge.log" 2>&1 &
edge_pid=$!
pids+=($edge_pid)

ca=$work/certs/tls.crt
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" "https://127.0.0.1:$tls_port/v2/")" = 200 ] && break
  sleep 0.1
done

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/blob"
digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$edge_pid/status")

# One upload: POST, chunked PATCH from a pipe, PUT with the digest. $1 = base URL, $2 = repo.
upload() {
  local url=$1 repo=$2 loc
  loc=$(curl -sS --cacert "$ca" -X POST -D - -o /dev/null "$url/v2/$repo/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  loc=$(cat "$work/blob" | curl -sS --cacert "$ca" -X PATCH -T - -H 'Content-Type: application/octet-stream' \
    -D - -o /dev/null "$loc" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  [ "$(curl -sS --cacert "$ca" -X PUT -o /dev/null -w '%{http_code}' "$loc&digest=$digest")" = 201 ] || { echo "upload failed" >&2; return 1; }
}

run() { # $1 = base URL, $2 = round label; prints aggregate MB/s
  local start end i failed=0 up=()
  start=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    upload "$1" "bench/$2-u$i" &
    up+=($!)
  done
  for p in "${up[@]}"; do wait "$p" || failed=1; done
  end=$(date +%s.%N)
  [ "$failed" = 0 ] || { echo "an upload failed in round $2" >&2; exit 1; }
  awk -v n="$N" -v s="$SIZE_MIB" -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", n * s * 1.048576 / (b - a) }'
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

direct=(); edge=()
for r in $(seq 1 "$REPS"); do
  direct+=("$(run "http://127.0.0.1:$reg_port" "direct$r")")
  edge+=("$(run "https://127.0.0.1:$tls_port" "edge$r")")
done
d=$(printf '%s\n' "${direct[@]}" | median)
e=$(printf '%s\n' "${edge[@]}" | median)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$edge_pid/status")

mkdir -p benches/results
tee benches/results/upload.md <<TABLE
Measured $(date -u +%Y-%m-%d) with \`benches/upload_throughput.sh $N $SIZE_MIB $REPS\`.

| $N concurrent chunked uploads x $SIZE_MIB MiB ($(nproc) cores, medians of $REPS) | value |
|---|---|
| direct to registry (plain HTTP), MB/s | $d (runs: ${direct[*]}) |
| through registry-edge (TLS h1), MB/s | $e (runs: ${edge[*]}) |
| ratio edge / direct | $(awk -v e="$e" -v d="$d" 'BEGIN { printf "%.2f", e / d }') |
| edge RSS idle -> peak (VmHWM), MiB | $(awk -v i="$idle_rss" -v h="$hwm" 'BEGIN { printf "%.1f -> %.1f", i/1024, h/1024 }') |
| bytes through the edge / edge peak RSS | $(awk -v n="$N" -v s="$SIZE_MIB" -v r="$REPS" -v h="$hwm" 'BEGIN { printf "%.0fx", n*s*r*1024 / h }') |
TABLE
