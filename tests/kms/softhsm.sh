#!/usr/bin/env bash
# A fresh SoftHSM2 token for the PKCS#11 tests, made at each run: a config whose token
# directory is target/softhsm/tokens, one token labelled `ctr-test` with the user PIN in
# target/softhsm/pin. Prints the config to put in SOFTHSM2_CONF:
#
#   export SOFTHSM2_CONF=$(tests/kms/softhsm.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${CTR_SOFTHSM_DIR:-$PWD/target/softhsm}"
rm -rf "$dir" && mkdir -p "$dir/tokens"
cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
CONF
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$dir/pin"
chmod 600 "$dir/pin"
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label ctr-test \
    --so-pin "$(cat "$dir/pin")-so" --pin "$(cat "$dir/pin")" >/dev/null
echo "$dir/softhsm2.conf"
