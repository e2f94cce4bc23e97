#!/usr/bin/env bash
# Launch a federated training run on the consortium: ./run-app.sh /path/to/fedecg [extra `flwr run` options]
# e.g. ./run-app.sh ~/fedecg --run-config 'scenario="simulations/scenarios/ptbxl-sites.yaml" run-dir="/srv/runs/r1" mode="deployment"'
set -euo pipefail
HERE="$$(cd "$$(dirname "$$0")" && pwd)"
APP_DIR="$${1:?usage: run-app.sh /path/to/fedecg-project [flwr run options]}"
shift
export FLWR_HOME="$$HERE/flwr-home"
export FLWR_TELEMETRY_ENABLED=0
"$$HERE/write-flwr-config.sh"
flwr run "$$APP_DIR" $connection --stream "$$@"
