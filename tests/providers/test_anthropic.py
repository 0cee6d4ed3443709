"""``AnthropicAdapter``: OpenAI chat requests to the Messages API, and its answers and streams back."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx
import orjson
import pytest

from otel_gateway.calls import ChatCall, RequestContext
from otel_gateway.config import ProviderConfig
from otel_gateway.errors import InvalidRequestError, UpstreamStreamError
from otel_gateway.providers.anthropic import AnthropicAdapter
from otel_gateway.sse import ServerSentEvent

NOW = 1_700_000_000
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER_SCHEMA},
}


@pytest.fixture
def adapter() -> AnthropicAdapter:
    config = ProviderConfig.model_validate({
        "name": "anthropic-main",
        "type": "anthropic",
        "api_key": "sk-ant-test",
        "models": {"claude": "claude-sonnet-4-5"},
    })
    return AnthropicAdapter(config, httpx.MockTransport(no_network))


def no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError("the adapter only builds requests; it never sends them")


@pytest.fixture
def frozen_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW + 0.7)


def make_call(body: dict[str, Any], overrides: dict[str, Any] | None = None) -> ChatCall:
    call = ChatCall(body=body, model="anthropic-main/claude", context=RequestContext(request_id="r1"))
    return call.retarget(call.model, overrides) if overrides else call


def upstream_body(adapter: AnthropicAdapter, body: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    request = adapter.build_request(make_call(body, overrides), "claude-sonnet-4-5")
    result: dict[str, Any] = orjson.loads(request.content)
    return result


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def hi(**params: Any) -> dict[str, Any]:
    return {"model": "anthropic-main/claude", "messages": [{"role": "user", "content": "Hi"}], **params}


# --- requests -----------------------------------------------------------------------------------


def test_request_url_and_headers(adapter: AnthropicAdapter) -> None:
    request = adapter.build_request(make_call(hi()), "claude-sonnet-4-5")

    assert request.method == "POST"
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


def test_minimal_request(adapter: AnthropicAdapter) -> None:
    assert upstream_body(adapter, hi()) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4096,
    }


def test_full_conversation(adapter: AnthropicAdapter) -> None:
    body = {
        "model": "anthropic-main/claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [
                {"type": "text", "text": "Use metric"},
                {"type": "text", "text": "units."},
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here and there?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/paris.jpg", "detail": "high"}},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                tool_call("toolu_1", "get_weather", '{"city": "Paris"}'),
                tool_call("toolu_2", "get_weather", '{"city":"Rome"}'),
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
            {"role": "user", "content": "Thanks, and a summary?"},
        ],
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
        "tool_choice": "auto",
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "\n\nHuman:",
        "user": "user-42",
        "max_completion_tokens": 300,
        "stream": True,
        "stream_options": {"include_usage": True},
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "seed": 7,
        "frequency_penalty": 0.5,
        "n": 1,
    }
    original = copy.deepcopy(body)
    call = make_call(body)

    request = adapter.build_request(call, "claude-sonnet-4-5")

    assert orjson.loads(request.content) == {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.\n\nUse metric\n\nunits.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here and there?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/paris.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"},
                {"type": "text", "text": "Thanks, and a summary?"},
            ]},
        ],
        "max_tokens": 300,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "user-42"},
        "tools": [
            {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER_SCHEMA},
            {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "auto"},
        "stream": True,
    }
    assert call.body == original


def test_consecutive_user_messages_merge(adapter: AnthropicAdapter) -> None:
    messages = [
        {"role": "user", "content": "One."},
        {"role": "user", "content": [{"type": "text", "text": "Two."}]},
        {"role": "assistant", "content": "Ok."},
        {"role": "assistant", "content": "More."},
    ]
    assert upstream_body(adapter, hi(messages=messages))["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Ok."}, {"type": "text", "text": "More."}]},
    ]


def test_assistant_tool_calls_without_text(adapter: AnthropicAdapter) -> None:
    messages = [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            tool_call("toolu_9", "now", ""),
        ]},
    ]
    assert upstream_body(adapter, hi(messages=messages))["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}}],
    }


def test_overrides_apply_without_changing_the_body(adapter: AnthropicAdapter) -> None:
    body = hi(temperature=1.0, max_tokens=50)
    original = copy.deepcopy(body)
    call = make_call(body, {"temperature": 0.2, "top_k": 5})

    request = adapter.build_request(call, "claude-sonnet-4-5")

    assert orjson.loads(request.content) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_k": 5,
    }
    assert call.body == original


@pytest.mark.parametrize(
    ("params", "max_tokens"),
    [
        pytest.param({}, 4096, id="default"),
        pytest.param({"max_tokens": 100}, 100, id="max_tokens"),
        pytest.param({"max_completion_tokens": 200}, 200, id="max_completion_tokens"),
        pytest.param({"max_tokens": 100, "max_completion_tokens": 200}, 200, id="both-completion-wins"),
    ],
)
def test_max_tokens(adapter: AnthropicAdapter, params: dict[str, Any], max_tokens: int) -> None:
    assert upstream_body(adapter, hi(**params))["max_tokens"] == max_tokens


@pytest.mark.parametrize(
    ("stop", "sequences"),
    [
        pytest.param("END", ["END"], id="string"),
        pytest.param(["END", "STOP"], ["END", "STOP"], id="list"),
    ],
)
def test_stop_sequences(adapter: AnthropicAdapter, stop: Any, sequences: list[str]) -> None:
    assert upstream_body(adapter, hi(stop=stop))["stop_sequences"] == sequences


@pytest.mark.parametrize(
    ("params", "tool_choice"),
    [
        pytest.param({}, None, id="unset"),
        pytest.param({"tool_choice": "auto"}, {"type": "auto"}, id="auto"),
        pytest.param({"tool_choice": "required"}, {"type": "any"}, id="required"),
        pytest.param({"tool_choice": "none"}, {"type": "none"}, id="none"),
        pytest.param(
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            {"type": "tool", "name": "get_weather"},
            id="named",
        ),
        pytest.param({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}, id="serial"),
        pytest.param(
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
            id="required-serial",
        ),
        pytest.param({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}, id="none-serial"),
        pytest.param({"tool_choice": "auto", "parallel_tool_calls": True}, {"type": "auto"}, id="auto-parallel"),
    ],
)
def test_tool_choice(adapter: AnthropicAdapter, params: dict[str, Any], tool_choice: dict[str, Any] | None) -> None:
    assert upstream_body(adapter, hi(tools=[WEATHER_TOOL], **params)).get("tool_choice") == tool_choice


def test_tool_choice_without_tools_is_dropped(adapter: AnthropicAdapter) -> None:
    assert "tool_choice" not in upstream_body(adapter, hi(tool_choice="required", parallel_tool_calls=False))


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        pytest.param(hi(n=2), "n", "Anthropic models give one choice per request; n must be 1", id="n"),
        pytest.param(
            hi(messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "tool_calls": [
                    tool_call("toolu_1", "f", '{"city": '),
                ]},
            ]),
            "messages",
            "messages[1]: the arguments of tool call 'toolu_1' are not a JSON object",
            id="malformed-arguments",
        ),
        pytest.param(
            hi(messages=[{"role": "assistant", "tool_calls": [
                tool_call("toolu_1", "f", "[1]"),
            ]}]),
            "messages",
            "messages[0]: the arguments of tool call 'toolu_1' are not a JSON object",
            id="arguments-not-object",
        ),
        pytest.param(
            hi(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
            "messages",
            "messages[0] has an image that is neither a base64 data: URL nor an http(s) URL",
            id="image-url-scheme",
        ),
        pytest.param(
            hi(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
            "messages",
            "messages[0] has a content part Anthropic cannot take: 'input_audio'",
            id="audio-part",
        ),
        pytest.param(
            hi(messages=[{"role": "function", "name": "f", "content": "x"}]),
            "messages",
            "messages[0] has a role Anthropic cannot take: 'function'",
            id="function-role",
        ),
        pytest.param(
            hi(messages=[{"role": "tool", "content": "x"}]),
            "messages",
            "messages[0] is a tool message without tool_call_id",
            id="tool-without-id",
        ),
        pytest.param(
            hi(tools=[WEATHER_TOOL], tool_choice="sometimes"),
            "tool_choice",
            "tool_choice must be 'auto', 'required', 'none' or {'type': 'function', 'function': {'name': ...}}",
            id="tool-choice",
        ),
        pytest.param(
            hi(tools=[{"type": "code_interpreter"}]), "tools", "tools[0] is not a function tool with a name", id="tool"
        ),
    ],
)
def test_untranslatable_requests(adapter: AnthropicAdapter, body: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        adapter.build_request(make_call(body), "claude-sonnet-4-5")

    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.message == message


# --- answers ------------------------------------------------------------------------------------


def message(content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3, **usage},
    }


@pytest.mark.usefixtures("frozen_time")
def test_text_answer(adapter: AnthropicAdapter) -> None:
    data = message([{"type": "text", "text": "Hello"}, {"type": "text", "text": " there."}])

    assert adapter.translate_response(data, make_call(hi())) == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


@pytest.mark.usefixtures("frozen_time")
def test_tool_use_answer_with_cache_usage(adapter: AnthropicAdapter) -> None:
    data = message(
        [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": 2}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        stop_reason="tool_use",
        cache_creation_input_tokens=100,
        cache_read_input_tokens=1000,
    )

    assert adapter.translate_response(data, make_call(hi())) == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    tool_call("toolu_1", "get_weather", '{"city":"Paris","days":2}'),
                    tool_call("toolu_2", "now", "{}"),
                ],
            },
            "finish_reason": "tool_calls",
        }],
        "usage": {
            "prompt_tokens": 1112,
            "completion_tokens": 3,
            "total_tokens": 1115,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
    }


def test_tool_use_only_answer_has_no_content(adapter: AnthropicAdapter) -> None:
    data = message([{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}], stop_reason="tool_use")

    assert adapter.translate_response(data, make_call(hi()))["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(adapter: AnthropicAdapter, stop_reason: str | None, finish_reason: str) -> None:
    data = message([{"type": "text", "text": "x"}], stop_reason=stop_reason)

    assert adapter.translate_response(data, make_call(hi()))["choices"][0]["finish_reason"] == finish_reason


def test_error_message(adapter: AnthropicAdapter) -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}'

    assert adapter.error_message(529, body) == "Overloaded"


# --- streams ------------------------------------------------------------------------------------


def event(data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data["type"], orjson.dumps(data).decode())


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def json_delta(index: int, fragment: str) -> dict[str, Any]:
    return block_delta(index, {"type": "input_json_delta", "partial_json": fragment})


STREAM = [
    {"type": "message_start", "message": {
        "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {
            "input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 50, "output_tokens": 1,
        },
    }},
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    block_delta(0, {"type": "thinking_delta", "thinking": "Weather tool."}),
    block_delta(0, {"type": "signature_delta", "signature": "sig"}),
    {"type": "content_block_stop", "index": 0},
    block_start(1, {"type": "text", "text": ""}),
    {"type": "ping"},
    block_delta(1, {"type": "text_delta", "text": "Let me "}),
    block_delta(1, {"type": "text_delta", "text": "check."}),
    {"type": "content_block_stop", "index": 1},
    block_start(2, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
    json_delta(2, ""),
    json_delta(2, '{"ci'),
    json_delta(2, 'ty": "Paris"}'),
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}},
    {"type": "message_stop"},
]


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "msg_02", "object": "chat.completion.chunk", "created": NOW, "model": "claude-sonnet-4-5-20250929",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


@pytest.mark.usefixtures("frozen_time")
def test_stream(adapter: AnthropicAdapter) -> None:
    translator = adapter.stream_translator(make_call(hi(stream=True)))
    chunks = []
    for data in STREAM:
        assert not translator.finished
        chunks += translator.translate(event(data))

    assert translator.finished
    assert chunks == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [
            {"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        ]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({}, "tool_calls"),
        {
            "id": "msg_02", "object": "chat.completion.chunk", "created": NOW, "model": "claude-sonnet-4-5-20250929",
            "choices": [],
            "usage": {
                "prompt_tokens": 70,
                "completion_tokens": 42,
                "total_tokens": 112,
                "prompt_tokens_details": {"cached_tokens": 50},
            },
        },
    ]


@pytest.mark.usefixtures("frozen_time")
def test_stream_numbers_tool_calls_among_themselves(adapter: AnthropicAdapter) -> None:
    translator = adapter.stream_translator(make_call(hi(stream=True)))
    events = [
        STREAM[0],
        block_start(0, {"type": "text", "text": ""}),
        block_start(1, {"type": "tool_use", "id": "toolu_a", "name": "a", "input": {}}),
        block_start(2, {"type": "tool_use", "id": "toolu_b", "name": "b", "input": {}}),
        json_delta(2, "{}"),
        json_delta(1, "{}"),
    ]
    chunks = [c for data in events for c in translator.translate(event(data))]

    assert [c["choices"][0]["delta"].get("tool_calls") for c in chunks[1:]] == [
        [{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "a", "arguments": ""}}],
        [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "b", "arguments": ""}}],
        [{"index": 1, "function": {"arguments": "{}"}}],
        [{"index": 0, "function": {"arguments": "{}"}}],
    ]


@pytest.mark.usefixtures("frozen_time")
def test_stream_usage_counts_from_message_delta(adapter: AnthropicAdapter) -> None:
    translator = adapter.stream_translator(make_call(hi(stream=True)))
    usage = {"input_tokens": 25, "cache_creation_input_tokens": 5, "cache_read_input_tokens": None, "output_tokens": 9}
    for data in (STREAM[0], {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": usage}):
        translator.translate(event(data))

    (last,) = translator.translate(event({"type": "message_stop"}))

    assert last["usage"] == {
        "prompt_tokens": 80,
        "completion_tokens": 9,
        "total_tokens": 89,
        "prompt_tokens_details": {"cached_tokens": 50},
    }


@pytest.mark.parametrize(
    ("sse", "message"),
    [
        pytest.param(
            event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            "the upstream failed mid-stream: Overloaded",
            id="error-event",
        ),
        pytest.param(
            ServerSentEvent("content_block_delta", '{"type": "content_block_delta", "ind'),
            "the upstream sent a malformed stream event: '{\"type\": \"content_block_delta\", \"ind'",
            id="malformed-json",
        ),
        pytest.param(
            ServerSentEvent("message", "[1, 2]"),
            "the upstream sent a stream event that is not a JSON object",
            id="not-an-object",
        ),
        pytest.param(
            event({"type": "content_block_delta", "index": 0}),
            "the upstream sent a malformed 'content_block_delta' stream event",
            id="missing-field",
        ),
        pytest.param(
            event(json_delta(5, "{")),
            "the upstream streamed tool input for a block that is not a tool_use",
            id="input-for-unknown-block",
        ),
    ],
)
def test_stream_errors(adapter: AnthropicAdapter, sse: ServerSentEvent, message: str) -> None:
    translator = adapter.stream_translator(make_call(hi(stream=True)))
    translator.translate(event(STREAM[0]))

    with pytest.raises(UpstreamStreamError) as caught:
        translator.translate(sse)

    assert caught.value.message == message
    assert caught.value.status == 502
    assert not translator.finished


@pytest.mark.parametrize(
    "sse",
    [
        pytest.param(ServerSentEvent("ping", '{"type": "ping"}'), id="ping"),
        pytest.param(ServerSentEvent("message", ""), id="empty"),
        pytest.param(event({"type": "content_block_stop", "index": 0}), id="block-stop"),
    ],
)
def test_stream_events_without_chunks(adapter: AnthropicAdapter, sse: ServerSentEvent) -> None:
    translator = adapter.stream_translator(make_call(hi(stream=True)))

    assert translator.translate(sse) == []
    assert not translator.finished
