#!/usr/bin/env bash
# Makes the Python environment of the interop fixtures (Authlib: tests/oidc/*.py; the Standard
# Webhooks library: tests/webhooks/standard_receiver.py)
# and prints the interpreter to put in CTR_TEST_AUTHLIB_PYTHON:
#
#   export CTR_TEST_AUTHLIB_PYTHON=$(tests/oidc/setup.sh)
set -euo pipefail
cd "$(dirname "$0")"
venv="${CTR_OIDC_VENV:-$PWD/.venv}"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import authlib, flask, standardwebhooks' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt >&2
fi
echo "$venv/bin/python"
