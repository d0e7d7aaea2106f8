"""Exporters chosen in [telemetry], and the Python API for people who script."""

from __future__ import annotations

import asyncio
import re
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


def test_numbers_are_numbers_and_no_secret_in_span_attributes(write_pipeline, run_pr3dict):
    outcome = run_pr3dict("run", str(write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 80"))))
    seen = set()
    for span in outcome.spans:
        for key, value in (span.attributes or {}).items():
            assert key.startswith(("pr3dict.", "error.", "rpc.", "server.")), key
            if key in tm.NUMERIC:  # prices, sizes, USDC: numbers a tool can plot
                assert isinstance(value, (int, float)) and not isinstance(value, bool), \
                    (span.name, key, value)
                seen.add(key)
            else:
                assert not isinstance(value, float), (span.name, key)
            assert "PRIVATE KEY" not in str(value) and not re.search(r"0x[0-9a-f]{64}",
                                                                     str(value)), key
    assert {tm.ORDER_PRICE, tm.ORDER_SIZE, tm.LEG_FILLED, tm.OPPORTUNITY_EDGE,
            tm.TRADE_PNL} <= seen
    price = next(s.attributes[tm.ORDER_PRICE] for s in outcome.spans
                 if s.name == tm.SPAN_SUBMIT)
    assert 0 < price < 1


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


def test_jsonl_encoding_matches_the_official_otlp_encoder(write_pipeline, run_pr3dict):
    """Our direct OTLP/JSON (hex ids, as the OTLP spec wants) says what protobuf says."""
    import base64

    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from pr3dict_core.telemetry import otlp_json

    path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 80"))
    spans = list(run_pr3dict("run", str(path)).spans)
    ours = otlp_json(spans)
    official = MessageToDict(encode_spans(spans))

    def flat(request, ids):
        return {ids(s["spanId"]): (
            ids(s["traceId"]), ids(s.get("parentSpanId", "")), s["name"],
            str(s["startTimeUnixNano"]), s.get("status", {}).get("code", 0),
            sorted((a["key"], str(a["value"])) for a in s.get("attributes", [])),
            len(s.get("events", [])))
                for rs in request["resourceSpans"] for ss in rs["scopeSpans"]
                for s in ss["spans"]}

    def b64(v):
        return base64.b64decode(v).hex() if v else ""

    status = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
    for rs in official["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s["status"] = {"code": status[s.get("status", {}).get("code",
                                                                      "STATUS_CODE_UNSET")]}
    mine = flat(ours, lambda v: v)
    theirs = flat(official, b64)
    assert mine.keys() == theirs.keys() and len(mine) > 20
    for sid in mine:
        assert mine[sid][:5] == theirs[sid][:5], sid
        assert mine[sid][6] == theirs[sid][6]
        assert [k for k, _ in mine[sid][5]] == [k for k, _ in theirs[sid][5]]


def test_otel_environment_variables_apply_when_the_file_is_silent(write_pipeline, tmp_path,
                                                                  monkeypatch):
    """OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME, as every OTel SDK reads them."""
    monkeypatch.chdir(tmp_path)
    with Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "arb-eu-1")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 80") +
                              '[telemetry]\nexporter = "otlp"\n')
        assert main(["run", str(path), "--quiet"]) == 0
    assert tm.SPAN_SUBMIT in collector.span_names()
    resource = collector.requests[0].resource_spans[0].resource
    attrs = {a.key: a.value.string_value for a in resource.attributes}
    assert attrs["service.name"] == "arb-eu-1"
    assert attrs["deployment.environment"] == "test"


def test_a_dead_otlp_endpoint_is_reported_not_claimed(write_pipeline, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.chdir(tmp_path)
    path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 80") +
                          '[telemetry]\nexporter = "otlp"\n'
                          'endpoint = "http://127.0.0.1:9"\ntimeout_s = 0.5\n')  # discard port
    assert main(["run", str(path), "--quiet"]) == 0  # trading is not the exporter's hostage
    err = capsys.readouterr().err
    assert "NOT exported to http://127.0.0.1:9/v1/traces" in err
    assert "sent to" not in err


def test_sample_ratio_keeps_whole_traces(write_pipeline, tmp_path, monkeypatch):
    """``[telemetry] sample_ratio`` keeps a share of trades, each with all of its spans."""
    import json

    monkeypatch.chdir(tmp_path)

    def traces(ratio: str) -> dict[str, list[str]]:
        path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 150")
                              + f'[telemetry]\nexporter = "jsonl"\npath = "s{ratio}.jsonl"\n'
                              f"sample_ratio = {ratio}\n")
        assert main(["run", str(path), "--quiet"]) == 0
        out: dict[str, list[str]] = {}
        file = tmp_path / f"s{ratio}.jsonl"
        for line in file.read_text().splitlines() if file.exists() else []:
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for span in ss["spans"]:
                        out.setdefault(span["traceId"], []).append(span["name"])
        return out

    everything, half, nothing = traces("1.0"), traces("0.5"), traces("0.0")
    trades = [t for t in everything.values() if tm.SPAN_SUBMIT in t]
    kept = [t for t in half.values() if tm.SPAN_SUBMIT in t]
    assert trades and 0 < len(kept) < len(trades)
    assert all(tm.SPAN_OPPORTUNITY in t and tm.SPAN_EXECUTE in t for t in kept)  # whole
    assert not nothing
