"""The engine's light spans reach exporters as the SDK's own spans would."""

from __future__ import annotations

from decimal import Decimal

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pr3dict_core import telemetry as tm


def provider(sampler=None):
    exporter = InMemorySpanExporter()
    p = TracerProvider(sampler=sampler)
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p, exporter


def test_light_spans_have_the_sdk_shape():
    p, exporter = provider()
    light = tm.get_tracer(p)
    assert isinstance(light, tm.LightTracer)
    with light.start_as_current_span("parent", attributes={"a": 1, "d": Decimal("0.5")},
                                     kind=SpanKind.CLIENT) as parent:
        parent.set_attribute("b", "x")
        parent.set_attribute("none", None)  # dropped, as the SDK drops it
        parent.add_event("written", {"n": 2})
        with pytest.raises(ValueError):
            with light.start_as_current_span("child"):
                raise ValueError("boom")
        sdk = p.get_tracer("other")  # a plugin's own SDK tracer nests under ours
        with sdk.start_as_current_span("sdk child"):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    parent, child, other = spans["parent"], spans["child"], spans["sdk child"]
    assert dict(parent.attributes) == {"a": 1, "d": "0.5", "b": "x"}
    assert parent.kind is SpanKind.CLIENT and parent.parent is None
    assert [e.name for e in parent.events] == ["written"]
    assert child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id
    assert other.parent.span_id == parent.context.span_id
    assert child.status.status_code is StatusCode.ERROR and "boom" in child.status.description
    (event,) = child.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time
    assert parent.resource is p.resource and parent.instrumentation_scope.name == "pr3dict"


def test_a_dropped_trace_records_nothing():
    p, exporter = provider(sampling.ALWAYS_OFF)
    light = tm.get_tracer(p)
    with light.start_as_current_span("root") as root:
        assert not root.is_recording()
        with light.start_as_current_span("child") as child:
            assert not child.is_recording()
            assert child.get_span_context().trace_id == root.get_span_context().trace_id
    assert not exporter.get_finished_spans()


def test_no_provider_means_the_api_tracer():
    assert not isinstance(tm.get_tracer(None), tm.LightTracer)
    assert isinstance(tm.get_tracer(trace.NoOpTracerProvider()), trace.NoOpTracer)
