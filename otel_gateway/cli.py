"""The ``otel-gateway`` command: ``serve``, ``check-config`` and ``logs``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from starlette.applications import Starlette

from .config import ConfigError, GatewayConfig, load_config
from .redaction import Redactor
from .warehouse import add_logs_parser, run_logs

CONFIG_ENV = "OTEL_GATEWAY_CONFIG"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-gateway", description="OpenTelemetry-native AI gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", help="a YAML file or a directory of them (default: ./config, else built-in)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument("--graceful-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                       help="on SIGTERM, how long requests in flight may finish (default 30); a second "
                            "signal exits at once")
    serve.add_argument("--access-log", action="store_true", help="log every request line")
    serve.add_argument("--log-level", default="info")
    check = commands.add_parser("check-config", help="validate a configuration and exit")
    check.add_argument("path")
    add_logs_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.path)
    if args.command == "logs":
        return run_logs(args)
    return _serve(args)


def _check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    models = sum(len(p.models) for p in config.providers)
    print(f"ok: {len(config.providers)} provider(s), {models} model(s) from {', '.join(config.sources)}")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not {text!r}")
    return value


def _config_path(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    return "config" if Path("config").is_dir() else None


def _load(path: str | None) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    path = _config_path(args.config)
    config = _load(path)
    if config is None:
        return 1
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .http import http_protocol  # the HTTP front with the header, body and time bounds

    options = {"host": args.host, "port": args.port, "access_log": args.access_log, "log_level": args.log_level,
               "http": http_protocol(config.server)}
    options["timeout_graceful_shutdown"] = args.graceful_timeout
    if args.workers > 1:
        if path is not None:
            os.environ[CONFIG_ENV] = str(Path(path).resolve())
        from ._supervisor import run_workers

        run_workers("otel_gateway.cli:app_from_env", args.workers, **options)
        return 0
    uvicorn.run(_app(config), **options)
    return 0


def app_from_env() -> Starlette:
    """The factory each worker process calls: config from ``OTEL_GATEWAY_CONFIG``. SIGINT is left
    to the supervisor, which relays it (see :mod:`otel_gateway._supervisor`)."""
    from ._supervisor import ignore_sigint_in_worker

    config = load_config(os.environ.get(CONFIG_ENV) or None)
    ignore_sigint_in_worker()
    return _app(config)


def _app(config: GatewayConfig) -> Starlette:
    from opentelemetry import trace

    from .app import create_app
    from .telemetry import (
        capture_content,
        logger_provider_from_env,
        resource_from,
        service_name,
        tracer_provider_from_env,
    )

    env = os.environ
    resource = resource_from(env, environment=config.logging.environment)
    provider = tracer_provider_from_env(env, resource)
    if provider is not None:
        trace.set_tracer_provider(provider)
    app = create_app(
        config, tracer_provider=provider, logger_provider=logger_provider_from_env(env, resource),
        capture_content=capture_content(env), service_name=service_name(env), reload_on_sighup=True,
    )
    gateway = app.state.gateway
    install_access_log_redaction(lambda: gateway.current.redactor)
    _tune_gc()
    return app


ACCESS_LOGGER = "uvicorn.access"


class AccessLogRedaction(logging.Filter):
    """Redacts the query of uvicorn's access log lines by the gateway's one rule
    (:meth:`~otel_gateway.redaction.Redactor.query`: parameters named like credentials, and any
    holding a configured secret or a key-shaped value), with the redactor of the configuration of
    the moment, so a reload's ``redact_headers`` and keys apply here too. uvicorn logs
    ``(client, method, path?query, http version, status)``."""

    def __init__(self, redactor: Callable[[], Redactor]) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], self._redactor().url(args[2]), *args[3:])
        return True


def install_access_log_redaction(redactor: Callable[[], Redactor]) -> None:
    """Puts an :class:`AccessLogRedaction` on uvicorn's access logger, replacing one put there before."""
    access = logging.getLogger(ACCESS_LOGGER)
    for installed in [f for f in access.filters if isinstance(f, AccessLogRedaction)]:
        access.removeFilter(installed)
    access.addFilter(AccessLogRedaction(redactor))


GC_THRESHOLDS = (20_000, 50, 100)
"""The collector's thresholds in a serving process (CPython's defaults: 700, 10, 10)."""


def _tune_gc() -> None:
    """A request allocates a few hundred container objects that reference counting frees, and the
    request log holds thousands of finished exchanges until their batch is written: with the
    default thresholds the cyclic collector ran ~350 times a second under load, rescanning them,
    for 12% of the CPU. Objects made at start-up (modules, config) are frozen out of its scans."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


if __name__ == "__main__":
    raise SystemExit(main())
