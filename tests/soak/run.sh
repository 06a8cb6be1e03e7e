#!/usr/bin/env bash
# A soak, outside CI: the compose stack as users run it, driven by ctr-load at about half its
# maximum for MINUTES (default 30) under periodic faults (the relay restarted every 5 minutes,
# the points domain paused for 15 s in the middle of each 5), sampling each service's resident
# memory, open files and store size and the flows' p50 / p99 every minute.
#
#   deployments/docker/build-images.sh     # once: the images
#   tests/soak/run.sh [MINUTES] [OUT_DIR]  # CTR_SOAK_CUSTOMERS=4 (about half the maximum)
#
# Writes OUT_DIR (default target/soak)/soak.tsv (one row a minute), soak.md (the table) and
# soak.svg (the picture), and each minute's ctr-load report. Exits 1 when the stack does not
# come up; a flow that fails during a fault is counted, not fatal (the table shows them).
set -euo pipefail
cd "$(dirname "$0")/../.."

minutes="${1:-30}"
out="$(realpath -m "${2:-target/soak}")"
customers="${CTR_SOAK_CUSTOMERS:-4}"
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
cargo build --release --locked -p ctr-load
mkdir -p "$out"
rm -f "$out"/minute-*.json "$out"/soak.*
work="$(mktemp -d)"
seeds="$work/seeds"
target/release/ctr-load --customers "$customers" --write-seeds "$seeds" >/dev/null
chmod -R a+rX "$work"
# As compose.sh: the domains seeded with the load's customers, the per-customer rate lifted.
cat >"$work/override.yaml" <<YAML
x-unthrottled: &unthrottled {CTR_CUSTOMER_RATE: "1000000", CTR_CUSTOMER_BURST: "1000000"}
services:
  coupons:  {volumes: ["$seeds:/seeds:ro"], environment: {<<: *unthrottled, CTR_SEED_FILE: /seeds/coupons.json}}
  points:   {volumes: ["$seeds:/seeds:ro"], environment: {<<: *unthrottled, CTR_SEED_FILE: /seeds/points.json}}
  payments: {volumes: ["$seeds:/seeds:ro"], environment: {<<: *unthrottled, CTR_SEED_FILE: /seeds/payments.json}}
  order-processing: {environment: *unthrottled}
YAML
export CTR_EXPORT_DIR="$work/ca" CTR_HOST_UID="$(id -u)" CTR_HOST_GID="$(id -g)"
project=(-p ctrsoak -f compose.yaml -f "$work/override.yaml")
faults=
down() {
    [ -n "$faults" ] && kill "$faults" 2>/dev/null || true
    "${compose[@]}" "${project[@]}" unpause points >/dev/null 2>&1 || true
    "${compose[@]}" "${project[@]}" down -v >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap down EXIT
services=(order-processing coupons points payments)
healthy() {
    for _ in $(seq 1 120); do
        local n=0
        for s in "${services[@]}"; do
            id=$("${compose[@]}" "${project[@]}" ps -q "$s")
            [ "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ] && n=$((n + 1))
        done
        [ "$n" = 4 ] && return 0
        sleep 1
    done
    return 1
}
"${compose[@]}" "${project[@]}" up -d
healthy || { echo "the compose stack did not become healthy" >&2; exit 1; }
targets=https://localhost:${CTR_RELAY_PORT:-8443},https://localhost:${CTR_COUPONS_PORT:-8444},https://localhost:${CTR_POINTS_PORT:-8445},https://localhost:${CTR_PAYMENTS_PORT:-8446}

# The faults, on their own schedule: the relay restarted at every 5th minute, points paused
# for 15 s two and a half minutes later.
(
    while true; do
        sleep 150
        echo "fault: points paused for 15 s" >&2
        "${compose[@]}" "${project[@]}" pause points >/dev/null
        sleep 15
        "${compose[@]}" "${project[@]}" unpause points >/dev/null
        sleep 135
        echo "fault: the relay restarted" >&2
        "${compose[@]}" "${project[@]}" restart order-processing >/dev/null
    done
) &
faults=$!

# One row a minute: what the load saw, then each service's resident memory (MiB), open files
# and store (MiB, the database with its WAL).
sample() {
    local row="$1"
    for s in "${services[@]}"; do
        id=$("${compose[@]}" "${project[@]}" ps -q "$s")
        pid=$(docker inspect -f '{{.State.Pid}}' "$id")
        rss=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || echo nan)
        files=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        volume=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Name}}{{end}}{{end}}' "$id")
        store=$(du -sb "$(docker volume inspect -f '{{.Mountpoint}}' "$volume")" | awk '{printf "%.2f", $1 / 1048576}')
        row+=$'\t'"$rss"$'\t'"$files"$'\t'"$store"
    done
    printf '%s\n' "$row" >>"$out/soak.tsv"
}
header="minute	flows	failed	flows_per_s	p50_ms	p99_ms"
for s in "${services[@]}"; do header+=$'\t'"${s}_rss_mib"$'\t'"${s}_files"$'\t'"${s}_store_mib"; done
printf '%s\n' "$header" >"$out/soak.tsv"
for minute in $(seq 1 "$minutes"); do
    report="$out/minute-$minute.json"
    target/release/ctr-load --customers "$customers" --flows 1000000 --seconds 60 \
        --ca "$CTR_EXPORT_DIR/root.pem" --targets "$targets" --json "$report" \
        --issuer "https://localhost:${CTR_DEV_ISSUER_PORT:-8447}" >/dev/null 2>&1 || true
    row=$(python3 - "$report" "$minute" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    r = r[0] if isinstance(r, list) else r
    flow = r["steps"]["flow"]
    print(f'{sys.argv[2]}\t{r["flows_completed"]}\t{r["flows_failed"]}\t{r["flows_per_second"]:.1f}\t{flow["p50_ms"]:.1f}\t{flow["p99_ms"]:.1f}')
except Exception:
    print(f"{sys.argv[2]}\t0\tnan\tnan\tnan\tnan")
PY
)
    sample "$row"
    echo "minute $minute/$minutes: $(tail -1 "$out/soak.tsv" | cut -f2-6)"
done
python3 tests/soak/report.py "$out/soak.tsv" "$out"
echo "wrote $out/soak.md and $out/soak.svg"
