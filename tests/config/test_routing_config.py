"""Bad identity and routing documents are refused at load, each problem named by file, document and
key path: unknown rule types, weights that do not sum to 100, unknown targets, bad keys and subjects,
rule ids used twice or with unknown placeholders, a target listed twice in one rule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from otel_gateway.calls import ChatCall, RequestContext
from otel_gateway.cli import main
from otel_gateway.config import RULE_ID_PLACEHOLDERS, ConfigError, load_config, load_config_text
from otel_gateway.identity import Identity
from otel_gateway.routing.ratelimit._rules import expand

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
    pytest.param(RATE + "rules:\n  - {id: r, limit_to: 1, unit: requests_per_day}\n"
                        "  - {id: s, limit_to: 1, unit: requests_per_day}\n"
                        "  - {id: r, limit_to: 5, unit: tokens_per_day}\n",
                 ["rules[2].id: rule id 'r' is already the id of rules[0]; each rule needs its own id"],
                 id="rate-rule-id-twice"),
    pytest.param(RATE + "rules:\n  - {id: '{user}-rpm', limit_to: 1, unit: requests_per_minute}\n"
                        "  - {id: '{user}-rpm', when: {models: [a/m]}, limit_to: 5, unit: requests_per_minute}\n",
                 ["rules[1].id: rule id '{user}-rpm' is already the id of rules[0]; each rule needs its own id"],
                 id="rate-rule-id-template-twice"),
    pytest.param(LB + "  - {id: r, type: latency-based-routing, load_balance_targets: [{target: a/m}]}\n"
                      "  - {id: r, type: latency-based-routing, load_balance_targets: [{target: b/m}]}\n"
                      "  - {id: r, type: latency-based-routing, load_balance_targets: [{target: a/m}]}\n",
                 ["rules[1].id: rule id 'r' is already the id of rules[0]; each rule needs its own id",
                  "rules[2].id: rule id 'r' is already the id of rules[0]; each rule needs its own id"],
                 id="load-balance-rule-id-three-times"),
    pytest.param(FALLBACK + "  - {id: r, fallback_models: [{target: a/m}]}\n"
                            "  - {id: r, fallback_models: [{target: b/m}]}\n",
                 ["rules[1].id: rule id 'r' is already the id of rules[0]; each rule needs its own id"],
                 id="fallback-rule-id-twice"),
    pytest.param(RATE + "rules:\n  - {id: '{tenant}-rpm', limit_to: 1, unit: requests_per_minute}\n",
                 ["rules[0].id: unknown placeholder {tenant} in '{tenant}-rpm'; the only placeholders are "
                  "{user} and {model}"], id="rate-id-placeholder-tenant"),
    pytest.param(RATE + "rules:\n  - {id: '{usr}-{model}-{usr}-{Model}', limit_to: 1, unit: requests_per_minute}\n",
                 ["rules[0].id: unknown placeholders {usr}, {Model} in '{usr}-{model}-{usr}-{Model}'; the only "
                  "placeholders are {user} and {model}"], id="rate-id-placeholders-misspelt"),
    pytest.param(RATE + "rules:\n  - {id: '{}-rpm', limit_to: 1, unit: requests_per_minute}\n",
                 ["rules[0].id: unknown placeholder {} in '{}-rpm'; the only placeholders are {user} and {model}"],
                 id="rate-id-empty-placeholder"),
    pytest.param(RATE + "rules:\n  - {id: '{user-rpm', limit_to: 1, unit: requests_per_minute}\n"
                        "  - {id: 'user}-rpm', limit_to: 1, unit: requests_per_minute}\n"
                        "  - {id: '{{user}}-rpm', limit_to: 1, unit: requests_per_minute}\n"
                        "  - {id: '{us{er}-rpm', limit_to: 1, unit: requests_per_minute}\n",
                 ["rules[0].id: unbalanced brace in '{user-rpm'; the only placeholders are {user} and {model}",
                  "rules[1].id: unbalanced brace in 'user}-rpm'; the only placeholders are {user} and {model}",
                  "rules[2].id: unbalanced brace in '{{user}}-rpm'; the only placeholders are {user} and {model}",
                  "rules[3].id: unbalanced brace in '{us{er}-rpm'; the only placeholders are {user} and {model}"],
                 id="rate-id-unbalanced-braces"),
    pytest.param(LB + "  - {id: r, type: weight-based-routing, load_balance_targets: "
                      "[{target: a/m, weight: 50}, {target: a/m, weight: 50}]}\n",
                 ["rules[0].load_balance_targets[1].target: target 'a/m' is already listed as "
                  "load_balance_targets[0]; list each target once"], id="load-balance-target-twice"),
    pytest.param(LB + "  - {id: r, type: latency-based-routing, load_balance_targets: [{target: a/m}]}\n"
                      "  - {id: s, type: priority-based-routing, load_balance_targets: "
                      "[{target: b/m, priority: 0}, {target: a/m, priority: 1}, "
                      "{target: b/m, priority: 2, override_params: {max_tokens: 5}}]}\n",
                 ["rules[1].load_balance_targets[2].target: target 'b/m' is already listed as "
                  "load_balance_targets[0]; list each target once"], id="load-balance-target-twice-in-second-rule"),
    pytest.param(FALLBACK + "  - {id: r, fallback_models: [{target: a/m}, {target: b/m}, "
                            "{target: a/m, override_params: {temperature: 0}}]}\n",
                 ["rules[0].fallback_models[2].target: target 'a/m' is already listed as fallback_models[0]; "
                  "list each target once"], id="fallback-target-twice"),
    pytest.param(FALLBACK + "  - {id: r, fallback_models: [{target: c/m}, {target: c/m}]}\n",
                 ["rules[0].fallback_models[1].target: target 'c/m' is already listed as fallback_models[0]; "
                  "list each target once",
                  "rules[0].fallback_models[0].target: unknown target 'c/m': not a configured provider-account/model",
                  "rules[0].fallback_models[1].target: unknown target 'c/m': not a configured provider-account/model"],
                 id="unknown-fallback-target-twice"),
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


def test_distinct_ids_and_targets_load() -> None:
    """What the uniqueness checks leave alone: ids that differ only in their placeholders, the same
    target in two rules, and every placeholder alone or together."""
    config = load_config_text(PROVIDERS + RATE + """\
rules:
  - {id: "{user}-rpm", limit_to: 1, unit: requests_per_minute}
  - {id: "{model}-rpm", limit_to: 1, unit: requests_per_minute}
  - {id: "{user}-{model}", limit_to: 1, unit: requests_per_minute}
  - {id: "user:alice-rpm", limit_to: 1, unit: requests_per_minute}
---
""" + LB + """\
  - {id: r, type: latency-based-routing, load_balance_targets: [{target: a/m}, {target: b/m}]}
  - {id: s, type: latency-based-routing, load_balance_targets: [{target: a/m}]}
---
""" + FALLBACK + """\
  - {id: r, fallback_models: [{target: a/m}, {target: b/m}]}
  - {id: s, fallback_models: [{target: a/m}]}
""", source="gw.yaml", environ={})
    assert config.rate_limiting is not None and len(config.rate_limiting.rules) == 4


def call_by(subject: str) -> ChatCall:
    return ChatCall(body={}, model="a/m", context=RequestContext(request_id="r", identity=Identity(subject, "t")))


@pytest.mark.parametrize("name", RULE_ID_PLACEHOLDERS)
def test_the_rate_limiter_fills_in_every_placeholder_the_config_allows(name: str) -> None:
    expanded = expand(f"<{{{name}}}>", call_by("user:x"))
    assert expanded in ("<user:x>", "<a/m>")
    assert expand("{user}-{model}", call_by("user:x")) == "user:x-a/m"


def test_a_subject_that_looks_like_a_placeholder_is_not_expanded_again() -> None:
    assert expand("{user}-{model}", call_by("user:{model}")) == "user:{model}-a/m"


DUPLICATES = PROVIDERS + RATE + """\
rules:
  - {id: "{user}-rpm", limit_to: 1, unit: requests_per_minute}
  - {id: "{user}-rpm", limit_to: 2, unit: requests_per_hour}
---
""" + LB + """\
  - {id: r, type: latency-based-routing, load_balance_targets: [{target: a/m}, {target: a/m}]}
---
""" + FALLBACK + """\
  - {id: r, fallback_models: [{target: b/m}, {target: b/m}]}
"""
DUPLICATE_ERRORS = [
    "(document 2): rules[1].id: rule id '{user}-rpm' is already the id of rules[0]; each rule needs its own id",
    "(document 3): rules[0].load_balance_targets[1].target: target 'a/m' is already listed as "
    "load_balance_targets[0]; list each target once",
    "(document 4): rules[0].fallback_models[1].target: target 'b/m' is already listed as fallback_models[0]; "
    "list each target once",
]


def test_load_config_names_the_file_of_each_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(DUPLICATES)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert [str(issue) for issue in error.value.issues] == [f"{path} {line}" for line in DUPLICATE_ERRORS]


def test_check_config_prints_each_duplicate_and_bad_placeholder(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(DUPLICATES)
    (tmp_path / "b.yaml").write_text(
        "type: gateway-rate-limiting-config\nrules:\n  - {id: '{tenant}-rpm', limit_to: 1, unit: requests_per_day}\n")
    assert main(["check-config", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert out == ""
    assert err.splitlines() == [
        f"{b}: rules[0].id: unknown placeholder {{tenant}} in '{{tenant}}-rpm'; the only placeholders are "
        "{user} and {model}",
        *(f"{a} {line}" for line in DUPLICATE_ERRORS),
        "4 error(s)",
    ]
