"""A pytest plugin for pr3dict plugin authors (and pr3dict's own tests).

Enable it with ``pytest_plugins = ["pr3dict_core.testing"]`` in a ``conftest.py`` (or
``-p pr3dict_core.testing``). Fixtures:

- ``pr3dict_pm``: a fresh plugin manager (entry points + built-ins), nothing global.
- ``register_plugin``: register a throwaway plugin object for one test.
- ``span_exporter``: an in-memory span exporter; ``tracer_provider`` is its provider.
- ``run_pr3dict``: run ``pr3dict ...`` in process; returns a :class:`RunOutcome` with the
  exit code, stdout, stderr and the finished spans.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .plugins import make_plugin_manager


@attrs.frozen
class RunOutcome:
    code: int
    out: str
    err: str
    spans: tuple[ReadableSpan, ...]

    def assert_success(self) -> RunOutcome:
        assert self.code == 0, f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self

    def assert_failed(self, code: int) -> RunOutcome:
        assert self.code == code, f"exit {self.code} != {code}\nstderr:\n{self.err}"
        return self

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]


def span_children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """Direct children of ``parent`` among ``spans``, in start order."""
    pid = parent.context.span_id
    kids = [s for s in spans if s.parent is not None and s.parent.span_id == pid]
    return sorted(kids, key=lambda s: s.start_time or 0)


def span_tree(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[Any]:
    """``[name, [child trees...]]`` for asserting the shape of one trace."""
    return [root.name, [span_tree(spans, c) for c in span_children(spans, root)]]


@pytest.fixture
def pr3dict_pm() -> pluggy.PluginManager:
    """A fresh plugin manager with entry-point plugins and built-ins."""
    return make_plugin_manager()


@pytest.fixture
def register_plugin(pr3dict_pm: pluggy.PluginManager) -> Iterator[Callable[..., object]]:
    """``register_plugin(obj, name=None)``: registered for this test only."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> object:
        registered = pr3dict_pm.register(plugin, name=name)
        assert registered is not None, f"plugin {name!r} is blocked or already registered"
        names.append(registered)
        return plugin

    yield register
    for name in names:
        plugin = pr3dict_pm.get_plugin(name)
        if plugin is not None:
            pr3dict_pm.unregister(plugin, name=name)


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A provider exporting synchronously to ``span_exporter``; never set globally."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def run_pr3dict(pr3dict_pm: pluggy.PluginManager, tracer_provider: TracerProvider,
                span_exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> Callable[..., RunOutcome]:
    """``run_pr3dict("run", "pipeline.toml", "--cycles", "5")`` in process, cwd = tmp_path."""
    from .cli import main

    def run(*argv: str, cwd: Path | None = None, pm: pluggy.PluginManager | None = None
            ) -> RunOutcome:
        monkeypatch.chdir(cwd or tmp_path)
        span_exporter.clear()
        out, err = io.StringIO(), io.StringIO()
        if pm is None and "-p" not in argv:  # -p builds its own manager from the arguments
            pm = pr3dict_pm
        code = main(list(argv), tracer_provider=tracer_provider, pm=pm, stdout=out, stderr=err)
        return RunOutcome(code, out.getvalue(), err.getvalue(),
                          tuple(span_exporter.get_finished_spans()))

    return run
