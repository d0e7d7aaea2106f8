"""Logging for the ``pr3dict`` command: the standard ``logging`` module, one stderr handler.

Components log through ``logging.getLogger("pr3dict.<area>")``; the CLI configures the
level and the format (``--log-level``, ``--log-format text|json``). Every record carries the
run id (set once the run has one) and, inside a trade's span, the trade id and trace ids, so
a log line can be joined with the journal, the metrics and the traces.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TextIO

from opentelemetry import trace

from . import telemetry as tm

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

# The run in progress (the CLI sets it; a Python-API user may too).
RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("pr3dict_run_id",
                                                                    default=None)


class _Context(logging.Filter):
    """Adds run_id, trade_id, trace_id and span_id to every record (None when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.run_id = RUN_ID.get()
        span = trace.get_current_span()
        ctx = span.get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        if getattr(record, "trade_id", None) is None:
            attributes = getattr(span, "attributes", None) or {}
            record.trade_id = attributes.get(tm.TRADE_ID)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-12-02T05:00:00.123Z WARNING pr3dict.venues: message  run=... trade=...``"""

    def format(self, record: logging.LogRecord) -> str:
        ids = "".join(f"  {label}={value}" for label, value in (
            ("run", getattr(record, "run_id", None)),
            ("trade", getattr(record, "trade_id", None))) if value)
        line = f"{_timestamp(record)} {record.levelname} {record.name}: " \
               f"{record.getMessage()}{ids}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the ids that are known."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        for key in ("run_id", "trade_id", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "warning", fmt: str = "text",
              stream: TextIO | None = None) -> Callable[[], None]:
    """Send pr3dict's records at ``level`` and above (others' at WARNING) to ``stream``.

    Returns the function that undoes it (``main()`` runs in tests many times per process).
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Context())
    root, ours = logging.getLogger(), logging.getLogger("pr3dict")
    saved = (root.level, ours.level, ours.propagate)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    ours.setLevel(level.upper())

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])
        ours.propagate = saved[2]
    return undo
