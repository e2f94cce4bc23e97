#!/usr/bin/env bash
# (Re)write flwr-home/config.toml with absolute paths (Flower needs an absolute root-certificates path).
set -euo pipefail
HERE="$$(cd "$$(dirname "$$0")" && pwd)"
mkdir -p "$$HERE/flwr-home"
cat > "$$HERE/flwr-home/config.toml" <<TOML
[superlink]
default = "$connection"

[superlink.$connection]
address = "$${SUPERLINK_ADDRESS:-$address}"
root-certificates = "$$HERE/superlink/ca.crt"
TOML
