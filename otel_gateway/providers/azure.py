"""Azure OpenAI: OpenAI's wire format, addressed by deployment, authenticated by ``api-key``.

Azure has no moderations endpoint (its content filter runs on every call); files and batches
live under ``/openai/files`` and ``/openai/batches``, every path with an ``api-version``.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qsl, quote

import httpx

from .openai import OpenAIAdapter


class AzureOpenAIAdapter(OpenAIAdapter):
    gen_ai_provider = "azure.ai.openai"
    operations: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    def chat_url(self, upstream_model: str) -> httpx.URL:
        return self.operation_url("chat/completions", upstream_model)

    def operation_url(self, operation: str, upstream_model: str) -> httpx.URL:
        """The deployment (``upstream_model``, from the config's model map) is one path segment, quoted whole."""
        return self.endpoint_url("openai", "deployments", upstream_model, *operation.split("/"),
                                 query=f"api-version={self._version}")

    def proxy_path(self, path: str) -> str:
        return "/openai" + path.removeprefix("/v1")

    def proxy_query(self, query: str) -> str:
        if any(name == "api-version" for name, _ in parse_qsl(query, keep_blank_values=True)):
            return query
        return f"{query}&api-version={self._version}" if query else f"api-version={self._version}"

    @property
    def _version(self) -> str:
        return quote(self.config.api_version, safe="")

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.config.secret()}
