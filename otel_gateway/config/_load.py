"""Reading configuration: YAML files or a directory of them, ``${VAR}`` interpolation, validation."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ._cache import CacheDocument
from ._exporters import ExportersDocument
from ._logging import LoggingDocument, PricingDocument
from ._mcp import McpServersDocument
from ._routing import AuthDocument, FallbackDocument, LoadBalanceDocument, RateLimitDocument
from ._schema import Model, ProviderConfig, ProvidersDocument, ServerDocument

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DOCUMENT_TYPES: Mapping[str, type[Model]] = {
    "gateway-providers-config": ProvidersDocument,
    "gateway-server-config": ServerDocument,
    "gateway-auth-config": AuthDocument,
    "gateway-rate-limiting-config": RateLimitDocument,
    "gateway-load-balancing-config": LoadBalanceDocument,
    "gateway-fallback-config": FallbackDocument,
    "gateway-cache-config": CacheDocument,
    "gateway-logging-config": LoggingDocument,
    "gateway-pricing-config": PricingDocument,
    "gateway-exporters-config": ExportersDocument,
    "gateway-mcp-servers-config": McpServersDocument,
}
_SINGLE = {ServerDocument: "server", AuthDocument: "auth", RateLimitDocument: "rate_limiting",
           LoadBalanceDocument: "load_balancing", FallbackDocument: "fallback", CacheDocument: "cache",
           LoggingDocument: "logging", PricingDocument: "pricing", ExportersDocument: "exporters",
           McpServersDocument: "mcp_servers"}

BUILTIN_DEFAULT = """\
type: gateway-providers-config
providers:
  - name: demo
    type: mock
    models: [echo]
"""


@dataclass(frozen=True)
class ConfigIssue:
    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway was configured with, validated. Passed into ``create_app``."""

    providers: tuple[ProviderConfig, ...]
    server: ServerDocument = field(
        default_factory=lambda: ServerDocument(type="gateway-server-config")
    )
    auth: AuthDocument | None = None
    """No auth document: every caller is ``user:anonymous`` in tenant ``default``."""
    rate_limiting: RateLimitDocument | None = None
    load_balancing: LoadBalanceDocument | None = None
    fallback: FallbackDocument | None = None
    cache: CacheDocument | None = None
    """No cache document: no response is cached."""
    logging: LoggingDocument = field(default_factory=lambda: LoggingDocument(type="gateway-logging-config"))
    """No logging document: every request is logged to the default SQLite store."""
    pricing: PricingDocument | None = None
    """No pricing document: the shipped ``config/pricing.yaml`` (see ``warehouse._pricing``)."""
    exporters: ExportersDocument | None = None
    """No exporters document: records go to no observability tool (Langfuse, Parea)."""
    mcp_servers: McpServersDocument | None = None
    """No MCP servers document: the agent endpoint reaches no MCP server."""
    sources: tuple[str, ...] = ()
    origin: str | None = None
    """The file or directory this was loaded from; a reload reads it again."""

    def provider(self, name: str) -> ProviderConfig | None:
        for provider in self.providers:
            if provider.name == name:
                return provider
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every credential in the config, for scrubbing text that leaves the gateway."""
        own = tuple(secret for p in self.providers if (secret := p.secret()))
        exporters = self.exporters.secrets() if self.exporters else ()
        mcp = self.mcp_servers.secrets() if self.mcp_servers else ()
        return own + exporters + mcp


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Load a YAML file or a directory of YAML files; ``None`` loads the built-in default."""
    env = os.environ if environ is None else environ
    if path is None:
        return _build([("<built-in default>", BUILTIN_DEFAULT)], env)
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise ConfigError([ConfigIssue(str(root), "", "no .yaml or .yml files in this directory")])
    elif root.is_file():
        files = [root]
    else:
        raise ConfigError([ConfigIssue(str(root), "", "no such file or directory")])
    config = _build([(str(f), f.read_text(encoding="utf-8")) for f in files], env)
    return dataclasses.replace(config, origin=str(root))


def load_config_text(text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None) -> GatewayConfig:
    return _build([(source, text)], os.environ if environ is None else environ)


def _build(texts: list[tuple[str, str]], env: Mapping[str, str]) -> GatewayConfig:
    issues: list[ConfigIssue] = []
    documents: list[tuple[str, Model]] = []
    for source, text in texts:
        try:
            raw_docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            issues.append(ConfigIssue(source, where, f"invalid YAML: {getattr(exc, 'problem', exc)}"))
            continue
        for index, raw in enumerate(raw_docs):
            label = source if len(raw_docs) == 1 else f"{source} (document {index + 1})"
            parsed = _parse_document(label, raw, env, issues)
            if parsed is not None:
                documents.append((label, parsed))
    config = _assemble(documents, issues)
    if issues:
        raise ConfigError(issues)
    return config


def _parse_document(label: str, raw: Any, env: Mapping[str, str], issues: list[ConfigIssue]) -> Model | None:
    if not isinstance(raw, dict):
        issues.append(ConfigIssue(label, "", "a document must be a mapping with a 'type'"))
        return None
    doc_type = raw.get("type")
    schema = DOCUMENT_TYPES.get(doc_type) if isinstance(doc_type, str) else None
    if schema is None:
        known = ", ".join(sorted(DOCUMENT_TYPES))
        issues.append(ConfigIssue(label, "type", f"unknown document type {doc_type!r}; expected one of: {known}"))
        return None
    resolved = _interpolate(raw, env, label, "", issues)
    try:
        return schema.model_validate(resolved)
    except ValidationError as exc:
        errors = exc.errors()
        for err in errors:
            if not _follows_from_items(err, errors):
                issues.append(ConfigIssue(label, _key_path(err["loc"]), _message(err)))
        return None


def _assemble(documents: list[tuple[str, Model]], issues: list[ConfigIssue]) -> GatewayConfig:
    providers: list[ProviderConfig] = []
    seen: dict[str, str] = {}
    singles: dict[str, Model] = {}
    for label, doc in documents:
        _check_unique(label, doc, issues)
        if isinstance(doc, ProvidersDocument):
            for index, provider in enumerate(doc.providers):
                if provider.name in seen:
                    issues.append(ConfigIssue(
                        label, f"providers[{index}].name",
                        f"provider {provider.name!r} is already defined in {seen[provider.name]}",
                    ))
                seen[provider.name] = label
                providers.append(provider)
            continue
        field_name = _SINGLE[type(doc)]
        if field_name in singles:
            issues.append(ConfigIssue(label, "type", f"a second {doc.type} document; merge them into one"))  # type: ignore[attr-defined]
        singles[field_name] = doc
    if not providers and not issues:
        message = "no providers are configured (add a gateway-providers-config document)"
        issues.append(ConfigIssue("config", "", message))
    model_ids = {f"{p.name}/{m}" for p in providers for m in p.models}
    labels = {id(doc): label for label, doc in documents}
    for doc in singles.values():
        _check_targets(labels[id(doc)], doc, model_ids, issues)
    sources = tuple(dict.fromkeys(label.split(" (document")[0] for label, _ in documents))
    return GatewayConfig(providers=tuple(providers), sources=sources, **singles)  # type: ignore[arg-type]


def _check_unique(label: str, doc: Model, issues: list[ConfigIssue]) -> None:
    """A rule id names the rule's spans, headers and buckets: one rule each (a rate-limit id is
    compared as written, ``{user}`` and all). A rule lists each of its targets once."""
    if isinstance(doc, RateLimitDocument | LoadBalanceDocument | FallbackDocument):
        ids = [rule.id for rule in doc.rules]
        _once(label, "rules", "id", ids, "rule id {!r} is already the id of {}; each rule needs its own id", issues)
    lists: list[tuple[str, list[str]]] = []
    if isinstance(doc, LoadBalanceDocument):
        lists = [(f"rules[{r}].load_balance_targets", [target.target for target in rule.load_balance_targets])
                 for r, rule in enumerate(doc.rules)]
    elif isinstance(doc, FallbackDocument):
        lists = [(f"rules[{r}].fallback_models", [model.target for model in fallback_rule.fallback_models])
                 for r, fallback_rule in enumerate(doc.rules)]
    for path, targets in lists:
        _once(label, path, "target", targets, "target {!r} is already listed as {}; list each target once", issues)


def _once(label: str, path: str, key: str, values: list[str], message: str, issues: list[ConfigIssue]) -> None:
    """An issue at ``path[i].key`` for every value already seen at an earlier index of ``path``;
    ``message`` is formatted with the value and the earlier entry (``rules[0]``)."""
    first: dict[str, int] = {}
    list_name = path.rsplit(".", 1)[-1]
    for index, value in enumerate(values):
        if value in first:
            earlier = f"{list_name}[{first[value]}]"
            issues.append(ConfigIssue(label, f"{path}[{index}].{key}", message.format(value, earlier)))
        first.setdefault(value, index)


def _check_targets(label: str, doc: Model, model_ids: set[str], issues: list[ConfigIssue]) -> None:
    """Every target a routing rule names must be a configured ``provider-account/model``."""
    targets: list[tuple[str, str]] = []
    if isinstance(doc, LoadBalanceDocument):
        for r, rule in enumerate(doc.rules):
            targets += [(f"rules[{r}].load_balance_targets[{t}].target", target.target)
                        for t, target in enumerate(rule.load_balance_targets)]
    elif isinstance(doc, FallbackDocument):
        for r, fallback_rule in enumerate(doc.rules):
            targets += [(f"rules[{r}].fallback_models[{t}].target", target.target)
                        for t, target in enumerate(fallback_rule.fallback_models)]
    for path, target in targets:
        if target not in model_ids:
            message = f"unknown target {target!r}: not a configured provider-account/model"
            issues.append(ConfigIssue(label, path, message))


def _interpolate(value: Any, env: Mapping[str, str], label: str, path: str, issues: list[ConfigIssue]) -> Any:
    if isinstance(value, str):
        return _substitute(value, env, label, path, issues)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, label, _join(path, str(k)), issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, label, f"{path}[{i}]", issues) for i, v in enumerate(value)]
    return value


def _substitute(text: str, env: Mapping[str, str], label: str, path: str, issues: list[ConfigIssue]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] or default is None):
            return env[name]
        if default is not None:
            return default
        message = f"environment variable {name} is not set (use ${{{name}:-default}} for a default)"
        issues.append(ConfigIssue(label, path, message))
        return ""

    return _VAR.sub(replace, text) if "${" in text else text


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else _join(out, str(part))[len(out):]
    return out


def _follows_from_items(err: Any, errors: list[Any]) -> bool:
    """A list too short only because its own items failed (pydantic counts the valid ones): the
    items' errors say what is wrong, "at least 1 item ..., not 0" of a list of one would mislead."""
    if err["type"] != "too_short":
        return False
    loc = tuple(err["loc"])
    return any(len(other["loc"]) > len(loc) and tuple(other["loc"][:len(loc)]) == loc for other in errors)


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key"
    return msg.removeprefix("Value error, ")
