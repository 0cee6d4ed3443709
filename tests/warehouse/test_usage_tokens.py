"""Token counting with tiktoken's own encodings, built from the rank files bpe-openai ships."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

from otel_gateway.warehouse._tokens import SPECS, TokenCounter, _load, encoding, encoding_name_for


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_the_encodings_are_tiktokens_own(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """tiktoken's constructor, with its download replaced by the shipped ranks, gives the same
    pattern, special tokens and ranks as ours."""
    ours = encoding(name)
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: ours._mergeable_ranks)
    theirs = getattr(openai_public, name)()
    assert (ours.name, ours._pat_str, ours._special_tokens) == (name, theirs["pat_str"], theirs["special_tokens"])
    assert len(ours._mergeable_ranks) == {"cl100k_base": 100256, "o200k_base": 199998}[name]


def test_no_download_is_attempted(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("tiktoken tried to fetch a file")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    assert _load("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


@pytest.mark.parametrize(("name", "text", "tokens"), [
    pytest.param("cl100k_base", "hello world", [15339, 1917], id="cl100k"),
    pytest.param("o200k_base", "hello world", [24912, 2375], id="o200k"),
    pytest.param("o200k_base", "<|endoftext|>", [27, 91, 419, 1440, 919, 91, 29], id="special-as-text"),
])
def test_known_token_ids(name: str, text: str, tokens: list[int]) -> None:
    assert encoding(name).encode_ordinary(text) == tokens


def test_an_encoding_is_loaded_once_even_from_many_threads() -> None:
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(encoding("o200k_base"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(e) for e in seen}) == 1
    assert encoding("o200k_base") is seen[0]


@pytest.mark.parametrize(("model", "name"), [
    ("gpt-4o", "o200k_base"),
    ("openai-main/gpt-4o-mini-2024-07-18", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1-mini", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4-mini", "o200k_base"),
    ("gpt-4-turbo", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"),
    ("claude-sonnet-4-5", "cl100k_base"),
    ("llama-3.1-8b-instant", "cl100k_base"),
    ("echo", "cl100k_base"),
])
def test_the_encoding_follows_the_model(model: str, name: str) -> None:
    assert encoding_name_for(model) == name


def n(text: str, name: str = "o200k_base") -> int:
    return len(encoding(name).encode_ordinary(text))


def test_prompt_tokens_of_chat_messages() -> None:
    body = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "alice", "content": [{"type": "text", "text": "Hi there"},
                                                       {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]}
    expected = (
        3
        + 3 + n("system") + n("You are terse.")
        + 3 + n("user") + n("Hi there") + 1 + n("alice")
        + 3 + n("assistant") + n("lookup") + n('{"q":"x"}')
        + 3 + n("tool") + n("42") + n("call_1")
    )
    assert TokenCounter("gpt-4o").prompt(body) == expected


def test_tools_count_as_their_json() -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    cl100k = "cl100k_base"
    expected = 3 + 3 + n("user", cl100k) + n("hi", cl100k) + n(orjson.dumps(tools).decode(), cl100k)
    assert TokenCounter("gpt-4-turbo").prompt(body) == expected


def test_completion_tokens_of_every_choice() -> None:
    response = {"choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris is sunny."}},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]}},
        {"index": 2, "message": {"role": "assistant", "content": None, "refusal": "No."}},
    ]}
    expected = n("Paris is sunny.") + n("weather") + n('{"city": "Paris"}') + n("No.")
    assert TokenCounter("gpt-4o").completion(response) == expected
    assert TokenCounter("gpt-4o").completion({"choices": []}) == 0
    assert SPECS.keys() == {"cl100k_base", "o200k_base"}
