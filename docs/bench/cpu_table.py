#!/usr/bin/env python3
"""Sorts `perf script -F comm,ip,sym,dso` samples of a ctr-load run into where a flow's CPU goes.

Reads the samples on stdin, prints a Markdown table. The thread tells the load generator
(`ctr-load-gen`) and the stores' SQLite threads (`ctr-store`, the owner of each database, and
`ctr-store-checkpoint`; `sqlx-sqlite-*` in profiles of earlier versions) apart from the services
(`ctr-services`); the main thread (the crypto bound, start-up) is left out. On the services'
threads the symbol a sample landed in says what it was doing.
"""
import argparse
import collections
import re
import sys

# (category, pattern over "dso symbol"), first match wins; checked in this order.
RULES = [
    ("crypto (ES384 sign and verify, SHA-384)",
     r"p384|nistz384|ecdsa|ECDSA|bn_|BN_|ec_GFp|ec_point|EC_|ecp_|sha512|SHA512|beeu|fiat_|"
     r"bignum|mont|ec_scalar|ec_felem|ec_nistp|wNAF|scalar_mul|point_add|jwk|jsonwebtoken|"
     r"ctr_token|ctr_kms"),
    ("TLS record layer (AES-GCM, rustls)",
     r"aes|gcm|GCM|AES|chacha|poly1305|rustls|ghash|CRYPTO_"),
    ("store (SQL and its code on the services' threads)", r"sqlx|sqlite|ctr_store|ledger|orders::"),
    ("logging and tracing", r"tracing|opentelemetry|telemetry|fmt::write|core::fmt"),
    ("HTTP and JSON (hyper, axum, serde)",
     r"hyper|h2::|http::|axum|tower|serde|reqwest|httparse|matchit|base64|uuid|ctr_|"
     r"percent_encoding|url::|headers"),
    ("async runtime (tokio)", r"tokio|mio|futures|parking_lot|crossbeam|flume|event_listener"),
    ("allocation and copies",
     r"malloc|free|realloc|calloc|memcpy|memmove|memset|memcmp|__rust_(alloc|dealloc|realloc)|"
     r"alloc::|core::ptr|drop_in_place|bytes::"),
]
KERNEL = [
    ("kernel: files (SQLite's writes, WAL, fsync)",
     r"ext4|jbd2|vfs_|filemap|folio|mark_buffer|block_commit|block_write|fsync|pwrite|pread|"
     r"generic_perform|mpage|__x64_sys_(pwrite|pread|fdatasync|fsync|fcntl)|posix_lock|locks_|"
     r"iomap|writeback"),
    ("kernel: loopback TCP", r"tcp|ip_|ipv6|inet|sock|skb|net_|__dev|loopback|napi|netif|nf_|"
     r"ipt_|conntrack|softirq|__sys_send|__sys_recv|sendmsg|recvmsg|epoll|ep_|"
     r"__x64_sys_(send|recv|epoll)"),
    ("kernel: scheduler, futex, wake-ups, syscall entry",
     r"schedule|futex|wake|switch_|finish_task|pick_next|enqueue|dequeue|update_curr|"
     r"psi_|idle|halt|native_sched|__x64_sys_sched|rseq|select_task|ttwu|hrtimer|spin_unlock|"
     r"spin_lock|irqentry|do_syscall|syscall_exit|entry_SYSCALL|sysret|exit_to_user"),
]
ORDER = [c for c, _ in RULES[:1] + RULES[1:]] + [c for c, _ in KERNEL] + [
    "kernel: other", "other", "load generator (all of it)"]


# The six parts of a flow's CPU the benchmark reports; the rest goes to one row.
SUMMARY = {
    RULES[0][0]: "crypto (ES384)",
    RULES[1][0]: "TLS record layer",
    "HTTP and JSON (hyper, axum, serde)": "HTTP and JSON",
    "kernel: loopback TCP": "HTTP and JSON",
    "store (SQL and its code on the services' threads)": "store",
    "store: SQLite and the operations on the store's threads": "store",
    "store: kernel on the store's threads (hand-offs, WAL writes and syncs)": "store",
    "kernel: files (SQLite's writes, WAL, fsync)": "store",
    "logging and tracing": "logging",
    "load generator (all of it)": "load generator",
}


def categorize(comm, dso, sym):
    if comm.startswith("ctr-load-gen"):
        return "load generator (all of it)"
    kernel = "kernel" in dso or dso.startswith("[k")
    if comm.startswith(("ctr-store", "sqlx-sqlite")):
        if kernel:
            return "store: kernel on the store's threads (hand-offs, WAL writes and syncs)"
        return "store: SQLite and the operations on the store's threads"
    text = f"{dso} {sym}"
    if kernel:
        for category, pattern in KERNEL:
            if re.search(pattern, sym):
                return category
        return "kernel: other"
    for category, pattern in RULES:
        if re.search(pattern, text):
            return category
    return "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flows", type=int, required=True)
    parser.add_argument("--frequency", type=int, default=1999, help="perf record -F")
    args = parser.parse_args()
    # `comm ip symbol (dso)`; a demangled symbol may hold spaces and parentheses.
    line = re.compile(r"^\s*(\S+)\s+[0-9a-f]+\s+(.*)\s+\(([^()]*)\)\s*$")
    counts = collections.Counter()
    leaves = collections.Counter()
    for raw in sys.stdin:
        m = line.match(raw)
        if not m:
            continue
        comm, sym, dso = m.groups()
        if comm == "ctr-load":
            continue  # the main thread: the crypto bound and start-up
        category = categorize(comm, dso, sym)
        counts[category] += 1
        if category == "other":
            leaves[sym] += 1
    total = sum(counts.values()) or 1
    us = lambda n: 1e6 * n / args.frequency / args.flows

    def table(rows, title):
        print(f"| {title} | share of CPU samples | CPU µs per flow |")
        print("|---|---|---|")
        for name, n in sorted(rows.items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {100 * n / total:.1f} % | {us(n):.0f} |")
        print(f"| all ({total} samples at {args.frequency} Hz, {args.flows} flows) | 100 % | {us(total):.0f} |")
        print()

    summary = collections.Counter()
    for category, n in counts.items():
        summary[SUMMARY.get(category, "runtime, allocation, scheduling and the rest")] += n
    table(summary, "where a flow's CPU goes")
    table(counts, "in detail")
    if leaves:
        print("\nlargest uncategorized symbols:", file=sys.stderr)
        for sym, n in leaves.most_common(15):
            print(f"  {100 * n / total:.2f} %  {sym}", file=sys.stderr)


if __name__ == "__main__":
    main()
