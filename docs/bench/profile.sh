#!/usr/bin/env bash
# Where the CPU goes in a fixed number of in-process flows: perf samples every thread of
# ctr-load while it runs FLOWS flows (default 3000) over one store (default sqlite), then
# docs/bench/cpu_table.py sorts the samples into the table of docs/BENCHMARKS.md.
#
#   docs/bench/profile.sh [STORE] [FLOWS]        # needs perf (apt-get install linux-perf)
#
# Writes target/bench/profile-<store>.{data,json,md}.
set -euo pipefail
cd "$(dirname "$0")/../.."

store="${1:-sqlite}"
flows="${2:-3000}"
name="${store%%:*}"
out=target/bench
cargo build --profile profiling --locked -p ctr-load
mkdir -p "$out"
perf record -F 1999 -o "$out/profile-$name.data" -- \
    target/profiling/ctr-load --own-runtime --customers 16 --flows "$flows" --seconds 600 --store "$store" \
    --json "$out/profile-$name.json"
perf script -i "$out/profile-$name.data" -F comm,ip,sym,dso 2>/dev/null |
    python3 docs/bench/cpu_table.py --flows "$flows" | tee "$out/profile-$name.md"
