"""The incremental SSE decoder: events survive any byte split, CRLF, comments, multi-line data."""

from __future__ import annotations

import pytest

from otel_gateway.sse import DONE, ServerSentEvent, SSEDecoder, encode_data

SAMPLE = (
    b": keep-alive comment\n"
    b"data: {\"a\": 1}\n"
    b"\n"
    b"event: ping\n"
    b"data: first line\n"
    b"data: second line\n"
    b"\n"
    b"data: caf\xc3\xa9\r\n"
    b"\r\n"
    b"data: [DONE]\n"
    b"\n"
)
EXPECTED = [
    ServerSentEvent("message", '{"a": 1}'),
    ServerSentEvent("ping", "first line\nsecond line"),
    ServerSentEvent("message", "café"),
    ServerSentEvent("message", "[DONE]"),
]


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.flush()


def test_whole_sample_in_one_chunk() -> None:
    assert decode(SAMPLE) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(SAMPLE)))
def test_any_split_point(split: int) -> None:
    assert decode(SAMPLE[:split], SAMPLE[split:]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert decode(*(SAMPLE[i:i + 1] for i in range(len(SAMPLE)))) == EXPECTED


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("message", "one")]
    assert decoder.feed(b"data: tw") == []
    assert decoder.feed(b"o\n\ndata: three\n\n") == [
        ServerSentEvent("message", "two"),
        ServerSentEvent("message", "three"),
    ]
    assert decoder.flush() == []


def test_crlf_line_endings() -> None:
    assert decode(b"event: delta\r\ndata: x\r\ndata: y\r\n\r\ndata: z\r\n\r\n") == [
        ServerSentEvent("delta", "x\ny"),
        ServerSentEvent("message", "z"),
    ]


def test_crlf_split_between_cr_and_lf() -> None:
    assert decode(b"data: x\r", b"\n\r", b"\n") == [ServerSentEvent("message", "x")]


def test_comments_are_ignored() -> None:
    assert decode(b": ping\n\n:another\ndata: x\n: inside\n\n") == [ServerSentEvent("message", "x")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b"data: a\ndata:b\ndata:  c\ndata:\n\n") == [ServerSentEvent("message", "a\nb\n c\n")]


def test_event_names() -> None:
    assert decode(b"event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {\"d\": 1}\n\n") == [
        ServerSentEvent("message_start", "{}"),
        ServerSentEvent("content_block_delta", '{"d": 1}'),
    ]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    assert decode(b"event: ping\ndata: 1\n\ndata: 2\n\n") == [
        ServerSentEvent("ping", "1"),
        ServerSentEvent("message", "2"),
    ]


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"id: 7\nretry: 1000\ndata: x\n\n") == [ServerSentEvent("message", "x")]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        pytest.param(b"data: last", [ServerSentEvent("message", "last")], id="no-newline"),
        pytest.param(b"data: last\n", [ServerSentEvent("message", "last")], id="no-blank-line"),
        pytest.param(b"event: end\ndata: last\r\n", [ServerSentEvent("end", "last")], id="named-crlf"),
        pytest.param(b"", [], id="nothing"),
        pytest.param(b": only a comment", [], id="comment"),
    ],
)
def test_flush_emits_a_last_event_without_trailing_blank_line(tail: bytes, expected: list[ServerSentEvent]) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: first\n\n" + tail) == [ServerSentEvent("message", "first")]
    assert decoder.flush() == expected


def test_encode_data_round_trips() -> None:
    assert encode_data({"x": [1, "é"]}) == b'data: {"x":[1,"\xc3\xa9"]}\n\n'
    assert decode(encode_data({"x": 1}), DONE) == [
        ServerSentEvent("message", '{"x":1}'),
        ServerSentEvent("message", "[DONE]"),
    ]
