"""``python -m bench``: run every scenario on every target, write ``bench/results/<timestamp>/``.

Run through ``bash bench/run``, which installs the tools and peers first and pins this process
(and so the mock, the sink and the load generators it starts) to core 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import chart, report
from .procs import free_port
from .suite import Settings, Suite
from .targets import Context, Target, all_targets

BENCH = Path(__file__).resolve().parent
GROUPS = {"direct": ("direct", "direct-core0"),
          "gateway": ("gateway", "gateway-tracing", "gateway-nolog"),
          "litellm": ("litellm",), "portkey": ("portkey",)}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--gateway-python", default=sys.executable, help="a python that imports otel_gateway")
    parser.add_argument("--quick", action="store_true", help="2 s runs, one repeat, one start: a smoke test")
    parser.add_argument("--only", default="", help="comma-separated: direct, gateway, litellm, portkey, or target keys")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    parser.add_argument("--repeats", type=int, help="64-connection runs per target, median reported (default 3)")
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per streamed answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="mock delay between streamed chunks")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--results", default=str(BENCH / "results"))
    parser.add_argument("--keep-work", action="store_true", help="keep bench/.peers/work/<timestamp>")
    parser.add_argument("--render", metavar="RUN_DIR", help="rewrite the reports of a run from its results.json")
    parser.add_argument("--install-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def _settings(args: argparse.Namespace) -> Settings:
    base = Settings(duration=2.0, repeats=1, warmup=1.0, startups=1) if args.quick else Settings()
    return Settings(duration=args.duration or base.duration, repeats=args.repeats or base.repeats,
                    warmup=base.warmup, connections=base.connections, stream_chunks=args.chunks,
                    chunk_delay_ms=args.chunk_delay_ms, startups=base.startups, profile=not args.no_profile)


def _selected(targets: list[Target], only: str) -> list[Target]:
    if not only:
        return targets
    keys = {"direct"}
    for word in filter(None, (w.strip() for w in only.split(","))):
        keys.update(GROUPS.get(word, (word,)))
    return [t for t in targets if t.key in keys]


def _machine(ctx: Context, targets: list[Target]) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    gateway_python = subprocess.run([ctx.gateway_python, "-VV"], capture_output=True, text=True).stdout.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_kb / 1e6, "kernel": platform.release(),
            "gateway_python": f"{gateway_python} ({ctx.gateway_python})",
            "bench_python": platform.python_version(),
            "wrk": (wrk.stdout or wrk.stderr).splitlines()[0].split(" Copyright")[0] if (wrk.stdout or wrk.stderr)
            else "wrk ?",
            "versions": {("otel-gateway" if t.kind == "gateway" else t.label): t.version(ctx)
                         for t in targets if t.kind != "direct" and t.key != "direct-core0"}}


def main() -> int:
    args = _arguments()
    if args.render:
        run_dir = Path(args.render).resolve()
        _write(json.loads((run_dir / "results.json").read_text()), run_dir, run_dir.parent, run_dir.name)
        return 0
    settings = _settings(args)
    started = datetime.datetime.now(datetime.UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    results_root = Path(args.results)
    run_dir = results_root / stamp
    run_dir.mkdir(parents=True)
    work = BENCH / ".peers" / "work" / stamp
    work.mkdir(parents=True)
    ctx = Context(mock_port=free_port(), sink_port=free_port(), work=work, logs=run_dir / "logs",
                  gateway_python=args.gateway_python, peers=BENCH / ".peers",
                  mock_options=("--chunks", str(settings.stream_chunks),
                                "--chunk-delay-ms", f"{settings.chunk_delay_ms:g}"))
    targets = _selected(all_targets(ctx), args.only)
    clock = time.perf_counter()
    suite = Suite(settings, ctx, run_dir)
    results: dict[str, Any] = {"targets": {}}
    try:
        print(f"[bench] results in {run_dir}", flush=True)
        results["capacity"] = suite.start_services()
        print(f"[bench] mock capacity {results['capacity']['rps']:,.0f} req/s", flush=True)
        for target in targets:
            print(f"[bench] {target.label} ...", flush=True)
            t0 = time.perf_counter()
            results["targets"][target.key] = suite.run_target(target)
            state = results["targets"][target.key]
            summary = (f"{state['c64']['rps']:,.0f} req/s" if state.get("available")
                       else f"unavailable ({state.get('reason', '')[:200]})")
            print(f"[bench]   {summary}, {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        suite.stop_services()
    elapsed = time.perf_counter() - clock
    settings_text = (f"{settings.duration:g} s per run, 64-connection runs ×{settings.repeats} (median), "
                     f"{settings.warmup:g} s warm-up, {settings.stream_chunks} chunks per stream "
                     f"({settings.chunk_delay_ms:g} ms apart), start-up median of {settings.startups}")
    results["meta"] = {"started": started.strftime("%Y-%m-%d %H:%M"), "elapsed_seconds": elapsed,
                       "settings": settings.__dict__, "settings_text": settings_text,
                       "machine": _machine(ctx, targets)}
    _write(results, run_dir, results_root, stamp)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"[bench] done in {elapsed / 60:.1f} min: {run_dir / 'results.md'}", flush=True)
    return 0


def _write(results: dict[str, Any], run_dir: Path, results_root: Path, stamp: str) -> None:
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    rows = report.rows(results)
    chart.draw(rows, run_dir / "chart.png", f"otel-gateway benchmark {results['meta']['started']} UTC "
               f"({results['meta']['machine']['cpu']}, gateway pinned to one core)")
    (run_dir / "results.md").write_text(report.results_markdown(results, "chart.png"))
    (run_dir / "profile.md").write_text(report.profile_markdown(results, run_dir))
    latest = report.results_markdown(results, f"{stamp}/chart.png")
    latest = latest.replace("\n\n", f"\n\nRun `{stamp}`; profile: [{stamp}/profile.md]({stamp}/profile.md).\n\n", 1)
    (results_root / "latest.md").write_text(latest)
    print(report.table(rows), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
