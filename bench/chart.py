"""One PNG per run: throughput, latency, streaming, memory and start-up, target by target."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

from .report import Row

_COLOURS = {"direct": "#9e9e9e", "direct-core0": "#cfcfcf", "gateway": "#1f77b4", "gateway-tracing": "#2ca02c",
            "gateway-nolog": "#17becf", "portkey": "#ff7f0e", "litellm": "#d62728"}
_SHORT = {"direct": "direct\n(floor)", "direct-core0": "mock on\ncore 0", "gateway": "otel-gw",
          "gateway-tracing": "otel-gw\n+tracing", "gateway-nolog": "otel-gw\nno log", "portkey": "Portkey",
          "litellm": "LiteLLM"}


def _bars(ax, rows: list[Row], values: list[float | None], title: str, unit: str, *, log: bool = False,
          limit: tuple[float, str] | None = None, digits: int = 0, names: list[str] | None = None) -> None:
    """Bars with their values on top; ``log`` only where the values span more than 20×."""
    names = names or [_SHORT.get(r.key, r.key) for r in rows]
    shown = [v if v is not None and v > 0 else 0 for v in values]
    bars = ax.bar(names, shown, color=[_COLOURS.get(r.key, "#777") for r in rows])
    for bar, value in zip(bars, values, strict=True):
        text = "n/a" if value is None else f"{value:,.{digits}f}"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 1e-3)),
                    ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    positive = [v for v in shown if v > 0]
    if log and positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        unit = unit + " (log scale)"
    if limit is not None:
        ax.axhline(limit[0], color="black", linestyle="--", linewidth=0.8)
        ax.annotate(limit[1], (0.99, limit[0]), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                    fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(axis="both", labelsize=7)
    ax.margins(y=0.15)


def _added(rows: list[Row], floor: Row | None, attr: str) -> list[float | None]:
    base = None if floor is None else getattr(floor, attr)
    values = [getattr(r, attr) for r in rows]
    return [None if v is None or base is None else max(v - base, 0.0) for v in values]


def draw(all_rows: list[Row], path: Path, title: str) -> None:
    rows = [r for r in all_rows if r.available]
    peers = [r for r in rows if r.key != "direct"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    _bars(axes[0][0], rows, [r.rps for r in rows], "Throughput, 64 connections (median)", "req/s",
          log=True, limit=(3000, "target 3,000 (tracing off)"))
    _bars(axes[0][1], rows, [r.c64_p99 for r in rows], "p99 latency, 64 connections", "ms", log=True,
          digits=1)
    floor = next((r for r in rows if r.key == "direct"), None)
    _bars(axes[0][2], peers, _added(peers, floor, "c1_p50"), "Added latency at c=1, p50 (over direct)",
          "ms", log=True, limit=(0.7, "target 0.7 ms"), digits=2)
    _bars(axes[1][0], peers, _added(peers, floor, "ttfc_p50"), "Streaming: added time to first chunk, p50",
          "ms", log=True, limit=(1.0, "target 1 ms"), digits=2)
    _bars(axes[1][1], peers, _added(peers, floor, "total_p50"), "Streaming: added total time, p50", "ms",
          log=True, digits=2)
    names = [f"{_SHORT.get(r.key, r.key)}\nstart {r.startup:.2f} s" if r.startup is not None
             else _SHORT.get(r.key, r.key) for r in peers]
    _bars(axes[1][2], peers, [r.rss_after for r in peers], "VmRSS after load; start-up to first answer", "MB",
          limit=(120, "target 120 MB"), names=names)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
