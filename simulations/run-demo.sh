#!/usr/bin/env bash
# Install otgate on a fresh Debian machine and run the simulated demo plant
# (config/examples/gateway.toml) through the whole pipeline on the embedded log.
# Extra arguments go to `otgate run` (e.g. --status-listen 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."
. simulations/debian-deps.sh
# mosquitto: the demo's MQTT broker; postgresql: the demo's historian database
ensure_debian mosquitto:mosquitto pg_ctl:postgresql venv:python3-venv

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
echo "otgate: watch it with '.venv/bin/otgate status' or curl http://127.0.0.1:8787/health;"
echo "        the historian: psql 'host=127.0.0.1 port=15432 user=postgres' -c 'table otgate_readings limit 5'"
exec .venv/bin/otgate run --config config/examples/gateway.toml "$@"
