#!/usr/bin/env python3
"""Draw the bench results as an SVG with two panels: single-stream throughput
(upload and download, Gbit/s) and round-trip time for 1 byte (p50 and p99, us),
one bar group per path (raw, relay, ws, wss, and the peers when present).

    bench_chart.py [RESULTS_JSON [OUT_SVG]] [--png OUT_PNG]

Defaults: target/bench/results.json and docs/bench.svg. Needs matplotlib
(scripts/bench.sh makes a venv with it at target/bench-venv).
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_ORDER = ["raw", "relay", "ws", "wss"]


def path_order(results):
    """Paths in table order: the results' own order, else ours, then the rest."""
    paths = results["paths"]
    order = results.get("order") or DEFAULT_ORDER + sorted(set(paths) - set(DEFAULT_ORDER))
    return [p for p in order if p in paths]


def short(v):
    """A bar's value in at most four characters or so: 0.84, 3.41, 27.5, 1230."""
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def grouped_bars(ax, names, series, unit):
    """One group of bars per path, one bar per (label, values) series, values on top."""
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, labels=[short(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0)
    ax.set_ylabel(unit)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)


def title(results):
    """One line naming the run's size and machine."""
    p = results.get("params", {})
    cpus = results.get("machine", {}).get("cpus", "?")
    size = p.get("bytes", 0)
    size = f"{size / (1 << 30):.3g} GiB" if size >= 1 << 30 else f"{size / (1 << 20):.3g} MiB"
    versions = ", ".join(sorted({v["version"] for v in results.get("peers", {}).values()}))
    line = f"tunnel end-to-end bench, loopback, {cpus} CPUs, {size} per stream, {p.get('round_trips', '?')} round trips"
    return line + (f"\npeers: {versions}" if versions else "")


def main():
    """Read the results, draw both panels, write the SVG (and a PNG when asked)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="target/bench/results.json")
    ap.add_argument("out", nargs="?", default="docs/bench.svg")
    ap.add_argument("--png", help="also write a PNG here (for looking at it)")
    args = ap.parse_args()
    try:
        results = json.loads(Path(args.results).read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"bench_chart: cannot read {args.results}: {e}")
    names = path_order(results)
    f = results["paths"]
    plt.rcParams["svg.hashsalt"] = "tunnel-bench"
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(10, 2 * len(names)), 4.8))
    grouped_bars(
        left,
        names,
        [("upload", [f[n]["upload_gbps"] for n in names]), ("download", [f[n]["download_gbps"] for n in names])],
        "Gbit/s",
    )
    left.set_title("single-stream throughput (higher is better)")
    grouped_bars(
        right,
        names,
        [("p50", [f[n]["rtt1_p50_us"] for n in names]), ("p99", [f[n]["rtt1_p99_us"] for n in names])],
        "µs",
    )
    right.set_title("round trip, 1 byte (lower is better)")
    fig.suptitle(title(results), fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg", metadata={"Date": None})
    print(f"wrote {out}")
    if args.png:
        fig.savefig(args.png, format="png", dpi=110)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
