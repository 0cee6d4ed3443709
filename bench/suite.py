"""The scenarios, run target by target against one mock upstream and one OTLP sink.

Per target (one process, started once): start-up time to the first answered request and VmRSS
after it; a warm-up and the concurrency 1 latency run; the streaming client; a warm-up and the
64-connection throughput runs, ``repeats`` times; VmRSS after the load; a profiled 64-connection
run (gateway targets); a graceful stop, then what it logged (SQLite rows) and what it exported
(spans at the sink); then more cold starts for the start-up median.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import loadgen, profile
from .procs import Proc, cpu_seconds, free_port, get, tail, wait_answered
from .targets import BENCH_CORE, GATEWAY_CORE, Context, Target


@dataclass(frozen=True)
class Settings:
    duration: float = 10.0
    repeats: int = 3
    warmup: float = 3.0
    connections: int = 64
    stream_chunks: int = 50
    chunk_delay_ms: float = 0.0
    startups: int = 3
    profile: bool = True


class Suite:
    def __init__(self, settings: Settings, ctx: Context, run_dir: Path) -> None:
        self.s = settings
        self.ctx = ctx
        self.run_dir = run_dir
        self.mock: Proc | None = None
        self.sink: Proc | None = None

    # -- helpers shared by the scenarios ---------------------------------------------------------

    def _stats(self, port: int) -> dict[str, Any]:
        status, body = get(port, "/stats")
        return json.loads(body) if status == 200 else {}

    def _bench_cpu(self) -> float:
        pids = [p.pid for p in (self.mock, self.sink) if p is not None]
        return cpu_seconds(pids)

    def _script(self, target: Target, stream: bool) -> tuple[Path, Path]:
        body = target.request_body(stream)
        body_file = self.ctx.work / f"{target.key}{'-stream' if stream else ''}.json"
        body_file.write_bytes(body)
        return loadgen.write_lua(body_file.with_suffix(".lua"), body, target.headers), body_file

    # -- the run -------------------------------------------------------------------------------

    def start_services(self) -> dict[str, Any]:
        """The mock upstream and the OTLP sink on core 1; returns the mock's measured capacity."""
        here = Path(__file__).resolve().parents[1]
        self.mock = Proc("mock", [sys.executable, "-m", "bench.mock", "--port", str(self.ctx.mock_port),
                                  "--chunks", str(self.s.stream_chunks),
                                  "--chunk-delay-ms", str(self.s.chunk_delay_ms)],
                         core=BENCH_CORE, log=self.ctx.logs / "mock.log", cwd=here)
        self.sink = Proc("sink", [sys.executable, "-m", "bench.sink", "--port", str(self.ctx.sink_port)],
                         core=BENCH_CORE, log=self.ctx.logs / "sink.log", cwd=here)
        for proc, port in ((self.mock, self.ctx.mock_port), (self.sink, self.ctx.sink_port)):
            deadline = time.perf_counter() + 30
            while True:
                try:
                    self._stats(port)
                    break
                except OSError:
                    if time.perf_counter() > deadline or not proc.alive():
                        raise RuntimeError(f"{proc.name} did not start: {tail(proc.log)}") from None
                    time.sleep(0.05)
        return self.mock_capacity()

    def mock_capacity(self) -> dict[str, Any]:
        """The mock alone on core 1, wrk on core 0 (idle now): what the mock can serve at most."""
        script = loadgen.write_lua(self.ctx.work / "capacity.lua", b'{"model":"gpt-4o-mini","messages":[]}', {})
        url = f"http://127.0.0.1:{self.ctx.mock_port}/v1/chat/completions"
        duration = min(5.0, self.s.duration)
        argv = ["taskset", "-c", str(GATEWAY_CORE), "wrk", "-t1", f"-c{self.s.connections}", f"-d{duration:g}s",
                "-s", str(script), url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
        line = next(x for x in done.stdout.splitlines() if x.startswith("BENCHJSON "))
        result = json.loads(line.removeprefix("BENCHJSON "))
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        return result

    def stop_services(self) -> None:
        for proc in (self.mock, self.sink):
            if proc is not None:
                proc.stop(5)

    def run_target(self, target: Target) -> dict[str, Any]:
        result: dict[str, Any] = {"label": target.label, "kind": target.kind, "version": target.version(self.ctx)}
        if target.unavailable:
            return {**result, "available": False, "reason": target.unavailable}
        started = time.perf_counter()
        try:
            result.update(self._session(target))
            if target.kind != "direct":
                result["startup_seconds"] = [result["startup_seconds"][0], *self._cold_starts(target)]
        except Exception as exc:
            traceback.print_exc()
            result.update({"available": False, "reason": f"failed: {type(exc).__name__}: {str(exc)[:600]}"})
            return result
        result["available"] = True
        result["session_seconds"] = time.perf_counter() - started
        return result

    def _session(self, target: Target) -> dict[str, Any]:
        out: dict[str, Any] = {}
        port = self.ctx.mock_port if target.kind == "direct" else free_port()
        workdir = self.ctx.work / target.key / "0"
        proc = target.launch(self.ctx, port, workdir)
        try:
            if proc is not None:
                out["startup_seconds"] = [wait_answered(proc, port, target.path, target.request_body(False),
                                                        target.headers)]
                out["memory_after_start_kb"] = proc.memory_kb()
            mock_before, sink_before = self._stats(self.ctx.mock_port), self._stats(self.ctx.sink_port)
            out.update(self._load(target, proc, port))
            if proc is not None:
                out["memory_after_load_kb"] = proc.memory_kb()
            if proc is not None and target.profile and self.s.profile:
                out["profile"] = self._profile(target, proc, port)
            out["upstream_requests"] = self._stats(self.ctx.mock_port)["requests"] - mock_before["requests"]
        finally:
            if proc is not None:
                out["exit_code"] = proc.stop()
        if target.kind == "gateway":
            out["request_log"] = _request_log(workdir)
            out["spans"] = _span_delta(sink_before, self._wait_sink_settled())
        return out

    def _load(self, target: Target, proc: Proc | None, port: int) -> dict[str, Any]:
        """Latency first, at concurrency 1 (after its own warm-up, in a steady state: no backlog of
        deferred work from a heavier load), then streaming, then the 64-connection runs."""
        url = f"http://127.0.0.1:{port}{target.path}"
        script, _ = self._script(target, stream=False)
        _, stream_body = self._script(target, stream=True)
        out: dict[str, Any] = {}
        loadgen.wrk(url, script, connections=1, duration=self.s.warmup, latency=False)
        out["c1"] = loadgen.wrk(url, script, connections=1, duration=self.s.duration)
        out["stream"] = loadgen.stream_client(url, stream_body, target.headers, duration=self.s.duration)
        loadgen.wrk(url, script, connections=self.s.connections, duration=self.s.warmup, latency=False)
        runs = []
        for _ in range(self.s.repeats):
            core0_ms = calibrate_core0()
            target_cpu, bench_cpu = (proc.cpu_seconds() if proc else 0.0), self._bench_cpu()
            run = loadgen.wrk(url, script, connections=self.s.connections, duration=self.s.duration)
            wall = float(run["wall_seconds"])
            run["target_cpu_share"] = ((proc.cpu_seconds() if proc else 0.0) - target_cpu) / wall
            run["core1_cpu_share"] = (self._bench_cpu() - bench_cpu + float(run["cpu_seconds"])) / wall
            run["core0_calibration_ms"] = core0_ms
            runs.append(run)
        out["c64_runs"] = runs
        out["c64"] = loadgen.median_run(runs)
        return out

    def _profile(self, target: Target, proc: Proc, port: int) -> dict[str, Any]:
        """py-spy on the target during one more 64-connection run (not one of the measured ones)."""
        url = f"http://127.0.0.1:{port}{target.path}"
        script, _ = self._script(target, stream=False)
        box: list[dict[str, object]] = []
        load = threading.Thread(target=lambda: box.append(loadgen.wrk(
            url, script, connections=self.s.connections, duration=self.s.duration + 1.0)))
        load.start()
        time.sleep(0.5)
        raw = self.run_dir / f"profile-{target.key}.txt"
        recorded = profile.record(proc.pid, raw, duration=self.s.duration, log=self.ctx.logs / "py-spy.log")
        load.join(self.s.duration + 60)
        return {"raw": raw.name, "recorded": recorded, "rps_while_profiled": box[0]["rps"] if box else None}

    def _wait_sink_settled(self) -> dict[str, Any]:
        last: dict[str, Any] = {}
        for _ in range(40):
            now = self._stats(self.ctx.sink_port)
            if now == last:
                break
            last = now
            time.sleep(0.25)
        return last

    def _cold_starts(self, target: Target) -> list[float]:
        times = []
        for index in range(1, self.s.startups):
            port = free_port()
            proc = target.launch(self.ctx, port, self.ctx.work / target.key / str(index))
            try:
                times.append(wait_answered(proc, port, target.path, target.request_body(False), target.headers))
            finally:
                if proc is not None:
                    proc.stop()
        return times


def calibrate_core0() -> float | None:
    """Milliseconds for ``bench.calibrate``'s fixed loop on core 0 (the target's core) right now."""
    argv = ["taskset", "-c", str(GATEWAY_CORE), sys.executable, "-m", "bench.calibrate"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    try:
        return float(done.stdout.strip())
    except ValueError:
        return None


def _request_log(workdir: Path) -> dict[str, Any]:
    db = workdir / "otel-gateway.db"
    if not db.exists():
        return {"store": "none", "rows": None}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM request_logs").fetchone()[0]
    spool = workdir / "otel-gateway-spool"
    spooled = sum(f.stat().st_size for f in spool.glob("*")) if spool.exists() else 0
    return {"store": str(db.name), "rows": rows, "spool_bytes": spooled}


def _span_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    names = {name: count - before.get("by_name", {}).get(name, 0) for name, count in after.get("by_name", {}).items()}
    return {"posts": after.get("posts", 0) - before.get("posts", 0),
            "spans": after.get("spans", 0) - before.get("spans", 0),
            "traces": after.get("traces", 0) - before.get("traces", 0),
            "by_name": {name: count for name, count in names.items() if count}}
