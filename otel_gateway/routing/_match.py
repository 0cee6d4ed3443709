"""Rule conditions: ``when`` fields are AND-ed, a list matches any element, absent matches all."""

from __future__ import annotations

from ..calls import ChatCall
from ..config import When


def matches(when: When, call: ChatCall, model: str | None = None) -> bool:
    """Whether ``call`` meets ``when``; ``model`` defaults to the model the call is for."""
    if when.models is not None and (model or call.model) not in when.models:
        return False
    if when.subjects is not None and call.context.identity.subject not in when.subjects:
        return False
    if when.metadata:
        metadata = call.context.metadata
        return all(metadata.get(key) == value for key, value in when.metadata.items())
    return True
