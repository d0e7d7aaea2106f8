"""``prometheus``: the run's metrics for Prometheus, through ``prometheus_client``.

Trade records update counters, gauges and histograms as they arrive (constant work per
record). What the engine is doing now (halts by cause, the kill switch, unresolved trades,
unhedged exposure, opportunities) is pushed by the engine whenever it changes and read at
scrape time. Rates are left to the query (``rate()`` and ratios of counters): nothing is
pre-windowed here. Each sink has its own registry, served by a small HTTP server in a daemon
thread bound to a loopback address only (these numbers describe a trading book), and written
at the end of the run to a textfile in node_exporter's textfile-collector format (replaced
atomically), so a run's final values outlive it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import platform
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs import frozen
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest, write_to_textfile

from pr3dict_core.components import BuildContext
from pr3dict_core.config import output
from pr3dict_core.metrics import HALT_CAUSES, EngineState, TradeRecord
from pr3dict_core.model import Pr3dictError

from .collector import REJECTED, MetricsCollector, delta

# From 10 µs to 10 s, 1-2.5-5 per decade: a paper leg skew (tens of µs) and a live unwind
# (seconds) both land in buckets that tell them apart.
DEFAULT_BUCKETS_MS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250,
                      500, 1000, 2500, 5000, 10000)


def _loopback(instance: object, attribute: attrs.Attribute, value: str) -> None:  # type: ignore[type-arg]
    if value == "localhost":
        return
    try:
        ok = ipaddress.ip_address(value).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"host must be a loopback address (127.0.0.1, ::1 or localhost), "
                         f"got {value!r}: the metrics describe a trading book")


def _buckets(instance: object, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:  # type: ignore[type-arg]
    if not value:
        raise ValueError("buckets_ms must name at least one bucket bound")
    if not all(math.isfinite(b) and b > 0 for b in value):
        raise ValueError(f"buckets_ms must be finite and positive, got {list(value)}")
    if any(a >= b for a, b in itertools.pairwise(value)):
        raise ValueError(f"buckets_ms must be strictly increasing, got {list(value)}")


def _version() -> str:
    try:
        return metadata.version("pr3dict")
    except metadata.PackageNotFoundError:
        return "unknown"


class _EngineCollector:
    """The engine's pushed state (and venue connection stats), as metric families at
    scrape time."""

    def __init__(self, sink: PrometheusSink):
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        with self.sink.lock:
            state, stats = self.sink.state, self.sink.connection_stats
        halted = GaugeMetricFamily(
            "pr3dict_halted", "Active halts (new entries refused) by cause; 0 while trading.",
            labels=["cause"])
        for cause in dict.fromkeys([*HALT_CAUSES, *state.halts]):
            halted.add_metric([cause], state.halts.get(cause, 0))
        yield halted
        yield GaugeMetricFamily("pr3dict_kill_switch_engaged",
                                "1 while the kill switch is engaged (file or engine.kill).",
                                value=int(state.kill_switch))
        yield GaugeMetricFamily("pr3dict_trades_unresolved",
                                "Trades whose outcome is unknown now (entries stop).",
                                value=state.unresolved)
        for unit, values in (("shares", state.exposure_shares), ("usdc", state.exposure_usdc)):
            family = GaugeMetricFamily(
                f"pr3dict_unhedged_exposure_{unit}",
                "Unhedged exposure being worked off now (excess shares held plus shorts)"
                + (", at the price each entry leg paid (USDC)." if unit == "usdc" else "."),
                labels=["venue"])
            for venue in dict.fromkeys([*state.venues, *values]):
                family.add_metric([venue], float(values.get(venue, 0)))
            yield family
        yield CounterMetricFamily("pr3dict_opportunities", "Opportunities detected.",
                                  value=state.opportunities)
        reconnects = CounterMetricFamily(
            "pr3dict_venue_ws_reconnects", "Websocket reconnects of a venue connector, by feed.",
            labels=["venue", "feed"])
        for venue, connection in sorted(stats.items()):
            for feed, count in sorted((connection.get("ws_reconnects") or {}).items()):
                reconnects.add_metric([venue, feed], float(count))
        yield reconnects


class PrometheusSink:
    type: ClassVar[str] = "prometheus"

    @frozen(kw_only=True)
    class Config:
        host: str = attrs.field(default="127.0.0.1", validator=_loopback)
        port: int = attrs.field(default=9464, validator=[attrs.validators.ge(0),
                                                         attrs.validators.le(65535)])
        path: str = "/metrics"
        window: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
        buckets_ms: tuple[float, ...] = attrs.field(default=DEFAULT_BUCKETS_MS,
                                                    validator=_buckets)
        # Written when the run ends; "" writes none. {run_id} is replaced.
        textfile: str = output(default="runs/{run_id}/metrics.prom")

    def __init__(self, id: str, config: Config | None = None, *, serve: bool = True,
                 textfile: Path | None = None, run_id: str = "", mode: str = ""):
        self.id = id
        self.config = config or self.Config()
        self.path = textfile  # the textfile (the CLI names it among the outputs)
        self.lock = threading.Lock()
        # The latest record of each of the last `window` trades: a re-recorded trade (resolved
        # later, settled with gas) adds its difference, never itself twice.
        self.collector = MetricsCollector(max_records=self.config.window)
        self.summary: Mapping[str, Any] | None = None
        self.state = EngineState(run_id=run_id, mode=mode)
        self.connection_stats: Mapping[str, Mapping[str, Any]] = {}
        # No `_created` series: in the text format they are one more gauge per counter and
        # histogram that no alert reads (a process-wide prometheus_client setting).
        disable_created_metrics()
        self.registry = r = CollectorRegistry(auto_describe=True)
        seconds = tuple(b / 1000 for b in self.config.buckets_ms)

        self.build_info = Info("pr3dict_build", "The pr3dict build running.", registry=r)
        self.build_info.info({"version": _version(), "python": platform.python_version()})
        self.run_info = Info("pr3dict_run", "The run: id, pipeline name, mode.", registry=r)
        self._set_run_info()
        self.started = Gauge("pr3dict_run_start_time_seconds",
                             "When the run started (unix seconds).", registry=r)
        self.started.set(time.time())
        self.ended = Gauge("pr3dict_run_end_time_seconds",
                           "When the run ended (unix seconds); 0 while it runs.", registry=r)
        self.trades = Counter("pr3dict_trades", "Trades by state reached (an unresolved trade "
                              "that later resolves counts in both).",
                              ["state", "strategy", "kind"], registry=r)
        self.rejections = Counter("pr3dict_gate_rejections", "Trades rejected before any "
                                  "order, by gate (engine: a halt or the kill switch).",
                                  ["gate"], registry=r)
        self.legs = Counter("pr3dict_legs", "Legs by final state.",
                            ["venue", "purpose", "state"], registry=r)
        self.wire = Histogram("pr3dict_decision_to_wire_seconds",
                              "Gates approved -> last entry leg sent.", ["strategy"],
                              buckets=seconds, registry=r)
        self.final = Histogram("pr3dict_decision_to_final_seconds",
                               "Gates approved -> trade final.", ["strategy"],
                               buckets=seconds, registry=r)
        self.skew = Histogram("pr3dict_leg_skew_seconds",
                              "Spread of the entry legs' final times.", ["kind"],
                              buckets=seconds, registry=r)
        self.leg_latency = Histogram("pr3dict_leg_latency_seconds", "Leg submitted -> final.",
                                     ["venue", "purpose"], buckets=seconds, registry=r)
        self.unresolved = Counter("pr3dict_unresolved_seconds", "Time legs spent UNRESOLVED.",
                                  registry=r)
        self.within = Counter("pr3dict_within_deadline", "Executed trades by whether every "
                              "entry leg was final within the deadline.", ["within"],
                              registry=r)
        self.pnl = Gauge("pr3dict_realised_pnl_usdc", "Cumulative realised PnL (USDC).",
                         ["kind"], registry=r)
        self.edge = Counter("pr3dict_expected_edge_usdc", "Expected edge of executed trades "
                            "as detected (USDC).", ["kind"], registry=r)
        self.rollback = Gauge("pr3dict_rollback_cost_usdc", "Cumulative cost of unwinds (USDC).",
                              registry=r)
        self.slippage = Gauge("pr3dict_slippage_usdc", "Cumulative entry-leg slippage against "
                              "detected prices (USDC).", ["venue"], registry=r)
        self.fees = Counter("pr3dict_fees_usdc", "Taker fees paid (USDC).", ["venue"],
                            registry=r)
        self.gas = Counter("pr3dict_gas_spent_pol", "Native token (POL) settlers spent.",
                           registry=r)
        r.register(_EngineCollector(self))
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if serve:
            self._serve()

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> PrometheusSink:
        textfile = ctx.output_path(config.textfile) if config.textfile else None
        return cls(id, config, textfile=textfile, run_id=ctx.run_id, mode=str(ctx.mode))

    # ------------------------------------------------------------------ server

    def _serve(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != sink.config.path:
                    self.send_error(404)
                    return
                encode, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encode(sink.registry)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer((self.config.host, self.config.port), Handler)
        except OSError as exc:
            raise Pr3dictError(f"sinks.{self.id}: cannot listen on {self.config.host}:"
                               f"{self.config.port}: {exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"pr3dict-prometheus-{self.id}")
        self._thread.start()

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port = 0``)."""
        return self.server.server_address[1] if self.server is not None else self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.config.path}"

    # ------------------------------------------------------------------ sink

    def record(self, record: TradeRecord) -> None:
        with self.lock:
            previous = self.collector.get(record.trade_id)
            self.collector.record(record)
        if previous is None or previous.state != record.state:
            self.trades.labels(record.state, record.strategy, record.kind).inc()
        if record.state == REJECTED:
            self.rejections.labels(record.gate or "?").inc()
            return
        for (name, *labels), amount in delta(record, previous).items():
            self._amount(name, labels, amount)
        if previous is not None and previous.state != REJECTED:
            return  # distributions and legs were recorded the first time
        if record.decision_to_wire_ms is not None:
            self.wire.labels(record.strategy).observe(record.decision_to_wire_ms / 1000)
        if record.decision_to_final_ms is not None:
            self.final.labels(record.strategy).observe(record.decision_to_final_ms / 1000)
        if record.leg_skew_ms is not None:
            self.skew.labels(record.kind).observe(record.leg_skew_ms / 1000)
        if record.within_deadline is not None:
            self.within.labels(str(record.within_deadline).lower()).inc()
        for leg in record.legs:
            self.legs.labels(leg.venue, leg.purpose, leg.state).inc()
            if leg.latency_ms is not None:
                self.leg_latency.labels(leg.venue, leg.purpose).observe(leg.latency_ms / 1000)

    def _amount(self, name: str, labels: list[str], amount: float) -> None:
        if name in ("pnl", "rollback", "slippage"):  # gauges: may go either way
            gauge = {"pnl": self.pnl, "rollback": self.rollback, "slippage": self.slippage}[name]
            (gauge.labels(*labels) if labels else gauge).inc(amount)
        elif amount > 0:  # counters only grow
            counter = {"edge": self.edge, "fees": self.fees, "gas": self.gas,
                       "unresolved": self.unresolved}[name]
            (counter.labels(*labels) if labels else counter).inc(
                amount / 1000 if name == "unresolved" else amount)

    def engine_state(self, state: EngineState) -> None:
        """The engine's state now (pushed on every change and once a second)."""
        with self.lock:
            changed = (state.run_id, state.pipeline, state.mode) != (
                self.state.run_id, self.state.pipeline, self.state.mode)
            self.state = state
        if changed:
            self._set_run_info()

    def venue_stats(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        """The engine's venues' connection stats (pushed at most once a second)."""
        with self.lock:
            self.connection_stats = stats

    def _set_run_info(self) -> None:
        s = self.state
        self.run_info.info({"run_id": s.run_id, "pipeline": s.pipeline, "mode": s.mode})

    def render(self) -> str:
        """The exposition, as a scrape would get it (text format 0.0.4)."""
        return generate_latest(self.registry).decode()

    async def close(self, summary: Mapping[str, Any]) -> None:
        self.summary = summary
        self.collector.run_summary = summary
        self.ended.set(time.time())
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # waits for serve_forever to return
            server.server_close()
        if self.path is not None:
            await asyncio.to_thread(self.write_textfile, self.path)

    def write_textfile(self, path: Path) -> None:
        """The registry in node_exporter's textfile format, written to a temporary file in
        the same directory and renamed over ``path`` (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)
