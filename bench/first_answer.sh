#!/usr/bin/env bash
# From a fresh copy of this tree to the first answer, as a new user follows the README:
# copy (standing in for `git clone`), `make serve` (fresh venv, install, start), then
# `warden byok add` and `warden chat`, with the loopback simulator as the provider.
# Usage: bench/first_answer.sh [DEST]   (prints the three figures; results in BENCHMARKS.md)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-/tmp/warden-first-answer}
PORT=${PORT:-18977}
SIM_PORT=${SIM_PORT:-18978}
"$SRC/.venv/bin/python" -m warden.testing.upstream --format openai --port "$SIM_PORT" >/dev/null 2>&1 &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
rm -rf "$DEST" "$DEST-home"; mkdir -p "$DEST-home"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
T0=$(date +%s.%N)
mkdir "$DEST"
(cd "$SRC" && tar --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' --exclude=./mutants \
  --exclude=./tests/clients/node_modules --exclude='./.coverage*' -cf - .) | (cd "$DEST" && tar xf -)
cd "$DEST"
export HOME="$DEST-home" WARDEN_PORT=$PORT   # a fresh HOME: no pip cache, the default data dir
make serve > serve.log 2>&1 &
until [ -x .venv/bin/warden ]; do sleep 0.2; done
T1=$(date +%s.%N)
until curl -sf "localhost:$PORT/healthz" >/dev/null; do sleep 0.2; done
T2=$(date +%s.%N)
. .venv/bin/activate
echo sk-sim-0123456789 | warden byok add openai --key - --base-url "http://127.0.0.1:$SIM_PORT/v1" >/dev/null
warden chat -m auto "Hello"
T3=$(date +%s.%N)
echo "installed: $(echo "$T1 - $T0" | bc) s; serving: $(echo "$T2 - $T0" | bc) s; first answer: $(echo "$T3 - $T0" | bc) s"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill "$(python -c "import json,os;print(json.load(open(os.path.expanduser('~/.local/share/warden/server.json')))['pid'])")"
