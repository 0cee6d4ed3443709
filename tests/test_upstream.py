"""The credential scrubber every upstream error, stream error and log record passes through."""

import pytest

from otel_gateway.upstream import Scrubber


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("no key here at all", "no key here at all", id="nothing-to-scrub"),
        pytest.param("Incorrect API key provided: sk-proj-abc123XYZ.", "Incorrect API key provided: [REDACTED].",
                     id="openai-shaped"),
        pytest.param("bad x-api-key sk-ant-api03-Zz_9-8", "bad x-api-key [REDACTED]", id="anthropic-shaped"),
        pytest.param("task-abcdefgh and risk-management", "task-abcdefgh and risk-management", id="sk-inside-a-word"),
        pytest.param("sk-short", "sk-short", id="too-short-to-be-a-key"),
        pytest.param("the key is configured-secret-value!", "the key is [REDACTED]!", id="configured-secret"),
    ],
)
def test_scrubber(text: str, expected: str) -> None:
    assert Scrubber(["configured-secret-value"])(text) == expected


def test_scrubber_prefers_the_longest_secret() -> None:
    assert Scrubber(["abcd", "abcdefgh"])("x abcdefgh y abcd") == "x [REDACTED] y [REDACTED]"
