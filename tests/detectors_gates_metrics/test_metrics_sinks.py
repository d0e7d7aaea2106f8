"""The OTLP metrics and Prometheus sinks: what they export, and that they export it."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dgm_helpers import make_trade
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from pr3dict_core.config import ConfigError, load_pipeline
from pr3dict_core.metrics import TradeRecord
from pr3dict_core.model import TradeState
from pr3dict_core.plugins import collect_components, make_plugin_manager
from pr3dict_sinks.otlp import OtlpMetricsSink
from pr3dict_sinks.prometheus import PrometheusSink

WIN = (("a", "m:yes", "buy", 10, "0.45", 10), ("b", "m:no", "buy", 10, "0.50", 10))
LOSS = (("a", "m:yes", "buy", 10, "0.45", 10), ("b", "m:no", "buy", 10, "0.50", 0),
        ("a", "m:yes", "sell", 10, "0.40", 10, "unwind"))


def records():
    out = []
    for legs, state in ((WIN, TradeState.COMMITTED), (WIN, TradeState.COMMITTED),
                        (LOSS, TradeState.ROLLED_BACK)):
        trade = make_trade(legs, state=state)
        trade.decided_at, trade.on_wire_at, trade.finished_at = 1.0, 1.001, 1.004
        for leg in trade.all_legs:
            leg.submitted_at, leg.finished_at = 1.0005, 1.003
        out.append(TradeRecord.from_trade(trade))
    rejected = make_trade(WIN, state=TradeState.REJECTED)
    rejected.legs, rejected.gate = [], "heat"
    out.append(TradeRecord.from_trade(rejected))
    return out


def parse(text: str) -> dict[str, float]:
    """Every sample, keyed ``name{label="value",...}`` (labels sorted), through
    prometheus_client's own parser: what Prometheus would read."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


async def test_prometheus_exposition_on_a_loopback_port():
    sink = PrometheusSink("prom", PrometheusSink.Config(port=0), run_id="r1", mode="paper")
    try:
        for r in records():
            sink.record(r)
        with urllib.request.urlopen(sink.url, timeout=5) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = reply.read().decode()
    finally:
        await sink.close({})
    values = parse(text)
    assert values['pr3dict_trades_total{kind="test",state="committed",strategy="market"}'] == 2
    assert values['pr3dict_gate_rejections_total{gate="heat"}'] == 1
    assert values['pr3dict_legs_total{purpose="unwind",state="filled",venue="a"}'] == 1
    buckets = [v for k, v in values.items()
               if k.startswith("pr3dict_decision_to_final_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 3  # cumulative, +Inf = count
    assert values['pr3dict_decision_to_final_seconds_count{strategy="market"}'] == 3
    # Leg skew 0 ms, decision -> final 3 ms: buckets from 10 µs up tell them apart.
    assert values['pr3dict_leg_skew_seconds_bucket{kind="test",le="1e-05"}'] == 3
    assert values['pr3dict_decision_to_final_seconds_bucket{le="0.0025",strategy="market"}'] == 0
    assert values['pr3dict_decision_to_final_seconds_bucket{le="0.005",strategy="market"}'] == 3
    assert values['pr3dict_realised_pnl_usdc{kind="test"}'] == pytest.approx(0.5)
    assert values['pr3dict_run_info{mode="paper",pipeline="",run_id="r1"}'] == 1
    assert "# TYPE pr3dict_leg_latency_seconds histogram" in text
    assert not any(k.startswith("pr3dict_ratio") or "_created" in k for k in values)
    with pytest.raises(urllib.error.URLError):  # closed with the run
        urllib.request.urlopen(sink.url, timeout=2)


def test_prometheus_refuses_non_loopback_hosts(write_pipeline):
    path = write_pipeline('[pipeline]\nname = "p"\n[venues.sim]\ntype = "paper"\n'
                          'scenario = "{demo}"\n[detectors.c]\ntype = "binary_complement"\n'
                          'venues = ["sim"]\n[sinks.prom]\ntype = "prometheus"\n'
                          'host = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"sinks\.prom\.host: must be a loopback address"):
        load_pipeline(path, collect_components(make_plugin_manager()))


def test_otlp_sink_instruments():
    reader = InMemoryMetricReader()
    sink = OtlpMetricsSink("otlp", OtlpMetricsSink.Config(), run_id="r1", reader=reader)
    for r in records():
        sink.record(r)
    data = reader.get_metrics_data()
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    assert data.resource_metrics[0].resource.attributes["pr3dict.run.id"] == "r1"
    trades = {dict(p.attributes)["pr3dict.trade.state"]: p.value
              for p in metrics["pr3dict.trades"].data.data_points}
    assert trades == {"committed": 2, "rolled_back": 1, "rejected": 1}
    (final,) = metrics["pr3dict.trade.decision_to_final"].data.data_points
    assert final.count == 3 and metrics["pr3dict.trade.decision_to_final"].unit == "ms"
    (pnl,) = metrics["pr3dict.trade.realised_pnl"].data.data_points
    assert pnl.value == pytest.approx(0.5)
    assert {"pr3dict.legs", "pr3dict.leg.latency", "pr3dict.trade.rollback_cost",
            "pr3dict.gate.rejections", "pr3dict.leg.slippage"} <= set(metrics)


class Collector(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        Collector.received.append((self.path, dict(self.headers), request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString())

    def log_message(self, *args):
        pass


def test_a_run_pushes_otlp_metrics_to_a_collector(write_pipeline, run_pr3dict, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Collector.received.clear()
    monkeypatch.setenv("OTLP_TOKEN", "s3cret")
    try:
        path = write_pipeline(f"""
[pipeline]
name = "otlp"
[venues.sim]
type = "paper"
scenario = "{{demo}}"
[detectors.c]
type = "binary_complement"
venues = ["sim"]
[sinks.otlp]
type = "otlp"
endpoint = "http://127.0.0.1:{server.server_address[1]}"
headers = {{ authorization = {{ env = "OTLP_TOKEN" }} }}
""")
        run_pr3dict("run", str(path), "--cycles", "80").assert_success()
    finally:
        server.shutdown()
        server.server_close()
    assert Collector.received, "nothing was exported"
    url, headers, request = Collector.received[-1]
    assert url == "/v1/metrics" and headers.get("authorization") == "s3cret"
    names = {m.name for rm in request.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"pr3dict.trades", "pr3dict.trade.decision_to_wire", "pr3dict.legs"} <= names


async def test_a_trade_recorded_again_is_never_counted_twice():
    import attrs

    first, *_ = records()
    unresolved = attrs.evolve(first, state="unresolved")
    resolved = attrs.evolve(first, gas_spent=first.gas_spent + 2)
    prom = PrometheusSink("prom", PrometheusSink.Config(), serve=False)  # no textfile
    reader = InMemoryMetricReader()
    otlp = OtlpMetricsSink("otlp", OtlpMetricsSink.Config(), reader=reader)
    for r in (unresolved, resolved, resolved):
        prom.record(r)
        otlp.record(r)
    values = parse(prom.render())
    assert values['pr3dict_trades_total{kind="test",state="unresolved",strategy="market"}'] == 1
    assert values['pr3dict_trades_total{kind="test",state="committed",strategy="market"}'] == 1
    assert values['pr3dict_legs_total{purpose="entry",state="filled",venue="a"}'] == 1
    assert values["pr3dict_gas_spent_pol_total"] == 2
    assert values['pr3dict_realised_pnl_usdc{kind="test"}'] == pytest.approx(0.5)
    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    states = {dict(p.attributes)["pr3dict.trade.state"]: p.value
              for p in metrics["pr3dict.trades"].data.data_points}
    assert states == {"unresolved": 1, "committed": 1}
    (gas,) = metrics["pr3dict.settlement.gas"].data.data_points
    assert gas.value == 2
    (final,) = metrics["pr3dict.trade.decision_to_final"].data.data_points
    assert final.count == 1


def test_otlp_sink_observes_the_engine_state():
    from decimal import Decimal

    from pr3dict_core.metrics import EngineState

    reader = InMemoryMetricReader()
    sink = OtlpMetricsSink("otlp", OtlpMetricsSink.Config(), reader=reader)
    sink.engine_state(EngineState(venues=("v",), halts={"kill": 1}, kill_switch=True,
                                  unresolved=2, exposure_shares={"v": Decimal(6)},
                                  exposure_usdc={"v": Decimal("2.7")}, opportunities=5))
    metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}

    def points(name):
        return {tuple(dict(p.attributes).values()): p.value
                for p in metrics[name].data.data_points}

    assert points("pr3dict.engine.halted")[("kill",)] == 1
    assert points("pr3dict.engine.halted")[("unresolved",)] == 0
    assert points("pr3dict.engine.kill_switch") == {(): 1}
    assert points("pr3dict.engine.unresolved_trades") == {(): 2}
    assert points("pr3dict.engine.unhedged_exposure") == {("v",): 6}
    assert points("pr3dict.engine.unhedged_exposure_value") == {("v",): pytest.approx(2.7)}
    assert points("pr3dict.opportunities") == {(): 5}
