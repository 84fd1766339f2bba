#!/usr/bin/env bash
# Creates or updates the virtualenv of the Python driver suite (tests/python) and prints the path
# of its python on stdout. The venv is $SIDEPOOL_VENV (default: .venv at the repo root);
# tests/python/requirements.txt is installed only when it changed since the last install (a
# stamp in the venv holds its checksum). Idempotent, and silent when there is nothing to do;
# progress goes to stderr. Concurrent runs wait for each other.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SIDEPOOL_VENV:-$root/.venv}"
requirements="$root/tests/python/requirements.txt"
stamp="$venv/.sidepool-requirements.sha256"

if ! command -v python3 >/dev/null; then
  echo "python3 not found: install it (Debian: apt-get install python3 python3-venv;" \
    "or run scripts/install-deps.sh)" >&2
  exit 1
fi

# Debian splits ensurepip (which `python3 -m venv` needs) into python3-venv.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(command -v python3)" = /usr/bin/python3 ] && command -v apt-get >/dev/null; then
    echo "python3 lacks ensurepip: installing python3-venv" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends python3-venv >&2
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "$(command -v python3) cannot create virtualenvs (no ensurepip): install python3-venv" \
      "(Debian) or use a python3 that ships ensurepip" >&2
    exit 1
  fi
fi

# One run at a time (cargo runs tests in parallel): lock the requirements file itself.
exec 9<"$requirements"
if command -v flock >/dev/null; then
  flock 9
fi

if ! "$venv/bin/python" -c '' 2>/dev/null; then
  echo "creating virtualenv $venv" >&2
  # --clear: a venv whose interpreter vanished (python3 upgraded or removed) is rebuilt.
  python3 -m venv --clear "$venv" >&2
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing $requirements into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$want" >"$stamp"
fi

echo "$venv/bin/python"
