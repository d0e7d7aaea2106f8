"""``otlp``: trade metrics as OpenTelemetry metrics, pushed over OTLP/HTTP (protobuf).

A private ``MeterProvider`` (never the global one) with a periodic reader exports every
``interval_ms`` and once more when the run closes. Instruments are named like the spans'
attributes (``pr3dict.*``); durations are in ms, money in USDC. Recording a trade adds to
counters and histograms: constant work, no I/O on the trading loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from attrs import frozen
from opentelemetry.metrics import Observation

from pr3dict_core import telemetry as tm
from pr3dict_core.components import BuildContext
from pr3dict_core.config import SecretRef
from pr3dict_core.metrics import HALT_CAUSES, EngineState, TradeRecord

from .collector import REJECTED, delta

# Instrument names (OpenTelemetry style) and their Prometheus counterparts in prometheus.py.
TRADES = "pr3dict.trades"
GATE_REJECTIONS = "pr3dict.gate.rejections"
LEGS = "pr3dict.legs"
DECISION_TO_WIRE = "pr3dict.trade.decision_to_wire"
DECISION_TO_FINAL = "pr3dict.trade.decision_to_final"
LEG_SKEW = "pr3dict.trade.leg_skew"
LEG_LATENCY = "pr3dict.leg.latency"
LEG_SLIPPAGE = "pr3dict.leg.slippage"
UNRESOLVED_TIME = "pr3dict.trade.unresolved_time"
WITHIN_DEADLINE = "pr3dict.trade.within_deadline"
REALISED_PNL = "pr3dict.trade.realised_pnl"
EXPECTED_EDGE = "pr3dict.trade.expected_edge"
ROLLBACK_COST = "pr3dict.trade.rollback_cost"
FEES = "pr3dict.leg.fees"
GAS = "pr3dict.settlement.gas"
HALTED = "pr3dict.engine.halted"
KILL_SWITCH = "pr3dict.engine.kill_switch"
UNRESOLVED_TRADES = "pr3dict.engine.unresolved_trades"
EXPOSURE_SHARES = "pr3dict.engine.unhedged_exposure"
EXPOSURE_USDC = "pr3dict.engine.unhedged_exposure_value"
OPPORTUNITIES = "pr3dict.opportunities"
KIND = tm.OPPORTUNITY_KIND


class OtlpMetricsSink:
    type: ClassVar[str] = "otlp"
    REMEMBER: ClassVar[int] = 10_000  # trades remembered to tell a re-record from a new one

    @frozen(kw_only=True)
    class Config:
        endpoint: str = "http://127.0.0.1:4318"  # /v1/metrics is appended unless present
        interval_ms: int = attrs.field(default=10_000, validator=attrs.validators.ge(100))
        timeout_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
        service_name: str = "pr3dict"
        headers: dict[str, SecretRef] = attrs.field(factory=dict)  # e.g. an API key

    def __init__(self, id: str, config: Config, *, run_id: str = "", pipeline: str = "",
                 headers: Mapping[str, str] | None = None, reader: Any = None):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        self.id = id
        self.config = config
        self._seen: OrderedDict[str, TradeRecord] = OrderedDict()
        if reader is None:  # tests hand in an InMemoryMetricReader
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            endpoint = config.endpoint.rstrip("/")
            if not endpoint.endswith("/v1/metrics"):
                endpoint += "/v1/metrics"
            exporter = OTLPMetricExporter(endpoint=endpoint, timeout=config.timeout_s,
                                          headers=dict(headers or {}))
            reader = PeriodicExportingMetricReader(
                exporter, export_interval_millis=config.interval_ms,
                export_timeout_millis=config.timeout_s * 1000)
        self.reader = reader
        attributes = {"service.name": config.service_name}
        if run_id:
            attributes[tm.RUN_ID] = run_id
        if pipeline:
            attributes[tm.PIPELINE_NAME] = pipeline
        self.provider = MeterProvider(resource=Resource.create(attributes),
                                      metric_readers=[reader])
        meter = self.provider.get_meter("pr3dict.sinks")
        self.trades = meter.create_counter(TRADES, "{trade}", "Trade records by state reached")
        self.rejections = meter.create_counter(GATE_REJECTIONS, "{trade}",
                                               "Trades rejected before any order, by gate")
        self.legs = meter.create_counter(LEGS, "{leg}", "Legs by final state")
        self.wire = meter.create_histogram(DECISION_TO_WIRE, "ms",
                                           "Gates approved -> last entry leg sent")
        self.final = meter.create_histogram(DECISION_TO_FINAL, "ms",
                                            "Gates approved -> trade final")
        self.skew = meter.create_histogram(LEG_SKEW, "ms", "Spread of entry legs' final times")
        self.leg_latency = meter.create_histogram(LEG_LATENCY, "ms", "Leg submitted -> final")
        self.leg_slippage = meter.create_histogram(LEG_SLIPPAGE, "{tick}",
                                                   "Filled entry leg's slippage in ticks")
        self.unresolved = meter.create_counter(UNRESOLVED_TIME, "ms",
                                               "Time legs spent UNRESOLVED")
        self.within = meter.create_counter(WITHIN_DEADLINE, "{trade}",
                                           "Executed trades by within-deadline")
        self.pnl = meter.create_up_down_counter(REALISED_PNL, "USDC", "Realised PnL")
        self.edge = meter.create_up_down_counter(EXPECTED_EDGE, "USDC",
                                                 "Expected edge as detected")
        self.rollback = meter.create_up_down_counter(ROLLBACK_COST, "USDC", "Cost of unwinds")
        self.fees = meter.create_counter(FEES, "USDC", "Taker fees paid")
        self.gas = meter.create_counter(GAS, "POL", "Native token settlers spent")
        # What the engine is doing now: the latest pushed state, observed at each export.
        self.state = EngineState()
        meter.create_observable_gauge(HALTED, [self._halted], "{halt}",
                                      "Active halts (new entries refused) by cause")
        meter.create_observable_gauge(KILL_SWITCH, [lambda _: [Observation(
            int(self.state.kill_switch))]], "1", "1 while the kill switch is engaged")
        meter.create_observable_gauge(UNRESOLVED_TRADES, [lambda _: [Observation(
            self.state.unresolved)]], "{trade}", "Trades whose outcome is unknown now")
        meter.create_observable_gauge(EXPOSURE_SHARES, [self._exposure(False)], "{share}",
                                      "Unhedged shares being worked off now")
        meter.create_observable_gauge(EXPOSURE_USDC, [self._exposure(True)], "USDC",
                                      "Unhedged shares at the price their entry leg paid")
        meter.create_observable_counter(OPPORTUNITIES, [lambda _: [Observation(
            self.state.opportunities)]], "{opportunity}", "Opportunities detected")

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> OtlpMetricsSink:
        headers = {k: ctx.resolve_secret(v) for k, v in config.headers.items()}
        return cls(id, config, run_id=ctx.run_id, headers=headers)

    def record(self, record: TradeRecord) -> None:
        previous = self._seen.pop(record.trade_id, None)
        self._seen[record.trade_id] = record
        if len(self._seen) > self.REMEMBER:
            self._seen.popitem(last=False)
        base = {tm.STRATEGY: record.strategy, KIND: record.kind,
                tm.DETECTOR_ID: record.detector}
        if previous is None or previous.state != record.state:
            self.trades.add(1, {**base, tm.TRADE_STATE: record.state})
        if record.state == REJECTED:
            self.rejections.add(1, {tm.GATE_ID: record.gate or "?"})
            return
        for (name, *labels), amount in delta(record, previous).items():
            self._amount(name, labels, amount, base)
        if previous is not None and previous.state != REJECTED:
            return  # distributions and legs were recorded the first time
        if record.decision_to_wire_ms is not None:
            self.wire.record(record.decision_to_wire_ms, base)
        if record.decision_to_final_ms is not None:
            self.final.record(record.decision_to_final_ms, base)
        if record.leg_skew_ms is not None:
            self.skew.record(record.leg_skew_ms, base)
        if record.within_deadline is not None:
            self.within.add(1, {**base, WITHIN_DEADLINE: record.within_deadline})
        for leg in record.legs:
            attrs_ = {tm.LEG_VENUE: leg.venue, tm.LEG_PURPOSE: leg.purpose}
            self.legs.add(1, {**attrs_, tm.LEG_STATE: leg.state})
            if leg.latency_ms is not None:
                self.leg_latency.record(leg.latency_ms, attrs_)
            if leg.purpose == "entry" and leg.filled:
                self.leg_slippage.record(float(leg.slippage_ticks), attrs_)

    def _amount(self, name: str, labels: list[str], amount: float,
                base: Mapping[str, Any]) -> None:
        if name == "fees":
            if amount > 0:  # a counter only grows
                self.fees.add(amount, {tm.LEG_VENUE: labels[0]})
            return
        if name == "slippage":
            return  # per leg, in ticks, as a histogram above
        instrument = {"pnl": self.pnl, "edge": self.edge, "rollback": self.rollback,
                      "gas": self.gas, "unresolved": self.unresolved}[name]
        if name in ("gas", "unresolved") and amount < 0:
            return  # counters only grow
        instrument.add(amount, base)

    def engine_state(self, state: EngineState) -> None:
        """The engine's state now (pushed on every change and once a second)."""
        self.state = state

    def _halted(self, _options: Any) -> list[Observation]:
        halts = self.state.halts
        return [Observation(halts.get(cause, 0), {"pr3dict.halt.cause": cause})
                for cause in dict.fromkeys([*HALT_CAUSES, *halts])]

    def _exposure(self, value: bool) -> Any:
        def observe(_options: Any) -> list[Observation]:
            s = self.state
            amounts = s.exposure_usdc if value else s.exposure_shares
            return [Observation(float(amounts.get(v, 0)), {tm.LEG_VENUE: v})
                    for v in dict.fromkeys([*s.venues, *amounts])]
        return observe

    async def close(self, summary: Mapping[str, Any]) -> None:
        # Export what is left, then stop the reader thread; both may block on the network.
        await asyncio.to_thread(self.provider.shutdown,
                                timeout_millis=self.config.timeout_s * 1000)
