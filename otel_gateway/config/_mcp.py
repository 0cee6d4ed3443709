"""The MCP servers document: ``gateway-mcp-servers-config`` (absent: no registered server, no
URL allowed). The agent endpoint reaches only these servers, or URLs the allow-list matches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator

from ._schema import Model


class McpServer(Model):
    name: str = Field(min_length=1)
    """The integration fqn a request names the server by."""
    url: str
    headers: Mapping[str, str] = Field(default_factory=dict)
    """Sent on every request to the server (``${VAR}`` secrets); a request's own override them."""
    timeout_ms: int = Field(30_000, gt=0, le=600_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class McpServersDocument(Model):
    type: Literal["gateway-mcp-servers-config"]
    servers: tuple[McpServer, ...] = ()
    allowed_urls: tuple[str, ...] = ()
    """URL prefixes (scheme, host, port and path start) a request may name directly; empty: none."""

    def server(self, name: str) -> McpServer | None:
        return next((server for server in self.servers if server.name == name), None)

    def secrets(self) -> tuple[str, ...]:
        return tuple(value for server in self.servers for value in server.headers.values() if value)
