# Sourced by simulations/run-demo.sh and tests/run.sh.
# ensure_debian TOOL:PACKAGE ... installs the Debian package of every tool
# that is missing (apt-get update first; sudo when not root). TOOL is a command,
# or a shared library's soname (libfoo.so.N) looked up with ldconfig.
ensure_debian() {
  local need=() spec tool pkg
  for spec in "$@"; do
    tool=${spec%%:*}
    pkg=${spec#*:}
    case "$tool" in
      pg_ctl) command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=("$pkg") ;;
      venv) python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=("$pkg") ;;
      *.so.*) /sbin/ldconfig -p | awk -v t="$tool" '$1 == t {f = 1} END {exit !f}' || need+=("$pkg") ;;
      *) command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("$pkg") ;;
    esac
  done
  ((${#need[@]})) || return 0
  echo "installing Debian packages: ${need[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
}
