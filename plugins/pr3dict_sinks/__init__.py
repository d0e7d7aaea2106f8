"""Built-in metrics sinks."""

from pr3dict_core import hookimpl

from .basic import JsonLinesSink, MemorySink


@hookimpl
def pr3dict_register_metrics_sinks(registry):  # type: ignore[no-untyped-def]
    registry.add(MemorySink, JsonLinesSink)
