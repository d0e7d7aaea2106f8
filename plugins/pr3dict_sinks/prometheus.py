"""``prometheus``: the text exposition format on a loopback port, for Prometheus to scrape.

Counters and histograms are updated as each trade record arrives (constant work per
record); the ratio gauges (success, fill, failed-arbitrage, within-deadline) are computed at
scrape time over the last ``window`` trades. A small HTTP server runs in a daemon thread,
bound to a loopback address only: these numbers describe a trading book.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext
from pr3dict_core.metrics import TradeRecord
from pr3dict_core.model import Pr3dictError

from .collector import REJECTED, MetricsCollector, delta

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # first bound >= value
        self.sum += value
        self.count += 1


class _Family:
    """One metric family: name, type, help, and values by label set."""

    def __init__(self, name: str, kind: str, help: str, labels: tuple[str, ...] = (),
                 buckets: Sequence[float] | None = None):
        self.name, self.kind, self.help, self.labels = name, kind, help, labels
        self.buckets = buckets
        self.values: dict[tuple[str, ...], Any] = {}

    def add(self, labels: tuple[str, ...], amount: float) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def set(self, labels: tuple[str, ...], value: float) -> None:
        self.values[labels] = value

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        hist = self.values.get(labels)
        if hist is None:
            assert self.buckets is not None
            hist = self.values[labels] = _Histogram(self.buckets)
        hist.observe(value)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for key, value in sorted(self.values.items()):
            pairs = list(zip(self.labels, key, strict=True))
            if self.kind == "histogram":
                running = 0
                for bound, n in zip([*value.bounds, math.inf], value.counts, strict=True):
                    running += n
                    yield f"{self.name}_bucket{_labels([*pairs, ('le', _num(bound))])} {running}"
                yield f"{self.name}_sum{_labels(pairs)} {_num(value.sum)}"
                yield f"{self.name}_count{_labels(pairs)} {value.count}"
            else:
                yield f"{self.name}{_labels(pairs)} {_num(value)}"


class PrometheusSink:
    type: ClassVar[str] = "prometheus"

    @frozen(kw_only=True)
    class Config:
        host: str = attrs.field(default="127.0.0.1", validator=_loopback)
        port: int = attrs.field(default=9464, validator=[attrs.validators.ge(0),
                                                         attrs.validators.le(65535)])
        path: str = "/metrics"
        window: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
        buckets_ms: tuple[float, ...] = DEFAULT_BUCKETS_MS

    def __init__(self, id: str, config: Config | None = None, *, serve: bool = True):
        self.id = id
        self.config = config or self.Config()
        self.lock = threading.Lock()
        self.collector = MetricsCollector(max_records=self.config.window)
        self.summary: Mapping[str, Any] | None = None
        seconds = tuple(b / 1000 for b in self.config.buckets_ms)
        f = self._families = {}

        def family(name: str, kind: str, help: str, labels: tuple[str, ...] = (),
                   buckets: Sequence[float] | None = None) -> _Family:
            f[name] = _Family(name, kind, help, labels, buckets)
            return f[name]

        self.trades = family("pr3dict_trades_total", "counter",
                             "Trade records by state reached (an unresolved trade that later "
                             "resolves counts in both).", ("state", "strategy", "kind"))
        self.rejections = family("pr3dict_gate_rejections_total", "counter",
                                 "Trades rejected before any order, by gate.", ("gate",))
        self.legs = family("pr3dict_legs_total", "counter", "Legs by final state.",
                           ("venue", "purpose", "state"))
        self.wire = family("pr3dict_decision_to_wire_seconds", "histogram",
                           "Gates approved -> last entry leg sent.", ("strategy",), seconds)
        self.final = family("pr3dict_decision_to_final_seconds", "histogram",
                            "Gates approved -> trade final.", ("strategy",), seconds)
        self.skew = family("pr3dict_leg_skew_seconds", "histogram",
                           "Spread of the entry legs' final times.", ("kind",), seconds)
        self.leg_latency = family("pr3dict_leg_latency_seconds", "histogram",
                                  "Leg submitted -> final.", ("venue", "purpose"), seconds)
        self.unresolved = family("pr3dict_unresolved_seconds_total", "counter",
                                 "Time legs spent UNRESOLVED.")
        self.within = family("pr3dict_within_deadline_total", "counter",
                             "Executed trades by whether every entry leg was final within the "
                             "deadline.", ("within",))
        self.pnl = family("pr3dict_realised_pnl_usdc", "gauge",
                          "Cumulative realised PnL (USDC).", ("kind",))
        self.edge = family("pr3dict_expected_edge_usdc_total", "counter",
                           "Expected edge of executed trades as detected (USDC).", ("kind",))
        self.rollback = family("pr3dict_rollback_cost_usdc", "gauge",
                               "Cumulative cost of unwinds (USDC).")
        self.slippage = family("pr3dict_slippage_usdc", "gauge",
                               "Cumulative entry-leg slippage against detected prices (USDC).",
                               ("venue",))
        self.fees = family("pr3dict_fees_usdc_total", "counter", "Taker fees paid (USDC).",
                           ("venue",))
        self.gas = family("pr3dict_gas_spent_total", "counter",
                          "Native token (POL) settlers spent.")
        self.ratios = family("pr3dict_ratio", "gauge",
                             "Rates over the last `window` trades: success, failed_arbitrage, "
                             "leg_fill, arbitrage_fill, within_deadline.", ("rate", "strategy"))
        self.ws_reconnects = family("pr3dict_venue_ws_reconnects_total", "counter",
                                    "Websocket reconnects of a venue connector, by feed.",
                                    ("venue", "feed"))
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if serve:
            self._serve()

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> PrometheusSink:
        return cls(id, config)

    # ------------------------------------------------------------------ server

    def _serve(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != sink.config.path:
                    self.send_error(404)
                    return
                body = sink.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
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
                self.trades.add((record.state, record.strategy, record.kind), 1)
            if record.state == REJECTED:
                self.rejections.add((record.gate or "?",), 1)
                return
            for key, amount in delta(record, previous).items():
                self._amount(key, amount)
            if previous is not None and previous.state != REJECTED:
                return  # distributions and legs were recorded the first time
            if record.decision_to_wire_ms is not None:
                self.wire.observe((record.strategy,), record.decision_to_wire_ms / 1000)
            if record.decision_to_final_ms is not None:
                self.final.observe((record.strategy,), record.decision_to_final_ms / 1000)
            if record.leg_skew_ms is not None:
                self.skew.observe((record.kind,), record.leg_skew_ms / 1000)
            if record.within_deadline is not None:
                self.within.add((str(record.within_deadline).lower(),), 1)
            for leg in record.legs:
                self.legs.add((leg.venue, leg.purpose, leg.state), 1)
                if leg.latency_ms is not None:
                    self.leg_latency.observe((leg.venue, leg.purpose), leg.latency_ms / 1000)

    def venue_stats(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        """The engine's venues' connection stats (pushed at most once a second)."""
        with self.lock:
            for venue, values in stats.items():
                for feed, count in (values.get("ws_reconnects") or {}).items():
                    self.ws_reconnects.set((venue, feed), float(count))

    def _amount(self, key: tuple[str, ...], amount: float) -> None:
        name, *labels = key
        family = {"pnl": self.pnl, "edge": self.edge, "rollback": self.rollback,
                  "gas": self.gas, "unresolved": self.unresolved, "fees": self.fees,
                  "slippage": self.slippage}[name]
        family.add(tuple(labels), amount / 1000 if name == "unresolved" else amount)

    def render(self) -> str:
        with self.lock:
            self.ratios.values.clear()
            groups = {"all": self.collector.get_summary(),
                      **self.collector.strategy_performance()}
            for strategy, stats in groups.items():
                for rate in ("success", "failed_arbitrage", "leg_fill", "arbitrage_fill",
                             "within_deadline"):
                    value = stats[f"{rate}_rate"]
                    if value is not None:
                        self.ratios.set((rate, strategy), value)
            lines = [line for fam in self._families.values() for line in fam.render()]
        return "\n".join(lines) + "\n"

    async def close(self, summary: Mapping[str, Any]) -> None:
        self.summary = summary
        self.collector.run_summary = summary
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # waits for serve_forever to return
            server.server_close()
