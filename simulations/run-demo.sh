#!/usr/bin/env bash
# Install otgate on a fresh Debian machine and run the simulated demo plant
# (config/examples/gateway.toml) through the whole pipeline on the embedded log.
# Extra arguments go to `otgate run` (e.g. --status-listen 127.0.0.1:0).
# The demo's state (log, historian data) is config/examples/state/: delete it
# (with the demo stopped) to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }
. simulations/debian-deps.sh
step "checking Debian packages (mosquitto: the MQTT broker; postgresql: the historian)"
ensure_debian mosquitto:mosquitto pg_ctl:postgresql venv:python3-venv

pip_quiet=(-q)
if [ ! -x .venv/bin/python ]; then
  step "creating .venv; the first install downloads otgate's dependencies (about a minute)"
  python3 -m venv .venv
  pip_quiet=()
fi
step "installing otgate into .venv"
.venv/bin/python -m pip install "${pip_quiet[@]}" --upgrade pip
# setuptools prints an "Editable installation" notice (information only: otgate
# maps its package to the repository root) that reads like a failure; hide it.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install "${pip_quiet[@]}" -e .

step "starting the demo plant (Ctrl-C stops it; state in config/examples/state/)"
cat <<'TIP'
In a second terminal (or a browser: http://127.0.0.1:8787/console/):
  .venv/bin/otgate status
  .venv/bin/otgate log read telemetry.clean --config config/examples/gateway.toml --limit 10
  psql "host=127.0.0.1 port=15432 user=postgres" -c 'table otgate_readings limit 5'
TIP
exec .venv/bin/otgate run --config config/examples/gateway.toml "$@"
