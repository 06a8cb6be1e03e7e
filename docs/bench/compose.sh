#!/usr/bin/env bash
# The compose stack as users run it (docker compose up, default configuration), loaded by
# ctr-load through the published ports; reports achieved / crypto bound per run and where the
# machine's CPU goes per flow: the services, the load generator, dockerd, containerd,
# docker-proxy and the rest (docs/bench/procstat.py), and how much is logged per flow.
#
#   deployments/docker/build-images.sh       # once: the images
#   docs/bench/compose.sh [OUT_DIR]          # CTR_BENCH_CUSTOMERS="8 16", CTR_BENCH_RUNS=3
#
# The only changes to the default configuration (compose override below): the domains are
# seeded with the load generator's customers, and the per-customer rate limit is lifted (each
# virtual customer runs dozens of flows a second). CTR_LOG=warn docs/bench/compose.sh measures
# another log level, CTR_BENCH_OVERRIDE=file.yaml another configuration. Writes compose-<customers>-<run>.json (ctr-load's report),
# compose-cpu-<customers>-<run>.json and compose.md to OUT_DIR (default target/bench).
set -euo pipefail
cd "$(dirname "$0")/../.."

out="$(realpath -m "${1:-target/bench}")"
runs="${CTR_BENCH_RUNS:-3}"
seconds="${CTR_BENCH_SECONDS:-15}"
customers_list="${CTR_BENCH_CUSTOMERS:-8 16}"
max_customers=$(tr ' ' '\n' <<<"$customers_list" | sort -n | tail -1)
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
cargo build --release --locked -p ctr-load
mkdir -p "$out"
rm -f "$out"/compose-*.json
work="$(mktemp -d)"
seeds="$work/seeds"
target/release/ctr-load --customers "$max_customers" --write-seeds "$seeds" >/dev/null
chmod -R a+rX "$work"
cat >"$work/override.yaml" <<YAML
x-unthrottled: &unthrottled {CTR_CUSTOMER_RATE: "1000000", CTR_CUSTOMER_BURST: "1000000"}
services:
  coupons:  {volumes: ["$seeds:/seeds:ro"], environment: {<<: *unthrottled, CTR_SEED_FILE: /seeds/coupons.json}}
  points:   {volumes: ["$seeds:/seeds:ro"], environment: {<<: *unthrottled, CTR_SEED_FILE: /seeds/points.json}}
  payments: {volumes: ["$seeds:/seeds:ro"], environment: {<<: *unthrottled, CTR_SEED_FILE: /seeds/payments.json}}
  order-processing: {environment: *unthrottled}
YAML
export CTR_EXPORT_DIR="$work/ca" CTR_HOST_UID="$(id -u)" CTR_HOST_GID="$(id -g)"
project=(-p ctrbench -f compose.yaml -f "$work/override.yaml")
# CTR_BENCH_OVERRIDE: one more compose file, to measure a change of configuration.
[ -n "${CTR_BENCH_OVERRIDE:-}" ] && project+=(-f "$(realpath "$CTR_BENCH_OVERRIDE")")
down() {
    status=$?
    if [ "$status" != 0 ]; then
        echo "compose.sh failed ($status); the services' warnings and errors:" >&2
        "${compose[@]}" "${project[@]}" logs --no-color 2>/dev/null | grep -E '"level":"(WARN|ERROR)"' | tail -20 >&2 || true
    fi
    "${compose[@]}" "${project[@]}" down -v >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap down EXIT
"${compose[@]}" "${project[@]}" up -d
services=(order-processing coupons points payments)
for _ in $(seq 1 90); do
    healthy=0
    for s in "${services[@]}"; do
        id=$("${compose[@]}" "${project[@]}" ps -q "$s")
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ] && healthy=$((healthy + 1))
    done
    [ "$healthy" = 4 ] && break
    sleep 1
done
[ "$healthy" = 4 ] || { echo "the compose stack did not become healthy" >&2; exit 1; }
logs=()
for s in "${services[@]}"; do logs+=("$(docker inspect -f '{{.LogPath}}' "$("${compose[@]}" "${project[@]}" ps -q "$s")")"); done
log_bytes() { cat "${logs[@]}" | wc -c; }
log_lines() { cat "${logs[@]}" | wc -l; }
targets=https://localhost:${CTR_RELAY_PORT:-8443},https://localhost:${CTR_COUPONS_PORT:-8444},https://localhost:${CTR_POINTS_PORT:-8445},https://localhost:${CTR_PAYMENTS_PORT:-8446}

for run in $(seq 1 "$runs"); do
    for customers in $customers_list; do
        echo "==> compose run ${run}/${runs}, ${customers} customers (CTR_LOG=${CTR_LOG:-info})"
        report="$out/compose-${customers}-${run}.json"
        rm -f "$work/stderr"
        target/release/ctr-load --customers "$customers" --flows 1000000 --seconds "$seconds" \
            --ca "$CTR_EXPORT_DIR/root.pem" --targets "$targets" --json "$report" \
            --issuer "https://localhost:${CTR_DEV_ISSUER_PORT:-8447}" \
            >"$work/stdout" 2>"$work/stderr" &
        load=$!
        # The window starts at the first progress line, after the crypto bound.
        until grep -q '^\[deployment\]' "$work/stderr" 2>/dev/null; do sleep 0.05; done
        python3 docs/bench/procstat.py snapshot >"$work/before.json"
        started=$(grep -m1 '^\[deployment\]' "$work/stderr" | sed -E 's/^\[deployment\] ([0-9]+)\/.*/\1/')
        bytes=$(log_bytes) lines=$(log_lines)
        wait "$load"
        python3 docs/bench/procstat.py snapshot >"$work/after.json"
        flows=$(python3 -c "import json; r = json.load(open('$report')); print(r['flows_completed'] + r['flows_failed'] - $started)")
        python3 docs/bench/procstat.py diff "$work/before.json" "$work/after.json" "$flows" |
            python3 -c "
import json, sys
d = json.load(sys.stdin)
# ctr-load has exited by the second snapshot: its own report says what it used.
generator = json.load(open('$report')).get('process_cpu_ms_per_flow') or 0.0
cpu = d['cpu_ms_per_flow']
cpu['load generator (ctr-load)'] = generator
rest = next(k for k in cpu if k.startswith('everything else'))
cpu[rest] = max(0.0, cpu[rest] - generator)
d['log_bytes_per_flow'] = ($(log_bytes) - $bytes) / $flows
d['log_lines_per_flow'] = ($(log_lines) - $lines) / $flows
d['log_level'] = '${CTR_LOG:-info}'
json.dump(d, open('$out/compose-cpu-${customers}-${run}.json', 'w'), indent=1)
"
        grep -E '^store|^flow ' "$work/stdout"
    done
done
python3 - "$out" <<'PY' | tee "$out/compose.md"
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
by = {}
for path in sorted(out.glob("compose-cpu-*.json")):
    customers = int(path.stem.split("-")[2])
    report = json.loads((out / path.name.replace("compose-cpu-", "compose-")).read_text())
    by.setdefault(customers, []).append((report, json.loads(path.read_text())))
for customers, runs in sorted(by.items()):
    ratios = sorted(r["achieved_over_bound"] for r, _ in runs)
    print(f"{customers} customers, {len(runs)} runs, CTR_LOG={runs[0][1]['log_level']}: "
          f"achieved / bound min {ratios[0]:.3f}, median {statistics.median(ratios):.3f}, max {ratios[-1]:.3f}")
    groups = runs[0][1]["cpu_ms_per_flow"]
    print("| CPU ms per flow (median of runs) | |\n|---|---|")
    for g in groups:
        print(f"| {g} | {statistics.median(c['cpu_ms_per_flow'][g] for _, c in runs):.2f} |")
    print(f"| all (machine busy time) | {statistics.median(c['busy_ms_per_flow'] for _, c in runs):.2f} |")
    print(f"\nlogged per flow: {statistics.median(c['log_lines_per_flow'] for _, c in runs):.1f} lines, "
          f"{statistics.median(c['log_bytes_per_flow'] for _, c in runs):.0f} bytes (json-file)\n")
PY
