"""The request warehouse: one log record per request, stored and exported off the request path.

Endpoints fill an :class:`Exchange` and ``submit`` it to the :class:`RequestLog`
(``Gateway.request_log``, a :class:`RequestLogPipeline`), which builds the record (``_record``:
redaction, token counts, cost) and feeds every :class:`Sink`: the :class:`Store` named by the
``gateway-logging-config`` document (``store_for``), a JSONL file, OTLP logs.
"""

from ._cli import add_parser as add_logs_parser
from ._cli import run as run_logs
from ._exchange import Exchange, RequestLog, Status
from ._memory import MemoryStore
from ._otlp import OtlpLogSink
from ._pipeline import RequestLogPipeline
from ._pricing import Price, Pricing, cost
from ._query import FilterError, filters_from_query
from ._record import RECORD_NAME, REDACTED, RecordBuilder
from ._sinks import JsonlSink, Sink, Stats, StoreSink
from ._spool import Spool
from ._store import LogFilters, LogPage, Store, StoreUnavailable
from ._stores import store_for
from ._tokens import TokenCounter, encoding_name_for

__all__ = [
    "RECORD_NAME",
    "REDACTED",
    "Exchange",
    "FilterError",
    "JsonlSink",
    "LogFilters",
    "LogPage",
    "MemoryStore",
    "OtlpLogSink",
    "Price",
    "Pricing",
    "RecordBuilder",
    "RequestLog",
    "RequestLogPipeline",
    "Sink",
    "Spool",
    "Stats",
    "Status",
    "Store",
    "StoreSink",
    "StoreUnavailable",
    "TokenCounter",
    "add_logs_parser",
    "cost",
    "encoding_name_for",
    "filters_from_query",
    "run_logs",
    "store_for",
]
