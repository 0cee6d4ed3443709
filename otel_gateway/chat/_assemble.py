"""Rebuilds a whole ``chat.completion`` from the chunks of a stream."""

from __future__ import annotations

from typing import Any


class CompletionAssembler:
    """Feed every chunk; :meth:`result` gives the message(s) they add up to, with tool-call
    argument fragments joined in order."""

    __slots__ = ("_choices", "_meta", "chunk_count", "usage")

    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}
        self._meta: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.chunk_count = 0

    def add(self, chunk: dict[str, Any]) -> None:
        self.chunk_count += 1
        if not self._meta:
            self._meta = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        slot = self._choices.get(index)
        if slot is None:
            slot = {"role": "assistant", "content": None, "tool_calls": {}, "finish_reason": None}
            self._choices[index] = slot
        delta = choice.get("delta") or {}
        if delta.get("role"):
            slot["role"] = delta["role"]
        if delta.get("content"):
            slot["content"] = (slot["content"] or "") + delta["content"]
        if delta.get("refusal"):
            slot["refusal"] = slot.get("refusal", "") + delta["refusal"]
        for call in delta.get("tool_calls") or ():
            self._add_tool_call(slot["tool_calls"], call)
        if choice.get("finish_reason"):
            slot["finish_reason"] = choice["finish_reason"]

    @staticmethod
    def _add_tool_call(calls: dict[int, dict[str, Any]], call: dict[str, Any]) -> None:
        index = call.get("index", len(calls))
        entry = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if call.get("id"):
            entry["id"] = call["id"]
        function = call.get("function") or {}
        if function.get("name"):
            entry["function"]["name"] += function["name"]
        if function.get("arguments"):
            entry["function"]["arguments"] += function["arguments"]

    @property
    def complete(self) -> bool:
        """Every choice seen so far has its finish reason."""
        return bool(self._choices) and all(slot["finish_reason"] for slot in self._choices.values())

    def result(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            slot = self._choices[index]
            message: dict[str, Any] = {"role": slot["role"], "content": slot["content"]}
            if "refusal" in slot:
                message["refusal"] = slot["refusal"]
            if slot["tool_calls"]:
                message["tool_calls"] = [slot["tool_calls"][i] for i in sorted(slot["tool_calls"])]
            choices.append({"index": index, "message": message, "finish_reason": slot["finish_reason"]})
        out: dict[str, Any] = {"object": "chat.completion", **self._meta, "choices": choices}
        if self.usage is not None:
            out["usage"] = self.usage
        return out
