#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Extra arguments go to pytest (e.g. `bash tests/run.sh tests/test_supervisor.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
. simulations/debian-deps.sh
ensure_debian mosquitto:mosquitto systemd-analyze:systemd pg_ctl:postgresql venv:python3-venv \
  chromium:chromium \
  collectd:collectd-core libmodbus.so.5:libmodbus5 librdkafka.so.1:librdkafka1 libyajl.so.2:libyajl2

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
