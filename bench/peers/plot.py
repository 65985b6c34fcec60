"""Plot of the benchmark: throughput at concurrency 32 and median latency at concurrency 1.

    peers-venv/bin/python bench/peers/plot.py RESULTS.json OUT.png

Runs in the peers' virtualenv (matplotlib lives there, not in the product's).
RESULTS.json: ``{"title": str, "panels": [{"title": str, "unit": str, "log": bool,
"bars": [[label, value, is_infaas], ...]}, ...]}`` as bench/run.py writes it.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    panels = spec["panels"]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    most = max((len(p["bars"]) for p in panels), default=1)  # a panel's height grows with its bars
    fig, axes = plt.subplots(rows, cols, figsize=(7.6 * cols, max(3.3, 1.0 + 0.24 * most) * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, panels):
        bars = [b for b in p["bars"] if b[1] == b[1] and b[1] > 0]  # drop NaN and missing
        labels = [b[0] for b in bars]
        values = [b[1] for b in bars]
        colours = ["#d62728" if b[2] else "#7f7f7f" for b in bars]
        y = range(len(bars))
        ax.barh(list(y), values, color=colours)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        if p.get("log"):
            ax.set_xscale("log")
            ax.set_xlim(min(values) / 2, max(values) * 4)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            ax.set_xlim(0, max(values) * 1.2)
        ax.set_title(p["title"], fontsize=10)
        ax.set_xlabel(p["unit"], fontsize=9)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}" if v >= 10 else f" {v:.2f}", va="center", fontsize=7)
        ax.grid(axis="x", alpha=0.3, which="both")
    fig.suptitle(spec["title"], fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
