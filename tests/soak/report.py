#!/usr/bin/env python3
"""The soak's table and picture from tests/soak/run.sh's soak.tsv, with the standard library.

    python3 tests/soak/report.py SOAK.tsv OUT_DIR

Writes OUT_DIR/soak.md (the table, one row a minute) and OUT_DIR/soak.svg: three panels over
the minutes, the flows' p50 and p99, each service's resident memory, and each service's store.
"""

import csv
import math
import pathlib
import sys

SERVICES = ["order-processing", "coupons", "points", "payments"]
COLORS = ["#1769aa", "#2e7d32", "#b71c1c", "#a15c00"]
W, H, L, R, T, B = 760, 220, 70, 190, 30, 40


def number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def panel(top, title, unit, series, minutes):
    """An SVG group: a line per (name, color, values) in `series` against `minutes`."""
    values = [v for _, _, vs in series for v in vs if v is not None]
    high = max(values + [1.0]) * 1.1
    x = lambda m: L + (W - L - R) * (m - minutes[0]) / max(1, minutes[-1] - minutes[0])
    y = lambda v: top + T + (H - T - B) * (1 - v / high)
    out = [f'<text x="{L}" y="{top + 18}" font-size="14">{title}</text>']
    out.append(f'<line x1="{L}" y1="{y(0)}" x2="{W - R}" y2="{y(0)}" stroke="#999"/>')
    for tick in range(5):
        v = high * tick / 4
        out.append(f'<text x="{L - 6}" y="{y(v) + 4}" font-size="10" text-anchor="end">{v:.0f}</text>')
    for m in minutes[:: max(1, len(minutes) // 10)]:
        out.append(f'<text x="{x(m)}" y="{top + H - B + 14}" font-size="10" text-anchor="middle">{m:.0f}</text>')
    out.append(f'<text x="{L - 50}" y="{top + T + 10}" font-size="10">{unit}</text>')
    for i, (name, color, vs) in enumerate(series):
        points = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in zip(minutes, vs) if v is not None)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        out.append(f'<text x="{W - R + 10}" y="{top + T + 14 * i + 10}" font-size="11" fill="{color}">{name}</text>')
    return out


def main(tsv, out_dir):
    rows = list(csv.DictReader(open(tsv), delimiter="\t"))
    out = pathlib.Path(out_dir)
    columns = list(rows[0].keys()) if rows else []
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    (out / "soak.md").write_text("\n".join(table) + "\n")
    minutes = [number(r["minute"]) for r in rows]
    latency = [
        ("flow p50", COLORS[0], [number(r["p50_ms"]) for r in rows]),
        ("flow p99", COLORS[2], [number(r["p99_ms"]) for r in rows]),
    ]
    memory = [(s, COLORS[i], [number(r[f"{s}_rss_mib"]) for r in rows]) for i, s in enumerate(SERVICES)]
    store = [(s, COLORS[i], [number(r[f"{s}_store_mib"]) for r in rows]) for i, s in enumerate(SERVICES)]
    body = []
    body += panel(0, "A flow's latency per minute (minutes on the axis)", "ms", latency, minutes)
    body += panel(H, "Resident memory per service", "MiB", memory, minutes)
    body += panel(2 * H, "Store size per service (database and WAL)", "MiB", store, minutes)
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{3 * H}" font-family="sans-serif">'
    svg += '<rect width="100%" height="100%" fill="white"/>' + "".join(body) + "</svg>\n"
    (out / "soak.svg").write_text(svg)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
