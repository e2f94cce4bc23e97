#!/usr/bin/env bash
# Launch a federated training run on the consortium: ./run-app.sh /path/to/fedecg [extra `flwr run` options]
# e.g. ./run-app.sh ~/fedecg --run-config 'scenario="simulations/scenarios/ptbxl-sites.yaml" run-dir="/srv/runs/r1" mode="deployment"'
# Submits the run, follows its log until it ends, then exits 0 only if it completed: `flwr run` alone exits 0
# even when the run fails later, so the SuperLink's run status and the run directory's status.json are checked
# (python -m deploy.runstatus; what failed is printed). Ctrl-C stops following the log, not the run.
set -euo pipefail
HERE="$$(cd "$$(dirname "$$0")" && pwd)"
APP_DIR="$${1:?usage: run-app.sh /path/to/fedecg-project [flwr run options]}"
shift
export FLWR_HOME="$$HERE/flwr-home"
export FLWR_TELEMETRY_ENABLED=0
PYTHON="$${FEDECG_PYTHON:-python}"
"$$HERE/write-flwr-config.sh"
SUBMITTED="$$(flwr run "$$APP_DIR" $connection --format json "$$@")" || {
  echo "error: flwr run failed: $$SUBMITTED" >&2; exit 1; }
RUN_ID="$$(printf '%s\n' "$$SUBMITTED" | "$$PYTHON" -m deploy.runstatus run-id)" || exit 1
echo "run $$RUN_ID submitted; following its log (flwr log $$RUN_ID $connection)"
flwr log "$$RUN_ID" $connection --stream || true
exec "$$PYTHON" -m deploy.runstatus check --connection $connection --run-id "$$RUN_ID" -- "$$@"
