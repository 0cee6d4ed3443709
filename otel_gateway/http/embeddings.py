"""``POST /v1/embeddings`` and ``POST /v1/moderations``: their entries of the shared endpoint
(``_endpoint``). The JSON goes down the one chain to the provider of the model, with only
``model`` replaced; the answer comes back as it came."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from ..runtime import Gateway
from ._endpoint import Endpoint, ModelEndpoint
from ._params import EMBEDDINGS, MODERATIONS, Spec, check_body

Operation = Literal["embeddings", "moderations"]


def _checked(spec: Spec) -> Callable[[Mapping[str, Any]], None]:
    return lambda body: check_body(body, spec)


ENDPOINTS: Mapping[Operation, Endpoint] = {
    "embeddings": Endpoint("embeddings", _checked(EMBEDDINGS)),
    "moderations": Endpoint("moderations", _checked(MODERATIONS)),
}


def OperationEndpoint(gateway: Gateway, operation: Operation) -> ModelEndpoint:
    return ModelEndpoint(gateway, ENDPOINTS[operation])
