#!/usr/bin/env bash
# Interoperability tests of `ferrosock serve` with third-party peers:
#   Python `websockets`, Node `ws`, headless Chromium (playwright-core).
#
# Usage: tests/interop/run.sh
# Environment (all optional):
#   FERROSOCK_BIN  the server binary           (default: <repo>/target/release/ferrosock)
#   PEERS_DIR      where the peers are installed (default: <repo>/.peers)
#   PYTHON         Python with websockets       (default: $PEERS_DIR/py/bin/python)
#   NODE           Node.js                       (default: node)
#   CHROMIUM       Chromium binary               (default: /usr/bin/chromium)
#   CI             if "true", a missing Chromium is a failure instead of a skip
#
# Starts the server on a free port, and a second one with --no-deflate on another (the Python and
# Node programs get its URL as a second argument: it must decline permessage-deflate), runs the
# three test programs, then stops the server with SIGTERM while a client is connected (it must get
# close 1001) and checks that the server exits with status 0 within 15 s; the --no-deflate server
# is stopped with SIGTERM too. Exits non-zero if anything failed. Nothing is built here.

set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FERROSOCK_BIN="${FERROSOCK_BIN:-$ROOT/target/release/ferrosock}"
PEERS_DIR="${PEERS_DIR:-$ROOT/.peers}"
PYTHON="${PYTHON:-$PEERS_DIR/py/bin/python}"
NODE="${NODE:-node}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export PEERS_DIR CHROMIUM
export NODE_PATH="$PEERS_DIR/node/node_modules${NODE_PATH:+:$NODE_PATH}"

PROGRAM_TIMEOUT=600 # seconds, an outer bound for each test program (they bound their own waits)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferrosock-interop.XXXXXX")"
SERVER_LOG="$WORK/server.log"
SERVER_PID=""
NO_DEFLATE_LOG="$WORK/server-no-deflate.log"
NO_DEFLATE_PID=""
WATCHER_PID=""

cleanup() {
    local pid
    for pid in "$WATCHER_PID" "$SERVER_PID" "$NO_DEFLATE_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FAILED=()
SKIPPED=()
fail() { FAILED+=("$1"); echo "FAIL  $1" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

show_server_log() { # [log file]
    local log="${1:-$SERVER_LOG}"
    echo "---- $(basename "$log") (last 30 lines) ----" >&2
    tail -n 30 "$log" >&2
    echo "------------------------------------" >&2
}

# True while the process exists and is not a zombie.
alive() {
    [[ -r "/proc/$1/stat" ]] || return 1
    local state
    state="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != "Z" ]]
}

START="$(now)"

# ------------------------------------------------------------------------- preconditions
for tool in "$FERROSOCK_BIN" "$PYTHON"; do
    if [[ ! -x "$tool" ]]; then
        echo "run.sh: $tool is missing or not executable" >&2
        exit 2
    fi
done
if ! command -v "$NODE" >/dev/null; then
    echo "run.sh: $NODE (Node.js) not found" >&2
    exit 2
fi
for module in ws playwright-core; do
    if [[ ! -d "$PEERS_DIR/node/node_modules/$module" ]]; then
        echo "run.sh: $PEERS_DIR/node/node_modules/$module is missing" >&2
        exit 2
    fi
done

# ------------------------------------------------------------------------- servers
# Each server binds port 0 and prints the address it got ("ferrosock serve: http://ADDR/ ..."):
# no port is probed, released and reused.
# start_server LOG ARGS...: starts `ferrosock serve --listen 127.0.0.1:0 ARGS`, sets STARTED_PID
# and STARTED_ADDR once its ready line is in LOG and GET / answers 200 (at most 30 s).
start_server() {
    local log="$1"
    shift
    "$FERROSOCK_BIN" serve --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
    STARTED_PID=$!
    STARTED_ADDR=""
    for _ in $(seq 1 300); do
        if ! alive "$STARTED_PID"; then
            break
        fi
        STARTED_ADDR="$(grep -m1 -o 'ferrosock serve: http://[^/]*' "$log" | sed 's|.*http://||')"
        if [[ -n "$STARTED_ADDR" ]] && "$PYTHON" - "http://$STARTED_ADDR/" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
            echo "   ready: $(grep -m1 'ferrosock serve:' "$log")"
            return 0
        fi
        sleep 0.1
    done
    echo "run.sh: the server was not ready within 30 s" >&2
    show_server_log "$log"
    exit 1
}

echo "== server: $FERROSOCK_BIN serve --listen 127.0.0.1:0"
start_server "$SERVER_LOG"
SERVER_PID=$STARTED_PID
PORT="${STARTED_ADDR##*:}"

echo "== server without compression: $FERROSOCK_BIN serve --listen 127.0.0.1:0 --no-deflate"
start_server "$NO_DEFLATE_LOG" --no-deflate
NO_DEFLATE_PID=$STARTED_PID
NO_DEFLATE_PORT="${STARTED_ADDR##*:}"

HTTP_BASE="http://127.0.0.1:$PORT"
WS_BASE="ws://127.0.0.1:$PORT"
NO_DEFLATE_HTTP_BASE="http://127.0.0.1:$NO_DEFLATE_PORT"
NO_DEFLATE_WS_BASE="ws://127.0.0.1:$NO_DEFLATE_PORT"

# ------------------------------------------------------------------------- test programs
run_program() { # name, command...
    local name="$1"
    shift
    local t0
    t0="$(now)"
    echo
    echo "== $name"
    timeout --kill-after=10 "$PROGRAM_TIMEOUT" "$@"
    local rc=$?
    if [[ $rc == 124 || $rc == 137 ]]; then
        fail "$name: timed out after $PROGRAM_TIMEOUT s"
    elif [[ $rc != 0 ]]; then
        fail "$name (exit status $rc)"
    fi
    echo "   $name: $(elapsed "$t0") s"
    if ! alive "$SERVER_PID"; then
        fail "the server died during $name"
        show_server_log
    fi
    if [[ -n "$NO_DEFLATE_PID" ]] && ! alive "$NO_DEFLATE_PID"; then
        fail "the --no-deflate server died during $name"
        show_server_log "$NO_DEFLATE_LOG"
        NO_DEFLATE_PID=""
    fi
}

run_program "python (websockets)" "$PYTHON" "$HERE/python_client.py" "$WS_BASE" "$NO_DEFLATE_WS_BASE"
run_program "node (ws)" "$NODE" "$HERE/node_client.mjs" "$WS_BASE" "$NO_DEFLATE_WS_BASE"
if [[ -x "$CHROMIUM" ]]; then
    run_program "browser (chromium)" "$NODE" "$HERE/browser.mjs" "$HTTP_BASE"
elif [[ "${CI:-}" == "true" ]]; then
    echo
    fail "browser (chromium): $CHROMIUM not found and CI=true"
else
    echo
    echo "SKIP  browser (chromium): $CHROMIUM not found (set CI=true to make this a failure)"
    SKIPPED+=("browser: $CHROMIUM not found")
fi

# ------------------------------------------------------------------------- shutdown
echo
echo "== shutdown (SIGTERM)"
if alive "$SERVER_PID"; then
    # A client stays connected to /echo and /chat: it must be closed with 1001.
    WATCHER_OUT="$WORK/watcher.out"
    "$PYTHON" "$HERE/python_client.py" "$WS_BASE" --expect-shutdown >"$WATCHER_OUT" 2>&1 &
    WATCHER_PID=$!
    for _ in $(seq 1 150); do
        grep -q '^READY' "$WATCHER_OUT" 2>/dev/null && break
        alive "$WATCHER_PID" || break
        sleep 0.1
    done
    if ! grep -q '^READY' "$WATCHER_OUT"; then
        fail "shutdown: the watching client did not connect"
        cat "$WATCHER_OUT" >&2
    fi

    kill -TERM "$SERVER_PID"
    t0="$(now)"
    for _ in $(seq 1 150); do
        alive "$SERVER_PID" || break
        sleep 0.1
    done
    if alive "$SERVER_PID"; then
        fail "shutdown: the server still runs 15 s after SIGTERM"
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    else
        wait "$SERVER_PID"
        rc=$?
        if [[ $rc == 0 ]]; then
            echo "PASS  server exited with status 0, $(elapsed "$t0") s after SIGTERM"
        else
            fail "shutdown: the server exited with status $rc after SIGTERM (expected 0)"
            show_server_log
        fi
    fi
    SERVER_PID=""

    # The watcher ends once both of its connections are closed (it waits at most 30 s).
    for _ in $(seq 1 350); do
        alive "$WATCHER_PID" || break
        sleep 0.1
    done
    if alive "$WATCHER_PID"; then
        kill -KILL "$WATCHER_PID" 2>/dev/null
    fi
    wait "$WATCHER_PID"
    rc=$?
    WATCHER_PID=""
    grep -v '^READY' "$WATCHER_OUT"
    if [[ $rc != 0 ]]; then
        fail "shutdown: connected clients were not closed with 1001 (watcher exit status $rc)"
    fi
else
    fail "shutdown: the server was not running any more"
fi

if [[ -n "$NO_DEFLATE_PID" ]]; then
    kill -TERM "$NO_DEFLATE_PID"
    t0="$(now)"
    for _ in $(seq 1 150); do
        alive "$NO_DEFLATE_PID" || break
        sleep 0.1
    done
    if alive "$NO_DEFLATE_PID"; then
        fail "shutdown: the --no-deflate server still runs 15 s after SIGTERM"
        kill -KILL "$NO_DEFLATE_PID" 2>/dev/null
        wait "$NO_DEFLATE_PID" 2>/dev/null
    else
        wait "$NO_DEFLATE_PID"
        rc=$?
        if [[ $rc == 0 ]]; then
            echo "PASS  --no-deflate server exited with status 0, $(elapsed "$t0") s after SIGTERM"
        else
            fail "shutdown: the --no-deflate server exited with status $rc after SIGTERM (expected 0)"
            show_server_log "$NO_DEFLATE_LOG"
        fi
    fi
    NO_DEFLATE_PID=""
fi

# ------------------------------------------------------------------------- summary
echo
echo "== summary ($(elapsed "$START") s)"
for skip in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do
    echo "SKIP  $skip"
done
if [[ ${#FAILED[@]} -gt 0 ]]; then
    for failure in "${FAILED[@]}"; do
        echo "FAIL  $failure"
    done
    exit 1
fi
echo "all interop tests passed"
