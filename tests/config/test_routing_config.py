"""Bad identity and routing documents are refused at load, each problem named by file, document and
key path: unknown rule types, weights that do not sum to 100, unknown targets, bad keys and subjects."""

from __future__ import annotations

import hashlib

import pytest

from otel_gateway.config import ConfigError, load_config_text

PROVIDERS = """\
type: gateway-providers-config
providers:
  - {name: a, type: mock, models: [m]}
  - {name: b, type: mock, models: [m]}
---
"""
DOC = "gw.yaml (document 2)"
LB = "type: gateway-load-balancing-config\nrules:\n"
FALLBACK = "type: gateway-fallback-config\nrules:\n"
RATE = "type: gateway-rate-limiting-config\n"
AUTH = "type: gateway-auth-config\nkeys:\n"


def load_errors(document: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config_text(PROVIDERS + document, source="gw.yaml", environ={})
    return [str(issue) for issue in error.value.issues]


@pytest.mark.parametrize(("document", "expected"), [
    pytest.param(LB + "  - {id: r, type: round-robin, load_balance_targets: [{target: a/m, weight: 100}]}\n",
                 ["rules[0].type: Input should be 'weight-based-routing', 'latency-based-routing' or "
                  "'priority-based-routing'"], id="unknown-rule-type"),
    pytest.param(LB + "  - {id: r, type: weight-based-routing, load_balance_targets: "
                      "[{target: a/m, weight: 60}, {target: b/m, weight: 30}]}\n",
                 ["rules[0]: the weights of a weight-based rule must sum to 100, not 90"], id="weights-sum-to-90"),
    pytest.param(LB + "  - {id: r, type: weight-based-routing, load_balance_targets: "
                      "[{target: a/m, weight: 100}, {target: b/m}]}\n",
                 ["rules[0]: every target of a weight-based rule needs a weight"], id="weight-missing"),
    pytest.param(LB + "  - {id: r, type: weight-based-routing, load_balance_targets: [{target: a/m, weight: 101}]}\n",
                 ["rules[0].load_balance_targets[0].weight: Input should be less than or equal to 100"],
                 id="weight-over-100"),
    pytest.param(LB + "  - {id: r, type: priority-based-routing, load_balance_targets: "
                      "[{target: a/m, priority: 0}, {target: b/m}]}\n",
                 ["rules[0]: every target of a priority-based rule needs a priority"], id="priority-missing"),
    pytest.param(LB + "  - {id: r, type: latency-based-routing, load_balance_targets: []}\n",
                 ["rules[0].load_balance_targets: Tuple should have at least 1 item after validation, not 0"],
                 id="no-targets"),
    pytest.param(LB + "  - {id: r, type: weight-based-routing, load_balance_targets: "
                      "[{target: a/nope, weight: 100}]}\n",
                 ["rules[0].load_balance_targets[0].target: unknown target 'a/nope': not a configured "
                  "provider-account/model"], id="unknown-load-balance-target"),
    pytest.param(LB + "  - {id: r, type: weight-based-routing, load_balance_targets: "
                      "[{target: a/m, weight: 100, wieght: 3}]}\n",
                 ["rules[0].load_balance_targets[0].wieght: unknown key"], id="misspelt-key-alone"),
    pytest.param(LB + "  - id: r\n    type: weight-based-routing\n    load_balance_targets:\n"
                      "      - {target: a/m, weight: 100, retry_config: {attempts: 0, delay: -1, "
                      "on_status_codes: [5xx]}}\n",
                 ["rules[0].load_balance_targets[0].retry_config.attempts: Input should be greater than or equal to 1",
                  "rules[0].load_balance_targets[0].retry_config.delay: Input should be greater than or equal to 0",
                  "rules[0].load_balance_targets[0].retry_config.on_status_codes[0]: Input should be a valid "
                  "integer, unable to parse string as an integer"], id="bad-retry-config"),
    pytest.param(LB + "  - {id: r, type: priority-based-routing, load_balance_targets: "
                      "[{target: a/m, priority: 0, fallback_status_codes: [99]}]}\n",
                 ["rules[0].load_balance_targets[0].fallback_status_codes[0]: Input should be greater than or "
                  "equal to 100"], id="bad-fallback-status"),
    pytest.param(FALLBACK + "  - {id: r, fallback_models: [{target: c/m}]}\n",
                 ["rules[0].fallback_models[0].target: unknown target 'c/m': not a configured "
                  "provider-account/model"], id="unknown-fallback-target"),
    pytest.param(FALLBACK + "  - {id: r, when: {response_status_codes: [700]}, fallback_models: [{target: a/m}]}\n",
                 ["rules[0].when.response_status_codes[0]: Input should be less than or equal to 599"],
                 id="bad-response-status"),
    pytest.param(FALLBACK + "  - {id: r, fallback_models: []}\n",
                 ["rules[0].fallback_models: Tuple should have at least 1 item after validation, not 0"],
                 id="no-fallback-models"),
    pytest.param(RATE + "rules:\n  - {id: r, limit_to: 0, unit: requests_per_week}\n",
                 ["rules[0].limit_to: Input should be greater than 0",
                  "rules[0].unit: Input should be 'requests_per_minute', 'requests_per_hour', 'requests_per_day', "
                  "'tokens_per_minute', 'tokens_per_hour' or 'tokens_per_day'"], id="bad-rate-rule"),
    pytest.param(RATE + "backend: memcached://cache:11211\nrules:\n  - {id: r, limit_to: 1, unit: requests_per_day}\n",
                 ["backend: must be 'memory' or a redis:// URL"], id="bad-backend"),
    pytest.param(RATE + "rules:\n  - {id: r, when: {subjects: [alice]}, limit_to: 1, unit: requests_per_day}\n",
                 ["rules[0].when.subjects: subject 'alice' must look like user:..., team:... or virtualaccount:..."],
                 id="bad-when-subject"),
    pytest.param(AUTH + f"  - {{name: k, key: abc, key_sha256: {'a' * 64}, subject: 'user:a'}}\n"
                        "  - {name: k2, subject: 'user:b'}\n",
                 ["keys[0]: give exactly one of key or key_sha256", "keys[1]: give exactly one of key or key_sha256"],
                 id="key-and-key-sha256"),
    pytest.param(AUTH + "  - {name: k, key_sha256: abc123, subject: 'user:a'}\n",
                 ["keys[0].key_sha256: must be the 64 hex digits of a SHA-256"], id="bad-key-sha256"),
    pytest.param(AUTH + "  - {name: k, key: '', subject: 'user:a'}\n", ["keys[0]: key is empty"], id="empty-key"),
    pytest.param(AUTH + "  - {name: k, key: abc, subject: alice}\n",
                 ["keys[0].subject: subject 'alice' must look like user:..., team:... or virtualaccount:..."],
                 id="bad-subject"),
    pytest.param(AUTH + "  - {name: laptop, key: sk-same, subject: 'user:a'}\n"
                        "  - {name: ci, key: sk-same, subject: 'team:ml'}\n",
                 ["keys[1] ('ci') is the same key as keys[0] ('laptop')"], id="same-key-twice"),
    pytest.param(AUTH + "  - {name: laptop, key: sk-same, subject: 'user:a'}\n"
                        f"  - {{name: ci, key_sha256: {hashlib.sha256(b'sk-same').hexdigest().upper()}, "
                        "subject: 'team:ml'}\n",
                 ["keys[1] ('ci') is the same key as keys[0] ('laptop')"], id="same-key-by-its-sha256"),
])
def test_a_bad_document_is_refused_naming_the_key(document: str, expected: list[str]) -> None:
    errors = load_errors(document)
    assert errors == [f"{DOC}: {message}" for message in expected]
    assert "sk-same" not in "\n".join(errors)


def test_the_contract_example_loads() -> None:
    """The routing documents of CONTRACT.md section 4, over providers that have their targets."""
    config = load_config_text("""\
type: gateway-providers-config
providers:
  - {name: azure-main, type: mock, models: [gpt-4o]}
  - {name: openai-main, type: mock, models: [gpt-4o]}
  - {name: anthropic-main, type: mock, models: [claude-sonnet-4-5]}
---
type: gateway-auth-config
keys:
  - {name: alice-laptop, key: sk-alice, subject: user:alice@example.com, tenant: acme, admin: false}
---
type: gateway-rate-limiting-config
backend: memory
rules:
  - id: "{user}-daily"
    when: {subjects: ["team:ml"], models: ["openai-main/gpt-4o"], metadata: {env: prod}}
    limit_to: 1000
    unit: requests_per_day
---
type: gateway-load-balancing-config
rules:
  - id: gpt4o-split
    type: weight-based-routing
    when: {models: ["gpt-4o"]}
    load_balance_targets:
      - target: azure-main/gpt-4o
        weight: 70
        retry_config: {attempts: 2, delay: 100, on_status_codes: ["429", "500", "502", "503"]}
        fallback_status_codes: ["401", "403", "404", "429", "500", "502", "503"]
        override_params: {max_tokens: 512}
      - target: openai-main/gpt-4o
        weight: 30
---
type: gateway-fallback-config
rules:
  - id: gpt4o-to-claude
    when: {models: ["openai-main/gpt-4o"], response_status_codes: [429, 500, 503]}
    fallback_models:
      - target: anthropic-main/claude-sonnet-4-5
        override_params: {temperature: 0.2}
""", environ={})
    assert config.load_balancing is not None and config.fallback is not None
    first = config.load_balancing.rules[0].load_balance_targets[0]
    assert first.retry_config is not None and first.retry_config.on_status_codes == (429, 500, 502, 503)
    assert first.fallback_status_codes == (401, 403, 404, 429, 500, 502, 503)
    assert config.fallback.rules[0].when.response_status_codes == (429, 500, 503)
