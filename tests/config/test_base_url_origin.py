"""A provider's base_url is an origin and a path, nothing that could move a request elsewhere:
userinfo, a query, a fragment, a backslash or a missing host are refused at load, and so are
Azure deployments that cannot be one path segment."""

from __future__ import annotations

import pytest

from otel_gateway.config import ConfigError, load_config_text


@pytest.mark.parametrize(("base_url", "issue"), [
    pytest.param("http://user:pw@127.0.0.1:9302", "base_url may not hold '@' (user:password@host): put credentials "
                 "in api_key or headers", id="userinfo"),
    pytest.param("http://127.0.0.1:9302%2F@127.0.0.1:9301", "base_url may not hold '@' (user:password@host): put "
                 "credentials in api_key or headers", id="encoded-slash-userinfo"),
    pytest.param("http://127.0.0.1:9302/v1?key=1", "base_url may not hold a query ('?') or a fragment ('#')",
                 id="query"),
    pytest.param("http://127.0.0.1:9302/v1#x", "base_url may not hold a query ('?') or a fragment ('#')",
                 id="fragment"),
    pytest.param("http://127.0.0.1:9302\\\\@evil", "base_url may not hold '@' (user:password@host): put credentials "
                 "in api_key or headers", id="backslash-at"),
    pytest.param("http://127.0.0.1:9302\\\\evil", "base_url needs a host, and may not hold a backslash, spaces or "
                 "control characters", id="backslash"),
    pytest.param("http:///v1", "base_url needs a host, and may not hold a backslash, spaces or control characters",
                 id="no-host"),
    pytest.param("http://host/a b", "base_url needs a host, and may not hold a backslash, spaces or control "
                 "characters", id="space"),
])
def test_a_base_url_that_could_move_the_host_is_refused(base_url: str, issue: str) -> None:
    text = f"""
type: gateway-providers-config
providers:
  - {{name: p, type: openai-compatible, base_url: "{base_url}", models: [m]}}
"""
    with pytest.raises(ConfigError) as raised:
        load_config_text(text, source="gw.yaml", environ={})

    assert [str(problem) for problem in raised.value.issues] == [f"gw.yaml: providers[0]: {issue}"]


@pytest.mark.parametrize("deployment", ["", ".", ".."])
def test_an_azure_deployment_must_be_one_segment(deployment: str) -> None:
    text = f"""
type: gateway-providers-config
providers:
  - {{name: az, type: azure-openai, base_url: "https://az.example", api_key: k, models: {{m: "{deployment}"}}}}
"""
    with pytest.raises(ConfigError) as raised:
        load_config_text(text, source="gw.yaml", environ={})

    assert [str(problem) for problem in raised.value.issues] == [
        "gw.yaml: providers[0]: an azure-openai deployment (a value of models) cannot be empty, '.' or '..'"]


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9302", "https://az.example:8443/openai/v1/",
                                      "http://[::1]:9000/x", "http://localhost:11434/v1"])
def test_an_origin_and_path_load(base_url: str) -> None:
    text = f"""
type: gateway-providers-config
providers:
  - {{name: p, type: openai-compatible, base_url: "{base_url}", models: [m]}}
"""
    (provider,) = load_config_text(text, environ={}).providers

    assert provider.url == base_url.rstrip("/")
