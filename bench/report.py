"""Results as markdown (``results.md``, ``latest.md``), a PNG chart and ``profile.md``."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import profile

TARGETS_SPEC = "targets: >= 3,000 req/s (tracing off), >= 1,500 (on); added p50 <= 0.7 ms (tracing on)"
REFERENCE = "Reference figures measured elsewhere: LiteLLM 78 req/s, Portkey 806, a bare aiohttp forwarder 5,300."


@dataclass
class Row:
    key: str
    label: str
    available: bool
    reason: str = ""
    rps: float | None = None
    rps_range: tuple[float, float] | None = None
    c64_p99: float | None = None
    c1_p50: float | None = None
    c1_p99: float | None = None
    ttfc_p50: float | None = None
    ttfc_p99: float | None = None
    total_p50: float | None = None
    total_p99: float | None = None
    rss_start: float | None = None
    rss_after: float | None = None
    startup: float | None = None


def _ms(us: Any) -> float | None:
    return None if us is None else float(us) / 1000


def rows(results: dict[str, Any]) -> list[Row]:
    out = []
    for key, t in results["targets"].items():
        if not t.get("available"):
            out.append(Row(key, t["label"], False, t.get("reason", "")))
            continue
        runs = [run["rps"] for run in t["c64_runs"]]
        row = Row(key, t["label"], True, rps=t["c64"]["rps"], rps_range=(min(runs), max(runs)),
                  c64_p99=_ms(t["c64"]["latency_us"]["p99"]), c1_p50=_ms(t["c1"]["latency_us"]["p50"]),
                  c1_p99=_ms(t["c1"]["latency_us"]["p99"]))
        stream = t["stream"]
        if stream.get("ttfc_us"):
            row.ttfc_p50, row.ttfc_p99 = _ms(stream["ttfc_us"]["p50"]), _ms(stream["ttfc_us"]["p99"])
            row.total_p50, row.total_p99 = _ms(stream["total_us"]["p50"]), _ms(stream["total_us"]["p99"])
        if "memory_after_start_kb" in t:
            row.rss_start = t["memory_after_start_kb"]["VmRSS"] * 1024 / 1e6
            row.rss_after = t["memory_after_load_kb"]["VmRSS"] * 1024 / 1e6
        if t.get("startup_seconds"):
            row.startup = statistics.median(t["startup_seconds"])
        out.append(row)
    return out


def _f(value: float | None, digits: int = 2, plus: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+,.{digits}f}" if plus else f"{value:,.{digits}f}"


def _added(value: float | None, floor: float | None) -> float | None:
    return None if value is None or floor is None else value - floor


def table(all_rows: list[Row]) -> str:
    floor = next((r for r in all_rows if r.key == "direct" and r.available), None)
    head = ("| target | req/s at 64 conns (median of runs; range) | p99 at 64 (ms) | c=1 p50 / p99 (ms) "
            "| added c=1 p50 / p99 (ms) | stream TTFC p50 (ms) | added TTFC p50 / p99 (ms) "
            "| added stream total p50 (ms) | VmRSS start → after load (MB) | start-up (s) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in all_rows:
        if not r.available:
            reason = " ".join(r.reason.replace("|", "/").split())[:200]
            lines.append(f"| {r.label} | unavailable: {reason} |||||||||")
            continue
        direct = r.key == "direct"
        rng = f" ({r.rps_range[0]:,.0f}–{r.rps_range[1]:,.0f})" if r.rps_range else ""
        added = "floor" if direct else (f"{_f(_added(r.c1_p50, floor and floor.c1_p50), 3, True)} / "
                                        f"{_f(_added(r.c1_p99, floor and floor.c1_p99), 3, True)}")
        ttfc = "floor" if direct else (f"{_f(_added(r.ttfc_p50, floor and floor.ttfc_p50), 3, True)} / "
                                       f"{_f(_added(r.ttfc_p99, floor and floor.ttfc_p99), 3, True)}")
        total = "floor" if direct else _f(_added(r.total_p50, floor and floor.total_p50), 3, True)
        memory = "–" if r.rss_start is None else f"{r.rss_start:,.1f} → {r.rss_after:,.1f}"
        lines.append(f"| {r.label} | {_f(r.rps, 0)}{rng} | {_f(r.c64_p99)} | {_f(r.c1_p50, 3)} / {_f(r.c1_p99, 3)} "
                     f"| {added} | {_f(r.ttfc_p50, 3)} | {ttfc} | {total} | {memory} | {_f(r.startup)} |")
    return head + "\n".join(lines) + "\n"


def targets_table(all_rows: list[Row]) -> str:
    by = {r.key: r for r in all_rows if r.available}
    floor = by.get("direct")
    checks: list[tuple[str, str, float | None, float, bool]] = []  # what, unit, value, limit, higher is better

    def add(what: str, unit: str, value: float | None, limit: float, higher: bool) -> None:
        checks.append((what, unit, value, limit, higher))

    gw, tr = by.get("gateway"), by.get("gateway-tracing")
    add("throughput at 64 conns, tracing off", "req/s", gw and gw.rps, 3000, True)
    add("throughput at 64 conns, tracing on", "req/s", tr and tr.rps, 1500, True)
    add("added p50 at c=1, tracing on", "ms", _added(tr and tr.c1_p50, floor and floor.c1_p50), 0.7, False)
    add("added p50 at c=1, tracing off", "ms", _added(gw and gw.c1_p50, floor and floor.c1_p50), 0.7, False)
    for row, name in ((gw, "off"), (tr, "on")):
        add(f"streaming added TTFC p50, tracing {name}", "ms",
            _added(row and row.ttfc_p50, floor and floor.ttfc_p50), 1.0, False)
    for row, name in ((gw, "off"), (tr, "on")):
        add(f"VmRSS after load, tracing {name}", "MB", row and row.rss_after, 120, False)
    for row, name in ((gw, "off"), (tr, "on")):
        add(f"start-up to first answered request, tracing {name} (median)", "s", row and row.startup, 1.5, False)
    lines = ["| target | limit | measured | verdict |", "|---|---:|---:|---|"]
    for what, unit, value, limit, higher in checks:
        if value is None:
            verdict, shown = "not measured", "–"
        else:
            met = value >= limit if higher else value <= limit
            verdict, shown = ("met" if met else "**missed**"), f"{value:,.3g} {unit}" if value < 10 else \
                f"{value:,.0f} {unit}"
        lines.append(f"| {what} | {'≥' if higher else '≤'} {limit:g} {unit} | {shown} | {verdict} |")
    return "\n".join(lines) + "\n"


def checks(results: dict[str, Any]) -> str:
    """The suite's own sanity: mock headroom, core 1 load, spans and log rows arrived, errors."""
    out = []
    capacity = results.get("capacity", {})
    best = max((t["c64"]["rps"] for k, t in results["targets"].items()
                if t.get("available") and not k.startswith("direct")), default=0)
    out.append("- Core 0 speed check: `bench.calibrate`, a fixed Python loop (best of 5) on core 0 just before "
               "each 64-connection run; lower is faster. It shows how steady the machine was, figures are not "
               "adjusted by it.")
    if capacity:
        ratio = f", {capacity['rps'] / best:.0f}× the fastest target's rate" if best else ""
        out.append(f"- Mock capacity alone on core 1 (wrk on core 0): {capacity['rps']:,.0f} req/s{ratio}.")
    for key, t in results["targets"].items():
        if not t.get("available"):
            continue
        parts = []
        core1 = max(run["core1_cpu_share"] for run in t["c64_runs"])
        core0 = statistics.median(run["target_cpu_share"] for run in t["c64_runs"])
        if key != "direct":
            parts.append(f"target CPU {core0:.0%} of core 0, core 1 (mock + sink + wrk) at most {core1:.0%} busy")
        errors = sum(sum(run["errors"].values()) for run in [t["c1"], *t["c64_runs"]])
        stream_errors = sum(t["stream"].get("errors", {}).values())
        parts.append(f"wrk errors {errors}, streaming errors {stream_errors}, "
                     f"events per stream {t['stream'].get('events_per_stream')}")
        parts.append(f"upstream requests {t.get('upstream_requests', 0):,}")
        speeds = [run["core0_calibration_ms"] for run in t["c64_runs"] if run.get("core0_calibration_ms")]
        if speeds:
            parts.append(f"core 0 speed check before the 64-connection runs {', '.join(f'{v:.1f}' for v in speeds)} ms")
        if "request_log" in t:
            log = t["request_log"]
            parts.append("request log: no store" if log.get("rows") is None else
                         f"SQLite rows {log['rows']:,} (spooled {log.get('spool_bytes', 0)} B)")
        spans = t.get("spans", {})
        if spans.get("spans"):
            names = ", ".join(f"{n}: {c:,}" for n, c in spans["by_name"].items())
            parts.append(f"spans at the OTLP sink {spans['spans']:,} in {spans['posts']} posts ({names})")
        if t.get("profile", {}).get("rps_while_profiled"):
            parts.append(f"req/s while py-spy sampled {t['profile']['rps_while_profiled']:,.0f}")
        out.append(f"- **{t['label']}**: " + "; ".join(parts) + ".")
    return "\n".join(out) + "\n"


def machine(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [f"- CPU: {m['cpu']} ({m['cores']} cores), {m['memory_gb']:.0f} GB RAM, Linux {m['kernel']}",
             f"- Python (gateway): {m['gateway_python']}; bench tools: Python {m['bench_python']}, {m['wrk']}",
             "- Versions: " + "; ".join(f"{label} {version}" for label, version in m["versions"].items() if version),
             f"- Settings: {meta['settings_text']}",
             f"- Run: {meta['started']} UTC, {meta['elapsed_seconds'] / 60:.1f} min"]
    return "\n".join(lines) + "\n"


def results_markdown(results: dict[str, Any], chart: str) -> str:
    all_rows = rows(results)
    meta = results["meta"]
    return (f"# otel-gateway benchmark, {meta['started']} UTC\n\n"
            "Each target on core 0 (`taskset -c 0`); mock upstream, OTLP sink and load generators on core 1. "
            "\"Added\" = the target's figure minus the direct call's (the floor). "
            f"Streams: {meta['settings']['stream_chunks']} chunks, {meta['settings']['chunk_delay_ms']:g} ms apart. "
            "Every gateway row logs each request to SQLite (the default). On a shared virtual machine one core's "
            "speed drifts from minute to minute (see the core 0 speed check under Checks): compare rows of one "
            "run, and repeat a run before trusting a difference of less than about a third.\n\n"
            f"{table(all_rows)}\n![benchmark chart]({chart})\n\n## Targets (gateway on one core)\n\n"
            f"{targets_table(all_rows)}\n{REFERENCE}\n\n## Checks\n\n{checks(results)}\n"
            f"## Machine\n\n{machine(meta)}")


def profile_markdown(results: dict[str, Any], run_dir: Path) -> str:
    seconds = results["meta"]["settings"]["duration"]
    parts = ["# Where the time goes: py-spy on the gateway at 64 connections\n",
             "`py-spy record --format raw --threads --nonblocking --full-filenames --rate 250` for "
             f"{seconds:g} s during an extra 64-connection run (not one of the measured ones). Idle threads are "
             "not sampled: shares are of the samples in which a thread of the gateway was running Python or C "
             "code. Non-blocking sampling never stops the process, but some stacks come out truncated at the "
             "outer end, so the inclusive shares of the outermost frames (uvicorn, the middleware) are lower "
             "bounds; self shares are exact counts.\n"]
    findings = run_dir / "findings.md"
    if findings.exists():  # a person's reading of the run, written after it; kept when the run is re-rendered
        parts.append(findings.read_text())
    for t in results["targets"].values():
        raw_name = t.get("profile", {}).get("raw")
        if not raw_name or not (run_dir / raw_name).exists():
            continue
        analysis = profile.analyse(run_dir / raw_name)
        parts.append(profile_section(t["label"], analysis, raw_name))
    return "\n".join(parts)


_THREADS = {"MainThread": "MainThread (the event loop)",
            "uvloop": "uvloop (the loop's default executor: asyncio.to_thread)",
            "OtelBatchSpanRecordProcessor": "OtelBatchSpanRecordProcessor (span export)"}


def profile_section(label: str, a: profile.Analysis, raw_name: str) -> str:
    lines = [f"## {label}\n", f"{a.samples:,} samples (`{raw_name}`). Threads: "
             + ", ".join(f"{_THREADS.get(name, name)} {a.share(count):.1f}%" for name, count in a.threads.most_common())
             + ".\n",
             "| what the process was doing | % of samples |", "|---|---:|"]
    lines += [f"| {name} | {a.share(a.buckets[name]):.1f} |" for name in profile.BUCKETS if a.buckets[name]]
    lines += ["", "| owner of the innermost frame | self % | self % with stdlib charged to its caller |",
              "|---|---:|---:|"]
    for who in profile.OWNERS:
        lines.append(f"| {profile.OWNER_LABELS[who]} | {a.share(a.owner_self[who]):.1f} "
                     f"| {a.share(a.owner_charged[who]):.1f} |")
    lines += ["", "Top inclusive frames (entry points left out):", "",
              "| # | frame | owner | inclusive % | self % |", "|---:|---|---|---:|---:|"]
    for index, (frame, inclusive, own) in enumerate(profile.hot_spots(a, 30), 1):
        lines.append(f"| {index} | `{frame}` | {a.owner(frame)} | {inclusive:.1f} | {own:.1f} |")
    for who in ("gateway", "framework", "otel-sdk"):
        spots = profile.hot_spots(a, 10, who=who)
        if spots:
            lines += ["", f"Top inclusive frames of {profile.OWNER_LABELS[who]}:", "",
                      "| frame | inclusive % | self % |", "|---|---:|---:|"]
            lines += [f"| `{frame}` | {inclusive:.1f} | {own:.1f} |" for frame, inclusive, own in spots]
    lines += ["", "Top self functions:", "", "| function | owner | self % |", "|---|---|---:|"]
    lines += [f"| `{frame}` | {a.owner(frame)} | {share:.1f} |" for frame, share in profile.top_self(a, 20)]
    lines += ["", "Top self lines (a line that calls C code, or releases the GIL and waits to take it back, "
              "counts here):", "", "| line | owner | self % |", "|---|---|---:|"]
    lines += [f"| `{frame}` | {a.owner(frame)} | {share:.1f} |"
              for frame, share in profile.top_self(a, 20, lines=True)]
    return "\n".join(lines) + "\n"
