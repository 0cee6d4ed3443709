"""Chat completions through the real ``openai`` SDK, for every provider type, against fake upstreams
that speak each provider's wire format over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from fakes import (
    FakeUpstream,
    Reply,
    anthropic_events,
    anthropic_message,
    anthropic_text_stream,
    openai_completion,
    openai_stream,
    sse,
)
from servers import served_sdk

from otel_gateway.app import create_app
from otel_gateway.config import load_config_text

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
ARGUMENT_PARTS = ['{"ci', 'ty": "Pa', 'ris"}']
ARGUMENTS = "".join(ARGUMENT_PARTS)


# --- wire formats -------------------------------------------------------------------------------


def openai_tool_completion() -> dict[str, Any]:
    call = {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ARGUMENTS}}
    return openai_completion(None, tool_calls=[call], finish_reason="tool_calls")


def openai_tool_stream() -> list[bytes]:
    head = {"id": "chatcmpl-fake3", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o"}
    first = {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}
    deltas = [first] + [{"tool_calls": [{"index": 0, "function": {"arguments": part}}]} for part in ARGUMENT_PARTS]
    frames = [sse({**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) for d in deltas]
    frames.append(sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
    usage = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    frames.append(sse({**head, "choices": [], "usage": usage}))
    return [*frames, b"data: [DONE]\n\n"]


def anthropic_tool_use() -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}


def anthropic_tool_stream() -> list[bytes]:
    block = {**anthropic_tool_use(), "input": {}}
    deltas = [{"type": "input_json_delta", "partial_json": part} for part in ARGUMENT_PARTS]
    return anthropic_events([(block, deltas)], "tool_use")


# --- the provider accounts under test ------------------------------------------------------------


@dataclass(frozen=True)
class Flavour:
    id: str
    model: str
    """As the client addresses it."""
    upstream_model: str
    path: str
    query: str
    auth: dict[str, str]
    """Headers the upstream must receive."""
    completion: Callable[[str], dict[str, Any]]
    stream: Callable[[list[str]], list[bytes]]
    tool_completion: Callable[[], dict[str, Any]]
    tool_stream: Callable[[], list[bytes]]
    tool_call_id: str
    openai_wire: bool = True


def _openai_text(text: str) -> dict[str, Any]:
    return openai_completion(text)


OPENAI = Flavour("openai", "oai/gpt-4o", "gpt-4o", "/v1/chat/completions", "",
                 {"authorization": "Bearer sk-test-openai"},
                 _openai_text, openai_stream, openai_tool_completion, openai_tool_stream, "call_abc")
COMPATIBLE = Flavour("openai-compatible", "compat/llama", "llama-3.1-8b", "/compat/v1/chat/completions", "", {},
                     _openai_text, openai_stream, openai_tool_completion, openai_tool_stream, "call_abc")
AZURE = Flavour("azure-openai", "az/gpt-4o", "my-deployment", "/openai/deployments/my-deployment/chat/completions",
                "api-version=2024-10-21", {"api-key": "azure-key-123"},
                _openai_text, openai_stream, openai_tool_completion, openai_tool_stream, "call_abc")
ANTHROPIC = Flavour("anthropic", "claude/sonnet", "claude-sonnet-4-5-20250929", "/v1/messages", "",
                    {"x-api-key": "sk-ant-test-key", "anthropic-version": "2023-06-01"},
                    lambda text: anthropic_message([{"type": "text", "text": text}]), anthropic_text_stream,
                    lambda: anthropic_message([anthropic_tool_use()], "tool_use"), anthropic_tool_stream,
                    "toolu_01", openai_wire=False)
FLAVOURS = [pytest.param(f, id=f.id) for f in (OPENAI, COMPATIBLE, AZURE, ANTHROPIC)]
OPENAI_WIRE = [pytest.param(f, id=f.id) for f in (OPENAI, COMPATIBLE, AZURE)]
CLIENT_HEADERS_NOT_FORWARDED = ("authorization", "api-key", "x-api-key")


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(served_fake: tuple[FakeUpstream, str]) -> Iterator[openai.OpenAI]:
    url = served_fake[1]
    config = load_config_text(f"""
type: gateway-providers-config
providers:
  - name: oai
    type: openai
    base_url: {url}/v1
    api_key: sk-test-openai
    models: [gpt-4o]
  - name: compat
    type: openai-compatible
    base_url: {url}/compat/v1/
    models: {{llama: llama-3.1-8b}}
  - name: az
    type: azure-openai
    base_url: {url}
    api_key: azure-key-123
    api_version: "2024-10-21"
    models: {{gpt-4o: my-deployment}}
  - name: claude
    type: anthropic
    base_url: {url}
    api_key: sk-ant-test-key
    models: {{sonnet: claude-sonnet-4-5-20250929}}
  - name: demo
    type: mock
    models: [echo]
""")
    with served_sdk(create_app(config)) as sdk:
        yield sdk


def only_request(fake: FakeUpstream, flavour: Flavour) -> dict[str, Any]:
    """The one request the upstream got; checks where it went and how it was authenticated."""
    (request,) = fake.requests
    assert (request.method, request.path, request.query) == ("POST", flavour.path, flavour.query)
    for name, value in flavour.auth.items():
        assert request.headers[name] == value
    for name in CLIENT_HEADERS_NOT_FORWARDED:
        if name not in flavour.auth:
            assert name not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert isinstance(request.body, dict)
    return request.body


def expected_body(flavour: Flavour, *, stream: bool = False, tools: bool = False) -> dict[str, Any]:
    """What the upstream must receive for ``MESSAGES`` (and ``TOOLS``) in its own wire format."""
    if flavour.openai_wire:
        body: dict[str, Any] = {"model": flavour.upstream_model, "messages": MESSAGES}
        if tools:
            body["tools"] = TOOLS
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body
    body = {"model": flavour.upstream_model, "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4096}
    if tools:
        body["tools"] = [{"name": "get_weather", "description": "Weather in a city",
                          "input_schema": TOOLS[0]["function"]["parameters"]}]
    if stream:
        body["stream"] = True
    return body


def data_frames(frames: list[bytes]) -> list[dict[str, Any]]:
    """The JSON payloads of OpenAI SSE frames, ``[DONE]`` left out."""
    return [json.loads(frame.removeprefix(b"data: ")) for frame in frames if frame != b"data: [DONE]\n\n"]


def anthropic_chunks(deltas: list[dict[str, Any]], finish_reason: str) -> list[dict[str, Any]]:
    """The OpenAI chunks an Anthropic text stream becomes, ``created`` left out."""
    head = {"id": "msg_fake1", "object": "chat.completion.chunk", "model": "claude-sonnet-4-5-20250929"}
    chunks = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
              for d in [{"role": "assistant", "content": ""}, *deltas]]
    return [*chunks, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]}]


def without_created(data: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(data.pop("created"), int)
    return data


def stream_chat(client: openai.OpenAI, model: str, **kwargs: Any) -> list[Any]:
    with client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kwargs) as stream:
        return list(stream)


def texts(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# --- every provider type -------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_non_stream_answer(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour) -> None:
    fake.reply = Reply(json=flavour.completion("Hello there"))

    completion = client.chat.completions.create(model=flavour.model, messages=MESSAGES)

    (choice,) = completion.choices
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", "Hello there", "stop")
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 3, 15)
    if flavour.openai_wire:
        assert completion.to_dict() == openai_completion("Hello there")
    else:
        assert without_created(completion.to_dict()) == {
            "id": "msg_fake1", "object": "chat.completion", "model": "claude-sonnet-4-5-20250929",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
    assert only_request(fake, flavour) == expected_body(flavour)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stream_chunks_in_order_without_usage(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour) -> None:
    parts = ["Hel", "lo", " the", "re"]
    fake.reply = Reply(events=flavour.stream(parts))

    chunks = stream_chat(client, flavour.model)

    assert texts(chunks) == parts
    assert "".join(texts(chunks)) == "Hello there"
    assert finish_reasons(chunks) == ["stop"]
    assert all(c.usage is None and c.choices for c in chunks)
    if flavour.openai_wire:
        # Passed through unchanged, in order; the usage chunk (always asked for upstream) is held back.
        assert [c.to_dict() for c in chunks] == data_frames(flavour.stream(parts))[:-1]
    else:
        assert [without_created(c.to_dict()) for c in chunks] == anthropic_chunks(
            [{"content": part} for part in parts], "stop")
    assert only_request(fake, flavour) == expected_body(flavour, stream=True)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stream_usage_chunk_when_asked(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour) -> None:
    parts = ["Hel", "lo"]
    fake.reply = Reply(events=flavour.stream(parts))

    chunks = stream_chat(client, flavour.model, stream_options={"include_usage": True})

    assert texts(chunks) == parts
    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert all(c.usage is None for c in content)
    if flavour.openai_wire:
        assert last.usage.to_dict() == {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
        assert [c.to_dict() for c in chunks] == data_frames(flavour.stream(parts))
    else:
        assert last.usage.to_dict() == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        assert [without_created(c.to_dict()) for c in content] == anthropic_chunks(
            [{"content": part} for part in parts], "stop")
    assert only_request(fake, flavour) == expected_body(flavour, stream=True)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tool_call(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour) -> None:
    fake.reply = Reply(json=flavour.tool_completion())

    completion = client.chat.completions.create(model=flavour.model, messages=MESSAGES, tools=TOOLS)

    (choice,) = completion.choices
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    (call,) = choice.message.tool_calls or []
    assert (call.id, call.type, call.function.name) == (flavour.tool_call_id, "function", "get_weather")
    # OpenAI's arguments pass through as sent; Anthropic's ``input`` object is serialised compactly.
    assert call.function.arguments == (ARGUMENTS if flavour.openai_wire else '{"city":"Paris"}')
    assert only_request(fake, flavour) == expected_body(flavour, tools=True)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_streamed_tool_call_arguments_join(client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour) -> None:
    fake.reply = Reply(events=flavour.tool_stream())

    chunks = stream_chat(client, flavour.model, tools=TOOLS)

    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert [call.index for call in calls] == [0] * len(calls)
    assert [call.id for call in calls if call.id] == [flavour.tool_call_id]
    assert [call.function.name for call in calls if call.function and call.function.name] == ["get_weather"]
    fragments = [call.function.arguments for call in calls if call.function and call.function.arguments]
    assert fragments == ARGUMENT_PARTS
    assert "".join(fragments) == '{"city": "Paris"}'
    assert finish_reasons(chunks) == ["tool_calls"]
    assert only_request(fake, flavour) == expected_body(flavour, stream=True, tools=True)


def test_anthropic_refuses_n_above_one(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=ANTHROPIC.model, messages=MESSAGES, n=2)

    assert raised.value.response.json() == {"error": {
        "message": "Anthropic models give one choice per request; n must be 1",
        "type": "invalid_request_error", "code": None, "param": "n"}}
    assert fake.requests == []


# --- OpenAI's wire format: the body passes through --------------------------------------------------


@pytest.mark.parametrize("flavour", OPENAI_WIRE)
def test_stream_body_passes_through_with_usage_requested(
    client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour
) -> None:
    fake.reply = Reply(events=openai_stream(["x"]))

    stream_chat(client, flavour.model, temperature=0.5, stream_options={"include_usage": False})

    assert only_request(fake, flavour) == {"model": flavour.upstream_model, "messages": MESSAGES, "stream": True,
                                           "temperature": 0.5, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("flavour", OPENAI_WIRE)
def test_response_format_and_unknown_fields_pass_through(
    client: openai.OpenAI, fake: FakeUpstream, flavour: Flavour
) -> None:
    response_format = {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}, "strict": True}}
    fake.reply = Reply(json=openai_completion('{"a": 1}'))

    completion = client.chat.completions.create(
        model=flavour.model, messages=MESSAGES, response_format=response_format,
        extra_body={"foo": 1, "bar": {"nested": [True, None]}},
    )

    assert completion.choices[0].message.content == '{"a": 1}'
    assert only_request(fake, flavour) == {"model": flavour.upstream_model, "messages": MESSAGES,
                                           "response_format": response_format, "foo": 1,
                                           "bar": {"nested": [True, None]}}


def test_n_choices_pass_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    answer = openai_completion("first")
    answer["choices"].append({"index": 1, "message": {"role": "assistant", "content": "second"},
                              "finish_reason": "length", "logprobs": None})
    fake.reply = Reply(json=answer)

    completion = client.chat.completions.create(model=OPENAI.model, messages=MESSAGES, n=2)

    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "first", "stop"), (1, "second", "length")]
    assert only_request(fake, OPENAI) == {"model": "gpt-4o", "messages": MESSAGES, "n": 2}


def test_models_are_listed(client: openai.OpenAI) -> None:
    models = client.models.list()

    assert [(m.id, m.owned_by, m.object) for m in models.data] == [
        ("oai/gpt-4o", "oai", "model"),
        ("compat/llama", "compat", "model"),
        ("az/gpt-4o", "az", "model"),
        ("claude/sonnet", "claude", "model"),
        ("demo/echo", "demo", "model"),
    ]


# --- the built-in mock provider ------------------------------------------------------------------


def test_mock_echoes_the_last_message(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo/echo", messages=[
        {"role": "user", "content": "first"}, {"role": "user", "content": "echo me back"}])

    (choice,) = completion.choices
    assert (choice.message.content, choice.finish_reason) == ("echo me back", "stop")
    assert completion.model == "echo"
    assert completion.usage is not None
    assert completion.usage.to_dict() == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


@pytest.mark.parametrize("count", [1, 3, 7], ids=["one-chunk", "three-chunks", "seven-chunks"])
def test_mock_streams_n_chunks(client: openai.OpenAI, count: int) -> None:
    text = "the quick brown fox jumps"
    with client.chat.completions.create(
        model="demo/echo", messages=[{"role": "user", "content": text}], stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-mock-stream-chunks": str(count)},
    ) as stream:
        chunks = list(stream)

    size = -(-len(text) // count)
    assert texts(chunks) == [text[i:i + size] for i in range(0, len(text), size)]
    assert len(texts(chunks)) == count
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.to_dict() == {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}


def test_mock_calls_the_first_offered_tool(client: openai.OpenAI) -> None:
    second = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}

    completion = client.chat.completions.create(model="demo/echo", messages=MESSAGES, tools=[*TOOLS, second])

    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert (call.type, call.function.name, call.function.arguments) == ("function", "get_weather", '{"city":"mock"}')
    assert call.id.startswith("call_") and len(call.id) == len("call_") + 24


def test_mock_streams_a_tool_call(client: openai.OpenAI) -> None:
    chunks = stream_chat(client, "demo/echo", tools=TOOLS)

    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert "".join(call.function.arguments for call in calls if call.function and call.function.arguments) == (
        '{"city":"mock"}')
    assert [call.function.name for call in calls if call.function and call.function.name] == ["get_weather"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_mock_fails_on_purpose(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="demo/echo", messages=MESSAGES, extra_headers={"x-mock-status": "503"})

    assert raised.value.status_code == 503
    assert raised.value.body == {
        "message": "demo: mock provider failing on purpose with status 503",
        "type": "upstream_error", "code": "upstream_503", "param": None,
    }
