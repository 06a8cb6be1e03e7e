#!/usr/bin/env bash
# The in-process flow benchmark of docs/BENCHMARKS.md: ctr-load over each store at 1 to 32
# concurrent customers, several runs, the crypto bound measured in every run, then the
# pictures and the summary tables.
#
#   docs/bench/run.sh [OUT_DIR]                       # memory and SQLite stores
#   CTR_BENCH_STORES=memory,sqlite,postgres://ctr:ctr@127.0.0.1:5432/ctr docs/bench/run.sh
#
# OUT_DIR (default target/bench) gets sweep-<customers>-<run>.json and .txt, and summary.md;
# the pictures go to docs/bench/. Each point runs CTR_BENCH_SECONDS (default 8) per store,
# CTR_BENCH_RUNS times (default 3); CTR_BENCH_CUSTOMERS (default "1 2 4 8 16 32") picks the
# points. docs/bench/compose.sh adds the compose stack's runs to the same directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

out="${1:-target/bench}"
stores="${CTR_BENCH_STORES:-memory,sqlite}"
seconds="${CTR_BENCH_SECONDS:-8}"
runs="${CTR_BENCH_RUNS:-3}"
cargo build --release --locked -p ctr-load
mkdir -p "$out"
rm -f "$out"/sweep-*.json "$out"/sweep-*.txt
for run in $(seq 1 "$runs"); do
    for customers in ${CTR_BENCH_CUSTOMERS:-1 2 4 8 16 32}; do
        echo "==> run ${run}/${runs}, ${customers} customers: ${stores}"
        target/release/ctr-load --customers "$customers" --flows 1000000 --seconds "$seconds" \
            --store "$stores" --json "$out/sweep-${customers}-${run}.json" \
            > "$out/sweep-${customers}-${run}.txt"
        grep -A4 '^flows/s relative' "$out/sweep-${customers}-${run}.txt" || true
    done
done
python3 docs/bench/plot.py "$out" docs/bench
