"""Exporters chosen in [telemetry], and the Python API for people who script."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from support import MINIMAL, REPO

from pr3dict_core import telemetry as tm
from pr3dict_core.cli import main
from pr3dict_core.pipeline import Engine


class Collector:
    """A real OTLP/HTTP receiver on loopback, in its own thread."""

    def __init__(self):
        self.requests: list[ExportTraceServiceRequest] = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        self.requests.append(msg)
        return web.Response(body=b"", content_type="application/x-protobuf")

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def span_names(self) -> list[str]:
        return [s.name for r in self.requests for rs in r.resource_spans
                for ss in rs.scope_spans for s in ss.spans]


def test_otlp_exporter_sends_protobuf_to_the_endpoint(write_pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Collector() as collector:
        path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 80") +
                              f'[telemetry]\nexporter = "otlp"\n'
                              f'endpoint = "http://127.0.0.1:{collector.port}"\n')
        assert main(["run", str(path), "--quiet"]) == 0
    names = collector.span_names()
    assert tm.SPAN_OPPORTUNITY in names and tm.SPAN_SUBMIT in names
    resource = collector.requests[0].resource_spans[0].resource
    attrs = {a.key: a.value.string_value for a in resource.attributes}
    assert attrs["service.name"] == "pr3dict" and attrs[tm.PIPELINE_NAME] == "t"


def test_console_exporter(write_pipeline, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 60") +
                          '[telemetry]\nexporter = "console"\n')
    assert main(["run", str(path), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert '"name": "handle opportunity"' in captured.err
    assert "handle opportunity" not in captured.out  # stdout keeps the summary


def test_no_secret_or_float_in_span_attributes(write_pipeline, run_pr3dict):
    outcome = run_pr3dict("run", str(write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 80"))))
    for span in outcome.spans:
        for key, value in (span.attributes or {}).items():
            assert not isinstance(value, float), (span.name, key)
            assert key.startswith(("pr3dict.", "error.", "rpc.", "server.")), key


async def test_engine_from_file_scan_and_execute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with Engine.from_file(REPO / "pipelines" / "complement-paper.toml") as engine:
        trades = []
        for _ in range(100):
            trades += await engine.scan_and_execute()
        stats = engine.statistics()
    assert trades and stats.committed + stats.rolled_back + stats.rejected == len(trades)
    assert stats.committed == sum(t.state == "committed" for t in trades)
    assert isinstance(stats.realised_pnl, Decimal)
    assert "trades committed" in stats.table()


async def test_engine_from_objects():
    from support import arb_books, engine_for, scripted_venue

    venue = scripted_venue()
    engine = engine_for(venue)
    await engine.start()
    arb_books(venue)
    (trade,) = await engine.scan_and_execute()
    await engine.close()
    assert trade.state == "committed"
    assert engine.statistics().fill_rate == 1.0
