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
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
exec flower-supernode \
  --superlink "$$SUPERLINK" \
  --root-certificates "$$HERE/ca.crt" \
  --auth-supernode-private-key "$$HERE/supernode.key" \
  --node-config "data-dir='$$DATA_DIR' site-name='$$SITE'" \
  --port "$${SUPERNODE_RUNTIME_PORT:-9094}"
