#!/usr/bin/env bash
# Install otgate on a fresh Debian machine and run the simulated demo plant
# (config/examples/gateway.toml) through the whole pipeline on the embedded log.
# Extra arguments go to `otgate run` (e.g. --status-listen 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  need+=(postgresql)  # the demo's historian database
fi
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
echo "otgate: watch it with '.venv/bin/otgate status' or curl http://127.0.0.1:8787/health;"
echo "        the historian: psql 'host=127.0.0.1 port=15432 user=postgres' -c 'table otgate_readings limit 5'"
exec .venv/bin/otgate run --config config/examples/gateway.toml "$@"
