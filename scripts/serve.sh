#!/usr/bin/env bash
# `make serve`: a local Prefect server, the deployments of prefect.yaml, and a process worker.
# Ctrl-C stops the worker first, then the server, within a few seconds and without tracebacks.
# With PREFECT_API_URL already set (a server of your own), no server is started: this deploys to it and
# starts a worker against it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
HOST=${PREFECT_SERVER_HOST:-127.0.0.1}
PORT=${PORT:-4200}
export IEIW_WORK_POOL=${IEIW_WORK_POOL:-ieiw-local}
export IEIW_REPO=${IEIW_REPO:-$(pwd -P)}   # where deployed runs execute (prefect.yaml pull step)
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}

server=""
worker=""
auth_file=""

# Wait up to $2 seconds (in tenths) for process $1 to exit; true if it did.
exited_within() {
  local pid=$1 tenths=$2
  for _ in $(seq 1 "$tenths"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  ! kill -0 "$pid" 2>/dev/null
}

stop_all() {
  trap - INT TERM EXIT
  if [ -n "$worker" ]; then
    # On Ctrl-C the worker had the terminal's SIGINT already; a second one makes Prefect kill its runs.
    exited_within "$worker" 20 || { kill -INT "$worker" 2>/dev/null; exited_within "$worker" 30; } \
      || { kill -TERM "$worker" 2>/dev/null; exited_within "$worker" 10; } || kill -KILL "$worker" 2>/dev/null || true
  fi
  if [ -n "$server" ]; then                   # the server last, so the worker never loses it mid-shutdown
    kill -INT -- "-$server" 2>/dev/null || true
    exited_within "$server" 30 || kill -KILL -- "-$server" 2>/dev/null || true
  fi
  echo "ieiw serve: stopped" >&2
}
trap 'stop_all; exit 130' INT TERM
trap 'stop_all' EXIT

healthy() {
  "$BIN/python" -c "import urllib.request; urllib.request.urlopen('$PREFECT_API_URL/health', timeout=1)" 2>/dev/null
}

if [ -n "${PREFECT_API_URL:-}" ]; then
  healthy || { echo "PREFECT_API_URL=$PREFECT_API_URL does not answer; unset it to start a local server" >&2; exit 1; }
  echo "ieiw serve: using the Prefect server at $PREFECT_API_URL"
else
  export PREFECT_API_URL="http://$HOST:$PORT/api"
  # Prefect's defaults are for a laptop alone: no auth, any origin, no CSRF token; then any web page open in
  # a browser here, or any local user, could start flow runs that the worker executes. So the server asks for
  # an auth string (made once, kept 0600 under PREFECT_HOME, read by the worker and the CLI), answers its
  # own origin only, and wants Prefect's CSRF token on every change (Prefect's client fetches it).
  auth_file="${PREFECT_HOME:-$HOME/.prefect}/serve-auth"
  if [ ! -s "$auth_file" ]; then
    mkdir -p "$(dirname "$auth_file")"
    (umask 077; "$BIN/python" -c "import secrets; print('ieiw:' + secrets.token_hex(24))" > "$auth_file")
    echo "ieiw serve: made an auth string for this server in $auth_file (mode 0600)"
  fi
  chmod 600 "$auth_file"
  auth=$(cat "$auth_file")
  export PREFECT_SERVER_API_AUTH_STRING="$auth" PREFECT_API_AUTH_STRING="$auth"
  export PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS="http://$HOST:$PORT"
  export PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED=true
  # Its own session: the terminal's Ctrl-C reaches the worker first; stop_all stops the server after it.
  setsid "$BIN/prefect" server start --host "$HOST" --port "$PORT" &
  server=$!
  for _ in $(seq 1 120); do
    healthy && break
    kill -0 "$server" 2>/dev/null || { echo "prefect server exited; see the log above" >&2; exit 1; }
    sleep 0.5
  done
fi
"$BIN/prefect" work-pool inspect "$IEIW_WORK_POOL" >/dev/null 2>&1 \
  || "$BIN/prefect" work-pool create "$IEIW_WORK_POOL" --type process
"$BIN/prefect" --no-prompt deploy --all
auth_line="" auth_export=""
if [ -n "$auth_file" ]; then
  auth_line="The server asks for the auth string in $auth_file (the UI's login too)."
  auth_export=" PREFECT_API_AUTH_STRING=\$(cat $auth_file)"
fi
cat <<MSG

Prefect UI: ${PREFECT_API_URL%/api}   work pool: $IEIW_WORK_POOL   (Ctrl-C stops everything)
$auth_line
In another shell:
  export PREFECT_API_URL=$PREFECT_API_URL$auth_export
  $BIN/prefect deployment run 'build-ieiw/demo' --watch
MSG
"$BIN/prefect" worker start --pool "$IEIW_WORK_POOL" &
worker=$!
wait "$worker" 2>/dev/null || true   # (quiet: bash would report the worker's exit by signal as a job)
