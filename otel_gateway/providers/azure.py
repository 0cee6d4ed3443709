"""Azure OpenAI: OpenAI's wire format, addressed by deployment, authenticated by ``api-key``."""

from __future__ import annotations

from urllib.parse import quote

from .openai import OpenAIAdapter


class AzureOpenAIAdapter(OpenAIAdapter):
    gen_ai_provider = "azure.ai.openai"

    def chat_url(self, upstream_model: str) -> str:
        deployment = quote(upstream_model, safe="")
        version = quote(self.config.api_version, safe="")
        return f"{self.config.url}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.config.secret()}
