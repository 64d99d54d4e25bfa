"""JSON log lines for the operator: kopf's stdlib records and our structlog events, one format.

Called once by ``kliv operator`` (``--log-format json``, the default) before
kopf starts. Every line is one JSON object with ``timestamp``, ``level``,
``logger`` and ``event``; records kopf writes about an object (its per-object
logger attaches the reference) also carry ``kind``, ``namespace`` and ``name``,
so a log pipeline can follow one custom resource. Only those fields are taken
from kopf's reference: its records also carry the operator's settings object,
which never reaches a log line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_HANDLER_NAME = "kliv-json"


def _object_reference(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Bind kind/namespace/name from kopf's per-object records (``record.k8s_ref``)."""
    record = event_dict.get("_record")
    ref: dict[str, Any] | None = getattr(record, "k8s_ref", None)
    if ref:
        for field in ("kind", "namespace", "name"):
            if ref.get(field):
                event_dict.setdefault(field, ref[field])
    return event_dict


def configure_json_logs(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Route stdlib logging (kopf, aio-pika) and structlog through one JSON renderer on ``stream``."""
    shared: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # tests re-configure (capture_logs) after this
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _object_reference],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level)
    return handler
