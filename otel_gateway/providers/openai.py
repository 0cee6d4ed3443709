"""OpenAI and any server speaking its wire format (Groq, Together, vLLM, Ollama...)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import orjson

from ..errors import UpstreamStreamError
from ..sse import ServerSentEvent
from ._base import ProviderAdapter, StreamTranslator

if TYPE_CHECKING:
    from ..calls import ChatCall


class OpenAIAdapter(ProviderAdapter):
    gen_ai_provider = "openai"
    operations: ClassVar[frozenset[str]] = frozenset({"embeddings", "moderations"})

    def build_request(self, call: ChatCall, upstream_model: str) -> httpx.Request:
        return self._post(self.chat_url(upstream_model), self.upstream_body(call, upstream_model), self._auth)

    @functools.cached_property
    def _auth(self) -> dict[str, str]:
        return self.auth_headers()

    def chat_url(self, upstream_model: str) -> httpx.URL:
        return self.endpoint_url("chat", "completions")

    def auth_headers(self) -> dict[str, str]:
        secret = self.config.secret()
        return {"authorization": f"Bearer {secret}"} if secret else {}

    @staticmethod
    def upstream_body(call: ChatCall, upstream_model: str) -> dict[str, Any]:
        body = call.params()
        body["model"] = upstream_model
        if call.stream:
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return body

    def translate_response(self, data: dict[str, Any], call: ChatCall) -> dict[str, Any]:
        return data

    def stream_translator(self, call: ChatCall) -> StreamTranslator:
        return OpenAIStreamTranslator()


class OpenAICompatibleAdapter(OpenAIAdapter):
    """Same wire format, its own ``base_url``; the API key is optional (local servers)."""


class OpenAIStreamTranslator:
    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = False

    def translate(self, event: ServerSentEvent) -> list[dict[str, Any]]:
        data = event.data
        if data == "[DONE]":
            self.finished = True
            return []
        if not data:
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamStreamError(f"the upstream sent a malformed stream event: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise UpstreamStreamError("the upstream sent a stream event that is not a JSON object")
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamStreamError(f"the upstream failed mid-stream: {message}")
        return [chunk]
