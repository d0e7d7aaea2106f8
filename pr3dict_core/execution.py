"""Executing one trade: every leg at once, then finalize (commit) or rollback.

The engine owns what must always hold (states, journal, spans, timing, reconciliation);
the execution strategy only decides prices and chasing through ``LegRun``. A leg whose
outcome is unknown becomes UNRESOLVED and is reconciled against the venue; it is never
assumed to have failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import telemetry as tm
from .components import (
    ExecutionStrategy,
    MalformedReply,
    OrderRejected,
    UnknownOrder,
    Venue,
    VenueError,
)
from .config import ExecutionSection
from .journal import Journal
from .model import (
    ONE,
    ZERO,
    Book,
    Leg,
    LegState,
    OrderAck,
    OrderRequest,
    OrderStatus,
    Side,
    TimeInForce,
    Trade,
    TradeState,
    quantize_down,
)

RETRY_BASE_S = 0.05
RETRY_MAX_S = 0.5
RETRY_ATTEMPTS = 3


def backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter: 50 ms doubling, capped at 500 ms."""
    return rng.uniform(RETRY_BASE_S, min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt))


def check_ack(ack: object, client_order_id: str, size: Decimal | None = None) -> OrderAck:
    """Refuse a reply that cannot be an honest answer about this order."""
    if not isinstance(ack, OrderAck):
        raise MalformedReply(f"expected an order acknowledgement, got {type(ack).__name__}")
    if ack.client_order_id != client_order_id:
        raise MalformedReply(f"reply is about order {ack.client_order_id!r}, "
                             f"not {client_order_id!r}")
    total = ZERO
    for fill in ack.fills:
        if not isinstance(fill.size, Decimal) or not isinstance(fill.price, Decimal) \
                or fill.size <= ZERO or not ZERO <= fill.price <= ONE:
            raise MalformedReply(f"bad fill {fill.fill_id!r}: {fill.size} @ {fill.price}")
        total += fill.size
    if size is not None and total > size:
        raise MalformedReply(f"fills of {total} exceed the order's size {size}")
    return ack


def apply_ack(leg: Leg, ack: OrderAck, residual: Decimal) -> bool:
    """Fold a venue's view of one of the leg's orders into the leg. True if it may rest.

    Fills are keyed by id, so duplicate and out-of-order acks never double-count; a final
    leg only ever gains fills (a late report), it never changes state again.
    """
    new = leg.add_fills(ack.fills)
    if leg.state.is_final:
        return False
    if leg.state is LegState.UNRESOLVED:
        leg.transition(LegState.PARTIALLY_FILLED if leg.filled > ZERO else LegState.SUBMITTED)
    filled = leg.filled
    if filled > ZERO and leg.size - filled < residual:
        leg.transition(LegState.FILLED)
        return False
    if ack.status is OrderStatus.REJECTED and filled == ZERO:
        leg.error = leg.error or ack.reason or "rejected"
        leg.transition(LegState.REJECTED)
        return False
    if new and filled > ZERO:
        leg.transition(LegState.PARTIALLY_FILLED)
    return ack.status is OrderStatus.OPEN


class LegRun:
    """What a strategy gets for one leg: submit / cancel / wait, with journal, spans, states."""

    def __init__(self, executor: TradeExecutor, leg: Leg, venue: Venue, deadline: float,
                 max_slippage_ticks: int):
        self.executor = executor
        self.leg = leg
        self.venue = venue
        self.deadline = deadline
        self.max_slippage_ticks = max_slippage_ticks
        self.resting = False  # an order of this leg may be resting at the venue
        self.changed = asyncio.Event()
        # Entry legs end REJECTED when their order is refused; unwind and completion legs
        # try again with a new order until their deadline instead.
        self.final_on_reject = leg.purpose == "entry"

    def book(self) -> Book | None:
        return self.venue.book(self.leg.instrument)

    @property
    def residual(self) -> Decimal:
        return self.executor.residual(self.leg)

    def on_ack(self, ack: OrderAck) -> None:
        """An order update for this leg (pushed by the venue, or the answer to a query)."""
        self.resting = apply_ack(self.leg, ack, self.residual)
        self.changed.set()

    async def submit(self, leg: Leg, request: OrderRequest) -> OrderAck | None:
        """Send one order for ``leg``; never raises a venue error (it lands on the leg)."""
        ex = self.executor
        with ex.tracer.start_as_current_span(tm.SPAN_SUBMIT, attributes={
            tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index, tm.LEG_VENUE: leg.venue,
            tm.LEG_INSTRUMENT: leg.instrument, tm.LEG_SIDE: leg.side.value,
            tm.LEG_PURPOSE: leg.purpose, tm.ORDER_CLIENT_ID: request.client_order_id,
            tm.ORDER_PRICE: str(request.price), tm.ORDER_SIZE: str(request.size),
            tm.ORDER_TIF: request.time_in_force.value,
        }, record_exception=False, set_status_on_exception=False) as span:
            if leg.state is LegState.PENDING:
                leg.transition(LegState.SUBMITTED)
            if ex.journal is not None:
                await ex.journal.order_intent(leg, request)  # durable before the wire
            ex.track(request.client_order_id, self)
            for attempt in range(RETRY_ATTEMPTS + 1):
                if leg.submitted_at is None:
                    leg.submitted_at = time.perf_counter()
                try:
                    ack = check_ack(await asyncio.wait_for(self.venue.place_order(request),
                                                           ex.order_timeout_s),
                                    request.client_order_id, request.size)
                except VenueError as exc:
                    # Retried only when nothing happened at the venue; the client order id
                    # makes the resend idempotent anyway.
                    if exc.retryable and attempt < RETRY_ATTEMPTS:
                        delay = backoff(attempt, ex.rng)
                        if time.perf_counter() + delay < self.deadline:
                            span.add_event("retry", {tm.ERROR_TYPE: type(exc).__name__})
                            await asyncio.sleep(delay)
                            continue
                    self._fail(span, leg, exc)
                    return None
                except Exception as exc:  # timeout, malformed reply, connector bug: unknown
                    self._fail(span, leg, exc)
                    return None
                break
            self.on_ack(ack)
            span.set_attribute(tm.ORDER_STATUS, ack.status.value)
            span.set_attribute(tm.LEG_FILLED, str(leg.filled))
            span.set_attribute(tm.LEG_STATE, leg.state.value)
            return ack

    def _fail(self, span: trace.Span, leg: Leg, exc: BaseException) -> None:
        span.record_exception(exc)
        span.set_attribute(tm.ERROR_TYPE, type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        leg.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OrderRejected) or (isinstance(exc, VenueError) and exc.retryable):
            # Definitive: this order is not at the venue. Earlier attempts' fills stay.
            self.resting = False
            if leg.state is LegState.UNRESOLVED:
                leg.transition(LegState.PARTIALLY_FILLED if leg.filled else LegState.SUBMITTED)
            if leg.filled == ZERO and not leg.state.is_final and self.final_on_reject:
                leg.transition(LegState.REJECTED)
        else:
            # Timeout after send, 5xx, dropped connection, malformed reply: we do not know.
            self.resting = True
            if leg.state is not LegState.UNRESOLVED and not leg.state.is_final:
                leg.transition(LegState.UNRESOLVED)
        span.set_attribute(tm.LEG_STATE, leg.state.value)

    async def cancel(self, leg: Leg) -> OrderAck | None:
        """Cancel what rests of the leg's current order and fold in its final fills."""
        ex = self.executor
        cid = leg.current_client_order_id()
        with ex.tracer.start_as_current_span(tm.SPAN_CANCEL, attributes={
            tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index, tm.ORDER_CLIENT_ID: cid,
        }, record_exception=False, set_status_on_exception=False) as span:
            for attempt in range(RETRY_ATTEMPTS + 1):  # a cancel is idempotent: retry
                try:
                    ack = check_ack(await asyncio.wait_for(self.venue.cancel_order(cid),
                                                           ex.order_timeout_s), cid)
                    break
                except UnknownOrder:
                    self.resting = False
                    return None
                except Exception as exc:
                    if attempt < RETRY_ATTEMPTS:
                        span.add_event("retry", {tm.ERROR_TYPE: type(exc).__name__})
                        await asyncio.sleep(backoff(attempt, ex.rng))
                        continue
                    span.record_exception(exc)
                    span.set_attribute(tm.ERROR_TYPE, type(exc).__name__)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    if not leg.state.is_final and leg.state is not LegState.UNRESOLVED:
                        leg.transition(LegState.UNRESOLVED)
                    return None
            self.on_ack(ack)
            self.resting = False if ack.status is not OrderStatus.OPEN else self.resting
            span.set_attribute(tm.ORDER_STATUS, ack.status.value)
            return ack

    async def refresh(self, leg: Leg) -> OrderAck | None:
        """Ask the venue for the leg's current order (fills that came while it rested)."""
        cid = leg.current_client_order_id()
        try:
            ack = check_ack(await asyncio.wait_for(self.venue.get_order(cid),
                                                   self.executor.order_timeout_s), cid)
        except Exception:
            return None
        self.on_ack(ack)
        return ack

    async def wait(self, until: float) -> None:
        """Wait for the leg to change or until ``until`` (perf_counter); polls venues that
        do not push order updates every ``poll_interval_ms``."""
        pushes = self.executor.pushes.get(self.leg.venue, False)
        while not self.leg.state.is_final and time.perf_counter() < until:
            self.changed.clear()
            step = until - time.perf_counter()
            if not pushes:
                step = min(step, self.executor.poll_interval_s)
            try:
                await asyncio.wait_for(self.changed.wait(), max(step, 0))
                return
            except TimeoutError:
                if not pushes and self.resting:
                    await self.refresh(self.leg)
                    if self.changed.is_set():
                        return


class TradeExecutor:
    """Runs approved trades: parallel entry legs, then commit or rollback."""

    def __init__(self, venues: Mapping[str, Venue], strategy: ExecutionStrategy,
                 execution: ExecutionSection, tracer: trace.Tracer, *,
                 journal: Journal | None = None, seed: int | None = None):
        self.venues = venues
        self.strategy = strategy
        self.execution = execution
        self.tracer = tracer
        self.journal = journal
        self.order_timeout_s = execution.order_timeout_ms / 1000
        self.poll_interval_s = execution.poll_interval_ms / 1000
        self.rng = random.Random(seed)
        self._steps: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        self._runs: dict[str, LegRun] = {}  # client order id -> run, for pushed updates
        self.pushes: dict[str, bool] = {}
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
        return self._steps.get((leg.venue, leg.instrument), (Decimal("0.01"), ZERO))[0]

    def min_size(self, venue: str, instrument: str) -> Decimal:
        return self._steps.get((venue, instrument), (ZERO, ZERO))[1]

    def track(self, client_order_id: str, run: LegRun) -> None:
        self._runs[client_order_id] = run

    def on_order_update(self, ack: OrderAck) -> None:
        """A pushed order update: routed to its leg by client order id. A malformed push is
        dropped (the next query or push tells the truth); it never reaches the leg."""
        run = self._runs.get(getattr(ack, "client_order_id", ""))
        if run is None:
            return
        try:
            run.on_ack(check_ack(ack, ack.client_order_id))
        except MalformedReply as exc:
            trace.get_current_span().add_event("malformed order update", {
                tm.ERROR_TYPE: type(exc).__name__})

    def observe(self, leg: Leg) -> Leg:
        if self.journal is not None:
            leg.observer = self.journal.leg_transition
            self.journal.leg_created(leg)
        return leg

    def resting_runs(self) -> list[LegRun]:
        return [run for run in self._runs.values() if run.resting]

    async def cancel_resting(self) -> None:
        """The kill switch: cancel every order of ours that may rest, whatever its trade."""
        runs = self.resting_runs()
        await asyncio.gather(*(run.cancel(run.leg) for run in runs), return_exceptions=True)

    # ------------------------------------------------------------------ entry

    async def execute(self, trade: Trade) -> Trade:
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
        deadline = time.perf_counter() + self.execution.deadline_ms / 1000
        slippage = int(getattr(self.strategy, "max_slippage_ticks", 0))
        with self.tracer.start_as_current_span(tm.SPAN_EXECUTE, attributes={
            tm.TRADE_ID: trade.id, tm.STRATEGY: trade.strategy,
        }):
            runs = [LegRun(self, leg, self.venues[leg.venue], deadline, slippage)
                    for leg in trade.legs]
            async with asyncio.TaskGroup() as tg:
                for run in runs:
                    tg.create_task(self._run_leg(run))
            sent = [leg.submitted_at for leg in trade.legs if leg.submitted_at is not None]
            trade.on_wire_at = max(sent) if sent else None
        await self.settle(trade)
        trade.finished_at = time.perf_counter()
        self._forget(trade)
        return trade

    async def settle(self, trade: Trade) -> None:
        """Entry legs are final (or unresolved): commit, or roll back."""
        if all(leg.state is LegState.FILLED for leg in trade.legs):
            with self.tracer.start_as_current_span(tm.SPAN_FINALIZE, attributes={
                    tm.TRADE_ID: trade.id}) as span:
                trade.transition(TradeState.COMMITTED)
                span.set_attribute(tm.TRADE_HEDGED, str(trade.hedged_size))
        else:
            await self.rollback(trade)

    def _forget(self, trade: Trade) -> None:
        for cid in [c for c, run in self._runs.items() if run.leg.trade_id == trade.id
                    and not run.resting]:
            del self._runs[cid]

    async def _run_leg(self, run: LegRun) -> None:
        """Let the strategy work the leg, then leave it final or UNRESOLVED, nothing resting."""
        leg = run.leg
        try:
            await self.strategy.execute_leg(leg, run)  # type: ignore[arg-type]
        except Exception as exc:  # a plugin bug must not take the trade's other legs down
            trace.get_current_span().record_exception(exc)
            leg.error = f"{type(exc).__name__}: {exc}"
            if leg.state is LegState.PENDING:
                leg.transition(LegState.REJECTED)
        await self.finish_leg(run)

    async def finish_leg(self, run: LegRun) -> None:
        leg = run.leg
        if run.resting and leg.state is not LegState.UNRESOLVED and not leg.state.is_final:
            await run.cancel(leg)
        if leg.state is LegState.UNRESOLVED:
            await self.reconcile(run)
        self._close_leg(leg)
        leg.finished_at = time.perf_counter()

    def _close_leg(self, leg: Leg) -> None:
        """Nothing rests any more: whatever is not FILLED ends CANCELLED (or stays UNRESOLVED)."""
        if leg.state in (LegState.SUBMITTED, LegState.PARTIALLY_FILLED):
            if leg.filled > ZERO and leg.size - leg.filled < self.residual(leg):
                leg.transition(LegState.FILLED)
            else:
                leg.transition(LegState.CANCELLED)

    async def reconcile(self, run: LegRun, timeout_s: float | None = None) -> None:
        """Query the venue by client order id with backoff until the leg's outcome is known."""
        leg = run.leg
        timeout_s = self.execution.reconcile_timeout_ms / 1000 if timeout_s is None else timeout_s
        give_up = time.perf_counter() + timeout_s
        attempt = 0
        with self.tracer.start_as_current_span(tm.SPAN_QUERY, attributes={
            tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index,
            tm.ORDER_CLIENT_ID: leg.current_client_order_id(),
        }) as span:
            while leg.state is LegState.UNRESOLVED:
                cid = leg.current_client_order_id()
                try:
                    ack = check_ack(await asyncio.wait_for(run.venue.get_order(cid),
                                                           self.order_timeout_s), cid)
                except UnknownOrder:
                    # The venue never saw it: nothing rests, nothing filled on this attempt.
                    run.resting = False
                    leg.transition(LegState.PARTIALLY_FILLED if leg.filled > ZERO
                                   else LegState.REJECTED)
                    break
                except Exception as exc:
                    span.add_event("query failed", {tm.ERROR_TYPE: type(exc).__name__})
                    if time.perf_counter() >= give_up:
                        break
                    await asyncio.sleep(backoff(attempt, self.rng))
                    attempt += 1
                    continue
                run.on_ack(ack)
                if run.resting:
                    await run.cancel(leg)
            span.set_attribute(tm.LEG_STATE, leg.state.value)

    # ------------------------------------------------------------------ rollback

    async def rollback(self, trade: Trade) -> None:
        """Cancel what rests (done per leg), then complete or unwind the unhedged part."""
        if trade.state is not TradeState.ROLLING_BACK:
            trade.transition(TradeState.ROLLING_BACK)
        with self.tracer.start_as_current_span(tm.SPAN_ROLLBACK, attributes={
            tm.TRADE_ID: trade.id,
        }) as span:
            if any(leg.state is LegState.UNRESOLVED for leg in trade.all_legs):
                self._unresolved(trade, span, "leg outcome unknown after reconcile timeout")
                return
            if self.execution.rollback == "complete_or_unwind":
                await self.complete_if_cheaper(trade)
            await self.unwind_excess(trade)
            if any(leg.state is LegState.UNRESOLVED for leg in trade.all_legs):
                self._unresolved(trade, span, "rollback leg outcome unknown")
                return
            remaining = self.unhedged(trade)
            completed = any(leg.purpose == "complete" and leg.filled for leg in trade.unwind_legs)
            if completed and not remaining and not self._shortfalls(trade) \
                    and not any(leg.purpose == "unwind" and leg.filled
                                for leg in trade.unwind_legs):
                trade.transition(TradeState.COMMITTED)  # completion hedged everything
            else:
                trade.transition(TradeState.ROLLED_BACK)
            if remaining:
                dust = all(qty < self.min_size(*key) for key, qty in remaining.items())
                trade.error = ("dust below the minimum order size, still held: " if dust
                               else "unwind incomplete, still held: ") + ", ".join(
                    f"{inst} {qty}" for (_, inst), qty in sorted(remaining.items()))
                span.set_status(Status(StatusCode.ERROR, trade.error))
            span.set_attribute(tm.TRADE_STATE, trade.state.value)
            span.set_attribute(tm.TRADE_HEDGED, str(trade.hedged_size))

    def _unresolved(self, trade: Trade, span: trace.Span, reason: str) -> None:
        trade.error = reason
        trade.transition(TradeState.UNRESOLVED)
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

    def residual_for(self, venue: str, instrument: str) -> Decimal:
        return self._steps.get((venue, instrument), (Decimal("0.01"), ZERO))[0]

    def _shortfalls(self, trade: Trade) -> dict[int, Decimal]:
        """Per entry leg: shares missing to match the most-filled leg."""
        positions = trade.net_position()
        held = {leg.index: positions.get((leg.venue, leg.instrument), ZERO)
                for leg in trade.legs}
        target = max(held.values(), default=ZERO)
        return {i: target - q for i, q in held.items() if target - q > ZERO}

    async def complete_if_cheaper(self, trade: Trade) -> None:
        """Buy the missing shares when that beats selling the excess back (fees included)."""
        shortfalls = self._shortfalls(trade)
        if not shortfalls:
            return
        complete_cost = ZERO
        plans = []
        slip = self.execution.unwind_slippage_ticks
        for index, qty in shortfalls.items():
            entry = trade.legs[index]
            venue = self.venues[entry.venue]
            book = venue.book(entry.instrument)
            if book is None or not book.asks or qty < self.min_size(entry.venue, entry.instrument):
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
            book = self.venues[vid].book(inst)
            if book is None or not book.bids:
                unwind_value = Decimal(-10**9)  # no bid: unwinding is not possible now
                break
            bid = book.bids[0].price
            unwind_value += bid * qty - self.venues[vid].fee(inst, bid, qty)
        if complete_value <= unwind_value:
            return
        deadline = time.perf_counter() + self.execution.unwind_deadline_ms / 1000
        legs = []
        for entry, qty, price in plans:
            leg = self.observe(Leg(
                trade_id=trade.id, index=len(trade.legs) + len(trade.unwind_legs),
                venue=entry.venue, instrument=entry.instrument, side=Side.BUY, size=qty,
                limit_price=price, target_price=entry.target_price, tick_size=entry.tick_size,
                purpose="complete"))
            trade.unwind_legs.append(leg)
            legs.append(leg)
        async with asyncio.TaskGroup() as tg:
            for leg in legs:
                tg.create_task(self._take(leg, deadline, floor=None))

    async def unwind_excess(self, trade: Trade) -> None:
        """Sell each leg's shares above the hedged size, chasing the bid within the loss cap."""
        deadline = time.perf_counter() + self.execution.unwind_deadline_ms / 1000
        legs = []
        for (venue_id, instrument), excess in sorted(self.unwind_plan(trade).items()):
            entry = next(leg for leg in trade.legs if leg.instrument == instrument
                         and leg.venue == venue_id)
            cost = entry.average_price or entry.target_price
            leg = self.observe(Leg(
                trade_id=trade.id, index=len(trade.legs) + len(trade.unwind_legs),
                venue=venue_id, instrument=instrument, side=Side.SELL, size=excess,
                limit_price=max(cost - self.execution.max_unwind_loss, ZERO),
                target_price=cost, tick_size=entry.tick_size, purpose="unwind"))
            trade.unwind_legs.append(leg)
            legs.append(leg)
        async with asyncio.TaskGroup() as tg:
            for leg in legs:
                tg.create_task(self._take(leg, deadline, floor=leg.limit_price))

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
                    and time.perf_counter() < deadline and leg.remaining >= min_size:
                book = venue.book(leg.instrument)
                if leg.side is Side.SELL:
                    if book is None or not book.bids:
                        break
                    price = max(book.bids[0].price - slip, leg.tick_size)
                    if floor is not None:
                        price = max(price, quantize_up(floor, leg.tick_size))
                    if floor is not None and book.bids[0].price < floor:
                        break  # the loss cap: hold rather than dump
                else:
                    if book is None or not book.asks:
                        break
                    price = min(book.asks[0].price + slip, leg.limit_price)
                size = quantize_down(leg.remaining, self.residual(leg))
                request = OrderRequest(leg.next_client_order_id(), leg.venue, leg.instrument,
                                       leg.side, price, size, TimeInForce.FAK)
                before = leg.filled
                await run.submit(leg, request)
                if leg.state is LegState.UNRESOLVED:
                    await self.reconcile(run)
                if leg.filled == before and not leg.state.is_final:
                    await asyncio.sleep(self.poll_interval_s)  # let the book move
            await self.finish_leg(run)


def quantize_up(value: Decimal, step: Decimal) -> Decimal:
    down = quantize_down(value, step)
    return down if down == value else down + step
