# Sourced by scripts/run and scripts/test: make .venv with the project installed.
# Usage: ensure_venv EXTRAS   (e.g. ensure_venv "" or ensure_venv "[test]")
# pip runs only when needed: no .venv yet, or pyproject.toml changed since the last install
# with these extras (.venv/.wsq-installed records "EXTRAS SHA256-OF-PYPROJECT" per install).
# The install is editable: edits to wsq/ need none. rm .venv/.wsq-installed forces one.
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
  local stamp=.venv/.wsq-installed sum want
  sum=$(sha256sum pyproject.toml | cut -d' ' -f1)
  want="${1:-[]} $sum"
  if [ -f "$stamp" ] && [ -x .venv/bin/wsq ]; then
    # Any install with this pyproject.toml has the base package; extras need their own.
    if grep -qxF "$want" "$stamp" || { [ -z "$1" ] && grep -q " $sum\$" "$stamp"; }; then
      return 0
    fi
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$1" || return 1
  # Keep the other extras installed with this same pyproject.toml; forget older ones.
  { grep " $sum\$" "$stamp" 2>/dev/null | grep -vxF "$want" || true; echo "$want"; } >"$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
}
