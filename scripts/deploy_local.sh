#!/usr/bin/env bash
# A real Flower deployment on one machine: 1 SuperLink + N SuperNodes (node i serves Spry
# client i, `--node-config partition-id=i`), then one Spry job submitted with `flwr run`.
#
#   scripts/deploy_local.sh [--nodes N] [--config FILE] [--data-files PATTERN] [-- key=value ...]
#   scripts/deploy_local.sh --nodes 3 -- num_clients=3 clients_per_round=3 rounds=2
#   scripts/deploy_local.sh --nodes 2 --data-files 'site{i}.csv' -- client_data=node \
#       num_clients=2 label_names=neg,pos
#
# --data-files: node i reads its own file, PATTERN with {i} replaced by i
# (`--node-config 'partition-id=i data-file="..."'`), for client_data=node.
# num_clients must equal the number of SuperNodes (the default config has 2 clients).
# Everything runs on loopback without TLS (--insecure); on real machines start the same
# processes with certificates and point each SuperNode at the SuperLink's address.
# Environment: FLWR_HOME (default: a fresh temporary directory), SPRY_PORT_BASE (default
# 9190; the SuperLink listens on it, SuperNode i on SPRY_PORT_BASE + 1 + i).
# All processes started here are stopped on exit; logs are kept in $FLWR_HOME/logs.
set -euo pipefail

nodes=3
config=""
data_files=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --config) config="$(realpath "$2")"; shift 2 ;;
    --data-files) data_files="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--nodes N] [--config FILE] [--data-files PATTERN] [-- key=value ...]" >&2
       exit 2 ;;
  esac
done
overrides="$*"

repo="$(cd "$(dirname "$0")/.." && pwd)"
export FLWR_HOME="${FLWR_HOME:-$(mktemp -d -t spry-flwr-XXXXXX)}"
# Use this environment as it is: no per-run `uv sync` (it would pull another torch).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
base="${SPRY_PORT_BASE:-9190}"
logs="$FLWR_HOME/logs"
mkdir -p "$logs"

# Each Flower process starts in its own process group (setsid), so the SuperExec and app
# processes it spawns are stopped with it: the script returns only when all are gone.
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

setsid flower-superlink --insecure --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "$base" --database ":flwr-in-memory:" \
  >"$logs/superlink.log" 2>&1 &
pids+=($!)

for ((i = 0; i < nodes; i++)); do
  node_config="partition-id=$i num-partitions=$nodes"
  if [[ -n "$data_files" ]]; then
    node_config+=" data-file=\"$(realpath "${data_files//\{i\}/$i}")\""
  fi
  setsid flower-supernode --insecure --superlink "127.0.0.1:$base" \
    --node-config "$node_config" \
    --host 127.0.0.1 --port "$((base + 1 + i))" \
    >"$logs/supernode-$i.log" 2>&1 &
  pids+=($!)
done

# Where `flwr run` finds this SuperLink.
cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "spry-local"

[superlink.spry-local]
address = "127.0.0.1:$base"
insecure = true
EOF

# The run config as a TOML file: JSON strings are valid TOML strings.
python - "$FLWR_HOME/run-config.toml" "$config" "$overrides" <<'EOF'
import json, sys
path, config, overrides = sys.argv[1:]
with open(path, "w") as f:
    if config:
        f.write(f"config = {json.dumps(config)}\n")
    f.write(f"overrides = {json.dumps(overrides)}\n")
EOF

# Wait for the SuperLink to accept connections, then submit the job and stream its logs
# until it finishes.
for _ in $(seq 60); do
  (exec 3<>"/dev/tcp/127.0.0.1/$base") 2>/dev/null && break
  sleep 0.5
done
cd "$repo"
flwr run . spry-local --run-config "$FLWR_HOME/run-config.toml" --stream
