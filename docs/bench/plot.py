#!/usr/bin/env python3
"""Draws the benchmark pictures of docs/BENCHMARKS.md from ctr-load's JSON reports.

    python3 docs/bench/plot.py RESULTS_DIR OUT_DIR

RESULTS_DIR holds `sweep-<customers>.json` files (each a list of reports, one per store, as
`ctr-load --store a,b,c --json` writes them). Writes, with the standard library only:

- throughput.svg: flows/s against concurrent customers, one line per store, and the crypto
  bound measured in the same runs;
- latency.svg: p50 / p90 / p99 per step for each store, at the customer count whose
  throughput is closest to half of that store's maximum.
"""

import json
import pathlib
import sys
from html import escape

COLORS = ["#1769aa", "#2e7d32", "#b71c1c", "#a15c00", "#6a1b9a"]
W, H, L, R, T, B = 720, 420, 70, 170, 40, 60


def load(results):
    runs = {}
    for path in sorted(results.glob("sweep-*.json")):
        reports = json.loads(path.read_text())
        for report in reports if isinstance(reports, list) else [reports]:
            runs.setdefault(report["store"], []).append(report)
    for reports in runs.values():
        reports.sort(key=lambda r: r["customers"])
    return runs


def svg(title, body, w=W, h=H):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="{w}" height="{h}" fill="white"/>\n'
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>\n'
        + "".join(body)
        + "</svg>\n"
    )


def axes(xlabel, ylabel, xticks, yticks, x, y):
    body = [
        f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>\n',
        f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>\n',
        f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">{escape(xlabel)}</text>\n',
        f'<text x="18" y="{(T + H - B) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 18 {(T + H - B) / 2})">{escape(ylabel)}</text>\n',
    ]
    for label, value in xticks:
        body.append(
            f'<text x="{x(value):.1f}" y="{H - B + 18}" text-anchor="middle">{escape(label)}</text>\n'
        )
    for value in yticks:
        body.append(
            f'<line x1="{L}" y1="{y(value):.1f}" x2="{W - R}" y2="{y(value):.1f}" stroke="#ddd"/>\n'
            f'<text x="{L - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>\n'
        )
    return body


def nice_ticks(top, n=5):
    step = top / n
    magnitude = 10 ** len(str(int(step))) / 10 if step >= 1 else 1
    step = max(1, round(step / magnitude) * magnitude)
    return [i * step for i in range(int(top // step) + 2)]


def throughput(runs):
    customers = sorted({r["customers"] for reports in runs.values() for r in reports})
    bound = max(r["crypto_bound"]["flows_per_second"] for rs in runs.values() for r in rs)
    top = max(bound, max(r["flows_per_second"] for rs in runs.values() for r in rs)) * 1.1
    ticks = nice_ticks(top)
    top = ticks[-1]
    position = {c: i for i, c in enumerate(customers)}
    span = max(1, len(customers) - 1)
    x = lambda c: L + (W - L - R) * position[c] / span
    y = lambda v: H - B - (H - T - B) * v / top
    body = axes(
        "concurrent customers",
        "completed flows per second",
        [(str(c), c) for c in customers],
        ticks,
        x,
        y,
    )
    body.append(
        f'<line x1="{L}" y1="{y(bound):.1f}" x2="{W - R}" y2="{y(bound):.1f}" '
        'stroke="black" stroke-dasharray="6 4"/>\n'
        f'<text x="{W - R + 8}" y="{y(bound) + 4:.1f}">crypto bound</text>\n'
    )
    for i, (store, reports) in enumerate(runs.items()):
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{x(r['customers']):.1f},{y(r['flows_per_second']):.1f}" for r in reports)
        body.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>\n')
        for r in reports:
            body.append(
                f'<circle cx="{x(r["customers"]):.1f}" cy="{y(r["flows_per_second"]):.1f}" r="3" fill="{color}"/>\n'
            )
        last = reports[-1]
        body.append(
            f'<text x="{W - R + 8}" y="{y(last["flows_per_second"]) + 4:.1f}" fill="{color}">'
            f"{escape(store)}</text>\n"
        )
    return svg("Throughput against concurrent customers (in process, same-run crypto bound)", body)


def half_load(reports):
    best = max(r["flows_per_second"] for r in reports)
    return min(reports, key=lambda r: abs(r["flows_per_second"] - best / 2))


def latency(runs):
    steps = ["order", "coupon", "points", "payment", "checkout"]
    stores = list(runs)
    chosen = {s: half_load(runs[s]) for s in stores}
    top = max(chosen[s]["steps"][st]["p99_ms"] for s in stores for st in steps) * 1.15
    ticks = nice_ticks(top)
    top = ticks[-1]
    group = (W - L - R) / len(steps)
    bar = group / (len(stores) + 1)
    y = lambda v: H - B - (H - T - B) * v / top
    body = axes(
        "step",
        "latency, ms (bar p50, whisker to p99, tick p90)",
        [(st, i) for i, st in enumerate(steps)],
        ticks,
        lambda i: L + group * (i + 0.5),
        y,
    )
    for j, store in enumerate(stores):
        color = COLORS[j % len(COLORS)]
        report = chosen[store]
        for i, step in enumerate(steps):
            s = report["steps"][step]
            x0 = L + group * i + bar * (j + 0.5)
            cx = x0 + bar / 2
            body.append(
                f'<rect x="{x0:.1f}" y="{y(s["p50_ms"]):.1f}" width="{bar * 0.9:.1f}" '
                f'height="{y(0) - y(s["p50_ms"]):.1f}" fill="{color}" opacity="0.8"/>\n'
                f'<line x1="{cx:.1f}" y1="{y(s["p50_ms"]):.1f}" x2="{cx:.1f}" y2="{y(s["p99_ms"]):.1f}" stroke="{color}"/>\n'
                f'<line x1="{cx - 4:.1f}" y1="{y(s["p90_ms"]):.1f}" x2="{cx + 4:.1f}" y2="{y(s["p90_ms"]):.1f}" stroke="{color}"/>\n'
                f'<line x1="{cx - 6:.1f}" y1="{y(s["p99_ms"]):.1f}" x2="{cx + 6:.1f}" y2="{y(s["p99_ms"]):.1f}" stroke="{color}" stroke-width="2"/>\n'
            )
        body.append(
            f'<text x="{W - R + 8}" y="{T + 20 + 34 * j}" fill="{color}">{escape(store)}</text>\n'
            f'<text x="{W - R + 8}" y="{T + 34 + 34 * j}" fill="{color}" font-size="10">'
            f'{report["customers"]} concurrent, {report["flows_per_second"]:.0f} flows/s</text>\n'
        )
    return svg("Latency per step at about half of each store's maximum throughput", body)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    runs = load(results)
    if not runs:
        sys.exit(f"no sweep-*.json in {results}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.svg").write_text(throughput(runs))
    (out / "latency.svg").write_text(latency(runs))
    print(f"wrote {out / 'throughput.svg'} and {out / 'latency.svg'}")


if __name__ == "__main__":
    main()
