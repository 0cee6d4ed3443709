"""The built-in ``mock`` provider answers Anthropic's Messages API: the real ``anthropic`` SDK against
the gateway with the shipped default configuration (``config/``: ``demo/echo``), no network.
Text, streams (``messages.stream`` and ``create(stream=True)``), ``tool_use``, and the ``x-mock-*``
options."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from servers import serve

from otel_gateway.app import create_app
from otel_gateway.config import load_config

REPO = Path(__file__).resolve().parents[2]
MODEL = "demo/echo"
TEXT = "Say hello to the mock"
HELLO = [{"role": "user", "content": TEXT}]
PARTS = ["Say h", "ello ", "to th", "e moc", "k"]
"""``TEXT`` in the shipped ``stream_chunks: 5``."""
WEATHER = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                      "unit": {"type": "string"}},
                     "required": ["city", "days"]},
}
WEATHER_INPUT = {"city": "mock", "days": 1}
OTHER = {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}},
                                              "required": ["zone"]}}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = load_config(REPO / "config", environ={})
    with serve(create_app(config, capture_content=False)) as served:
        yield served


@pytest.fixture
def client(url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=10) as sdk:
        yield sdk


def digest(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(orjson.dumps(messages)).hexdigest()


def test_a_message_echoes_the_last_text(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)  # type: ignore[arg-type]

    assert message.model_dump(exclude_none=True) == {
        "id": f"msg_mock_{digest(HELLO)[:24]}",
        "type": "message",
        "role": "assistant",
        "model": "echo",
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 8, "output_tokens": 5},
    }


def test_content_blocks_and_a_system_prompt(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "blocks"}]}]
    message = client.messages.create(model=MODEL, max_tokens=50, system="Be brief.",
                                     messages=messages)  # type: ignore[arg-type]
    assert [block.model_dump() for block in message.content] == [
        {"type": "text", "text": "two blocks", "citations": None}]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4 + 4 + 5, 2)


def test_messages_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:  # type: ignore[arg-type]
        parts = list(stream.text_stream)
        final = stream.get_final_message()

    assert parts == PARTS
    assert [block.model_dump() for block in final.content] == [{"type": "text", "text": TEXT, "citations": None}]
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 8, 5)
    assert final.id == f"msg_mock_{digest(HELLO)[:24]}"


def test_create_stream_events(client: anthropic.Anthropic) -> None:
    events = list(client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                         stream=True))

    assert [event.type for event in events] == [
        "message_start", "content_block_start", *["content_block_delta"] * 5, "content_block_stop",
        "message_delta", "message_stop"]
    start, block_start, *deltas, block_stop, message_delta, _ = events
    assert start.message.content == [] and start.message.usage.input_tokens == 8  # type: ignore[union-attr]
    assert block_start.content_block.model_dump(exclude_none=True) == {"type": "text", "text": ""}  # type: ignore[union-attr]
    assert [d.delta.model_dump() for d in deltas] == [  # type: ignore[union-attr]
        {"type": "text_delta", "text": part} for part in PARTS]
    assert (block_stop.index, message_delta.delta.stop_reason) == (0, "end_turn")  # type: ignore[union-attr]
    assert message_delta.usage.output_tokens == 5  # type: ignore[union-attr]


def test_tool_use(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                     tools=[WEATHER, OTHER])  # type: ignore[list-item]

    assert message.stop_reason == "tool_use"
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "tool_use", "id": f"toolu_mock_{digest(HELLO)[:24]}", "name": "get_weather",
         "input": WEATHER_INPUT}]
    assert message.usage.output_tokens == 1  # the input's JSON, in words (no spaces: one)


def test_tool_choice_names_the_tool_or_none(client: anthropic.Anthropic) -> None:
    named = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                   tools=[WEATHER, OTHER], tool_choice={"type": "tool", "name": "get_time"})  # type: ignore[list-item]
    none = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                  tools=[WEATHER], tool_choice={"type": "none"})  # type: ignore[list-item]

    assert [(b.type, b.name, b.input) for b in named.content] == [  # type: ignore[union-attr]
        ("tool_use", "get_time", {"zone": "mock"})]
    assert [(b.type, b.text) for b in none.content] == [("text", TEXT)]  # type: ignore[union-attr]


def test_a_tool_result_is_echoed(client: anthropic.Anthropic) -> None:
    call = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                  tools=[WEATHER])  # type: ignore[list-item]
    (tool_use,) = call.content
    messages = [*HELLO, {"role": "assistant", "content": [tool_use.model_dump(exclude_none=True)]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,  # type: ignore[union-attr]
                                              "content": "18C, sunny"}]}]
    answer = client.messages.create(model=MODEL, max_tokens=50, messages=messages,  # type: ignore[arg-type]
                                    tools=[WEATHER])  # type: ignore[list-item]
    assert ([(b.type, b.text) for b in answer.content], answer.stop_reason) == (  # type: ignore[union-attr]
        [("text", "18C, sunny")], "end_turn")


def test_tool_use_streamed_as_input_json_deltas(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                tools=[WEATHER]) as stream:  # type: ignore[list-item]
        events = list(stream)
        final = stream.get_final_message()

    partial = [e.delta.partial_json for e in events  # type: ignore[union-attr]
               if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]  # type: ignore[union-attr]
    assert "".join(partial) == '{"city":"mock","days":1}'
    assert len(partial) == 5
    assert [(b.type, b.name, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("tool_use", "get_weather", WEATHER_INPUT)]
    assert final.stop_reason == "tool_use"


def test_chunks_header(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                extra_headers={"x-mock-stream-chunks": "2"}) as stream:
        assert list(stream.text_stream) == ["Say hello t", "o the mock"]


def test_status_header_fails_with_an_anthropic_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                               extra_headers={"x-mock-status": "429"})
    assert info.value.body == {"type": "error", "error": {
        "type": "rate_limit_error", "message": "demo: mock provider failing on purpose with status 429"}}


def test_a_bad_mock_header_is_a_400_naming_it(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                               extra_headers={"x-mock-stream-chunks": "0"})
    assert info.value.type == "invalid_request_error"
    assert "x-mock-stream-chunks" in str(info.value.api_message)


def test_fail_after_chunks_cuts_the_stream(client: anthropic.Anthropic) -> None:
    events: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for event in client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                                            stream=True, extra_headers={"x-mock-fail-after-chunks": "3"}):
            events.append(event.type)
    assert events == ["message_start", "content_block_start", "content_block_delta"]
    assert info.value.body["error"]["message"] == (  # type: ignore[index]
        "the upstream connection was cut mid-stream: mock provider cut the stream on purpose")


def test_delay_header_waits(client: anthropic.Anthropic) -> None:
    import time

    started = time.monotonic()
    client.messages.create(model=MODEL, max_tokens=50, messages=HELLO,  # type: ignore[arg-type]
                           extra_headers={"x-mock-delay-ms": "200"})
    assert 0.2 <= time.monotonic() - started < 3
