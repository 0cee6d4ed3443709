"""Every endpoint that calls a model, as data (``SPECS``), and what it needs: the request and
span per endpoint, the stream machinery, assembling answers, the provider attempt."""

from ._assemble import CompletionAssembler
from ._specs import SPECS, EndpointSpec, spec_of
from ._stream import UpstreamStream
from ._upstream import ProviderSend

__all__ = ["SPECS", "CompletionAssembler", "EndpointSpec", "ProviderSend", "UpstreamStream", "spec_of"]
