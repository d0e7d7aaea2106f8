"""A pytest plugin for pr3dict plugin authors (and pr3dict's own tests).

Enable it with ``pytest_plugins = ["pr3dict_core.testing"]`` in a ``conftest.py`` (or
``-p pr3dict_core.testing``). Fixtures:

- ``pr3dict_pm``: a fresh plugin manager (entry points + built-ins), nothing global.
- ``register_plugin``: register a throwaway plugin object for one test.
- ``span_exporter``: an in-memory span exporter; ``tracer_provider`` is its provider.
- ``run_pr3dict``: run ``pr3dict ...`` in process; returns a :class:`RunOutcome` with the
  exit code, stdout, stderr and the finished spans.

Factories for unit tests of a detector, gate, sink or strategy (thin wrappers over the public
constructors in :mod:`pr3dict_core.model`): :func:`make_book`, :func:`make_opportunity`,
:func:`make_trade`, :func:`make_trade_record`, and :class:`StubVenue`, a venue whose order
replies a test scripts (docs/plugin-authoring.md#factories-and-a-stub-venue shows them in
use; docs/objects.md lists the fields of what they build).
"""

from __future__ import annotations

import io
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pluggy
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .components import UnknownOrder
from .metrics import TradeRecord
from .model import (
    ZERO,
    Book,
    Fill,
    Leg,
    LegSpec,
    Level,
    Market,
    Opportunity,
    OrderAck,
    OrderRef,
    OrderRequest,
    OrderStatus,
    Side,
    TimeInForce,
    Trade,
    TradeState,
    Trigger,
    VenueOutcome,
    opportunity_id,
    to_decimal,
)
from .plugins import make_plugin_manager

__all__ = [
    "RunOutcome",
    "StubVenue",
    "make_book",
    "make_opportunity",
    "make_trade",
    "make_trade_record",
    "span_children",
    "span_tree",
]

Num = str | int | Decimal  # never float: factories refuse floats like the model does


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


# --------------------------------------------------------------------------- factories


def _levels(pairs: Iterable[tuple[Num, Num]]) -> tuple[Level, ...]:
    return tuple(Level(price, size) for price, size in pairs)


def make_book(instrument: str = "m:yes", *, venue: str = "stub",
              bids: Iterable[tuple[Num, Num]] = (), asks: Iterable[tuple[Num, Num]] = (),
              sequence: int = 0, timestamp: float = 0.0) -> Book:
    """A :class:`~pr3dict_core.model.Book` from ``(price, size)`` pairs, best first."""
    return Book(venue, instrument, _levels(bids), _levels(asks), timestamp, sequence)


def make_opportunity(prices: Sequence[Num] = ("0.45", "0.50"), *, size: Num = "10",
                     venue: str = "stub", market: str = "m", fees: Num = "0",
                     payout: Num = "1", detector: str = "test",
                     kind: str = "binary_complement",
                     instruments: Sequence[str] | None = None, nonce: int = 0) -> Opportunity:
    """An opportunity buying one instrument per price, ``size`` shares each, on one venue.

    Two prices are a binary complement (``m:yes`` and ``m:no``); more are outcomes ``m:0``,
    ``m:1``, ... unless ``instruments`` names them. Cost, edge and fees follow from the
    prices the way a detector computes them: edge = (payout * size - cost) / size.
    """
    if instruments is None:
        instruments = ([f"{market}:yes", f"{market}:no"] if len(prices) == 2
                       else [f"{market}:{i}" for i in range(len(prices))])
    size_d, fees_d, payout_d = to_decimal(size), to_decimal(fees), to_decimal(payout)
    legs = tuple(LegSpec(venue, instrument, Side.BUY, price, size_d, market_id=market,
                         best_price=to_decimal(price))
                 for instrument, price in zip(instruments, prices, strict=True))
    cost = sum((leg.price * size_d for leg in legs), ZERO) + fees_d
    edge = (payout_d * size_d - cost) / size_d if size_d else ZERO
    return Opportunity(id=opportunity_id(detector, legs, nonce), detector=detector, kind=kind,
                       legs=legs, size=size_d, edge_per_share=edge, cost=cost, fees=fees_d,
                       payout=payout_d)


_ENTRY_PATH = {
    TradeState.DETECTED: (),
    TradeState.REJECTED: (TradeState.REJECTED,),
    TradeState.APPROVED: (TradeState.APPROVED,),
    TradeState.EXECUTING: (TradeState.APPROVED, TradeState.EXECUTING),
    TradeState.COMMITTED: (TradeState.APPROVED, TradeState.EXECUTING, TradeState.COMMITTED),
    TradeState.ROLLING_BACK: (TradeState.APPROVED, TradeState.EXECUTING,
                              TradeState.ROLLING_BACK),
    TradeState.ROLLED_BACK: (TradeState.APPROVED, TradeState.EXECUTING,
                             TradeState.ROLLING_BACK, TradeState.ROLLED_BACK),
    TradeState.UNRESOLVED: (TradeState.APPROVED, TradeState.EXECUTING,
                            TradeState.ROLLING_BACK, TradeState.UNRESOLVED),
}


def make_trade(opportunity: Opportunity | None = None, *,
               state: TradeState | str = TradeState.COMMITTED,
               filled: Sequence[Num] | None = None, trade_id: str = "t-1",
               strategy: str = "market", reject_reason: str = "", gate: str = "") -> Trade:
    """A :class:`~pr3dict_core.model.Trade` walked through legal transitions to ``state``.

    Entry legs are filled at their detected prices: ``filled`` gives each leg's filled
    shares (default: the whole size once the trade executed, nothing before). A rejected
    trade has no legs and carries ``reject_reason`` and ``gate``.
    """
    opp = opportunity or make_opportunity()
    state = TradeState(state)
    trade = Trade(id=trade_id, opportunity=opp, strategy=strategy)
    executed = TradeState.EXECUTING in _ENTRY_PATH[state]
    if filled is None:
        filled = [opp.size if executed else ZERO] * len(opp.legs)
    for index, (spec, shares) in enumerate(zip(opp.legs, filled, strict=True)):
        if not executed:
            break
        leg = Leg(trade.id, index, spec.venue, spec.instrument, spec.side, opp.size,
                  limit_price=spec.price, target_price=spec.price, tick_size=spec.tick_size)
        shares = to_decimal(shares)
        cid = leg.next_client_order_id()
        request = OrderRequest(cid, spec.venue, spec.instrument, spec.side, spec.price,
                               opp.size, TimeInForce.FAK)
        leg.orders[cid] = OrderRef(request)
        leg.apply(VenueOutcome(Trigger.SENT, cid))  # the way the engine does: outcomes
        fills = (Fill(f"{cid}-f", cid, spec.price, shares),) if shares else ()
        status = OrderStatus.FILLED if shares >= leg.size else OrderStatus.CANCELLED
        leg.apply(VenueOutcome(Trigger.ACKED, cid, OrderAck(cid, status, fills)))
        leg.apply(VenueOutcome(Trigger.CLOSED))
        trade.legs.append(leg)
    for step in _ENTRY_PATH[state]:
        trade.transition(step)
    if state is TradeState.REJECTED:
        trade.reject_reason, trade.gate = reject_reason or "rejected in a test", gate or "test"
    return trade


def make_trade_record(trade: Trade | None = None, **kwargs: Any) -> TradeRecord:
    """The :class:`~pr3dict_core.metrics.TradeRecord` a sink receives for ``trade``
    (default: ``make_trade(**kwargs)``)."""
    return TradeRecord.from_trade(trade if trade is not None else make_trade(**kwargs))


# --------------------------------------------------------------------------- stub venue

Reply = str | BaseException | Callable[[OrderRequest], OrderAck]


class StubVenue:
    """A venue whose books a test sets and whose order replies a test scripts.

    ``set_book(instrument, bids=..., asks=...)`` queues a book for the next ``poll_books``.
    ``script(*replies)`` queues what the next ``place_order`` calls answer, in order:

    - ``"fill"``: filled in full at the request's price;
    - ``"partial:N"``: N shares filled, the rest cancelled;
    - ``"rest"``: open, nothing filled (``cancel_order`` then cancels it);
    - ``"reject"``: refused, nothing filled;
    - an exception instance: raised (e.g. ``AmbiguousOutcome("timeout")``);
    - a callable: ``reply(request) -> OrderAck``.

    With nothing scripted an order is filled. ``requests`` lists every order sent, and
    ``positions()`` follows the fills. It satisfies :class:`pr3dict_core.components.Venue`.
    """

    type: ClassVar[str] = "stub"

    def __init__(self, id: str = "stub", *, markets: Sequence[str] = ("m",),
                 fee_rate: Num = "0", tick_size: Num = "0.01", min_size: Num = "1"):
        self.id = id
        self.fee_rate = to_decimal(fee_rate)
        self._markets = [Market(id, m, f"{m}:yes", f"{m}:no", tick_size=to_decimal(tick_size),
                                min_size=to_decimal(min_size)) for m in markets]
        self._books: dict[str, Book] = {}
        self._changed: dict[str, Book] = {}
        self._replies: deque[Reply] = deque()
        self._orders: dict[str, OrderAck] = {}
        self._positions: dict[str, Decimal] = {}
        self._sequence = itertools.count(1)
        self.requests: list[OrderRequest] = []
        self.started = self.closed = False

    # ------------------------------------------------------------------ scripting

    def set_book(self, instrument: str, *, bids: Iterable[tuple[Num, Num]] = (),
                 asks: Iterable[tuple[Num, Num]] = ()) -> Book:
        book = make_book(instrument, venue=self.id, bids=bids, asks=asks,
                         sequence=next(self._sequence))
        self._books[instrument] = self._changed[instrument] = book
        return book

    def script(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    # ------------------------------------------------------------------ Venue protocol

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def markets(self) -> Sequence[Market]:
        return list(self._markets)

    def book(self, instrument: str) -> Book | None:
        return self._books.get(instrument)

    async def poll_books(self) -> Sequence[Book]:
        changed, self._changed = list(self._changed.values()), {}
        return changed

    async def place_order(self, request: OrderRequest) -> OrderAck:
        self.requests.append(request)
        reply = self._replies.popleft() if self._replies else "fill"
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            ack = reply(request)
        elif reply == "fill":
            ack = self._ack(request, OrderStatus.FILLED, request.size)
        elif reply.startswith("partial:"):
            ack = self._ack(request, OrderStatus.CANCELLED, to_decimal(reply.split(":", 1)[1]))
        elif reply == "rest":
            ack = self._ack(request, OrderStatus.OPEN, ZERO)
        elif reply == "reject":
            ack = OrderAck(request.client_order_id, OrderStatus.REJECTED, reason="scripted")
        else:
            raise ValueError(f"unknown scripted reply {reply!r}")
        self._orders[request.client_order_id] = ack
        return ack

    async def cancel_order(self, client_order_id: str) -> OrderAck:
        ack = await self.get_order(client_order_id)
        if ack.status is OrderStatus.OPEN:
            ack = OrderAck(client_order_id, OrderStatus.CANCELLED, ack.fills,
                           ack.venue_order_id)
            self._orders[client_order_id] = ack
        return ack

    async def get_order(self, client_order_id: str) -> OrderAck:
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise UnknownOrder(client_order_id) from None

    def fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return size * self.fee_rate * price * (1 - price)

    def positions(self) -> Mapping[str, Decimal]:
        return dict(self._positions)

    def _ack(self, request: OrderRequest, status: OrderStatus, size: Decimal) -> OrderAck:
        fills: tuple[Fill, ...] = ()
        if size:
            fee = self.fee(request.instrument, request.price, size)
            fills = (Fill(f"{request.client_order_id}-f", request.client_order_id,
                          request.price, size, fee),)
            signed = size if request.side is Side.BUY else -size
            self._positions[request.instrument] = \
                self._positions.get(request.instrument, ZERO) + signed
        return OrderAck(request.client_order_id, status, fills,
                        venue_order_id=f"stub-{request.client_order_id}")
