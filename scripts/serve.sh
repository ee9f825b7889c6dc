#!/usr/bin/env bash
# `make serve`: a local Prefect server, the deployments of prefect.yaml, and a process worker.
# Stops the server when the worker stops (Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
HOST=${PREFECT_SERVER_HOST:-127.0.0.1}
PORT=${PORT:-4200}
export IEIW_WORK_POOL=${IEIW_WORK_POOL:-ieiw-local}
export IEIW_REPO=${IEIW_REPO:-$(pwd -P)}   # where deployed runs execute (prefect.yaml pull step)
export PREFECT_API_URL="http://$HOST:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}

"$BIN/prefect" server start --host "$HOST" --port "$PORT" &
server=$!
trap 'kill -INT $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen('$PREFECT_API_URL/health', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 $server 2>/dev/null || { echo "prefect server exited; see the log above" >&2; exit 1; }
  sleep 0.5
done
"$BIN/prefect" work-pool inspect "$IEIW_WORK_POOL" >/dev/null 2>&1 \
  || "$BIN/prefect" work-pool create "$IEIW_WORK_POOL" --type process
"$BIN/prefect" --no-prompt deploy --all
cat <<MSG

Prefect UI: http://$HOST:$PORT   work pool: $IEIW_WORK_POOL
In another shell:
  export PREFECT_API_URL=$PREFECT_API_URL
  $BIN/prefect deployment run 'build-ieiw/demo' --watch
MSG
"$BIN/prefect" worker start --pool "$IEIW_WORK_POOL"
