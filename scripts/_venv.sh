# Sourced by scripts/run and scripts/test: make .venv with the project installed.
# Usage: ensure_venv EXTRAS   (e.g. ensure_venv "" or ensure_venv "[test]")
ensure_venv() {
  local py=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv 2>/dev/null; then
      # Debian ships venv apart from python3.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        rm -rf .venv
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$py" -m venv .venv
      else
        echo "python3 -m venv failed: install python3-venv" >&2
        return 1
      fi
    fi
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$1"
}
