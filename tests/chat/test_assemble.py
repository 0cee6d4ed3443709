"""``CompletionAssembler``: a stream's chunks add up to the ``chat.completion`` they stand for."""

from __future__ import annotations

from typing import Any

from otel_gateway.chat._assemble import CompletionAssembler

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-2024-08-06"}


def chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": list(choices), **extra}


def delta(index: int = 0, finish_reason: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "finish_reason": finish_reason}


def assemble(*chunks: dict[str, Any]) -> CompletionAssembler:
    assembler = CompletionAssembler()
    for c in chunks:
        assembler.add(c)
    return assembler


def test_empty() -> None:
    assembler = CompletionAssembler()
    assert assembler.chunk_count == 0
    assert not assembler.complete
    assert assembler.result() == {"object": "chat.completion", "choices": []}


def test_text_chunks() -> None:
    assembler = assemble(
        chunk(delta(role="assistant", content="")),
        chunk(delta(content="Hel")),
        chunk(delta(content="lo")),
        chunk(delta(content=" there")),
        chunk(delta(finish_reason="stop")),
    )
    assert assembler.chunk_count == 5
    assert assembler.complete
    assert assembler.result() == {
        "object": "chat.completion",
        "id": "chatcmpl-1",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
    }


def test_system_fingerprint_is_kept() -> None:
    result = assemble(chunk(delta(content="x"), system_fingerprint="fp_1")).result()
    assert result["system_fingerprint"] == "fp_1"


def test_no_content_stays_none() -> None:
    result = assemble(chunk(delta(role="assistant", content="")), chunk(delta(finish_reason="length"))).result()
    assert result["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None},
                                  "finish_reason": "length"}]


def test_multiple_choices_interleaved() -> None:
    assembler = assemble(
        chunk(delta(0, role="assistant", content="A"), delta(1, role="assistant", content="B")),
        chunk(delta(1, content="b")),
        chunk(delta(0, content="a")),
        chunk(delta(1, finish_reason="length")),
    )
    assert not assembler.complete
    assembler.add(chunk(delta(0, finish_reason="stop")))
    assert assembler.complete
    assert assembler.result()["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Aa"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "Bb"}, "finish_reason": "length"},
    ]


def test_choices_come_out_sorted_by_index() -> None:
    result = assemble(chunk(delta(1, content="second")), chunk(delta(0, content="first"))).result()
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in result["choices"]] == ["first", "second"]


def test_tool_call_fragments_are_joined_by_index() -> None:
    assembler = assemble(
        chunk(delta(role="assistant", content=None, tool_calls=[
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        ])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}])),
        chunk(delta(tool_calls=[
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}])),
        chunk(delta(finish_reason="tool_calls")),
    )
    assert assembler.complete
    assert assembler.result()["choices"] == [{
        "index": 0,
        "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        "finish_reason": "tool_calls",
    }]


def test_tool_call_name_fragments_are_joined() -> None:
    result = assemble(
        chunk(delta(tool_calls=[{"index": 0, "id": "c", "function": {"name": "get_"}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"name": "weather", "arguments": "{}"}}])),
    ).result()
    assert result["choices"][0]["message"]["tool_calls"] == [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ]


def test_usage_chunk() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
    assembler = assemble(
        chunk(delta(role="assistant", content="Hi")),
        chunk(delta(finish_reason="stop")),
        chunk(usage=usage),
    )
    assert assembler.usage == usage
    assert assembler.complete
    result = assembler.result()
    assert result["usage"] == usage
    assert result["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"},
    ]


def test_null_usage_on_ordinary_chunks_is_ignored() -> None:
    assembler = assemble(chunk(delta(content="x"), usage=None))
    assert assembler.usage is None
    assert "usage" not in assembler.result()


def test_refusal() -> None:
    result = assemble(chunk(delta(refusal="I can")), chunk(delta(refusal="not.", finish_reason="stop"))).result()
    assert result["choices"][0]["message"] == {"role": "assistant", "content": None, "refusal": "I cannot."}


def test_complete_needs_every_choice_finished() -> None:
    assembler = CompletionAssembler()
    assembler.add(chunk(usage={"prompt_tokens": 1}))
    assert not assembler.complete, "a usage chunk alone is no answer"
    assembler.add(chunk(delta(content="x")))
    assert not assembler.complete
    assembler.add(chunk(delta(finish_reason="stop")))
    assert assembler.complete


def test_result_is_a_snapshot_of_what_arrived_so_far() -> None:
    assembler = assemble(chunk(delta(role="assistant", content="part")))
    assert assembler.result()["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "part"}, "finish_reason": None}
    ]
    assembler.add(chunk(delta(content="ial", finish_reason="stop")))
    assert assembler.result()["choices"][0]["message"]["content"] == "partial"
