"""The exporters document: ``gateway-exporters-config`` (absent: records go to no observability tool).

Each entry feeds one project of one tool (Langfuse or Parea) from the request log, off the
request path, in batches; several entries of one type feed several projects.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from ._schema import Model


class _Delivery(Model):
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """The share of requests exported (a run is exported whole or not at all)."""
    batch_size: int = Field(50, gt=0, le=1000)
    flush_interval_ms: int = Field(1000, gt=0, le=600_000)
    max_queue: int = Field(10_000, gt=0, le=1_000_000)
    """Records waiting to be sent beyond this are dropped, counted and logged."""
    timeout_ms: int = Field(10_000, gt=0, le=600_000)
    """One POST's bound."""

    @field_validator("host", check_fields=False)
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class LangfuseExporter(_Delivery):
    type: Literal["langfuse"]
    name: str | None = None
    host: str = "https://cloud.langfuse.com"
    public_key: SecretStr
    secret_key: SecretStr


class PareaExporter(_Delivery):
    type: Literal["parea"]
    name: str | None = None
    host: str
    api_key: SecretStr
    project_name: str = "default"


ExporterConfig = Annotated[LangfuseExporter | PareaExporter, Field(discriminator="type")]


class ExportersDocument(Model):
    type: Literal["gateway-exporters-config"]
    exporters: tuple[ExporterConfig, ...] = ()

    def secrets(self) -> tuple[str, ...]:
        out: list[str] = []
        for exporter in self.exporters:
            if isinstance(exporter, LangfuseExporter):
                out += [exporter.public_key.get_secret_value(), exporter.secret_key.get_secret_value()]
            else:
                out.append(exporter.api_key.get_secret_value())
        return tuple(secret for secret in out if secret)
