"""What is measured: the mock itself (the floor), otel-gateway in three set-ups, and the peers.

Each target knows how to start itself on core 0 against the mock, what model name and headers
its requests carry, and its version. A peer that is not installed is *unavailable* (with the
reason), never an error: the suite goes on without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Proc

GATEWAY_CORE, BENCH_CORE = 0, 1
MODEL = "gpt-4o-mini"
LITELLM_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
"""LiteLLM's proxy refuses to start without a master key; requests then carry it."""


@dataclass
class Context:
    """What every target needs to start: where the mock and the OTLP sink listen, where to work."""

    mock_port: int
    sink_port: int
    work: Path
    logs: Path
    gateway_python: str
    peers: Path
    mock_options: tuple[str, ...] = ()
    """The mock's ``--chunks``/``--chunk-delay-ms`` arguments."""


@dataclass
class Target:
    key: str
    label: str
    kind: str
    """``direct``, ``gateway`` or ``peer``."""
    model: str = MODEL
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/v1/chat/completions"
    profile: bool = False
    """Profile the hot path (py-spy) during a 64-connection run."""
    unavailable: str | None = None

    def launch(self, ctx: Context, port: int, workdir: Path) -> Proc | None:
        """Starts the target listening on ``port`` (None for the mock, already running)."""
        return None

    def version(self, ctx: Context) -> str:
        return ""

    def request_body(self, stream: bool) -> bytes:
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Say hello to the benchmark, briefly."}],
            "max_tokens": 64, "temperature": 0.2}
        if stream:
            body["stream"] = True
        return json.dumps(body, separators=(",", ":")).encode()


class Direct(Target):
    def __init__(self) -> None:
        super().__init__("direct", "direct to the mock (floor)", "direct")


class MockOnCore0(Target):
    """A second mock on core 0, where the targets run: the same floor plus what crossing cores costs
    here (wake-ups of an idle virtual CPU). Context for the concurrency 1 figures; no target is
    judged against it."""

    def __init__(self) -> None:
        super().__init__("direct-core0", "mock on core 0 (cross-core floor)", "peer")

    def launch(self, ctx: Context, port: int, workdir: Path) -> Proc:
        argv = [sys.executable, "-m", "bench.mock", "--port", str(port), *ctx.mock_options]
        return Proc(self.key, argv, core=GATEWAY_CORE, log=ctx.logs / f"{self.key}.log",
                    cwd=Path(__file__).resolve().parents[1])


class Gateway(Target):
    """``otel-gateway serve`` with the default features: request log to SQLite in its working
    directory (``./otel-gateway.db``, no logging document), optionally tracing or no log store."""

    def __init__(self, key: str, label: str, *, tracing: bool, store: str | None = None, profile: bool) -> None:
        super().__init__(key, label, "gateway", model=f"upstream/{MODEL}", profile=profile)
        self.tracing = tracing
        self.store = store

    def launch(self, ctx: Context, port: int, workdir: Path) -> Proc:
        config = workdir / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "providers.yaml").write_text(
            "type: gateway-providers-config\nproviders:\n  - name: upstream\n    type: openai-compatible\n"
            f"    base_url: http://127.0.0.1:{ctx.mock_port}/v1\n    models: [{MODEL}]\n")
        if self.store is not None:
            (config / "logging.yaml").write_text(f"type: gateway-logging-config\nstore: {self.store}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENABLE_OTEL_"))}
        if self.tracing:
            env.update({"ENABLE_OTEL_TRACING": "true", "OTEL_TRACES_SAMPLER": "always_on",
                        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ctx.sink_port}",
                        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        argv = [ctx.gateway_python, "-m", "otel_gateway", "serve", "--config", str(config), "--port", str(port)]
        return Proc(self.key, argv, core=GATEWAY_CORE, log=ctx.logs / f"{self.key}.log", cwd=workdir, env=env)

    def version(self, ctx: Context) -> str:
        code = "import otel_gateway._version as v; print(v.__version__)"
        version = _output([ctx.gateway_python, "-c", code]) or "?"
        root = Path(__file__).resolve().parents[1]
        commit = _output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
        dirty = _output(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "otel_gateway"])
        return f"{version} ({commit}{', uncommitted changes' if dirty else ''})" if commit else version


class LiteLLM(Target):
    def __init__(self) -> None:
        super().__init__("litellm", "LiteLLM proxy", "peer", headers={"Authorization": f"Bearer {LITELLM_KEY}"})

    def _bin(self, ctx: Context) -> Path:
        return ctx.peers / "litellm" / "venv" / "bin"

    def check(self, ctx: Context) -> LiteLLM:
        if not (self._bin(ctx) / "litellm").exists():
            self.unavailable = "not installed: " + _install_error(ctx.peers / "litellm" / "install.log")
        return self

    def launch(self, ctx: Context, port: int, workdir: Path) -> Proc:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "litellm.yaml"
        config.write_text(
            f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
            f"      api_base: http://127.0.0.1:{ctx.mock_port}/v1\n      api_key: sk-bench\n"
            f"litellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: {LITELLM_KEY}\n")
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        argv = [str(self._bin(ctx) / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                "--port", str(port), "--num_workers", "1"]
        return Proc(self.key, argv, core=GATEWAY_CORE, log=ctx.logs / f"{self.key}.log", cwd=workdir, env=env)

    def version(self, ctx: Context) -> str:
        code = "import importlib.metadata as m; print(m.version('litellm'))"
        return _output([str(self._bin(ctx) / "python"), "-c", code])


class Portkey(Target):
    def __init__(self) -> None:
        super().__init__("portkey", "Portkey gateway (Node)", "peer")

    def _script(self, ctx: Context) -> Path:
        return ctx.peers / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"

    def check(self, ctx: Context) -> Portkey:
        if shutil.which("node") is None:
            self.unavailable = "node is not installed"
        elif not self._script(ctx).exists():
            self.unavailable = "not installed: " + _install_error(ctx.peers / "portkey" / "install.log")
        return self

    def launch(self, ctx: Context, port: int, workdir: Path) -> Proc:
        workdir.mkdir(parents=True, exist_ok=True)
        self.headers = {"x-portkey-provider": "openai", "Authorization": "Bearer sk-bench",
                        "x-portkey-custom-host": f"http://127.0.0.1:{ctx.mock_port}/v1"}
        argv = ["node", str(self._script(ctx)), f"--port={port}", "--headless"]
        return Proc(self.key, argv, core=GATEWAY_CORE, log=ctx.logs / f"{self.key}.log", cwd=workdir)

    def version(self, ctx: Context) -> str:
        package = self._script(ctx).parents[1] / "package.json"
        version = json.loads(package.read_text())["version"] if package.exists() else "?"
        hono = ctx.peers / "portkey" / "node_modules" / "@hono" / "node-server" / "package.json"
        hono_version = json.loads(hono.read_text())["version"] if hono.exists() else "?"
        return f"{version} (node {_output(['node', '--version'])}, @hono/node-server {hono_version})"


def all_targets(ctx: Context) -> list[Target]:
    return [
        Direct(),
        MockOnCore0(),
        Gateway("gateway", "otel-gateway", tracing=False, profile=True),
        Gateway("gateway-tracing", "otel-gateway + tracing", tracing=True, profile=True),
        Gateway("gateway-nolog", "otel-gateway, no request log", tracing=False, store="none", profile=False),
        Portkey().check(ctx),
        LiteLLM().check(ctx),
    ]


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _install_error(log: Path) -> str:
    if not log.exists():
        return "no install attempted (BENCH_SKIP_PEERS=1?)"
    lines = [line for line in log.read_text(errors="replace").splitlines() if "ERROR" in line or "ERR!" in line]
    return (lines[-1] if lines else "see " + str(log))[:300]
