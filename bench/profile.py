"""py-spy on the gateway under load, and where the time goes.

``record`` samples the process (``py-spy record -f raw --threads --nonblocking``; idle threads
are not sampled) into collapsed stacks, each frame with its file and line. ``analyse`` reads them:
for every function the share of samples it is on the stack of (inclusive) and on top of (self),
and per owner --
the gateway's own code, the web and HTTP framework, the OpenTelemetry SDK, other libraries, the
standard library -- the share of samples whose innermost frame it owns ("self") and the share
whose innermost non-stdlib frame it owns (standard library time charged to its caller).
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

OWNERS = ("gateway", "framework", "otel-sdk", "other-libs", "stdlib", "event-loop", "native")
OWNER_LABELS = {
    "gateway": "otel_gateway (own code)",
    "framework": "framework: starlette, uvicorn, httpx, aiohttp",
    "otel-sdk": "OpenTelemetry API/SDK/exporter/instrumentation",
    "other-libs": "other libraries (pydantic, tiktoken, yarl, multidict...)",
    "stdlib": "standard library (asyncio, threading, sqlite3, json...)",
    "event-loop": "the event loop itself: uvloop's C code under asyncio.Runner.run (polling, socket I/O)",
    "native": "no Python frame at all (C code outside any Python call)",
}
_FRAMEWORK = ("starlette/", "uvicorn/", "httpx/", "httpcore/", "aiohttp/", "anyio/", "h11/", "httptools/",
              "uvloop/", "sniffio/", "websockets/", "watchfiles/")


def record(pid: int, out: Path, *, duration: float, log: Path, rate: int = 250) -> bool:
    """Samples ``pid`` for ``duration`` seconds into ``out`` (raw collapsed stacks, full file names)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", str(rate),
            "--format", "raw", "--threads", "--nonblocking", "--full-filenames", "--output", str(out)]
    with log.open("ab") as sink:
        done = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, timeout=duration + 60, check=False)
    return done.returncode == 0 and out.exists()


_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")
_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages/|dist-packages/)")


def owner_of_path(path: str) -> str:
    if "/otel_gateway/" in path or path.startswith("otel_gateway/"):
        return "gateway"
    if "/opentelemetry/" in path or path.startswith("opentelemetry/"):
        return "otel-sdk"
    if any(f"-packages/{prefix}" in path or path.startswith(prefix) for prefix in _FRAMEWORK):
        return "framework"
    if path.startswith("<") or _STDLIB.search(path):
        return "stdlib"
    if "-packages/" in path:
        return "other-libs"
    first = path.split("/", 1)[0].removesuffix(".py")
    return "stdlib" if first in sys.stdlib_module_names else "other-libs"


def short_path(path: str) -> str:
    """A file name as a reader knows it: relative to site-packages, the stdlib, or the repository."""
    for marker in ("-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/otel_gateway/" in path:
        return "otel_gateway/" + path.split("/otel_gateway/", 1)[1]
    return path


@dataclass
class Analysis:
    samples: int = 0
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)
    own: collections.Counter[str] = field(default_factory=collections.Counter)
    own_lines: collections.Counter[str] = field(default_factory=collections.Counter)
    owner_self: collections.Counter[str] = field(default_factory=collections.Counter)
    owner_charged: collections.Counter[str] = field(default_factory=collections.Counter)
    threads: collections.Counter[str] = field(default_factory=collections.Counter)
    owners: dict[str, str] = field(default_factory=dict)
    """Frame label (function and short path) -> its owner."""
    buckets: collections.Counter[str] = field(default_factory=collections.Counter)
    """Samples by what the process was doing (see :func:`bucket`)."""

    def share(self, count: int) -> float:
        return 100.0 * count / self.samples if self.samples else 0.0

    def owner(self, label: str) -> str:
        return self.owners.get(label) or self.owners.get(_LINE.sub(")", label), "other-libs")


_LINE = re.compile(r":\d+\)$")
_LOOP = ("Runner.run (asyncio/runners.py", "BaseEventLoop.run_forever", "BaseEventLoop.run_until_complete")


def _labels(raw_frames: list[str], owners: dict[str, str]) -> tuple[list[str], list[str]]:
    """Frames as ``function (short path)`` and as ``function (short path:line)``."""
    functions, lines = [], []
    for raw in raw_frames:
        match = _FRAME.match(raw)
        if match is None:
            functions.append(raw)
            lines.append(raw)
            continue
        path = match["path"]
        label = f"{match['function']} ({short_path(path)})"
        owners.setdefault(label, owner_of_path(path))
        functions.append(label)
        lines.append(f"{match['function']} ({short_path(path)}:{match['line']})" if match["line"] else label)
    return functions, lines


def analyse(raw: Path) -> Analysis:
    result = Analysis()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *raw_frames = stack.split(";")
        frames, lines = _labels([frame for frame in raw_frames if frame], result.owners)
        result.samples += count
        result.threads[thread.split(": ", 1)[-1].rstrip("_0123456789") or thread] += count
        result.buckets[bucket(thread, frames, result.owners)] += count
        if not frames:
            result.owner_self["native"] += count
            result.owner_charged["native"] += count
            continue
        for frame in set(frames):
            result.inclusive[frame] += count
        result.own[frames[-1]] += count
        result.own_lines[lines[-1]] += count
        if frames[-1].startswith(_LOOP):
            result.owner_self["event-loop"] += count
            result.owner_charged["event-loop"] += count
            continue
        result.owner_self[result.owners.get(frames[-1], "other-libs")] += count
        charged = next((who for f in reversed(frames) if (who := result.owners.get(f, "other-libs")) != "stdlib"),
                       "stdlib")
        result.owner_charged[charged] += count
    return result


BUCKETS = (
    "span export thread (BatchSpanProcessor: encoding, OTLP/HTTP post)",
    "request log: SQLite writer thread",
    "request log: building records (worker thread)",
    "request log: pipeline steps on the event loop",
    "tracing on the request path (innermost non-stdlib frame in OpenTelemetry or otel_gateway/telemetry)",
    "serving requests (gateway code + framework, no tracing frame)",
    "event loop, no request frame (uvloop C code, protocol callbacks)",
    "other",
)


def bucket(thread: str, frames: list[str], owners: dict[str, str]) -> str:
    """What one sample was spent on, first match wins."""
    if "BatchSpan" in thread or any(f.startswith("BatchProcessor.") for f in frames):
        return BUCKETS[0]
    if "sqlite-writer" in thread:
        return BUCKETS[1]
    if any(f.startswith("RequestLogPipeline._build") for f in frames):
        return BUCKETS[2]
    if any(f.startswith(("RequestLogPipeline.", "StoreSink.")) for f in frames):
        return BUCKETS[3]
    if "MainThread" not in thread:
        return BUCKETS[7]
    innermost = next((f for f in reversed(frames) if owners.get(f) != "stdlib"), "")
    if owners.get(innermost) == "otel-sdk" or "otel_gateway/telemetry/" in innermost:
        return BUCKETS[4]
    if any(f.startswith(_REQUEST) for f in frames):
        return BUCKETS[5]
    return BUCKETS[6]


_REQUEST = ("RequestResponseCycle.", "HttpToolsProtocol.", "ServerErrorMiddleware.", "RequestIdMiddleware.",
            "IdentityMiddleware.", "ChatCompletionsEndpoint.", "ProviderSend.", "AiohttpTransport.",
            "ClientSession.", "ResponseHandler.", "Router.", "Route.", "Starlette.", "ProxyHeadersMiddleware.",
            "ExceptionMiddleware.", "_send_within_deadline", "stream_to_client")
_ROOTS = ("_run_module_as_main (", "_run_code (", "<module> (", "main (otel_gateway/cli.py", "_serve (",
          "run (uvicorn", "Server.run (", "Thread._bootstrap", "Thread.run (", "_worker (concurrent",
          "_WorkItem.run (", "Server.serve (", "Runner.run (", "run (asyncio", "BaseEventLoop.run", "asyncio_run (")


def hot_spots(analysis: Analysis, limit: int = 25, who: str | None = None) -> list[tuple[str, float, float]]:
    """The functions with the highest inclusive share (entry points and thread roots left out),
    as ``(frame, inclusive %, self %)``, optionally only those ``who`` owns."""
    rows = []
    for frame, count in analysis.inclusive.most_common():
        if frame.startswith(_ROOTS):
            continue
        if who is not None and analysis.owner(frame) != who:
            continue
        rows.append((frame, analysis.share(count), analysis.share(analysis.own[frame])))
        if len(rows) == limit:
            break
    return rows


def top_self(analysis: Analysis, limit: int = 15, lines: bool = False) -> list[tuple[str, float]]:
    """The functions (or, with ``lines``, the lines) most often on top of the stack."""
    counter = analysis.own_lines if lines else analysis.own
    return [(frame, analysis.share(count)) for frame, count in counter.most_common(limit)]
