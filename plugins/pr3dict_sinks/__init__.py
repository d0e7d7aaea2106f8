"""Built-in metrics sinks: ``memory``, ``jsonl``, ``otlp`` and ``prometheus``; and the
metrics collector they (and ``pr3dict report``) share."""

from pr3dict_core import hookimpl

from .basic import JsonLinesSink, MemorySink
from .collector import MetricsCollector
from .otlp import OtlpMetricsSink
from .prometheus import PrometheusSink

__all__ = ["JsonLinesSink", "MemorySink", "MetricsCollector", "OtlpMetricsSink",
           "PrometheusSink"]


@hookimpl
def pr3dict_register_metrics_sinks(registry):  # type: ignore[no-untyped-def]
    registry.add(MemorySink, JsonLinesSink, OtlpMetricsSink, PrometheusSink)
