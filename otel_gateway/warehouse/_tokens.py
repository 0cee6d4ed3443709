"""Token counts for answers whose provider reported no usage: tiktoken's own BPE encodings, read
from the files the ``bpe-openai`` package ships (tiktoken would download them at run time).

An encoding is loaded once, on first use, off the request path (record building runs in a worker
thread). Prompts are counted as OpenAI bills chat messages: 3 tokens a message, its role, content
and name (+1), 3 tokens priming the reply, plus the tool definitions.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import tiktoken

_O200K_MODELS = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4", "gpt-oss")

# As in tiktoken_ext/openai_public.py (a test checks they are the same).
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
_O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
SPECS: Mapping[str, tuple[str, dict[str, int], str]] = {
    "cl100k_base": (
        _CL100K_PATTERN,
        {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
         "<|endofprompt|>": 100276},
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        _O200K_PATTERN,
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
"""Encoding name -> (pattern, special tokens, SHA-256 of the rank file as tiktoken expects it)."""

_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def encoding_name_for(model: str) -> str:
    """``o200k_base`` for the gpt-4o, gpt-4.1, gpt-5 and o-series families, else ``cl100k_base``."""
    name = model.rpartition("/")[2].lower()
    return "o200k_base" if name.startswith(_O200K_MODELS) else "cl100k_base"


def encoding(name: str) -> tiktoken.Encoding:
    """The encoding, loaded on first use and kept; safe to call from any thread."""
    with _lock:
        found = _loaded.get(name)
        if found is None:
            found = _loaded[name] = _load(name)
        return found


def _load(name: str) -> tiktoken.Encoding:
    pattern, special_tokens, sha256 = SPECS[name]
    raw = gzip.decompress((_data_directory() / f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise RuntimeError(f"the {name} ranks shipped by bpe-openai are not the ones tiktoken expects")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens)


def _data_directory() -> Path:
    """``bpe_openai/data``, found without importing ``bpe_openai`` (its import reads every rank file)."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bpe-openai package, which ships the tokenizer files, is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class TokenCounter:
    """Counts one model's prompt and completion tokens."""

    def __init__(self, model: str) -> None:
        self.encoding_name = encoding_name_for(model)
        self._encoding = encoding(self.encoding_name)

    def text(self, value: Any) -> int:
        if isinstance(value, str):
            return len(self._encoding.encode_ordinary(value)) if value else 0
        if isinstance(value, list):  # content parts: only the text is tokens
            return sum(self.text(part.get("text")) for part in value if isinstance(part, Mapping))
        return 0

    def prompt(self, body: Mapping[str, Any]) -> int:
        total = REPLY_PRIMING
        for message in body.get("messages") or ():
            if not isinstance(message, Mapping):
                continue
            total += TOKENS_PER_MESSAGE + self.text(message.get("role")) + self.text(message.get("content"))
            if message.get("name"):
                total += TOKENS_PER_NAME + self.text(message["name"])
            total += self._tool_calls(message.get("tool_calls"))
            total += self.text(message.get("tool_call_id"))
        if body.get("tools"):
            total += self.text(orjson.dumps(body["tools"]).decode())
        return total

    def completion(self, response: Mapping[str, Any]) -> int:
        total = 0
        for choice in response.get("choices") or ():
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if isinstance(message, Mapping):
                total += self.text(message.get("content")) + self.text(message.get("refusal"))
                total += self._tool_calls(message.get("tool_calls"))
        return total

    def _tool_calls(self, calls: Iterable[Any] | None) -> int:
        total = 0
        for call in calls or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                total += self.text(function.get("name")) + self.text(function.get("arguments"))
        return total
