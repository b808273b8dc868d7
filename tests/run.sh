#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Extra arguments go to pytest (e.g. `bash tests/run.sh tests/test_supervisor.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  need+=(postgresql)
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
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
