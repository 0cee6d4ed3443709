"""Loading configuration: files, directories, documents, interpolation, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_gateway.config import (
    BUILTIN_DEFAULT,
    DOCUMENT_TYPES,
    ConfigError,
    GatewayConfig,
    load_config,
    load_config_text,
)

REPO = Path(__file__).resolve().parents[2]
KNOWN_TYPES = ", ".join(sorted(DOCUMENT_TYPES))

MOCK = """\
type: gateway-providers-config
providers:
  - name: {name}
    type: mock
    models: [{model}]
"""


def issues(error: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(issue) for issue in error.value.issues]


def load_text_error(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config_text(text, source="gw.yaml", environ=env)
    assert str(error.value) == "\n".join(issues(error))
    return issues(error)


def model_ids(config: GatewayConfig) -> list[str]:
    return [f"{p.name}/{model}" for p in config.providers for model in p.models]


def test_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("""\
type: gateway-providers-config
providers:
  - name: openai-main
    type: openai
    api_key: sk-test
    models: [gpt-4o, gpt-4o-mini]
    timeout_ms: 30000
""")
    config = load_config(path, environ={})
    (provider,) = config.providers
    assert provider.name == "openai-main"
    assert provider.type == "openai"
    assert provider.url == "https://api.openai.com/v1"
    assert provider.secret() == "sk-test"
    assert dict(provider.models) == {"gpt-4o": "gpt-4o", "gpt-4o-mini": "gpt-4o-mini"}
    assert provider.timeout_ms == 30000
    assert config.sources == (str(path),)
    assert config.secrets() == ("sk-test",)
    assert config.provider("openai-main") is provider
    assert config.provider("nope") is None


def test_a_file_as_str_path(tmp_path: Path) -> None:
    path = tmp_path / "g.yml"
    path.write_text(MOCK.format(name="demo", model="echo"))
    assert model_ids(load_config(str(path), environ={})) == ["demo/echo"]


def test_a_directory_is_read_sorted_and_merged(tmp_path: Path) -> None:
    (tmp_path / "20-second.yaml").write_text(MOCK.format(name="second", model="b"))
    (tmp_path / "10-first.yml").write_text(MOCK.format(name="first", model="a"))
    (tmp_path / "30-server.yaml").write_text("type: gateway-server-config\nmax_request_body_bytes: 1024\n")
    (tmp_path / "notes.txt").write_text("not: [yaml")
    (tmp_path / "sub.yaml").mkdir()
    config = load_config(tmp_path, environ={})
    assert model_ids(config) == ["first/a", "second/b"]
    assert config.server.max_request_body_bytes == 1024
    names = ("10-first.yml", "20-second.yaml", "30-server.yaml")
    assert config.sources == tuple(str(tmp_path / name) for name in names)


def test_a_directory_without_yaml(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, environ={})
    assert issues(error) == [f"{tmp_path}: no .yaml or .yml files in this directory"]


def test_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "nope.yaml", environ={})
    assert issues(error) == [f"{tmp_path / 'nope.yaml'}: no such file or directory"]


def test_none_loads_the_builtin_default() -> None:
    config = load_config(None, environ={})
    assert model_ids(config) == ["demo/echo"]
    assert config.providers[0].type == "mock"
    assert model_ids(load_config_text(BUILTIN_DEFAULT, environ={})) == ["demo/echo"]


def test_multi_document_file(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(
        MOCK.format(name="one", model="a")
        + "---\n"
        + "type: gateway-server-config\nmax_request_body_bytes: 2048\n"
        + "---\n"
        + MOCK.format(name="two", model="b")
        + "---\n"  # an empty document is skipped
    )
    config = load_config(path, environ={})
    assert model_ids(config) == ["one/a", "two/b"]
    assert config.server.max_request_body_bytes == 2048
    assert config.sources == (str(path),)


def test_errors_in_a_multi_document_file_name_the_document() -> None:
    text = MOCK.format(name="one", model="a") + "---\ntype: gateway-server-config\nmax_request_body_bytes: 0\n"
    assert load_text_error(text) == [
        "gw.yaml (document 2): max_request_body_bytes: Input should be greater than 0",
    ]


def test_server_config_defaults() -> None:
    config = load_config_text(MOCK.format(name="demo", model="echo"), environ={})
    assert config.server.max_request_body_bytes == 10 * 1024 * 1024


def test_server_config_twice() -> None:
    text = MOCK.format(name="a", model="x") + "---\ntype: gateway-server-config\n---\ntype: gateway-server-config\n"
    assert load_text_error(text) == [
        "gw.yaml (document 3): type: a second gateway-server-config document; merge them into one",
    ]


PROVIDER_WITH_VARS = """\
type: gateway-providers-config
providers:
  - name: ${NAME:-openai-main}
    type: openai
    base_url: ${BASE:-https://api.openai.com/v1}
    api_key: ${OPENAI_API_KEY}
    models: [gpt-4o]
    timeout_ms: ${TIMEOUT:-1000}
    headers: {x-org: "org-${ORG}-${ORG}"}
"""


def test_interpolation_from_environ() -> None:
    config = load_config_text(PROVIDER_WITH_VARS, environ={
        "OPENAI_API_KEY": "sk-from-env", "BASE": "http://localhost:9999/v1", "ORG": "acme", "TIMEOUT": "2500",
    })
    (provider,) = config.providers
    assert provider.name == "openai-main"
    assert provider.url == "http://localhost:9999/v1"
    assert provider.secret() == "sk-from-env"
    assert provider.timeout_ms == 2500
    assert dict(provider.headers) == {"x-org": "org-acme-acme"}


def test_interpolation_defaults() -> None:
    (provider,) = load_config_text(PROVIDER_WITH_VARS, environ={"OPENAI_API_KEY": "k", "ORG": "o"}).providers
    assert provider.url == "https://api.openai.com/v1"
    assert provider.timeout_ms == 1000


def test_an_empty_variable_takes_the_default() -> None:
    environ = {"OPENAI_API_KEY": "k", "ORG": "o", "BASE": ""}
    (provider,) = load_config_text(PROVIDER_WITH_VARS, environ=environ).providers
    assert provider.url == "https://api.openai.com/v1"


def test_interpolation_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_MODEL", "from-os-environ")
    (provider,) = load_config_text(MOCK.format(name="demo", model="'${GW_TEST_MODEL}'")).providers
    assert list(provider.models) == ["from-os-environ"]


def test_interpolation_is_not_applied_to_plain_dollars() -> None:
    text = MOCK.format(name="demo", model="echo") + "    headers: {x-price: $5, x-brace: '${not a var}'}\n"
    (provider,) = load_config_text(text, environ={}).providers
    assert dict(provider.headers) == {"x-price": "$5", "x-brace": "${not a var}"}


def test_an_unset_variable_names_file_and_key_path() -> None:
    text = MOCK.format(name="demo", model="echo") + "    headers: {authorization: 'Bearer ${TOKEN}'}\n"
    assert load_text_error(text) == [
        "gw.yaml: providers[0].headers.authorization: environment variable TOKEN is not set "
        "(use ${TOKEN:-default} for a default)",
    ]


def test_an_unset_api_key_variable_is_reported_first(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(PROVIDER_WITH_VARS.replace("-${ORG}-${ORG}", ""))
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert issues(error)[0] == (
        f"{path}: providers[0].api_key: environment variable OPENAI_API_KEY is not set "
        "(use ${OPENAI_API_KEY:-default} for a default)"
    )


def test_unknown_key_names_the_path() -> None:
    text = MOCK.format(name="demo", model="echo") + "    extra: 1\n"
    assert load_text_error(text) == ["gw.yaml: providers[0].extra: unknown key"]


def test_unknown_keys_everywhere_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("""\
type: gateway-providers-config
colour: blue
providers:
  - name: a
    type: mock
    models: [x]
  - name: b
    type: mock
    models: [y]
    mock: {stream_chunk: 3}
""")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert issues(error) == [
        f"{path}: providers[1].mock.stream_chunk: unknown key",
        f"{path}: colour: unknown key",
    ]


def test_unknown_document_type() -> None:
    assert load_text_error("type: gateway-cache-config-typo\n") == [
        f"gw.yaml: type: unknown document type 'gateway-cache-config-typo'; expected one of: {KNOWN_TYPES}",
    ]


def test_a_document_without_type() -> None:
    assert load_text_error("providers: []\n") == [
        f"gw.yaml: type: unknown document type None; expected one of: {KNOWN_TYPES}",
    ]


def test_a_document_that_is_not_a_mapping() -> None:
    assert load_text_error("- just\n- a list\n") == ["gw.yaml: a document must be a mapping with a 'type'"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("type: gateway-providers-config\nproviders:\n  - name: [a\n",
                     "gw.yaml: line 4, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'",
                     id="unclosed-flow"),
        pytest.param("type: gateway-providers-config\nproviders:\n  name: a\n   type: : mock\n",
                     "gw.yaml: line 4, column 8: invalid YAML: mapping values are not allowed here",
                     id="bad-indent"),
        pytest.param("type: gateway-providers-config\n\tproviders: []\n",
                     "gw.yaml: line 2, column 1: invalid YAML: found character '\\t' that cannot start any token",
                     id="tab"),
    ],
)
def test_invalid_yaml_names_the_line(text: str, expected: str) -> None:
    assert load_text_error(text) == [expected]


def test_invalid_yaml_in_one_file_and_errors_in_another_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("type: [\n")
    (tmp_path / "b.yaml").write_text(MOCK.format(name="b", model="x") + "    extra: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, environ={})
    assert issues(error) == [
        f"{tmp_path / 'a.yaml'}: line 2, column 1: invalid YAML: expected the node content, but found '<stream end>'",
        f"{tmp_path / 'b.yaml'}: providers[0].extra: unknown key",
    ]


def test_duplicate_provider_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MOCK.format(name="demo", model="x"))
    (tmp_path / "b.yaml").write_text(MOCK.format(name="other", model="y") + MOCK.format(name="demo", model="z")
                                     .replace("type: gateway-providers-config\nproviders:\n", ""))
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, environ={})
    assert issues(error) == [
        f"{tmp_path / 'b.yaml'}: providers[1].name: provider 'demo' is already defined in {tmp_path / 'a.yaml'}",
    ]


def test_duplicate_provider_names_in_one_document() -> None:
    text = "type: gateway-providers-config\nproviders:\n  - {name: a, type: mock, models: [x]}\n" \
           "  - {name: a, type: mock, models: [y]}\n"
    assert load_text_error(text) == ["gw.yaml: providers[1].name: provider 'a' is already defined in gw.yaml"]


def test_provider_requirements() -> None:
    text = """\
type: gateway-providers-config
providers:
  - {name: az, type: azure-openai, api_key: k, models: [x]}
  - {name: local, type: openai-compatible, models: [y]}
  - {name: oa, type: openai, models: [z]}
  - {name: oa2, type: openai, api_key: '', models: [z]}
  - {name: ant, type: anthropic, models: [c]}
  - {name: ftp, type: openai-compatible, base_url: 'ftp://x', models: [y]}
"""
    assert load_text_error(text) == [
        "gw.yaml: providers[0]: base_url is required for type azure-openai",
        "gw.yaml: providers[1]: base_url is required for type openai-compatible",
        "gw.yaml: providers[2]: api_key is required for type openai",
        "gw.yaml: providers[3]: api_key is required for type openai",
        "gw.yaml: providers[4]: api_key is required for type anthropic",
        "gw.yaml: providers[5]: base_url must start with http:// or https://",
    ]


def test_openai_compatible_needs_no_api_key() -> None:
    text = "type: gateway-providers-config\nproviders:\n" \
           "  - {name: local, type: openai-compatible, base_url: 'http://localhost:11434/v1/', models: [llama3]}\n"
    (provider,) = load_config_text(text, environ={}).providers
    assert provider.url == "http://localhost:11434/v1"
    assert provider.secret() == ""


def test_bad_provider_fields() -> None:
    text = """\
type: gateway-providers-config
providers:
  - {name: 'a b', type: gemini, models: []}
  - {name: ok, type: mock, models: [x], timeout_ms: 0, mock: {delay_ms: -1}}
"""
    assert load_text_error(text) == [
        "gw.yaml: providers[0].name: must be letters, digits, '.', '_' or '-' (it is the first part of model ids)",
        "gw.yaml: providers[0].type: Input should be 'openai', 'azure-openai', 'anthropic', 'openai-compatible' "
        "or 'mock'",
        "gw.yaml: providers[0].models: at least one model is required",
        "gw.yaml: providers[1].timeout_ms: Input should be greater than 0",
        "gw.yaml: providers[1].mock.delay_ms: Input should be greater than or equal to 0",
    ]


def test_models_as_a_list() -> None:
    (provider,) = load_config_text(
        "type: gateway-providers-config\nproviders:\n  - {name: oa, type: openai, api_key: k, models: [gpt-4o, o3]}\n",
        environ={},
    ).providers
    assert dict(provider.models) == {"gpt-4o": "gpt-4o", "o3": "o3"}


def test_models_as_a_map() -> None:
    text = """\
type: gateway-providers-config
providers:
  - name: azure-main
    type: azure-openai
    base_url: https://acme.openai.azure.com
    api_key: k
    models: {gpt-4o: acme-gpt4o-deployment, gpt-4o-mini: mini-deployment}
"""
    (provider,) = load_config_text(text, environ={}).providers
    assert dict(provider.models) == {"gpt-4o": "acme-gpt4o-deployment", "gpt-4o-mini": "mini-deployment"}


def test_models_list_of_non_strings() -> None:
    text = "type: gateway-providers-config\nproviders:\n  - {name: m, type: mock, models: [1, '']}\n"
    assert load_text_error(text) == ["gw.yaml: providers[0].models: a list of models must hold non-empty strings"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty-file"),
        pytest.param("type: gateway-server-config\n", id="server-only"),
        pytest.param("type: gateway-providers-config\nproviders: []\n", id="empty-list"),
    ],
)
def test_no_providers(text: str) -> None:
    assert load_text_error(text) == ["config: no providers are configured (add a gateway-providers-config document)"]


def test_the_config_is_frozen() -> None:
    (provider,) = load_config_text(MOCK.format(name="demo", model="echo"), environ={}).providers
    with pytest.raises(Exception, match="frozen"):
        provider.name = "other"  # type: ignore[misc]


def test_the_shipped_config_directory() -> None:
    config = load_config(REPO / "config", environ={})
    assert "demo/echo" in model_ids(config)
    assert config.provider("demo") is not None
    assert config.provider("demo").type == "mock"  # type: ignore[union-attr]


def test_an_unquoted_api_version_date_is_read_as_text() -> None:
    config = load_config_text(
        "type: gateway-providers-config\n"
        "providers:\n"
        "  - {name: az, type: azure-openai, base_url: 'https://r.openai.azure.com', api_key: k,"
        " api_version: 2024-10-21, models: [gpt-4o]}\n"
    )
    assert config.providers[0].api_version == "2024-10-21"
