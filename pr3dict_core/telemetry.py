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
import traceback
from collections.abc import Sequence
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

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
# On a submit span: the order's request has been written to the socket (decision -> wire).
EVENT_WIRE: Final = "request written"

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

# Attributes that are numbers on spans (prices, sizes, USDC): shown to people and tools,
# so a float is fine there; the engine's own arithmetic stays in Decimal.
NUMERIC: Final = frozenset({OPPORTUNITY_EDGE, OPPORTUNITY_SIZE, TRADE_PNL, TRADE_HEDGED,
                            LEG_INDEX, LEG_FILLED, ORDER_PRICE, ORDER_SIZE})


def num(value: Decimal) -> float:
    """A Decimal as a span attribute (display only: a number, not a string)."""
    return float(value)


def get_tracer(provider: trace.TracerProvider | None) -> trace.Tracer:
    """The engine's tracer: a ``LightTracer`` on an SDK provider, else the API's."""
    try:
        version = metadata.version("pr3dict")
    except metadata.PackageNotFoundError:
        version = "0"
    tracer = trace.get_tracer(TRACER_NAME, version, tracer_provider=provider)
    if isinstance(provider, TracerProvider) and not isinstance(tracer, trace.NoOpTracer):
        return LightTracer(provider, TRACER_NAME, version)
    return tracer


# --------------------------------------------------------------------------- light spans
#
# The SDK's spans cost 20-30 µs each here (bounded, locked attribute maps cleaned value by
# value, bounded event and link lists, two generator context managers), about 30 % of a
# CPU-bound paper run at ~8 spans a trade. The engine's spans are simple: a dict of
# attributes it writes itself, a few events, no links. ``LightTracer`` makes those with the
# provider's own sampler, id generator, resource and span processors, and hands the
# processors the SDK's ``ReadableSpan``, so every exporter sees what it always saw.

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_PLAIN = (str, bool, int, float)


def _clean(key: str, value: Any) -> Any:
    """Values the engine writes pass as they are; anything else as the SDK cleans it (a
    sequence becomes a tuple, another type its string), so no export can break on it."""
    return value if type(value) in _PLAIN else _clean_attribute_value(value, None)


class LightSpan(trace.Span):
    """A recording span for one thread of work; becomes a ``ReadableSpan`` when it ends."""

    __slots__ = ("_attrs", "_ctx", "_end", "_events", "_kind", "_name", "_parent", "_start",
                 "_status", "_tracer")

    def __init__(self, tracer: LightTracer, name: str, ctx: SpanContext,
                 parent: SpanContext | None, kind: SpanKind, attrs: dict[str, Any],
                 start: int):
        self._tracer = tracer
        self._name = name
        self._ctx = ctx
        self._parent = parent
        self._kind = kind
        self._attrs = attrs
        self._events: list[Event] | None = None
        self._status = _UNSET
        self._start = start
        self._end: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._ctx

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end is None:
            value = _clean(key, value)
            if value is not None:
                self._attrs[key] = value

    def set_attributes(self, attributes: Any) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None,
                  timestamp: int | None = None) -> None:
        if self._end is None:
            if self._events is None:
                self._events = []
            self._events.append(Event(name, {k: _clean(k, v) for k, v in attributes.items()}
                                      if attributes else None, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        pass  # the engine's spans have no links

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        if not isinstance(status, Status):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception: BaseException, attributes: Any = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped)}
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time or time.time_ns()
        t = self._tracer
        t.processor.on_end(ReadableSpan(
            self._name, self._ctx, self._parent, t.resource, self._attrs,
            tuple(self._events or ()), (), self._kind, None, self._status, self._start,
            self._end, t.scope))


class _Current:
    """``start_as_current_span``: the span is current inside, ended on the way out; an
    exception is recorded and sets the status (as ``trace.use_span`` does)."""

    __slots__ = ("_end", "_record", "_set_status", "_span", "_token")

    def __init__(self, span: trace.Span, end: bool, record: bool, set_status: bool):
        self._span, self._end, self._record, self._set_status = span, end, record, set_status

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, typ: Any, exc: Any, tb: Any) -> None:
        span = self._span
        try:
            otel_context.detach(self._token)
            if isinstance(exc, Exception) and span.is_recording():
                if self._record:
                    span.record_exception(exc)
                if self._set_status:
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            if self._end:
                span.end()


class LightTracer(trace.Tracer):
    """A tracer over an SDK provider that makes ``LightSpan`` s (see above)."""

    def __init__(self, provider: TracerProvider, name: str, version: str):
        self.processor = provider._active_span_processor
        self.resource = provider.resource
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.scope = InstrumentationScope(name, version)
        # The usual sampler (ParentBased, children follow a local parent) decides a child
        # from its parent alone: that answer is given without asking it again per span.
        s = self.sampler
        self._follow_parent = isinstance(s, sampling.ParentBased) and \
            getattr(s, "_local_parent_sampled", None) is sampling.ALWAYS_ON and \
            getattr(s, "_local_parent_not_sampled", None) is sampling.ALWAYS_OFF

    def start_span(self, name: str, context: otel_context.Context | None = None,
                   kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None,
                   links: Any = None, start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True
                   ) -> trace.Span:
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
        else:
            parent, trace_id = None, self.ids.generate_trace_id()
        state: trace.TraceState | None
        if self._follow_parent and parent is not None and not parent.is_remote:
            sampled, given, state = parent.trace_flags.sampled, attributes, parent.trace_state
        else:
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes,
                                                links)
            sampled = result.decision is sampling.Decision.RECORD_AND_SAMPLE
            if not result.decision.is_recording():
                sampled = False
            given = result.attributes if result.attributes is not None else attributes
            state = result.trace_state
        ctx = SpanContext(trace_id, self.ids.generate_span_id(), False,
                          _SAMPLED if sampled else _NOT_SAMPLED, state)
        if not sampled:
            return trace.NonRecordingSpan(ctx)
        attrs = dict(given) if given else {}  # what the sampler returns, as the SDK does
        if not all(type(v) in _PLAIN for v in attrs.values()):
            attrs = {k: v for k, v in ((k, _clean(k, v)) for k, v in attrs.items())
                     if v is not None}
        span = LightSpan(self, name, ctx, parent, kind, attrs, start_time or time.time_ns())
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

    def start_as_current_span(self, name: str, context: otel_context.Context | None = None,
                              kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None,
                              links: Any = None, start_time: int | None = None,
                              record_exception: bool = True,
                              set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Any:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return _Current(span, end_on_exit, record_exception, set_status_on_exception)


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
    # file says wins over them. No sampler given: the SDK reads OTEL_TRACES_SAMPLER(_ARG).
    sampler = None
    if config.sample_ratio is not None:
        sampler = sampling.ParentBased(sampling.TraceIdRatioBased(config.sample_ratio))
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    provider.pr3dict_exporter = exporter  # type: ignore[attr-defined]  # the run reports it
    # Small batches: an export runs on the processor's thread and holds the GIL while it
    # encodes; many short holds delay the event loop far less than a few long ones.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    return provider
