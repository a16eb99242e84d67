#!/usr/bin/env bash
# One entry point for a machine without Docker.
#   bash deploy/local.sh up [--data FOLDER_OR_ARCHIVE]   set up, start API + worker, train a demo
#   bash deploy/local.sh test [pytest args]              set up, then run the whole test suite
#   bash deploy/local.sh lint                            set up, then ruff and the type checker
#   bash deploy/local.sh setup                           only create .venv and install
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

setup() {
    local extra=$1
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV"
        "$PY" -m venv "$VENV"
    fi
    # Reinstall only when the project's requirements changed.
    local stamp="$VENV/.installed-$extra-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        if [ -n "${TORCH_INDEX_URL:-}" ]; then
            # e.g. https://download.pytorch.org/whl/cpu for a small CPU-only install
            "$VENV/bin/python" -m pip install --quiet --index-url "$TORCH_INDEX_URL" \
                torch==2.14.1 torchvision==0.29.1
        fi
        "$VENV/bin/python" -m pip install --quiet -e ".[$extra]"
        touch "$stamp"
    fi
}

need_system_package() {  # $1 = command, $2 = Debian package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $2"
        (apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "$2" >/dev/null; })
    else
        echo "please install $2 (needed for $1)" >&2
        return 1
    fi
}

cmd=${1:-up}
shift || true
case "$cmd" in
    setup)
        setup cpu
        ;;
    lint)
        setup dev
        "$VENV/bin/ruff" check .
        "$VENV/bin/mypy"
        ;;
    test)
        setup dev
        # The tests start their own redis-server on a free port, and validate the compose file.
        need_system_package redis-server redis-server
        need_system_package docker-compose docker-compose
        # The console tests drive Debian's chromium headless (Playwright uses it as it is).
        need_system_package chromium chromium
        # The one-command test pastes the curl commands that `up` prints into a shell.
        need_system_package curl curl
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    up)
        # EXTRAS: more of the project's extras, e.g. EXTRAS=heif for iPhone photos (HEIC).
        setup "cpu${EXTRAS:+,$EXTRAS}"
        exec "$VENV/bin/python" -m deploy.local_stack "$@"
        ;;
    *)
        echo "usage: bash deploy/local.sh {up|test|lint|setup}" >&2
        exit 2
        ;;
esac
