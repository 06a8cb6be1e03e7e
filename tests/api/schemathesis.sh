#!/usr/bin/env bash
# Schemathesis against every service of the compose stack: generated requests for each
# operation of each service's /service/v1/openapi.json, a bounded number per operation. No
# answer may be a 5xx, and every answer must match its documented schema and content type.
#
#   tests/api/schemathesis.sh                 # 40 examples per operation
#   CTR_SCHEMATHESIS_EXAMPLES=500 tests/api/schemathesis.sh
#
# Needs python3 with venv and the ctr images (deployments/docker/build-images.sh, or a host
# that can build them). Runs its own compose project on ports 18443-18446 with its own root CA
# under target/, so a stack you are running is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."

examples="${CTR_SCHEMATHESIS_EXAMPLES:-40}"
venv=target/schemathesis/venv
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

export COMPOSE_PROJECT_NAME=ctr-schemathesis
export CTR_EXPORT_DIR="$PWD/target/schemathesis/ctr"
export CTR_RELAY_PORT=18443 CTR_COUPONS_PORT=18444 CTR_POINTS_PORT=18445 CTR_PAYMENTS_PORT=18446
export CTR_DEV_ISSUER_PORT=18447
# Generated requests come fast and all name a handful of customers: lift the per-customer
# rate so that most of them reach the handlers (the 429 answers are documented and checked too).
export CTR_CUSTOMER_RATE=100000 CTR_CUSTOMER_BURST=100000
compose() {
    if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
mkdir -p "$CTR_EXPORT_DIR"
compose up -d --quiet-pull 2>/dev/null || compose up -d
for _ in $(seq 120); do
    [[ "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q order-processing)" 2>/dev/null)" == healthy ]] && break
    sleep 1
done

# One worker: Hypothesis parses lambda sources with `ast.parse`, which CPython 3.11 can fail
# when two threads do it at once ("SystemError: AST constructor recursion depth mismatch",
# seen in CI on the relay's checkout operation).
# Requests are made as c_alice, with an access token from the stack's development issuer
# (client credentials), fresh for each service.
alice_token() {
    python3 - "$CTR_EXPORT_DIR/root.pem" <<'PY'
import base64, json, ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[1])
request = urllib.request.Request(
    "https://127.0.0.1:18447/token",
    data=b"grant_type=client_credentials",
    headers={"Authorization": "Basic " + base64.b64encode(b"c_alice:demo-secret").decode(),
             "Content-Type": "application/x-www-form-urlencoded"})
print(json.load(urllib.request.urlopen(request, context=context))["access_token"])
PY
}

failed=0
for service in order-processing:18443 coupons:18444 points:18445 payments:18446; do
    name="${service%%:*}" port="${service##*:}"
    echo "==> schemathesis: ${name}"
    token="$(alice_token)"
    if ! "$venv/bin/schemathesis" run "https://127.0.0.1:${port}/service/v1/openapi.json" \
        --tls-verify "$CTR_EXPORT_DIR/root.pem" \
        --header "Authorization: Bearer ${token}" \
        --checks not_a_server_error,response_schema_conformance,content_type_conformance \
        --max-examples "$examples" --seed 7 --workers 1 \
        --phases examples,coverage,fuzzing \
        --report junit --report-dir "target/schemathesis/report-${name}" \
        --no-color; then
        failed=1
    fi
done
exit "$failed"
