#!/usr/bin/env python3
"""Draws the benchmark pictures of docs/BENCHMARKS.md from ctr-load's JSON reports.

    python3 docs/bench/plot.py RESULTS_DIR OUT_DIR

RESULTS_DIR holds `sweep-<customers>-<run>.json` files (each a list of reports, one per
store, as `ctr-load --store a,b,c --json` writes them) and, optionally, `compose-<customers>-
<run>.json` (ctr-load against the compose stack). Writes, with the standard library only:

- throughput.svg: achieved / crypto bound against concurrent customers, one line per store
  (the median run, a whisker from the lowest to the highest), each run divided by the crypto
  bound measured in that same run;
- latency.svg: p50 / p90 / p99 per step for each store, in the median run at the customer
  count whose throughput is closest to half of that store's maximum;
- summary.md: the same figures as tables.
"""

import json
import pathlib
import sys
from html import escape

STEPS = ["order", "coupon", "points", "payment", "checkout", "flow"]
COLORS = ["#1769aa", "#2e7d32", "#b71c1c", "#a15c00", "#6a1b9a"]
W, H, L, R, T, B = 720, 420, 70, 170, 40, 60


def load(results):
    """{store: {customers: [report of each run]}}, stores in the order first seen."""
    runs = {}
    for pattern, rename in (("sweep-*.json", None), ("compose-[0-9]*.json", "compose stack")):
        for path in sorted(results.glob(pattern), key=lambda p: p.name):
            reports = json.loads(path.read_text())
            for report in reports if isinstance(reports, list) else [reports]:
                store = rename or report["store"]
                runs.setdefault(store, {}).setdefault(report["customers"], []).append(report)
    return runs


def ratio(report):
    return report["achieved_over_bound"]


def median_run(reports):
    ordered = sorted(reports, key=ratio)
    return ordered[(len(ordered) - 1) // 2]


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
    customers = sorted({c for by in runs.values() for c in by})
    top = max(ratio(r) for by in runs.values() for rs in by.values() for r in rs)
    ticks = [t / 10 for t in range(0, int(max(top, 0.5) * 10) + 2)]
    top = ticks[-1]
    position = {c: i for i, c in enumerate(customers)}
    span = max(1, len(customers) - 1)
    x = lambda c: L + (W - L - R) * position[c] / span
    y = lambda v: H - B - (H - T - B) * v / top
    body = axes(
        "concurrent customers",
        "achieved / crypto bound (same run)",
        [(str(c), c) for c in customers],
        ticks,
        x,
        y,
    )
    # Issue 35's targets.
    for target, label in (
        (0.5, "target: SQLite"),
        (0.3, "target: PostgreSQL"),
        (0.25, "target: compose"),
    ):
        body.append(
            f'<line x1="{L}" y1="{y(target):.1f}" x2="{W - R}" y2="{y(target):.1f}" '
            f'stroke="#888" stroke-dasharray="6 4"/>\n'
            f'<text x="{L + 6}" y="{y(target) - 5:.1f}" fill="#666" font-size="11">'
            f"{escape(label)} {target:g}</text>\n"
        )
    labels = []
    for i, (store, by) in enumerate(runs.items()):
        color = COLORS[i % len(COLORS)]
        points = sorted(by.items())
        line = " ".join(f"{x(c):.1f},{y(ratio(median_run(rs))):.1f}" for c, rs in points)
        body.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>\n')
        for c, rs in points:
            lo, hi = min(map(ratio, rs)), max(map(ratio, rs))
            body.append(
                f'<line x1="{x(c):.1f}" y1="{y(lo):.1f}" x2="{x(c):.1f}" y2="{y(hi):.1f}" '
                f'stroke="{color}"/>\n'
                f'<circle cx="{x(c):.1f}" cy="{y(ratio(median_run(rs))):.1f}" r="3" fill="{color}"/>\n'
            )
        labels.append([y(ratio(median_run(points[-1][1]))) + 4, color, store])
    # Labels at the right margin, in the order of their lines, at least 15 px apart.
    labels.sort()
    for above, below in zip(labels, labels[1:]):
        below[0] = max(below[0], above[0] + 15)
    for ly, color, store in labels:
        body.append(f'<text x="{W - R + 8}" y="{ly:.1f}" fill="{color}">{escape(store)}</text>\n')
    return svg("Throughput against concurrent customers, as a share of the crypto bound", body)


def half_load(by):
    """The median run at the customer count closest to half of the store's maximum."""
    medians = [median_run(rs) for _, rs in sorted(by.items())]
    best = max(r["flows_per_second"] for r in medians)
    return min(medians, key=lambda r: abs(r["flows_per_second"] - best / 2))


def at_half_load(runs):
    """The stores measured across loads: the compose stack's points are all near its peak
    unless compose.sh ran at fewer customers too."""
    return [s for s in runs if len(runs[s]) >= 3]


def latency(runs):
    steps = STEPS
    stores = at_half_load(runs)
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


def summary(runs):
    lines = ["| store | customers | runs | achieved / bound, min / median / max | "
             "flows/s (median run) | bound flows/s (median run) | flow p50 / p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for store, by in runs.items():
        for c, rs in sorted(by.items()):
            m = median_run(rs)
            lines.append(
                f"| {store} | {c} | {len(rs)} | {min(map(ratio, rs)):.3f} / **{ratio(m):.3f}** / "
                f"{max(map(ratio, rs)):.3f} | {m['flows_per_second']:.0f} | "
                f"{m['crypto_bound']['flows_per_second']:.0f} | "
                f"{m['steps']['flow']['p50_ms']:.1f} / {m['steps']['flow']['p99_ms']:.1f} |"
            )
    lines += ["", "At each store's best concurrency (median run): what a flow costs in process",
              "", "| store | customers | achieved / the flow's own bound (3 signs, 3 verifies) | "
              "CPU ms | context switches | store transactions | statements | commits |",
              "|---|---|---|---|---|---|---|---|"]
    for store, by in runs.items():
        best = max(by.items(), key=lambda item: ratio(median_run(item[1])))
        m = median_run(best[1])
        if not m.get("store_per_flow", {}).get("transactions") or m.get("process_cpu_ms_per_flow") is None:
            continue
        own = m["flows_per_second"] / m["crypto_bound"]["own_flows_per_second"]
        sp = m["store_per_flow"]
        lines.append(
            f"| {store} | {best[0]} | {own:.3f} | {m['process_cpu_ms_per_flow']:.2f} | "
            f"{m['context_switches_per_flow']:.0f} | {sp['transactions']:.1f} | "
            f"{sp['statements']:.1f} | {sp['commits']:.2f} |")
    lines += ["", "At about half of each store's maximum (median run): p99 / p50 per step",
              "", "| store | customers | flows/s | " + " | ".join(STEPS) + " |",
              "|---|---|---|" + "---|" * len(STEPS)]
    for store in at_half_load(runs):
        r = half_load(runs[store])
        cells = " | ".join(
            f"{r['steps'][st]['p99_ms'] / r['steps'][st]['p50_ms']:.1f}" for st in STEPS)
        lines.append(f"| {store} | {r['customers']} | {r['flows_per_second']:.0f} | {cells} |")
    return "\n".join(lines) + "\n"


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
    (results / "summary.md").write_text(summary(runs))
    print(f"wrote {out / 'throughput.svg'}, {out / 'latency.svg'} and {results / 'summary.md'}")


if __name__ == "__main__":
    main()
