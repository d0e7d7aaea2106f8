"""Span names, attribute names and tracer-provider wiring.

Core code uses only the OpenTelemetry API and a tracer handed to it; the CLI builds an SDK
provider with a BatchSpanProcessor. Tests inject an in-memory exporter, never the global one.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from .config import TelemetrySection

TRACER_NAME: Final = "pr3dict"

# Span names: "{verb} {object}", low cardinality; ids go in attributes.
SPAN_OPPORTUNITY: Final = "handle opportunity"
SPAN_DETECT: Final = "detect opportunities"
SPAN_GATE: Final = "evaluate risk_gate"
SPAN_EXECUTE: Final = "execute trade"
SPAN_SUBMIT: Final = "submit order"
SPAN_CANCEL: Final = "cancel order"
SPAN_QUERY: Final = "query order"
SPAN_FINALIZE: Final = "finalize trade"
SPAN_ROLLBACK: Final = "rollback trade"
SPAN_SETTLE: Final = "settle trade"
SPAN_POLL: Final = "poll venue"  # only recorded when a venue fails to deliver books
SPAN_WORK: Final = "work order"  # an unwind or completion leg being chased
SPAN_RECONCILE: Final = "reconcile trade"  # background resolution of an unresolved trade
SPAN_RECOVER: Final = "recover trade"  # recovery at start
SPAN_WORK_EXPOSURE: Final = "work exposure"  # unhedged shares worked in the background
SPAN_RECHECK: Final = "recheck trade"  # a recently finished trade asked about at start
SPAN_BREAK: Final = "break trade"  # a final trade reopened: a fill was reversed or came late

# Attributes.
PIPELINE_NAME: Final = "pr3dict.pipeline.name"
RUN_ID: Final = "pr3dict.run.id"
OPPORTUNITY_ID: Final = "pr3dict.opportunity.id"
OPPORTUNITY_KIND: Final = "pr3dict.opportunity.kind"
OPPORTUNITY_EDGE: Final = "pr3dict.opportunity.edge_per_share"
OPPORTUNITY_SIZE: Final = "pr3dict.opportunity.size"
DETECTOR_ID: Final = "pr3dict.detector.id"
GATE_ID: Final = "pr3dict.gate.id"
GATE_TYPE: Final = "pr3dict.gate.type"
GATE_APPROVED: Final = "pr3dict.gate.approved"
GATE_REASON: Final = "pr3dict.gate.reason"
TRADE_ID: Final = "pr3dict.trade.id"
TRADE_STATE: Final = "pr3dict.trade.state"
TRADE_PNL: Final = "pr3dict.trade.realised_pnl"
SERVER_ADDRESS: Final = "server.address"  # the venue's host, on venue-call (CLIENT) spans
TRADE_ERROR: Final = "pr3dict.trade.error"  # why it rolled back or is unresolved
TRADE_REJECT_REASON: Final = "pr3dict.trade.reject_reason"
TRADE_HEDGED: Final = "pr3dict.trade.hedged_size"
TRADE_RECOVERED_FROM: Final = "pr3dict.trade.recovered_from"
ENGINE_ADOPTED_FROM: Final = "pr3dict.engine.adopted_from"  # the dead engine a trade came from
VENUE_ID: Final = "pr3dict.venue.id"
STRATEGY: Final = "pr3dict.execution.strategy"
LEG_INDEX: Final = "pr3dict.leg.index"
LEG_VENUE: Final = "pr3dict.leg.venue"
LEG_INSTRUMENT: Final = "pr3dict.leg.instrument"
LEG_SIDE: Final = "pr3dict.leg.side"
LEG_PURPOSE: Final = "pr3dict.leg.purpose"
LEG_STATE: Final = "pr3dict.leg.state"
LEG_FILLED: Final = "pr3dict.leg.filled"
ORDER_CLIENT_ID: Final = "pr3dict.order.client_id"
ORDER_PRICE: Final = "pr3dict.order.price"
ORDER_SIZE: Final = "pr3dict.order.size"
ORDER_TIF: Final = "pr3dict.order.time_in_force"
ORDER_STATUS: Final = "pr3dict.order.status"
ERROR_TYPE: Final = "error.type"


def get_tracer(provider: trace.TracerProvider | None) -> trace.Tracer:
    try:
        version = metadata.version("pr3dict")
    except metadata.PackageNotFoundError:
        version = "0"
    return trace.get_tracer(TRACER_NAME, version, tracer_provider=provider)


def _any_value(value: Any) -> dict[str, Any]:
    """An attribute value in OTLP/JSON: 64-bit ints are strings, per the protobuf mapping."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attrs: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (attrs or {}).items()]


def _span_json(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}",
        "name": span.name, "kind": span.kind.value + 1,  # OTLP's enum is the API's + 1
        "startTimeUnixNano": str(span.start_time), "endTimeUnixNano": str(span.end_time),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.events:
        out["events"] = [{"timeUnixNano": str(e.timestamp), "name": e.name,
                          "attributes": _attributes(e.attributes)} for e in span.events]
    return out


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Spans as one OTLP/JSON ``ExportTraceServiceRequest``, grouped by resource and scope.

    Written directly rather than through protobuf's JSON mapping: that is pure Python and
    slow enough, on the exporter's thread, to hold the GIL for tens of milliseconds per
    batch and delay orders on the event loop.
    """
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for span in spans:
        _, scopes = by_resource.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        key = (scope.name, scope.version or "") if scope is not None else ("", "")
        scopes.setdefault(key, []).append(_span_json(span))
    return {"resourceSpans": [
        {"resource": {"attributes": _attributes(resource.attributes)},
         "scopeSpans": [{"scope": {"name": name, "version": version}, "spans": items}
                        for (name, version), items in scopes.items()]}
        for resource, scopes in by_resource.values()]}


class JsonLinesSpanExporter(SpanExporter):
    """Writes each export batch as one OTLP/JSON ``ExportTraceServiceRequest`` per line.

    A file any OTLP/JSON tool can replay, without running a collector.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file: io.TextIOBase | None = None  # opened on the first export: no run, no file
        self._closed = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = json.dumps(otlp_json(spans), separators=(",", ":"))
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")  # type: ignore[assignment]
            assert self._file is not None
            self._file.write(line + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318"


def otlp_traces_endpoint(config: TelemetrySection) -> str:
    """Where OTLP traces go: the file's ``endpoint``, else the standard environment
    variables (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, ``OTEL_EXPORTER_OTLP_ENDPOINT``
    plus ``/v1/traces``), else loopback."""
    if config.endpoint is None:
        traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if traces:
            return traces
    base = (config.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or DEFAULT_OTLP_ENDPOINT).rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class CountingExporter(SpanExporter):
    """Counts what an exporter managed, so the run can say so truthfully; after three
    failures in a row it drops batches for ``pause_s`` (a dead endpoint then costs nothing
    more, and never the trading loop: exports run on the processor's thread)."""

    def __init__(self, inner: SpanExporter, where: str, pause_s: float = 5.0):
        self.inner = inner
        self.where = where
        self.pause_s = pause_s
        self.sent = self.failed = self.dropped = 0
        self._in_a_row = 0
        self._paused_until = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if time.monotonic() < self._paused_until:
            self.dropped += 1
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the processor's thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.sent += 1
            self._in_a_row = 0
        else:
            self.failed += 1
            self._in_a_row += 1
            if self._in_a_row >= 3:
                self._paused_until = time.monotonic() + self.pause_s
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def report(self) -> str:
        """One line for the end of a run."""
        lost = self.failed + self.dropped
        if not lost:
            return f"sent to {self.where}"
        return (f"{lost} of {self.sent + lost} batch(es) NOT exported to {self.where} "
                f"(the endpoint failed)")


def make_exporter(config: TelemetrySection, path: Path | None) -> SpanExporter | None:
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        return ConsoleSpanExporter(out=sys.stderr)  # stdout keeps the summary
    if config.exporter == "jsonl":
        assert path is not None
        return JsonLinesSpanExporter(path)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = otlp_traces_endpoint(config)
    # Headers: OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, read by the exporter itself.
    return CountingExporter(OTLPSpanExporter(endpoint=endpoint, timeout=config.timeout_s),
                            endpoint)


def make_tracer_provider(config: TelemetrySection, *, run_id: str, pipeline: str,
                         path: Path | None = None) -> TracerProvider | None:
    """An SDK provider with a BatchSpanProcessor for the configured exporter (None if off)."""
    exporter = make_exporter(config, path)
    if exporter is None:
        return None
    attributes: dict[str, str] = {PIPELINE_NAME: pipeline, RUN_ID: run_id}
    env_names = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", "")
    if config.service_name is not None or not env_names:
        attributes["service.name"] = config.service_name or "pr3dict"
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; what the
    # file says wins over them.
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.pr3dict_exporter = exporter  # type: ignore[attr-defined]  # the run reports it
    # Small batches: an export runs on the processor's thread and holds the GIL while it
    # encodes; many short holds delay the event loop far less than a few long ones.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    return provider
