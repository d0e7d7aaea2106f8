"""Executing one trade: every leg at once, then finalize (commit) or rollback.

The engine owns what must always hold (states, journal, spans, timing, reconciliation);
the execution strategy only says what to send through ``LegRun``. Every venue call goes
through ``VenueCalls``, which owns the timeout, the validation of every field of a reply,
the classification into a ``VenueOutcome`` and the backoff; a leg changes state only by
``Leg.apply(outcome)``. One reconciler (``TradeExecutor.reconcile``) serves finishing a
leg, rollback, background resolution and start-up recovery: it asks the venue about the
orders the journal holds, never a connector's memory. A leg whose outcome is unknown
becomes UNRESOLVED; it is never assumed to have failed.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import telemetry as tm
from .components import (
    AuthenticationFailed,
    ExecutionStrategy,
    MalformedReply,
    OrderRejected,
    UnknownOrder,
    Venue,
    VenueError,
)
from .config import ExecutionSection
from .journal import Journal, JournalError
from .model import (
    ONE,
    ZERO,
    Book,
    Leg,
    LegState,
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
    is_reversal,
    quantize_down,
)

RETRY_BASE_S = 0.05
RETRY_MAX_S = 0.5
RETRY_ATTEMPTS = 3
KEEP_FINISHED_ORDERS = 10_000  # late pushes (a reversed fill) still find their leg
WAIT_SLICE_S = 0.05  # how long a wait sleeps before it looks at the clock again

Clock = Callable[[], float]


# What a connector calls the moment an order's request has been written to the socket (set
# by the engine around each placement; None outside one). See ``on_wire``.
WIRE_STAMP: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "pr3dict_wire_stamp", default=None)


def on_wire() -> None:
    """Tell the engine the order being placed has just been written to the socket (the
    paper venue: taken). ``decision -> wire`` ends here; a connector that never calls it is
    stamped when its ``place_order`` returns (later than the truth, never earlier)."""
    stamp = WIRE_STAMP.get()
    if stamp is not None:
        stamp()


def backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter: 50 ms doubling, capped at 500 ms."""
    return rng.uniform(RETRY_BASE_S, min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt))


def _finite(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def check_ack(ack: object, client_order_id: str, size: Decimal | None = None) -> OrderAck:
    """Refuse a reply that cannot be an honest answer about this order: another order's,
    a status we do not know, fills that are not finite, not positive (a reversal excepted),
    priced outside [0, 1], or adding up to more than the order or less than nothing."""
    if not isinstance(ack, OrderAck):
        raise MalformedReply(f"expected an order acknowledgement, got {type(ack).__name__}")
    if ack.client_order_id != client_order_id:
        raise MalformedReply(f"reply is about order {ack.client_order_id!r}, "
                             f"not {client_order_id!r}")
    if not isinstance(ack.status, OrderStatus):
        raise MalformedReply(f"unknown order status {ack.status!r}")
    total = ZERO
    for fill in ack.fills:
        reversal = is_reversal(fill)
        if not (_finite(fill.size) and _finite(fill.price) and _finite(fill.fee)) \
                or fill.client_order_id != client_order_id \
                or not ZERO <= fill.price <= ONE \
                or (fill.size >= ZERO if reversal else fill.size <= ZERO) \
                or (fill.fee < ZERO and not reversal):
            raise MalformedReply(f"bad fill {fill.fill_id!r}: {fill.size!r} @ {fill.price!r} "
                                 f"fee {fill.fee!r}")
        total += fill.size
    if total < ZERO:
        raise MalformedReply(f"fills of {total} are less than nothing")
    if size is not None and total > size:
        raise MalformedReply(f"fills of {total} exceed the order's size {size}")
    return ack


class VenueCalls:
    """The one place a venue is called for an order: timeout, validation, classification
    into a ``VenueOutcome``, and backoff for requests that are safe to repeat."""

    def __init__(self, timeout_s: float, rng: random.Random, clock: Clock,
                 retries: int = RETRY_ATTEMPTS):
        self.timeout_s = timeout_s
        self.rng = rng
        self.clock = clock
        self.retries = retries

    async def place(self, venue: Venue, request: OrderRequest,
                    deadline: float | None = None, batch: SendBatch | None = None
                    ) -> VenueOutcome:
        # The client order id makes a resend idempotent; still, only requests that did
        # not reach the venue (rate limited, unavailable) are retried (one by one).
        def call() -> Awaitable[OrderAck]:
            nonlocal batch
            if batch is not None:
                first, batch = batch, None
                return first.place(request)
            return venue.place_order(request)

        return await self._call(call, request.client_order_id, request.size, placing=True,
                                deadline=deadline)

    async def query(self, venue: Venue, ref: OrderRef) -> VenueOutcome:
        cid = ref.request.client_order_id
        return await self._call(lambda: venue.get_order(cid), cid, ref.request.size)

    async def cancel(self, venue: Venue, ref: OrderRef) -> VenueOutcome:
        cid = ref.request.client_order_id
        return await self._call(lambda: venue.cancel_order(cid), cid, ref.request.size)

    async def _call(self, call: Callable[[], Awaitable[OrderAck]], cid: str, size: Decimal,
                    *, placing: bool = False, deadline: float | None = None) -> VenueOutcome:
        span = trace.get_current_span()
        for attempt in range(self.retries + 1):
            try:
                ack = check_ack(await asyncio.wait_for(call(), self.timeout_s), cid, size)
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    raise  # cancellation, a crash: not an answer
                span.record_exception(exc)
                outcome = self._classify(exc, cid, attempt, placing, deadline)
                if outcome is None:
                    span.add_event("retry", {tm.ERROR_TYPE: type(exc).__name__})
                    await asyncio.sleep(backoff(attempt, self.rng))
                    continue
                return outcome
            return VenueOutcome(Trigger.ACKED, cid, ack)
        raise AssertionError("unreachable")

    def _classify(self, exc: Exception, cid: str, attempt: int, placing: bool,
                  deadline: float | None) -> VenueOutcome | None:
        """The outcome an exception means, or None to retry (only what did not reach the
        venue, within the attempts and the deadline)."""
        if isinstance(exc, UnknownOrder):
            return _outcome(Trigger.NOT_FOUND, cid, exc)
        if isinstance(exc, OrderRejected):
            return _outcome(Trigger.REFUSED, cid, exc,
                            auth=isinstance(exc, AuthenticationFailed))
        if isinstance(exc, VenueError) and exc.retryable:
            if attempt < self.retries and (deadline is None
                                             or self.clock() + RETRY_MAX_S < deadline):
                return None
            # A placement that never reached the venue is refused; a query or cancel that
            # could not be made leaves the order's fate unknown.
            return _outcome(Trigger.REFUSED if placing else Trigger.LOST, cid, exc)
        # A timeout after sending, a 5xx, a malformed reply, a connector bug: unknown.
        return _outcome(Trigger.LOST, cid, exc)


BATCH_WAIT_S = 0.002  # how long a batch waits for a late leg before it goes without it


class SendBatch:
    """The first orders of a trade's entry legs to one venue, sent as one batch request
    (``place_orders``: Polymarket ``POST /orders``, Kalshi batched create) once every leg
    expected has reached the wire, each durable and signed. A leg that stops before
    sending withdraws; one later than ``BATCH_WAIT_S`` after the first goes on its own.
    Only an optimisation: every order is still placed exactly once, and retries go singly."""

    def __init__(self, venue: Venue, expected: int):
        self.venue = venue
        self.expected = expected
        self.pending: list[tuple[OrderRequest, asyncio.Future[OrderAck],
                                 Callable[[], None] | None]] = []
        self.sent = False
        self._timer: asyncio.TimerHandle | None = None

    def withdraw(self) -> None:
        """A leg will not send through this batch (refused before, or its strategy is done)."""
        if not self.sent:
            self.expected -= 1
            self._maybe_send()

    async def place(self, request: OrderRequest) -> OrderAck:
        if self.sent:  # too late for the batch
            return await self.venue.place_order(request)
        future: asyncio.Future[OrderAck] = asyncio.get_running_loop().create_future()
        self.pending.append((request, future, WIRE_STAMP.get()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_WAIT_S, self._send)
        self._maybe_send()
        return await future

    def _maybe_send(self) -> None:
        if not self.sent and self.pending and len(self.pending) >= self.expected:
            self._send()

    def _send(self) -> None:
        if self.sent:
            return
        self.sent = True
        if self._timer is not None:
            self._timer.cancel()
        pending, self.pending = self.pending, []
        stamps = [stamp for _, _, stamp in pending if stamp is not None]

        def stamp_all() -> None:  # one request carries every leg's order
            for stamp in stamps:
                stamp()

        context = contextvars.copy_context()
        context.run(WIRE_STAMP.set, stamp_all)
        asyncio.get_running_loop().create_task(self._post(pending), context=context)

    async def _post(self, pending: list[tuple[OrderRequest, asyncio.Future[OrderAck],
                                              Callable[[], None] | None]]) -> None:
        futures = [future for _, future, _ in pending]
        try:
            if len(pending) == 1:
                results: list[OrderAck | BaseException] = [
                    await self.venue.place_order(pending[0][0])]
            else:
                results = list(await self.venue.place_orders(  # type: ignore[attr-defined]
                    [request for request, _, _ in pending]))
                if len(results) != len(pending):
                    raise MalformedReply(f"{len(results)} results for {len(pending)} orders")
        except Exception as exc:  # the whole request: every order in it shares the fate
            results = [exc] * len(pending)
        for future, result in zip(futures, results, strict=True):
            if future.done():  # its caller timed out or was cancelled
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _outcome(trigger: Trigger, cid: str, exc: BaseException, *, auth: bool = False
             ) -> VenueOutcome:
    text = str(exc) or type(exc).__name__
    return VenueOutcome(trigger, cid, error=f"{type(exc).__name__}: {text}",
                        error_type=type(exc).__name__, auth=auth)


def _record_outcome(span: trace.Span, outcome: VenueOutcome, leg: Leg) -> None:
    if not span.is_recording():
        return
    if outcome.ack is not None:
        span.set_attribute(tm.ORDER_STATUS, outcome.ack.status.value)
    if outcome.error_type:
        span.set_attribute(tm.ERROR_TYPE, outcome.error_type)
        span.set_status(Status(StatusCode.ERROR, outcome.error))
    if span.is_recording():
        span.set_attributes({tm.LEG_FILLED: tm.num(leg.filled), tm.LEG_STATE: leg.state.value})


class LegRun:
    """What a strategy gets for one leg (a ``LegContext``): it says what to send; the
    engine allocates ids, builds, journals, sends, and applies the answer."""

    def __init__(self, executor: TradeExecutor, leg: Leg, venue: Venue, deadline: float,
                 max_slippage_ticks: int, batch: SendBatch | None = None):
        self.executor = executor
        self.leg = leg
        self.venue = venue
        self.deadline = deadline
        self.max_slippage_ticks = max_slippage_ticks
        self.changed = asyncio.Event()
        self.batch = batch  # the leg's first order goes out in this batch

    def unbatch(self) -> None:
        """This leg will not send through its batch (any more)."""
        if self.batch is not None:
            self.batch.withdraw()
            self.batch = None

    @property
    def resting(self) -> bool:
        return self.leg.resting

    def now(self) -> float:
        """The engine's clock (``time.perf_counter`` unless a test injects one): what
        ``deadline`` is measured on."""
        return self.executor.clock()

    def book(self) -> Book | None:
        return self.venue.book(self.leg.instrument)

    @property
    def residual(self) -> Decimal:
        return self.executor.residual(self.leg)

    async def submit(self, price: Decimal, size: Decimal,
                     time_in_force: TimeInForce) -> OrderAck | None:
        """Send one order for the leg; a venue error lands on the leg, it is not raised."""
        ex, leg = self.executor, self.leg
        request = OrderRequest(leg.next_client_order_id(), leg.venue, leg.instrument, leg.side,
                               price, size, time_in_force)
        cid = request.client_order_id
        with ex.tracer.start_as_current_span(tm.SPAN_SUBMIT, kind=SpanKind.CLIENT,
                                             record_exception=False,
                                             set_status_on_exception=False) as span:
            if span.is_recording():  # formatted only for a trace that is kept
                span.set_attributes({
                    tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index,
                    tm.LEG_VENUE: leg.venue, tm.LEG_INSTRUMENT: leg.instrument,
                    tm.LEG_SIDE: leg.side.value, tm.LEG_PURPOSE: leg.purpose,
                    tm.ORDER_CLIENT_ID: cid, tm.ORDER_PRICE: tm.num(price),
                    tm.ORDER_SIZE: tm.num(size), tm.ORDER_TIF: time_in_force.value,
                    **ex.server(self.venue)})
            venue_order_id = ""
            prepare = getattr(self.venue, "prepare_order", None)
            sign = getattr(self.venue, "sign_order", None)
            if prepare is not None:
                try:
                    # Build and hash (the venue's id for the order) before the intent; the
                    # signature is made while the intent's commit is in flight.
                    venue_order_id = prepare(request)
                except VenueError as exc:  # the venue's rules refuse it: never sent
                    self.unbatch()
                    outcome = _outcome(Trigger.REFUSED, cid, exc)
                    ex.apply(leg, outcome)
                    _record_outcome(span, outcome, leg)
                    return None
            leg.orders[cid] = OrderRef(request, venue_order_id)
            ex.apply(leg, VenueOutcome(Trigger.SENT, cid))
            ex.track(cid, self)
            try:
                if ex.journal is not None:
                    await self._durable_and_signed(request, venue_order_id, sign)
                elif sign is not None:
                    sign(request)
            except JournalError as exc:  # not durable: it must not go out
                self.unbatch()
                outcome = _outcome(Trigger.REFUSED, cid, exc)
                ex.apply(leg, outcome)
                ex.on_journal_error(exc)
                _record_outcome(span, outcome, leg)
                return None
            except Exception as exc:  # cannot be signed: never sent
                self.unbatch()
                outcome = _outcome(Trigger.REFUSED, cid, exc)
                ex.apply(leg, outcome)
                _record_outcome(span, outcome, leg)
                return None
            if leg.submitted_at is None:
                leg.submitted_at = ex.clock()
            token = WIRE_STAMP.set(None if leg.on_wire_at is not None
                                   else lambda: ex.stamp_wire(leg, span))
            batch, self.batch = self.batch, None
            try:
                outcome = await ex.calls.place(self.venue, request, self.deadline, batch)
            finally:
                WIRE_STAMP.reset(token)
            if leg.on_wire_at is None:  # the connector did not say when: now is an upper bound
                leg.on_wire_at = ex.clock()
            ex.apply(leg, outcome)
            _record_outcome(span, outcome, leg)
            return outcome.ack

    async def _durable_and_signed(self, request: OrderRequest, venue_order_id: str,
                                  sign: Callable[[OrderRequest], None] | None) -> None:
        """Journal the intent and sign the order, the signature made while the intent's
        commit is in flight: the intent is queued first and given two turns of the loop
        (a group commit is handed to the journal's thread then), then the order is signed
        on the loop, then the commit is awaited. Signing in a worker thread measured slower
        (it waits for the GIL while the loop is busy: bench/bench_floor.py)."""
        assert self.executor.journal is not None
        intent = asyncio.ensure_future(
            self.executor.journal.order_intent(self.leg, request, venue_order_id))
        if sign is not None:
            try:
                for _ in range(2):
                    await asyncio.sleep(0)
                sign(request)
            except BaseException:
                intent.cancel()  # nothing is sent: the intent may stay (recovery asks)
                raise
        await intent

    async def cancel(self) -> OrderAck | None:
        """Cancel what rests of the leg's latest order and apply its final view."""
        ref = self._latest()
        if ref is None or ref.done:
            return None
        with self.executor.tracer.start_as_current_span(tm.SPAN_CANCEL, attributes={
            tm.TRADE_ID: self.leg.trade_id, tm.LEG_INDEX: self.leg.index,
            tm.ORDER_CLIENT_ID: ref.request.client_order_id, **self.executor.server(self.venue),
        }, kind=SpanKind.CLIENT, record_exception=False,
                set_status_on_exception=False) as span:
            outcome = await self.executor.calls.cancel(self.venue, ref)
            self.executor.apply(self.leg, outcome)
            _record_outcome(span, outcome, self.leg)
            return outcome.ack

    async def refresh(self) -> OrderAck | None:
        """Ask the venue for the leg's latest order (fills that came while it rested)."""
        ref = self._latest()
        if ref is None:
            return None
        outcome = await self.executor.calls.query(self.venue, ref)
        if outcome.trigger is Trigger.ACKED:  # a failed poll changes nothing: ask again later
            self.executor.apply(self.leg, outcome)
        return outcome.ack

    def _latest(self) -> OrderRef | None:
        return self.leg.orders.get(self.leg.current_client_order_id())

    async def wait(self, until: float) -> None:
        """Wait for the leg to change or until ``until``; polls venues that do not push
        order updates every ``poll_interval_ms``."""
        ex = self.executor
        pushes = ex.pushes.get(self.leg.venue, False)
        while not self.leg.state.is_final and ex.clock() < until:
            self.changed.clear()
            # Slices: the deadline is on the engine's clock, which a test may move.
            step = min(until - ex.clock(), WAIT_SLICE_S)
            if not pushes:
                step = min(step, ex.poll_interval_s)
            try:
                await asyncio.wait_for(self.changed.wait(), max(step, 0))
                return
            except TimeoutError:
                if not pushes and self.resting:
                    await self.refresh()
                    if self.changed.is_set():
                        return


class TradeExecutor:
    """Runs approved trades: parallel entry legs, then commit or rollback."""

    def __init__(self, venues: Mapping[str, Venue], strategy: ExecutionStrategy,
                 execution: ExecutionSection, tracer: trace.Tracer, *,
                 journal: Journal | None = None, seed: int | None = None,
                 clock: Clock = time.perf_counter,
                 on_auth_failure: Callable[[str, str], None] | None = None,
                 on_journal_error: Callable[[BaseException], None] | None = None,
                 on_late_change: Callable[[Trade], None] | None = None):
        self.venues = venues
        self.strategy = strategy
        self.execution = execution
        self.tracer = tracer
        self.journal = journal
        self.clock = clock
        self.poll_interval_s = execution.poll_interval_ms / 1000
        self.rng = random.Random(seed)
        self.calls = VenueCalls(execution.order_timeout_ms / 1000, self.rng, clock,
                                execution.max_retries)
        self._on_auth_failure = on_auth_failure
        self._on_journal_error = on_journal_error
        self._on_late_change = on_late_change
        self._steps: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        self._runs: dict[str, LegRun] = {}  # client order id -> run, while the trade runs
        # Orders of finished trades, for late pushes: client order id -> (trade, leg).
        self._finished: collections.OrderedDict[str, tuple[Trade, Leg]] = \
            collections.OrderedDict()
        self.pushes: dict[str, bool] = {}
        # Venues that refused our credentials: nothing is completed or unwound into them.
        self.blocked: set[str] = set()
        self._hosts: dict[int, str] = {}  # id(venue) -> its REST host, for CLIENT spans
        for vid, venue in venues.items():
            for m in venue.markets():
                for inst in (m.yes, m.no):
                    self._steps[(vid, inst)] = (m.size_step, m.min_size)
            subscribe = getattr(venue, "subscribe_orders", None)
            if subscribe is not None:
                subscribe(self.on_order_update)
                self.pushes[vid] = True

    # ------------------------------------------------------------------ bookkeeping

    def residual(self, leg: Leg) -> Decimal:
        """Below one size step a remainder cannot be traded: it snaps the leg to final."""
        return self.residual_for(leg.venue, leg.instrument)

    def residual_for(self, venue: str, instrument: str) -> Decimal:
        return self._steps.get((venue, instrument), (Decimal("0.01"), ZERO))[0]

    def min_size(self, venue: str, instrument: str) -> Decimal:
        return self._steps.get((venue, instrument), (ZERO, ZERO))[1]

    def apply(self, leg: Leg, outcome: VenueOutcome) -> Decimal:
        """Apply an outcome to a leg (the one call site of ``Leg.apply``)."""
        delta = leg.apply(outcome, self.residual(leg))
        if outcome.auth:
            self.blocked.add(leg.venue)
            if self._on_auth_failure is not None:
                self._on_auth_failure(leg.venue, outcome.error)
        run = self._runs.get(outcome.client_order_id)
        if run is not None:
            run.changed.set()
        return delta

    def server(self, venue: Venue) -> dict[str, str]:
        """``server.address`` for a venue's CLIENT spans: its REST host, when it has one."""
        host = self._hosts.get(id(venue))
        if host is None:
            url = getattr(venue, "rest_url", "")
            host = (urlsplit(url).hostname or "") if isinstance(url, str) else ""
            self._hosts[id(venue)] = host
        return {tm.SERVER_ADDRESS: host} if host else {}

    def stamp_wire(self, leg: Leg, span: trace.Span | None = None) -> None:
        """The leg's first order has been written to the socket (``on_wire``): the stamp,
        and an event on its ``submit order`` span."""
        if leg.on_wire_at is None:
            leg.on_wire_at = self.clock()
            if span is not None and span.is_recording():
                span.add_event(tm.EVENT_WIRE)

    def on_journal_error(self, exc: BaseException) -> None:
        if self._on_journal_error is not None:
            self._on_journal_error(exc)

    def track(self, client_order_id: str, run: LegRun) -> None:
        self._runs[client_order_id] = run

    def on_order_update(self, ack: OrderAck) -> None:
        """A pushed order update, routed to its leg by client order id. A malformed push is
        dropped (the next query or push tells the truth); it never reaches the leg. A push
        that changes the fills of a finished trade (a reversed or late fill) reopens it."""
        cid = getattr(ack, "client_order_id", "")
        run = self._runs.get(cid)
        found = (None, run.leg) if run is not None else self._finished.get(cid)
        if found is None:
            return
        trade, leg = found
        ref = leg.orders.get(cid)
        try:
            outcome = VenueOutcome(Trigger.ACKED, cid, check_ack(
                ack, cid, ref.request.size if ref is not None else None))
        except MalformedReply as exc:
            trace.get_current_span().add_event("malformed order update", {
                tm.ERROR_TYPE: type(exc).__name__})
            return
        delta = self.apply(leg, outcome)
        if delta and trade is not None and trade.state.is_final \
                and self._on_late_change is not None:
            self._on_late_change(trade)

    def observe(self, leg: Leg) -> Leg:
        if self.journal is not None:
            leg.observer = self.journal.leg_transition
            self.journal.leg_created(leg)
        return leg

    def remember(self, trade: Trade) -> None:
        """Keep a finished trade's orders routable for late pushes (bounded)."""
        for leg in trade.all_legs:
            for cid in leg.orders:
                self._runs.pop(cid, None)
                self._finished[cid] = (trade, leg)
        while len(self._finished) > KEEP_FINISHED_ORDERS:
            self._finished.popitem(last=False)

    def resting_legs(self) -> list[Leg]:
        legs = {id(run.leg): run.leg for run in self._runs.values() if run.leg.resting}
        return list(legs.values())

    async def cancel_resting(self) -> None:
        """The kill switch: cancel every order of ours that may rest, whatever its trade."""
        await asyncio.gather(*(self.reconcile(leg) for leg in self.resting_legs()),
                             return_exceptions=True)

    def worst_case_cost(self, trade: Trade, strategy: ExecutionStrategy | None = None
                        ) -> Decimal:
        """What the trade can spend at most: every BUY leg at its limit plus the slippage
        the strategy may chase, fees included. Completion only buys what a leg did not, at
        most the same bound; this is what the capital gate reserves."""
        ticks = int(getattr(strategy or self.strategy, "max_slippage_ticks", 0))
        ticks = max(ticks, self.execution.unwind_slippage_ticks)
        opp = trade.opportunity
        total = ZERO
        for spec in opp.legs:
            if spec.side is not Side.BUY:
                continue
            price = min(spec.price + spec.tick_size * ticks, ONE)
            venue = self.venues.get(spec.venue)
            fee = venue.fee(spec.instrument, price, opp.size) if venue is not None else ZERO
            total += price * opp.size + fee
        return max(total, opp.cost)

    # ------------------------------------------------------------------ entry

    async def execute(self, trade: Trade, strategy: ExecutionStrategy | None = None) -> Trade:
        """Run ``trade``'s entry legs with ``strategy`` (default: the pipeline's)."""
        strategy = strategy or self.strategy
        trade.transition(TradeState.EXECUTING)
        trade.deadline_ms = self.execution.deadline_ms
        opp = trade.opportunity
        trade.legs = [
            self.observe(Leg(
                trade_id=trade.id, index=i, venue=spec.venue, instrument=spec.instrument,
                side=spec.side, size=opp.size, limit_price=spec.price,
                target_price=spec.best_price if spec.best_price is not None else spec.price,
                tick_size=spec.tick_size))
            for i, spec in enumerate(opp.legs)
        ]
        deadline = self.clock() + self.execution.deadline_ms / 1000
        slippage = int(getattr(strategy, "max_slippage_ticks", 0))
        with self.tracer.start_as_current_span(tm.SPAN_EXECUTE, attributes={
            tm.TRADE_ID: trade.id, tm.STRATEGY: trade.strategy,
        }):
            batches = self._batches(trade)
            runs = [LegRun(self, leg, self.venues[leg.venue], deadline, slippage,
                           batches.get(leg.venue)) for leg in trade.legs]
            async with asyncio.TaskGroup() as tg:
                for run in runs:
                    tg.create_task(self._run_leg(run, strategy))
            sent = [leg.submitted_at for leg in trade.legs if leg.submitted_at is not None]
            trade.submitted_at = max(sent) if sent else None
            wire = [leg.on_wire_at for leg in trade.legs if leg.on_wire_at is not None]
            trade.on_wire_at = max(wire) if wire else None
        await self.conclude(trade)
        trade.finished_at = self.clock()
        self.remember(trade)
        return trade

    def _batches(self, trade: Trade) -> dict[str, SendBatch]:
        """A batch per venue that takes several of the trade's entry legs and has a batch
        endpoint (measured faster than concurrent single posts: bench/bench_floor.py)."""
        counts = collections.Counter(leg.venue for leg in trade.legs)
        return {vid: SendBatch(self.venues[vid], n) for vid, n in counts.items()
                if n > 1 and self.execution.batch_orders
                and hasattr(self.venues[vid], "place_orders")}

    async def _run_leg(self, run: LegRun, strategy: ExecutionStrategy) -> None:
        """Let the strategy work the leg, then leave it final or UNRESOLVED, nothing resting."""
        leg = run.leg
        try:
            await strategy.execute_leg(leg, run)  # type: ignore[arg-type]
        except Exception as exc:  # a plugin bug must not take the trade's other legs down
            trace.get_current_span().record_exception(exc)
            self.apply(leg, VenueOutcome(Trigger.ABANDONED, error=f"{type(exc).__name__}: "
                                                                  f"{exc}"))
        finally:
            run.unbatch()  # it never sent: the other legs need not wait for it
        await self.reconcile(leg)
        leg.finished_at = self.clock()

    # ------------------------------------------------------------------ the reconciler

    async def reconcile(self, leg: Leg, give_up: float | None = None, *,
                        close: bool = True) -> None:
        """Ask the venue about every order of the leg that may rest or whose outcome is
        unknown, by the ids the journal holds; cancel what rests; then (with ``close``)
        close the leg, since nothing of it rests. Retries with backoff until ``give_up``;
        what is still unknown then leaves the leg UNRESOLVED."""
        if leg.state.is_final:
            return
        venue = self.venues.get(leg.venue)
        if venue is None:  # that venue is not in this pipeline: the leg stays as it is
            return
        if give_up is None:
            give_up = self.clock() + self.execution.reconcile_timeout_ms / 1000
        adopt = getattr(venue, "adopt_order", None)
        attempt = 0
        span_cm = self.tracer.start_as_current_span(tm.SPAN_QUERY, attributes={
            tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index,
            tm.ORDER_CLIENT_ID: leg.current_client_order_id(), **self.server(venue)},
            kind=SpanKind.CLIENT) if leg.unknown else None
        span = span_cm.__enter__() if span_cm is not None else None
        try:
            while leg.resting:
                for ref in [r for r in leg.orders.values() if not r.done]:
                    if adopt is not None:
                        adopt(ref.request, ref.venue_order_id)
                    if ref.lost:
                        self.apply(leg, await self.calls.query(venue, ref))
                    if not ref.done and not ref.lost:  # known to rest: cancel it
                        self.apply(leg, await self.calls.cancel(venue, ref))
                if not leg.resting or self.clock() >= give_up:
                    break
                if span is not None:
                    span.add_event("query failed")
                await asyncio.sleep(backoff(attempt, self.rng))
                attempt += 1
            if close and not leg.resting:
                self.apply(leg, VenueOutcome(Trigger.CLOSED))
            if span is not None:
                span.set_attribute(tm.LEG_STATE, leg.state.value)
        finally:
            if span_cm is not None:
                span_cm.__exit__(None, None, None)

    async def reconcile_trade(self, trade: Trade, give_up: float) -> None:
        """Reconcile every leg of a trade in parallel, then commit, roll back, or leave it
        UNRESOLVED (recovery and background resolution)."""
        await asyncio.gather(*(self.reconcile(leg, give_up) for leg in trade.all_legs))
        await self.conclude(trade)

    async def recheck(self, trade: Trade) -> bool:
        """Ask the venue again about every order of a finished trade (a fill can be
        reversed on chain after the trade ended, even while no process ran). True if what
        the trade holds changed: the caller breaks and re-hedges it."""
        changed = False
        for leg in trade.all_legs:
            venue = self.venues.get(leg.venue)
            if venue is None:
                continue
            adopt = getattr(venue, "adopt_order", None)
            for ref in leg.orders.values():
                if adopt is not None:
                    adopt(ref.request, ref.venue_order_id)
                outcome = await self.calls.query(venue, ref)
                if outcome.trigger is Trigger.ACKED:
                    changed |= bool(self.apply(leg, outcome))
        return changed

    # ------------------------------------------------------------------ finalize / rollback

    async def conclude(self, trade: Trade) -> None:
        """The entry legs are final or unresolved: commit, roll back, or wait (UNRESOLVED)."""
        if any(leg.state is LegState.UNRESOLVED for leg in trade.all_legs):
            self._unresolved(trade, "leg outcome unknown after reconcile timeout")
            return
        if trade.state is TradeState.DETECTED:  # interrupted before preflight finished
            trade.reject_reason = "interrupted before preflight finished"
            trade.transition(TradeState.REJECTED)
            return
        if trade.state is TradeState.APPROVED:
            trade.transition(TradeState.EXECUTING)
        if all(leg.state is LegState.FILLED for leg in trade.legs) and not trade.unwind_legs \
                and not self.unhedged(trade) and trade.state is not TradeState.ROLLING_BACK:
            with self.tracer.start_as_current_span(tm.SPAN_FINALIZE, attributes={
                    tm.TRADE_ID: trade.id}) as span:
                trade.transition(TradeState.COMMITTED)
                span.set_attribute(tm.TRADE_HEDGED, tm.num(trade.hedged_size))
            return
        await self.rollback(trade)

    async def rollback(self, trade: Trade) -> None:
        """Cancel what rests (done per leg), then complete or unwind the unhedged part."""
        if trade.state is not TradeState.ROLLING_BACK:
            trade.transition(TradeState.ROLLING_BACK)
        with self.tracer.start_as_current_span(tm.SPAN_ROLLBACK, attributes={
            tm.TRADE_ID: trade.id,
        }) as span:
            await self.rehedge(trade)
            if any(leg.state is LegState.UNRESOLVED for leg in trade.all_legs):
                self._unresolved(trade, "rollback leg outcome unknown", span)
                return
            remaining = self.outstanding(trade)
            completed = any(leg.purpose == "complete" and leg.filled for leg in trade.unwind_legs)
            unwound = any(leg.purpose == "unwind" and leg.filled for leg in trade.unwind_legs)
            if not remaining and not self.shortfalls(trade) and not unwound and (
                    completed or all(leg.state is LegState.FILLED for leg in trade.legs)):
                trade.error = ""
                trade.transition(TradeState.COMMITTED)  # hedged after all
            else:  # the journal writes the error with the state: set it first
                trade.error = self.exposure_text(remaining) or self.why_short(trade)
                trade.transition(TradeState.ROLLED_BACK)
            if remaining:
                span.set_status(Status(StatusCode.ERROR, trade.error))
            span.set_attribute(tm.TRADE_STATE, trade.state.value)
            span.set_attribute(tm.TRADE_HEDGED, tm.num(trade.hedged_size))

    async def rehedge(self, trade: Trade) -> None:
        """Buy back what the trade is short, then complete (when the policy allows and it is
        cheaper) or unwind what is unhedged. Also what the background exposure worker runs,
        without touching the trade's state."""
        await self.cover_shorts(trade)
        if self.execution.rollback == "complete_or_unwind":
            await self.complete_if_cheaper(trade)
        await self.unwind_excess(trade)

    def exposure_text(self, remaining: Mapping[tuple[str, str], Decimal]) -> str:
        """``remaining`` is unhedged shares per instrument (negative: short)."""
        if not remaining:
            return ""
        dust = all(abs(qty) < self.min_size(*key) for key, qty in remaining.items())
        return ("dust below the minimum order size, still held: " if dust
                else "unwind incomplete, still held: ") + ", ".join(
            f"{inst} {qty}" for (_, inst), qty in sorted(remaining.items()))

    @staticmethod
    def why_short(trade: Trade) -> str:
        """Why a trade was rolled back: its entry legs that did not fill, and their errors."""
        short = [f"{leg.instrument} {leg.state.value} {leg.filled}/{leg.size}"
                 + (f" ({leg.error})" if leg.error else "")
                 for leg in trade.legs if leg.state is not LegState.FILLED]
        return "entry legs not filled: " + "; ".join(short) if short else ""

    def shorts(self, trade: Trade) -> dict[tuple[str, str], Decimal]:
        """Shares the trade sold beyond what it holds, per entry instrument. It happens when
        a fill is reversed on chain after an unwind sold those shares: the sale took shares
        that belong to other trades' hedges, so they must be bought back."""
        positions = trade.net_position()
        out = {}
        for leg in trade.legs:
            key = (leg.venue, leg.instrument)
            if positions.get(key, ZERO) <= -self.residual(leg):
                out[key] = -positions[key]
        return out

    def outstanding(self, trade: Trade) -> dict[tuple[str, str], Decimal]:
        """What is not hedged: excess shares (positive) and shorts (negative)."""
        return {**self.unhedged(trade), **{k: -q for k, q in self.shorts(trade).items()}}

    async def cover_shorts(self, trade: Trade) -> None:
        """Buy back every short entry instrument (FAK at the ask within the unwind slippage
        bound, chased until the unwind deadline)."""
        deadline = self.clock() + self.execution.unwind_deadline_ms / 1000
        slip = self.execution.unwind_slippage_ticks
        legs = []
        for (venue_id, instrument), qty in sorted(self.shorts(trade).items()):
            venue = self.venues.get(venue_id) if venue_id not in self.blocked else None
            book = venue.book(instrument) if venue is not None else None
            if book is None or not book.asks:
                continue
            entry = next(leg for leg in trade.legs if leg.instrument == instrument
                         and leg.venue == venue_id)
            price = min(book.asks[0].price + entry.tick_size * slip, ONE - entry.tick_size)
            legs.append(self._extra_leg(trade, entry, Side.BUY, qty, price,
                                        entry.target_price, "complete"))
        async with asyncio.TaskGroup() as tg:
            for leg in legs:
                tg.create_task(self._take(leg, deadline, floor=None))

    def _unresolved(self, trade: Trade, reason: str, span: trace.Span | None = None) -> None:
        trade.error = reason  # before the transition: the journal writes it with the state
        if trade.state is TradeState.EXECUTING:
            trade.transition(TradeState.ROLLING_BACK)
        if trade.state is not TradeState.UNRESOLVED:
            trade.transition(TradeState.UNRESOLVED)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, reason))
            span.set_attribute(tm.TRADE_STATE, trade.state.value)

    def unhedged(self, trade: Trade) -> dict[tuple[str, str], Decimal]:
        """Shares per entry instrument above the hedged size, ignoring sub-step dust."""
        hedged = trade.hedged_size
        positions = trade.net_position()
        out = {}
        for leg in trade.legs:
            excess = positions.get((leg.venue, leg.instrument), ZERO) - hedged
            if excess >= self.residual(leg):
                out[(leg.venue, leg.instrument)] = excess
        return out

    def holds_as_stated(self, trade: Trade) -> bool:
        """A final trade still holds what its state says: COMMITTED = every entry leg filled
        and hedged; ROLLED_BACK = nothing unhedged. A late or reversed fill can break that."""
        hedged = not self.unhedged(trade) and not self.shortfalls(trade)
        return hedged and (trade.state is TradeState.ROLLED_BACK
                           or all(leg.state is LegState.FILLED for leg in trade.legs))

    def exposed(self, trade: Trade) -> bool:
        """Unhedged shares at or above the minimum order size, or any short: exposure to
        work off."""
        return bool(self.shorts(trade)) or any(
            qty >= self.min_size(*key) for key, qty in self.unhedged(trade).items())

    def unwind_plan(self, trade: Trade) -> dict[tuple[str, str], Decimal]:
        """Shares to sell per entry instrument so every leg ends at one hedged level.

        An excess below the venue's minimum order size cannot be sold on its own; then the
        hedged level is lowered by one minimum size, so every sell is large enough and the
        legs still end equal (the cost: one extra round trip on a minimum size).
        """
        positions = trade.net_position()
        held = {(leg.venue, leg.instrument): positions.get((leg.venue, leg.instrument), ZERO)
                for leg in trade.legs}
        mins = {key: self.min_size(*key) for key in held}
        level = max(min(held.values(), default=ZERO), ZERO)
        step = max(mins.values(), default=ZERO)

        def stuck(h: Decimal) -> bool:
            return any(ZERO < q - h < mins[k] for k, q in held.items())

        while level > ZERO and step > ZERO and stuck(level):
            level = max(level - step, ZERO)
        return {k: q - level for k, q in held.items()
                if q - level >= self.residual_for(*k)}

    def shortfalls(self, trade: Trade) -> dict[int, Decimal]:
        """Per entry leg: shares missing to match the most-filled leg."""
        positions = trade.net_position()
        held = {leg.index: positions.get((leg.venue, leg.instrument), ZERO)
                for leg in trade.legs}
        target = max(held.values(), default=ZERO)
        return {i: target - q for i, q in held.items() if target - q > ZERO}

    async def complete_if_cheaper(self, trade: Trade) -> None:
        """Buy the missing shares when that beats selling the excess back (fees included)."""
        shortfalls = self.shortfalls(trade)
        if not shortfalls:
            return
        complete_cost = ZERO
        plans = []
        slip = self.execution.unwind_slippage_ticks
        for index, qty in shortfalls.items():
            entry = trade.legs[index]
            venue = self.venues.get(entry.venue) if entry.venue not in self.blocked else None
            book = venue.book(entry.instrument) if venue is not None else None
            if venue is None or book is None or not book.asks \
                    or qty < self.min_size(entry.venue, entry.instrument):
                return
            price = min(book.asks[0].price + entry.tick_size * slip, ONE - entry.tick_size)
            available = sum((lv.size for lv in book.asks if lv.price <= price), ZERO)
            if available < qty:
                return
            complete_cost += price * qty + venue.fee(entry.instrument, price, qty)
            plans.append((entry, qty, price))
        # Completing turns the excess into hedged sets worth the payout each; unwinding
        # sells it at the bid. Compare what each leaves us with.
        excess = max(shortfalls.values())
        complete_value = excess * trade.opportunity.payout - complete_cost
        unwind_value = ZERO
        for (vid, inst), qty in self.unhedged(trade).items():
            venue = self.venues.get(vid)
            book = venue.book(inst) if venue is not None else None
            if venue is None or book is None or not book.bids:
                unwind_value = Decimal(-10**9)  # no bid: unwinding is not possible now
                break
            bid = book.bids[0].price
            unwind_value += bid * qty - venue.fee(inst, bid, qty)
        if complete_value <= unwind_value:
            return
        deadline = self.clock() + self.execution.unwind_deadline_ms / 1000
        legs = [self._extra_leg(trade, entry, Side.BUY, qty, price, entry.target_price,
                                "complete") for entry, qty, price in plans]
        async with asyncio.TaskGroup() as tg:
            for leg in legs:
                tg.create_task(self._take(leg, deadline, floor=None))

    async def unwind_excess(self, trade: Trade) -> None:
        """Sell each leg's shares above the hedged size, chasing the bid within the loss cap."""
        deadline = self.clock() + self.execution.unwind_deadline_ms / 1000
        legs = []
        for (venue_id, instrument), excess in sorted(self.unwind_plan(trade).items()):
            if venue_id not in self.venues or venue_id in self.blocked:
                continue
            entry = next(leg for leg in trade.legs if leg.instrument == instrument
                         and leg.venue == venue_id)
            cost = entry.average_price or entry.target_price
            legs.append(self._extra_leg(trade, entry, Side.SELL, excess,
                                        max(cost - self.execution.max_unwind_loss, ZERO),
                                        cost, "unwind"))
        async with asyncio.TaskGroup() as tg:
            for leg in legs:
                tg.create_task(self._take(leg, deadline, floor=leg.limit_price))

    def _extra_leg(self, trade: Trade, entry: Leg, side: Side, size: Decimal, limit: Decimal,
                   target: Decimal, purpose: str) -> Leg:
        leg = self.observe(Leg(
            trade_id=trade.id, index=len(trade.legs) + len(trade.unwind_legs),
            venue=entry.venue, instrument=entry.instrument, side=side, size=size,
            limit_price=limit, target_price=target, tick_size=entry.tick_size,
            purpose=purpose))
        trade.unwind_legs.append(leg)
        return leg

    async def _take(self, leg: Leg, deadline: float, floor: Decimal | None) -> None:
        """Cross the spread for ``leg`` (FAK), chasing the book until filled or the deadline;
        a SELL never goes below ``floor`` (the loss cap)."""
        venue = self.venues[leg.venue]
        run = LegRun(self, leg, venue, deadline, self.execution.unwind_slippage_ticks)
        min_size = self.min_size(leg.venue, leg.instrument)
        slip = leg.tick_size * self.execution.unwind_slippage_ticks
        with self.tracer.start_as_current_span(tm.SPAN_WORK, attributes={
                tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index, tm.LEG_PURPOSE: leg.purpose}):
            while not leg.state.is_final and leg.state is not LegState.UNRESOLVED \
                    and self.clock() < deadline and leg.remaining >= min_size:
                book = venue.book(leg.instrument)
                if leg.side is Side.SELL:
                    if book is None or not book.bids:
                        break
                    if floor is not None and book.bids[0].price < floor:
                        break  # the loss cap: hold rather than dump
                    price = max(book.bids[0].price - slip, leg.tick_size)
                    if floor is not None:
                        price = max(price, quantize_up(floor, leg.tick_size))
                else:
                    if book is None or not book.asks:
                        break
                    price = min(book.asks[0].price + slip, leg.limit_price)
                size = quantize_down(leg.remaining, self.residual(leg))
                before = leg.filled
                await run.submit(price, size, TimeInForce.FAK)
                if leg.state is LegState.UNRESOLVED:
                    await self.reconcile(leg, close=False)  # learn what it did, go on
                if leg.filled == before and not leg.state.is_final:
                    await asyncio.sleep(self.poll_interval_s)  # let the book move
            await self.reconcile(leg)
            self._forget_run(leg)

    def _forget_run(self, leg: Leg) -> None:
        for cid in leg.orders:
            self._runs.pop(cid, None)


def quantize_up(value: Decimal, step: Decimal) -> Decimal:
    down = quantize_down(value, step)
    return down if down == value else down + step

