"""Load generators: wrk (one thread, a Lua script for the POST body) and the streaming client.

Both run as child processes of the orchestrator, which lives on core 1, so they inherit core 1.
Every run is bounded: wrk by ``-d`` (and a hard timeout around it), the client by count and time.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%.1f,"mean":%.1f,"max":%.1f,"stdev":%.1f,' ..
    '"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""


def _lua_string(value: str) -> str:
    return "[==[" + value + "]==]"


def write_lua(path: Path, body: bytes, headers: Mapping[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}" for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n" + _DONE)
    return path


def wrk(url: str, script: Path, *, connections: int, duration: float, timeout: float = 5.0,
        latency: bool = True) -> dict[str, object]:
    """One wrk run; the result has ``rps`` and ``cpu_seconds`` (wrk's own CPU time) besides what
    the Lua ``done`` hook reports."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", f"--timeout={timeout:g}s", "-s", str(script)]
    if latency:
        argv.append("--latency")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=duration + 30, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            result: dict[str, object] = json.loads(line.removeprefix("BENCHJSON "))
            break
    else:
        raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    seconds = int(result["duration_us"]) / 1e6  # type: ignore[call-overload]
    result["rps"] = int(result["requests"]) / seconds if seconds else 0.0  # type: ignore[call-overload]
    result["cpu_seconds"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result["wall_seconds"] = wall
    return result


def stream_client(url: str, body_file: Path, headers: Mapping[str, str], *, duration: float,
                  requests: int = 20_000, warmup: int = 30) -> dict[str, object]:
    argv: list[str] = [sys.executable, "-m", "bench.streamclient", "--url", url, "--body-file", str(body_file),
                       "--duration", f"{duration:g}", "--requests", str(requests), "--warmup", str(warmup)]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=2 * duration + 90, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"the streaming client failed (exit {done.returncode}): {done.stderr[-800:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_run(runs: Sequence[Mapping[str, object]], key: str = "rps") -> Mapping[str, object]:
    """The run whose ``key`` is the median (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda run: float(run[key]))  # type: ignore[arg-type]
    return ordered[(len(ordered) - 1) // 2]
