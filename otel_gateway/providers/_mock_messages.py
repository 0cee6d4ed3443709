"""The ``mock`` provider's side of Anthropic's Messages API (``POST /v1/messages``): a message that
echoes the last message's text, or calls the first offered tool with its required parameters
filled in; streamed as Anthropic's events, the text (or the tool's input JSON) in the mock's
``stream_chunks`` deltas. Pure functions of the request body: ``providers.mock``'s transport applies
the ``x-mock-*`` delays and failures around them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ..errors import anthropic_error_type

__all__ = ["PATH", "error_body", "message", "message_events"]

PATH = "/messages"
"""Where the mock's Messages requests go (after its base URL)."""
_SAMPLES: dict[str, Any] = {"string": "mock", "integer": 1, "number": 1.0, "boolean": True, "array": [],
                            "object": {}}


def message(body: dict[str, Any]) -> dict[str, Any]:
    """The answer to ``body``: a ``text`` block (``end_turn``), or a ``tool_use`` block (``tool_use``)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages must be a non-empty array of message objects")
    digest = hashlib.sha256(orjson.dumps(messages)).hexdigest()
    tool = _tool_to_call(body, messages[-1])
    if tool is not None:
        name, arguments = tool
        content: list[dict[str, Any]] = [{"type": "tool_use", "id": f"toolu_mock_{digest[:24]}", "name": name,
                                          "input": arguments}]
        stop, output = "tool_use", orjson.dumps(arguments).decode()
    else:
        output = _text(messages[-1].get("content"))
        content, stop = [{"type": "text", "text": output}], "end_turn"
    return {
        "id": f"msg_mock_{digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "echo"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": sum(len(_text(m.get("content")).split()) + 3 for m in messages),
                  "output_tokens": max(1, len(output.split()))},
    }


def message_events(answer: Mapping[str, Any], chunks: int) -> list[bytes]:
    """``answer`` as the SSE frames of a Messages stream: ``message_start``, each block's start,
    ``chunks`` deltas and stop, ``message_delta`` (stop reason, usage), ``message_stop``."""
    usage = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}
    frames = [_event("message_start", {"message": start})]
    for index, block in enumerate(answer["content"]):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": part}
                      for part in _parts(orjson.dumps(block["input"]).decode(), chunks)]
        else:
            opened = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": part} for part in _parts(block["text"], chunks)]
        frames.append(_event("content_block_start", {"index": index, "content_block": opened}))
        frames += [_event("content_block_delta", {"index": index, "delta": delta}) for delta in deltas]
        frames.append(_event("content_block_stop", {"index": index}))
    frames.append(_event("message_delta", {
        "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }))
    frames.append(_event("message_stop", {}))
    return frames


def error_body(status: int, text: str) -> dict[str, Any]:
    """An error as Anthropic's API words it (its ``type`` from the status, as the gateway's own)."""
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": text}}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def _parts(text: str, count: int) -> list[str]:
    """``text`` in ``count`` pieces (fewer when it is shorter); one empty piece for no text."""
    size = max(1, -(-len(text) // max(1, count)))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _text(content: Any) -> str:
    """The text of a message's content: a string, or its ``text`` blocks and ``tool_result`` texts."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            texts.append(_text(block.get("content")))
    return " ".join(texts)


def _tool_to_call(body: Mapping[str, Any], last: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The tool to call and its input: the one ``tool_choice`` names, else the first offered; none
    when no tool is offered, ``tool_choice`` is ``none``, or the last message answers a tool call."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("name"), str)]
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    if not tools or choice.get("type") == "none" or _answers_a_tool(last):
        return None
    tool = tools[0]
    if choice.get("type") == "tool":
        tool = next((t for t in tools if t["name"] == choice.get("name")), tool)
    schema = tool.get("input_schema")
    schema = schema if isinstance(schema, dict) else {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    arguments = {str(name): _SAMPLES.get(_type_of(properties.get(name)), "mock") for name in required}
    return tool["name"], arguments


def _type_of(schema: Any) -> Any:
    return schema.get("type") if isinstance(schema, dict) else None


def _answers_a_tool(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, Sequence) and not isinstance(content, str) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content)
