"""The ``gateway-logging-config`` document: defaults, validation with key paths, one per config."""

from __future__ import annotations

import pytest

from otel_gateway.config import ConfigError, load_config_text
from otel_gateway.config._logging import DEFAULT_STORE, LoggingDocument, ModelPrice

MOCK = "type: gateway-providers-config\nproviders:\n  - {name: demo, type: mock, models: [echo]}\n---\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config_text(MOCK + text, source="gw.yaml", environ={})
    return [str(issue) for issue in error.value.issues]


def test_no_document_means_the_defaults() -> None:
    logging = load_config_text(MOCK, environ={}).logging
    assert logging == LoggingDocument(type="gateway-logging-config")
    assert (logging.store, logging.jsonl, logging.spool_dir, logging.retention_days) == (
        DEFAULT_STORE, None, "./otel-gateway-spool", 30)
    assert DEFAULT_STORE == "sqlite:///./otel-gateway.db"
    assert (logging.queue_size, logging.batch_size, logging.flush_interval_ms, logging.write_timeout_ms) == (
        10_000, 200, 1000, 10_000)
    assert (logging.redact_headers, dict(logging.pricing), logging.environment) == ((), {}, "production")


def test_every_key() -> None:
    logging = load_config_text(MOCK + """\
type: gateway-logging-config
store: postgresql://gw:${PW}@db/logs
jsonl: /var/log/gw.jsonl
spool_dir: /var/spool/gw
retention_days: null
queue_size: 5
batch_size: 7
flush_interval_ms: 50
write_timeout_ms: 900
redact_headers: [X-Team-Token, cookie2]
pricing:
  demo/echo: {input: 1.5, output: 2, cached_input: 0.5}
environment: ${ENV:-staging}
""", environ={"PW": "s3cret"}).logging
    assert logging.store == "postgresql://gw:s3cret@db/logs"
    assert (logging.jsonl, logging.spool_dir, logging.retention_days) == ("/var/log/gw.jsonl", "/var/spool/gw", None)
    assert (logging.queue_size, logging.batch_size, logging.flush_interval_ms, logging.write_timeout_ms) == (5, 7, 50,
                                                                                                           900)
    assert logging.redact_headers == ("x-team-token", "cookie2")
    assert dict(logging.pricing) == {"demo/echo": ModelPrice(input=1.5, output=2, cached_input=0.5)}
    assert logging.environment == "staging"


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("store: mysql://x\n", ["gw.yaml: store: must be sqlite:///path, postgresql://..., memory or none"],
                 id="store-url"),
    pytest.param("retention_days: 0\n", ["gw.yaml: retention_days: Input should be greater than or equal to 1"],
                 id="retention"),
    pytest.param("batch_size: 0\nqueue_size: -1\n", [
        "gw.yaml: queue_size: Input should be greater than or equal to 1",
        "gw.yaml: batch_size: Input should be greater than or equal to 1"], id="sizes"),
    pytest.param("redact_headers: ['bad header']\n", ["gw.yaml: redact_headers: 'bad header' is not a header name"],
                 id="header"),
    pytest.param("pricing: {m: {input: -1, output: 1, extra: 2}}\n", [
        "gw.yaml: pricing.m.input: Input should be greater than or equal to 0",
        "gw.yaml: pricing.m.extra: unknown key"], id="price"),
    pytest.param("flush: 1\n", ["gw.yaml: flush: unknown key"], id="unknown-key"),
])
def test_mistakes_name_their_key(text: str, expected: list[str]) -> None:
    assert errors("type: gateway-logging-config\n" + text) == [e.replace("gw.yaml", "gw.yaml (document 2)")
                                                              for e in expected]


def test_one_logging_document() -> None:
    assert errors("type: gateway-logging-config\n---\ntype: gateway-logging-config\n") == [
        "gw.yaml (document 3): type: a second gateway-logging-config document; merge them into one"]
