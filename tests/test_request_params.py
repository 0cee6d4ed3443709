"""The parameters the gateway understands (chat completions, embeddings, moderations) are checked
before anything goes upstream: a wrong type or a value no provider accepts is a 400
``invalid_request_error`` naming the parameter by its path; every valid or unknown parameter passes
through untouched. Through the real ``openai`` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes import FakeUpstream, Reply, openai_completion
from servers import served_sdk

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def client(served_fake: tuple[FakeUpstream, str]) -> Iterator[openai.OpenAI]:
    config = load_config_text(f"""
type: gateway-providers-config
providers:
  - {{name: oai, type: openai, base_url: "{served_fake[1]}/v1", api_key: sk-test,
      models: [gpt-4o, text-embedding-3-small, omni-moderation-latest]}}
""", environ={})
    with served_sdk(create_app(config)) as sdk:
        yield sdk


@pytest.fixture
def fake(fake: FakeUpstream) -> FakeUpstream:
    return fake.reset(Reply(json=openai_completion()))


def refused(message: str, code: str, param: str) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "code": code, "param": param}


def tools(**function: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": function}]


CASES = [
    # the reproductions of the issue
    pytest.param({"max_tokens": -1}, refused("max_tokens must be at least 1; got -1.", "integer_below_min_value",
                                             "max_tokens"), id="max_tokens-negative"),
    pytest.param({"max_tokens": "abc"}, refused("max_tokens must be an integer.", "invalid_type", "max_tokens"),
                 id="max_tokens-a-string"),
    pytest.param({"max_tokens": 1e30}, refused("max_tokens must be an integer.", "invalid_type", "max_tokens"),
                 id="max_tokens-1e30"),
    pytest.param({"n": -5}, refused("n must be between 1 and 128; got -5.", "integer_below_min_value", "n"),
                 id="n-negative"),
    pytest.param({"tools": "x"}, refused("tools must be an array.", "invalid_type", "tools"), id="tools-a-string"),
    pytest.param({"temperature": "hot"}, refused("temperature must be a number.", "invalid_type", "temperature"),
                 id="temperature-a-word"),
    pytest.param({"messages": [*MESSAGES, {"role": "assistant", "content": "Hello"}, MESSAGES[0],
                               {"role": "wizard", "content": "Abracadabra"}]},
                 refused("messages[3].role must be one of 'system', 'developer', 'user', 'assistant', 'tool', "
                         "'function'; got 'wizard'.", "invalid_value", "messages[3].role"), id="role-wizard"),
    # more of each kind
    pytest.param({"max_tokens": 0}, refused("max_tokens must be at least 1; got 0.", "integer_below_min_value",
                                            "max_tokens"), id="max_tokens-zero"),
    pytest.param({"max_tokens": True}, refused("max_tokens must be an integer.", "invalid_type", "max_tokens"),
                 id="max_tokens-a-boolean"),
    pytest.param({"max_completion_tokens": 2.5}, refused("max_completion_tokens must be an integer.", "invalid_type",
                                                         "max_completion_tokens"), id="max_completion_tokens-decimal"),
    pytest.param({"n": 129}, refused("n must be between 1 and 128; got 129.", "integer_above_max_value", "n"),
                 id="n-above-128"),
    pytest.param({"temperature": 2.5}, refused("temperature must be between 0 and 2; got 2.5.",
                                               "decimal_above_max_value", "temperature"), id="temperature-2.5"),
    pytest.param({"top_p": -0.1}, refused("top_p must be between 0 and 1; got -0.1.", "decimal_below_min_value",
                                          "top_p"), id="top_p-negative"),
    pytest.param({"presence_penalty": 3}, refused("presence_penalty must be between -2 and 2; got 3.",
                                                  "decimal_above_max_value", "presence_penalty"),
                 id="presence_penalty-3"),
    pytest.param({"frequency_penalty": -2.01}, refused("frequency_penalty must be between -2 and 2; got -2.01.",
                                                       "decimal_below_min_value", "frequency_penalty"),
                 id="frequency_penalty-below"),
    pytest.param({"logit_bias": {"50256": 101}}, refused("logit_bias.50256 must be between -100 and 100; got 101.",
                                                         "decimal_above_max_value", "logit_bias.50256"),
                 id="logit_bias-value"),
    pytest.param({"top_logprobs": 21}, refused("top_logprobs must be between 0 and 20; got 21.",
                                               "integer_above_max_value", "top_logprobs"), id="top_logprobs-21"),
    pytest.param({"seed": "42"}, refused("seed must be an integer.", "invalid_type", "seed"), id="seed-a-string"),
    pytest.param({"stream_options": {"include_usage": "yes"}},
                 refused("stream_options.include_usage must be a boolean.", "invalid_type",
                         "stream_options.include_usage"), id="include_usage-a-string"),
    pytest.param({"stream_options": True}, refused("stream_options must be an object.", "invalid_type",
                                                   "stream_options"), id="stream_options-a-boolean"),
    pytest.param({"stop": 5}, refused("stop must be a string, an array of strings or null.", "invalid_type", "stop"),
                 id="stop-a-number"),
    pytest.param({"stop": ["\n", 7]}, refused("stop[1] must be a string.", "invalid_type", "stop[1]"),
                 id="stop-item-a-number"),
    pytest.param({"user": 12}, refused("user must be a string.", "invalid_type", "user"), id="user-a-number"),
    pytest.param({"tools": tools(name="")}, refused("tools[0].function.name must not be empty.", "invalid_value",
                                                    "tools[0].function.name"), id="tool-name-empty"),
    pytest.param({"tools": [*tools(name="a"), *tools(description="no name")]},
                 refused("tools[1].function.name is required.", "missing_required_parameter",
                         "tools[1].function.name"), id="tool-name-missing"),
    pytest.param({"tools": [{"type": "function"}]},
                 refused("tools[0].function is required for a tool of type 'function'.",
                         "missing_required_parameter", "tools[0].function"), id="tool-function-missing"),
    pytest.param({"tools": [{"function": {"name": "a"}}]},
                 refused("tools[0].type is required.", "missing_required_parameter", "tools[0].type"),
                 id="tool-type-missing"),
    pytest.param({"tools": tools(name="a", parameters="{}")},
                 refused("tools[0].function.parameters must be an object.", "invalid_type",
                         "tools[0].function.parameters"), id="tool-parameters-a-string"),
    pytest.param({"tool_choice": "sometimes"},
                 refused("tool_choice must be one of 'none', 'auto', 'required'; got 'sometimes'.", "invalid_value",
                         "tool_choice"), id="tool_choice-unknown"),
    pytest.param({"tool_choice": {"type": "function", "function": {}}},
                 refused("tool_choice.function.name is required.", "missing_required_parameter",
                         "tool_choice.function.name"), id="tool_choice-without-name"),
    pytest.param({"response_format": "json"}, refused("response_format must be an object.", "invalid_type",
                                                      "response_format"), id="response_format-a-string"),
    pytest.param({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
                 refused("response_format.json_schema.name is required.", "missing_required_parameter",
                         "response_format.json_schema.name"), id="json_schema-without-name"),
    pytest.param({"messages": [{"role": 7, "content": "Hi"}]},
                 refused("messages[0] must be an object with a string 'role'.", "invalid_value", "messages[0]"),
                 id="role-a-number"),
    pytest.param({"messages": [{"role": "user", "content": 5}]},
                 refused("messages[0].content must be a string, an array of content parts or null.", "invalid_type",
                         "messages[0].content"), id="content-a-number"),
    pytest.param({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]},
                 refused("messages[0].content[0].type is required.", "missing_required_parameter",
                         "messages[0].content[0].type"), id="content-part-without-type"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "text", "text": ["Hi"]}]}]},
                 refused("messages[0].content[0].text must be a string.", "invalid_type",
                         "messages[0].content[0].text"), id="text-part-not-a-string"),
    pytest.param({"messages": [*MESSAGES, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                                                "function": {"arguments": "{}"}}]}]},
                 refused("messages[1].tool_calls[0].function.name is required.", "missing_required_parameter",
                         "messages[1].tool_calls[0].function.name"), id="tool-call-without-name"),
    pytest.param({"messages": [{"role": "tool", "content": "42", "tool_call_id": 1}]},
                 refused("messages[0].tool_call_id must be a string.", "invalid_type", "messages[0].tool_call_id"),
                 id="tool_call_id-a-number"),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_a_parameter_no_provider_accepts_is_400(client: openai.OpenAI, fake: FakeUpstream, body: dict[str, Any],
                                                expected: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, extra_body=body)  # type: ignore[arg-type]

    assert raised.value.status_code == 400
    assert raised.value.response.json() == {"error": expected}
    assert fake.requests == []


FULL = {
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ],
    "max_tokens": 1, "max_completion_tokens": 10_000_000, "n": 128, "temperature": 0, "top_p": 1,
    "presence_penalty": -2, "frequency_penalty": 2.0, "logit_bias": {"50256": -100}, "logprobs": True,
    "top_logprobs": 0, "seed": -(2**63), "stop": ["\n"], "user": "", "store": False, "metadata": {"k": "v"},
    "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}, "strict": True}},
              {"type": "custom", "custom": {"name": "grammar"}}],
    "tool_choice": {"type": "function", "function": {"name": "look"}}, "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {}}},
    "temperature_unit": "kelvin", "reasoning_effort": "a new level", "x_vendor_extension": [1, {"a": None}],
    "top_k": -1,
}


@pytest.mark.parametrize("body", [
    pytest.param(FULL, id="every-checked-parameter-at-its-limits"),
    pytest.param({"messages": MESSAGES, "max_tokens": None, "temperature": None, "tools": None, "stop": None,
                  "tool_choice": None, "stream_options": None}, id="nulls-mean-the-default"),
    pytest.param({"messages": MESSAGES, "stop": "END", "tool_choice": "required", "function_call": "auto"},
                 id="string-forms"),
])
def test_valid_and_unknown_parameters_pass_through_untouched(client: openai.OpenAI, fake: FakeUpstream,
                                                              body: dict[str, Any]) -> None:
    client.chat.completions.create(model="oai/gpt-4o", messages=MESSAGES, extra_body=body)

    (sent,) = fake.requests
    assert sent.body == {**body, "model": "gpt-4o"}


# -- embeddings and moderations ------------------------------------------------------------------

EMBEDDING = {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 2, "total_tokens": 2},
             "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}]}


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({"input": 5}, refused("input must be a string or a non-empty array of strings or token arrays.",
                                       "invalid_type", "input"), id="input-a-number"),
    pytest.param({"input": []}, refused("input must be a string or a non-empty array of strings or token arrays.",
                                        "invalid_value", "input"), id="input-empty"),
    pytest.param({"input": ["a", 5]}, refused("input[1] must be a string.", "invalid_type", "input[1]"),
                 id="input-mixed"),
    pytest.param({"input": [[1, -2]]}, refused("input[0][1] must be at least 0; got -2.", "integer_below_min_value",
                                               "input[0][1]"), id="token-negative"),
    pytest.param({"input": [[]]}, refused("input[0] must not be empty.", "invalid_value", "input[0]"),
                 id="token-array-empty"),
    pytest.param({"dimensions": 0}, refused("dimensions must be at least 1; got 0.", "integer_below_min_value",
                                            "dimensions"), id="dimensions-zero"),
    pytest.param({"dimensions": "256"}, refused("dimensions must be an integer.", "invalid_type", "dimensions"),
                 id="dimensions-a-string"),
    pytest.param({"encoding_format": "hex"},
                 refused("encoding_format must be one of 'float', 'base64'; got 'hex'.", "invalid_value",
                         "encoding_format"), id="encoding_format-unknown"),
    pytest.param({"user": 5}, refused("user must be a string.", "invalid_type", "user"), id="user-a-number"),
])
def test_an_embeddings_parameter_no_provider_accepts_is_400(client: openai.OpenAI, fake: FakeUpstream,
                                                            body: dict[str, Any], expected: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="oai/text-embedding-3-small", input="Hi", extra_body=body)

    assert raised.value.status_code == 400
    assert raised.value.response.json() == {"error": expected}
    assert fake.requests == []


def test_a_moderation_input_of_the_wrong_type_is_400(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.moderations.create(model="oai/omni-moderation-latest", input="Hi", extra_body={"input": 5})

    assert raised.value.response.json() == {"error": refused("input must be a string or an array.", "invalid_type",
                                                             "input")}
    assert fake.requests == []


@pytest.mark.parametrize("body", [
    pytest.param({"input": [[1, 2], [0]], "dimensions": 256, "encoding_format": "float", "user": "u",
                  "x_vendor": {"a": 1}}, id="token-arrays"),
    pytest.param({"input": ["a", ""], "dimensions": None, "encoding_format": "float"}, id="strings"),
])
def test_valid_embeddings_parameters_pass_through_untouched(client: openai.OpenAI, fake: FakeUpstream,
                                                            body: dict[str, Any]) -> None:
    fake.reset(Reply(json=EMBEDDING))

    client.embeddings.create(model="oai/text-embedding-3-small", input="Hi", extra_body=body)

    (sent,) = fake.requests
    assert sent.body == {**body, "model": "text-embedding-3-small"}
