"""The OpenAI request parameters the gateway understands, checked before anything goes upstream.

An endpoint's parameters are a :class:`Spec`: a table of parameter -> check, built from the small
check factories below. :func:`check_body` answers the first wrong value with
:class:`InvalidRequestError` (400 ``invalid_request_error``) naming the parameter by its path
(``max_tokens``, ``messages[3].role``, ``tools[0].function.name``). A value a check accepts passes
untouched, and so does every parameter the table does not name. Optional parameters may be
``null`` (the provider's default). Ranges are those no provider accepts (``n`` 1-128,
``temperature`` 0-2, ...), not one provider's own limits.

Codes: ``missing_required_parameter``, ``invalid_type``, ``invalid_value`` (not one of the allowed
values, or empty), and OpenAI's ``integer_below_min_value`` / ``integer_above_max_value`` /
``decimal_below_min_value`` / ``decimal_above_max_value`` for numbers out of range.

This runs on every request, so a check builds nothing while the value is right: a failure carries
the path segments out (each container adds its own as :class:`_Invalid` passes), and the message
is made once, at the top.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import InvalidRequestError

__all__ = ["CHAT", "EMBEDDINGS", "MODERATIONS", "Check", "Spec", "check_body"]

Check = Callable[[Any], None]
"""Returns if the value is right, else raises :class:`_Invalid`."""


class _Invalid(Exception):
    """What is wrong (``message`` follows the parameter's path, unless ``whole``), and the path
    below the parameter, innermost segment first."""

    def __init__(self, message: str, code: str, *segments: str, whole: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.segments = list(segments)
        self.whole = whole


@dataclass(frozen=True, slots=True)
class Spec:
    checks: Mapping[str, Check]
    """Parameter -> its check (run on a value that is not ``null``)."""
    required: Mapping[str, str]
    """Parameter -> the whole message when it is absent or ``null`` (``missing_required_parameter``)."""

    def __post_init__(self) -> None:  # read-only: the tables are shared by every request
        object.__setattr__(self, "checks", MappingProxyType(dict(self.checks)))
        object.__setattr__(self, "required", MappingProxyType(dict(self.required)))


def check_body(body: Mapping[str, Any], spec: Spec) -> None:
    for name, message in spec.required.items():
        if body.get(name) is None:
            raise InvalidRequestError(message, param=name, code="missing_required_parameter")
    checks = spec.checks
    for name, value in body.items():
        check = checks.get(name)
        if check is not None and value is not None:
            try:
                check(value)
            except _Invalid as exc:
                param = name + "".join(reversed(exc.segments))
                message = exc.message if exc.whole else f"{param} {exc.message}"
                raise InvalidRequestError(message, param=param, code=exc.code) from None


# -- the check factories -------------------------------------------------------------------------


def _out_of_range(value: float, minimum: float, maximum: float, kind: str) -> _Invalid:
    low = value < minimum
    if minimum != -_UNBOUNDED and maximum != _UNBOUNDED:
        bound = f"between {minimum:g} and {maximum:g}"
    else:
        bound = f"at least {minimum:g}" if low else f"at most {maximum:g}"
    return _Invalid(f"must be {bound}; got {value}.", f"{kind}_{'below_min' if low else 'above_max'}_value")


_UNBOUNDED = float("inf")


def integer(minimum: float = -_UNBOUNDED, maximum: float = _UNBOUNDED) -> Check:
    """A JSON integer (``1e3`` and ``5.0`` are decimals, ``true`` a boolean: both refused)."""

    def check(value: Any) -> None:
        if value.__class__ is not int:  # bool is a subclass; orjson makes only plain ints
            raise _Invalid("must be an integer.", "invalid_type")
        if not minimum <= value <= maximum:
            raise _out_of_range(value, minimum, maximum, "integer")

    return check


def number(minimum: float = -_UNBOUNDED, maximum: float = _UNBOUNDED) -> Check:
    def check(value: Any) -> None:
        if value.__class__ is not float and value.__class__ is not int:
            raise _Invalid("must be a number.", "invalid_type")
        if not minimum <= value <= maximum:
            raise _out_of_range(value, minimum, maximum, "decimal")

    return check


def boolean(value: Any) -> None:
    if not isinstance(value, bool):
        raise _Invalid("must be a boolean.", "invalid_type")


def string(value: Any) -> None:
    if not isinstance(value, str):
        raise _Invalid("must be a string.", "invalid_type")


def name(value: Any) -> None:
    """A non-empty string."""
    if not isinstance(value, str):
        raise _Invalid("must be a string.", "invalid_type")
    if not value:
        raise _Invalid("must not be empty.", "invalid_value")


def one_of(*allowed: str) -> Check:
    listed = ", ".join(repr(v) for v in allowed)

    def check(value: Any) -> None:
        if not isinstance(value, str) or value not in allowed:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise _Invalid(f"must be one of {listed}; got {shown}.", "invalid_value")

    return check


def array(item: Check | None = None, *, non_empty: bool = False) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, list):
            raise _Invalid("must be an array.", "invalid_type")
        if non_empty and not value:
            raise _Invalid("must not be empty.", "invalid_value")
        if item is not None:
            _each(item, value)

    return check


def _each(item: Check, values: list[Any]) -> None:
    for index, element in enumerate(values):
        try:
            item(element)
        except _Invalid as exc:
            exc.segments.append(f"[{index}]")
            raise


def fields(checks: Mapping[str, Check] | None = None, *, required: tuple[str, ...] = ()) -> Check:
    """A JSON object; the named fields checked (``required`` ones must be present and not ``null``),
    others passed through."""
    table = MappingProxyType(dict(checks or {}))

    def check(value: Any) -> None:
        if not isinstance(value, dict):
            raise _Invalid("must be an object.", "invalid_type")
        for key in required:
            if value.get(key) is None:
                raise _Invalid("is required.", "missing_required_parameter", f".{key}")
        if table:
            _fields_of(table, value)

    return check


def _fields_of(table: Mapping[str, Check], value: dict[str, Any]) -> None:
    for key, element in value.items():
        field_check = table.get(key)
        if field_check is not None and element is not None:
            try:
                field_check(element)
            except _Invalid as exc:
                exc.segments.append(f".{key}")
                raise


def either(for_string: Check, for_other: Check, expected: str) -> Check:
    """Chosen by JSON type: a string is checked by ``for_string``, an array or an object by
    ``for_other``, anything else is not ``expected``."""

    def check(value: Any) -> None:
        if isinstance(value, str):
            for_string(value)
        elif isinstance(value, list | dict):
            for_other(value)
        else:
            raise _Invalid(f"must be {expected}.", "invalid_type")

    return check


def values_of(item: Check) -> Check:
    """An object whose every value passes ``item`` (``logit_bias``, ``metadata``)."""

    def check(value: Any) -> None:
        if not isinstance(value, dict):
            raise _Invalid("must be an object.", "invalid_type")
        for key, element in value.items():
            try:
                item(element)
            except _Invalid as exc:
                exc.segments.append(f".{key}")
                raise

    return check


# -- chat completions ----------------------------------------------------------------------------

_NO_MODEL = "You must provide a model parameter (a non-empty string)."
_NO_MESSAGES = "You must provide messages: a non-empty array of message objects."
ROLES = ("system", "developer", "user", "assistant", "tool", "function")

_PART = fields({"type": name, "text": string}, required=("type",))
_CONTENT = either(string, array(_PART), "a string, an array of content parts or null")
_TOOL_CALL = fields({"type": name, "id": string,
                     "function": fields({"name": name, "arguments": string}, required=("name",))})
_ROLE = one_of(*ROLES)
_MESSAGE_FIELDS: Mapping[str, Check] = MappingProxyType({
    "content": _CONTENT,
    "name": string,
    "tool_calls": array(_TOOL_CALL),
    "tool_call_id": string,
    "function_call": fields({"name": name, "arguments": string}),
    "refusal": string,
})


def _model(value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _Invalid(_NO_MODEL, "missing_required_parameter", whole=True)


def message(value: Any) -> None:
    """As :func:`fields` would, with a short way for the usual message (a role and a text)."""
    if value.__class__ is not dict or value.get("role").__class__ is not str:
        raise _Invalid("must be an object with a string 'role'.", "invalid_value")
    for key, element in value.items():
        if element is None or (key == "content" and element.__class__ is str):
            continue
        check = _ROLE if key == "role" else _MESSAGE_FIELDS.get(key)
        if check is not None:
            try:
                check(element)
            except _Invalid as exc:
                exc.segments.append(f".{key}")
                raise


def messages(value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise _Invalid(_NO_MESSAGES, "missing_required_parameter", whole=True)
    _each(message, value)


_FUNCTION = fields({"name": name, "description": string, "parameters": fields(), "strict": boolean},
                   required=("name",))
_TOOL = fields({"type": name, "function": _FUNCTION}, required=("type",))


def tool(value: Any) -> None:
    _TOOL(value)
    if value["type"] == "function" and value.get("function") is None:
        raise _Invalid("is required for a tool of type 'function'.", "missing_required_parameter", ".function")


_NAMED = fields({"type": name, "function": fields({"name": name}, required=("name",))}, required=("type",))

CHAT = Spec(
    checks={
        "model": _model,
        "messages": messages,
        "stream": boolean,
        "stream_options": fields({"include_usage": boolean, "include_obfuscation": boolean}),
        "max_tokens": integer(1),
        "max_completion_tokens": integer(1),
        "n": integer(1, 128),
        "temperature": number(0, 2),
        "top_p": number(0, 1),
        "presence_penalty": number(-2, 2),
        "frequency_penalty": number(-2, 2),
        "logit_bias": values_of(number(-100, 100)),
        "logprobs": boolean,
        "top_logprobs": integer(0, 20),
        "seed": integer(),
        "stop": either(string, array(string), "a string, an array of strings or null"),
        "tools": array(tool),
        "tool_choice": either(one_of("none", "auto", "required"), _NAMED, "a string or an object"),
        "parallel_tool_calls": boolean,
        "functions": array(_FUNCTION),
        "function_call": either(one_of("none", "auto"), fields({"name": name}, required=("name",)),
                                "a string or an object"),
        "response_format": fields({"type": name, "json_schema": fields({"name": name}, required=("name",))},
                                  required=("type",)),
        "user": string,
        "safety_identifier": string,
        "prompt_cache_key": string,
        "store": boolean,
        "metadata": values_of(string),
        "modalities": array(string),
        "reasoning_effort": string,
        "service_tier": string,
        "verbosity": string,
        "audio": fields(),
        "prediction": fields(),
        "web_search_options": fields(),
    },
    required={"model": _NO_MODEL, "messages": _NO_MESSAGES},
)
"""``POST /v1/chat/completions``."""


# -- embeddings and moderations ------------------------------------------------------------------

_TOKENS = array(integer(0), non_empty=True)
_INPUT_ITEMS: Mapping[type, Check] = MappingProxyType({str: string, int: integer(0), list: _TOKENS})


def _embedding_input(value: Any) -> None:
    """A string, or a non-empty array of strings, of token ids, or of arrays of token ids (the
    first item says which)."""
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise _Invalid("must be a string or a non-empty array of strings or token arrays.",
                       "invalid_value" if isinstance(value, list) else "invalid_type")
    _each(_INPUT_ITEMS.get(type(value[0]), string), value)


_NEEDED = {"model": _NO_MODEL, "input": "You must provide an input."}

EMBEDDINGS = Spec(
    checks={
        "model": _model,
        "input": _embedding_input,
        "dimensions": integer(1),
        "encoding_format": one_of("float", "base64"),
        "user": string,
    },
    required=_NEEDED,
)
"""``POST /v1/embeddings``."""

MODERATIONS = Spec(
    checks={"model": _model, "input": either(string, array(), "a string or an array")},
    required=_NEEDED,
)
"""``POST /v1/moderations`` (the gateway needs ``model`` to route it)."""
