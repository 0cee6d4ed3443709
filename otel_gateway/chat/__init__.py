"""The chat pipeline: the call and result types, the stream machinery, the provider attempt."""

from ._assemble import CompletionAssembler
from ._stream import UpstreamStream
from ._types import ChatCall, ChatResult, ChunkStream, Completion, Outcome, RequestContext, Send
from ._upstream import ProviderSend

__all__ = [
    "ChatCall",
    "ChatResult",
    "ChunkStream",
    "Completion",
    "CompletionAssembler",
    "Outcome",
    "ProviderSend",
    "RequestContext",
    "Send",
    "UpstreamStream",
]
