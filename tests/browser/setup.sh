#!/usr/bin/env bash
# Install what the browser tests need, only when it is missing:
#   Debian's chromium (apt) and Playwright for Python (pip, into .venv).
# Playwright's own browser download (`playwright install`) is never used: the
# tests point Playwright at /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
CHROMIUM=${QLAB_CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$CHROMIUM" ]; then
  echo "setup.sh: installing Debian chromium"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  # Wait for another apt/dpkg run (a colleague's) instead of failing on its lock.
  $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 \
    install -y -qq --no-install-recommends chromium
fi

if ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
  echo "setup.sh: installing playwright (Python package)"
  "$PY" -m pip install -q --disable-pip-version-check playwright
fi

"$CHROMIUM" --version 2>/dev/null  # (the Debian wrapper script chatters on stderr)
