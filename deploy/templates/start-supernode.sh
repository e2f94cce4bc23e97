#!/usr/bin/env bash
# Start this hospital's Flower SuperNode for site "$site" (TLS to the SuperLink + SuperNode authentication).
# Usage: ./start-supernode.sh /path/to/local/ptbxl-folder     (or set DATA_DIR in site.env)
set -euo pipefail
HERE="$$(cd "$$(dirname "$$0")" && pwd)"
# shellcheck source=/dev/null
. "$$HERE/site.env"
DATA_DIR="$${1:-$${DATA_DIR:-}}"
if [ -z "$$DATA_DIR" ]; then
  echo "usage: $$0 /path/to/local/ptbxl-folder (a PTB-XL-layout folder with ptbxl_database.csv)" >&2
  exit 2
fi
if [ ! -f "$$DATA_DIR/ptbxl_database.csv" ]; then
  echo "error: $$DATA_DIR has no ptbxl_database.csv (expected a PTB-XL-layout folder)" >&2
  exit 2
fi
DATA_DIR="$$(cd "$$DATA_DIR" && pwd)"
case "$$DATA_DIR" in *\'*|*\"*) echo "error: the data folder path must not contain quotes" >&2; exit 2;; esac
# the site's own privacy policy (site.env), enforced by the ClientApp whatever the server asks
NODE_CONFIG="data-dir='$$DATA_DIR' site-name='$$SITE' dp-required=$${DP_REQUIRED:-true} privacy-unit='$${PRIVACY_UNIT:-patient}'"
NODE_CONFIG="$$NODE_CONFIG delta=$${PRIVACY_DELTA:-1e-5} min-noise-multiplier=$${MIN_NOISE_MULTIPLIER:-0.5}"
NODE_CONFIG="$$NODE_CONFIG max-epsilon-run=$${MAX_EPSILON_RUN:-10} max-epsilon-lifetime=$${MAX_EPSILON_LIFETIME:-20}"
NODE_CONFIG="$$NODE_CONFIG max-local-steps=$${MAX_LOCAL_STEPS:-200} min-batch=$${MIN_BATCH:-1} max-batch=$${MAX_BATCH:-1024}"
if [ -n "$${PRIVACY_POLICY:-}" ]; then
  case "$$PRIVACY_POLICY" in *\'*|*\"*) echo "error: the policy file path must not contain quotes" >&2; exit 2;; esac
  NODE_CONFIG="$$NODE_CONFIG privacy-policy='$$PRIVACY_POLICY'"
fi
# check the policy before joining (prints what this site enforces; a bad key or value stops here)
if command -v fedecg >/dev/null 2>&1; then
  fedecg privacy policy --node-config "$$NODE_CONFIG" || { echo "error: invalid privacy policy in site.env" >&2; exit 2; }
fi
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_SUPEREXEC_TASK_POLL_INTERVAL="$${FLWR_SUPEREXEC_TASK_POLL_INTERVAL:-0.2}"
export FEDECG_SUPERNODE_IDLE_POLL_S="$${FEDECG_SUPERNODE_IDLE_POLL_S:-3}"
PYTHON="$${FEDECG_PYTHON:-python}"
# the resident site worker, supervised (restarted when it dies) and stopped with this SuperNode (same PID after exec)
if [ "$${SITE_WORKER:-true}" = "true" ]; then
  WORKER_SOCKET="$${WORKER_SOCKET:-$$HERE/run/worker.sock}"
  case "$$WORKER_SOCKET" in *\'*|*\"*|*" "*) echo "error: the worker socket path must not contain quotes or blanks" >&2; exit 2;; esac
  mkdir -p -m 0700 "$$(dirname "$$WORKER_SOCKET")"
  "$$PYTHON" -m deploy.worker supervise --socket "$$WORKER_SOCKET" --node-config "$$NODE_CONFIG" --parent-pid $$$$ \
    --log "$${WORKER_LOG:-$$HERE/worker.log}" &
  NODE_CONFIG="$$NODE_CONFIG worker-socket='$$WORKER_SOCKET'"
fi
SUPERNODE=(flower-supernode)
if [ "$$FEDECG_SUPERNODE_IDLE_POLL_S" != "3" ]; then
  SUPERNODE=("$$PYTHON" -m deploy.supernode)  # Flower's SuperNode, idle back-off FEDECG_SUPERNODE_IDLE_POLL_S
fi
exec "$${SUPERNODE[@]}" \
  --superlink "$$SUPERLINK" \
  --root-certificates "$$HERE/ca.crt" \
  --auth-supernode-private-key "$$HERE/supernode.key" \
  --node-config "$$NODE_CONFIG" \
  --port "$${SUPERNODE_RUNTIME_PORT:-9094}"
