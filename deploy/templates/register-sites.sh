#!/usr/bin/env bash
# Register every site's public key with the running SuperLink (run once, on the coordinator machine).
# A SuperNode whose key is not registered is refused by the SuperLink.
set -euo pipefail
HERE="$$(cd "$$(dirname "$$0")" && pwd)"
export FLWR_HOME="$$HERE/flwr-home"
export FLWR_TELEMETRY_ENABLED=0
"$$HERE/write-flwr-config.sh"
for site in $${SITES:-$sites}; do
  flwr supernode register "$$HERE/site-keys/$$site.pub" $connection --name "$$site"
done
flwr supernode list $connection
