#!/usr/bin/env bash
# Start the consortium's Flower SuperLink on the coordinator machine: HTTPS on port $port (Fleet, Control and
# Runtime APIs share it in Flower 1.41), SuperNode authentication on, state kept in state/superlink.db.
set -euo pipefail
HERE="$$(cd "$$(dirname "$$0")" && pwd)"
mkdir -p "$$HERE/state"
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
exec flower-superlink \
  --ssl-ca-certfile "$$HERE/superlink/ca.crt" \
  --ssl-certfile "$$HERE/superlink/server.crt" \
  --ssl-keyfile "$$HERE/superlink/server.key" \
  --enable-supernode-auth \
  --host "$${SUPERLINK_BIND:-0.0.0.0}" \
  --port "$${SUPERLINK_PORT:-$port}" \
  --database "$$HERE/state/superlink.db" \
  --disable-runtime-dependency-installation
