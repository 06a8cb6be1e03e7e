#!/usr/bin/env bash
# The in-process flow benchmark of docs/BENCHMARKS.md: ctr-load over each store at 1 to 32
# concurrent customers, the crypto bound measured in every run, then the pictures.
#
#   docs/bench/run.sh [OUT_DIR]                       # memory and SQLite stores
#   CTR_BENCH_STORES=memory,sqlite,postgres://ctr:ctr@127.0.0.1:5432/ctr docs/bench/run.sh
#
# OUT_DIR (default target/bench) gets sweep-<customers>.json and .txt; the pictures go to
# docs/bench/. Each point runs CTR_BENCH_SECONDS (default 10) per store.
set -euo pipefail
cd "$(dirname "$0")/../.."

out="${1:-target/bench}"
stores="${CTR_BENCH_STORES:-memory,sqlite}"
seconds="${CTR_BENCH_SECONDS:-10}"
cargo build --release --locked -p ctr-load
mkdir -p "$out"
for customers in 1 2 4 8 16 32; do
    echo "==> ${customers} customers: ${stores}"
    target/release/ctr-load --customers "$customers" --flows 1000000 --seconds "$seconds" \
        --store "$stores" --json "$out/sweep-${customers}.json" | tee "$out/sweep-${customers}.txt"
done
python3 docs/bench/plot.py "$out" docs/bench
