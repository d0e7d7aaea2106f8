"""Executing one trade: every leg at once, then finalize (commit) or rollback.

The engine owns what must always hold (states, spans, timing, reconciliation); the
execution strategy only decides prices and chasing through ``LegRun.submit``/``cancel``.
A leg whose outcome is unknown becomes UNRESOLVED and is reconciled against the venue;
it is never assumed to have failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import telemetry as tm
from .components import (
    AmbiguousOutcome,
    ExecutionStrategy,
    OrderRejected,
    UnknownOrder,
    Venue,
    VenueError,
)
from .config import ExecutionSection
from .model import (
    ZERO,
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
    """Exponential backoff with full jitter, 50 ms doubling up to 500 ms."""
    return rng.uniform(RETRY_BASE_S, min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt))


def apply_ack(leg: Leg, ack: OrderAck, residual: Decimal) -> bool:
    """Fold a venue's view of the leg's current order into the leg. True if it may rest."""
    leg.add_fills(ack.fills)
    filled = leg.filled
    if leg.state is LegState.UNRESOLVED:
        leg.transition(LegState.SUBMITTED)  # the venue answered: we know again
    if filled > ZERO and leg.size - filled < residual:
        if leg.state is not LegState.FILLED:
            leg.transition(LegState.FILLED)
        return False
    if ack.status is OrderStatus.REJECTED and filled == ZERO and leg.state is LegState.SUBMITTED:
        leg.error = leg.error or ack.reason or "rejected"
        leg.transition(LegState.REJECTED)
        return False
    if filled > ZERO and leg.state in (LegState.SUBMITTED, LegState.PARTIALLY_FILLED):
        leg.transition(LegState.PARTIALLY_FILLED)
    return ack.status is OrderStatus.OPEN


class LegRun:
    """The context a strategy gets for one leg: submit/cancel/refresh with spans and states."""

    def __init__(self, executor: TradeExecutor, leg: Leg, venue: Venue, deadline: float,
                 max_slippage_ticks: int):
        self.executor = executor
        self.leg = leg
        self.venue = venue
        self.deadline = deadline
        self.max_slippage_ticks = max_slippage_ticks
        self.resting = False  # an order of this leg may be resting at the venue

    def book(self):  # type: ignore[no-untyped-def]
        return self.venue.book(self.leg.instrument)

    @property
    def residual(self) -> Decimal:
        return self.executor.residual(self.leg)

    async def submit(self, leg: Leg, request: OrderRequest) -> OrderAck | None:
        """Send one order for ``leg``; never raises a venue error (it lands on the leg)."""
        ex = self.executor
        with ex.tracer.start_as_current_span(tm.SPAN_SUBMIT, attributes={
            tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index, tm.LEG_VENUE: leg.venue,
            tm.LEG_INSTRUMENT: leg.instrument, tm.LEG_SIDE: str(leg.side),
            tm.LEG_PURPOSE: leg.purpose, tm.ORDER_CLIENT_ID: request.client_order_id,
            tm.ORDER_PRICE: str(request.price), tm.ORDER_SIZE: str(request.size),
            tm.ORDER_TIF: str(request.time_in_force),
        }, record_exception=False, set_status_on_exception=False) as span:
            if leg.state is LegState.PENDING:
                leg.transition(LegState.SUBMITTED)
            for attempt in range(RETRY_ATTEMPTS + 1):
                now = time.perf_counter()
                if leg.submitted_at is None:
                    leg.submitted_at = now
                try:
                    ack = await asyncio.wait_for(self.venue.place_order(request),
                                                 ex.order_timeout_s)
                except VenueError as exc:
                    if exc.retryable and attempt < RETRY_ATTEMPTS:
                        delay = backoff(attempt, ex.rng)
                        if time.perf_counter() + delay < self.deadline:
                            span.add_event("retry", {"error.type": type(exc).__name__})
                            await asyncio.sleep(delay)
                            continue
                    self._fail(span, leg, exc)
                    return None
                except (asyncio.TimeoutError, Exception) as exc:  # outcome unknown
                    self._fail(span, leg, exc)
                    return None
                break
            self.resting = apply_ack(leg, ack, self.residual)
            span.set_attribute(tm.ORDER_STATUS, str(ack.status))
            span.set_attribute(tm.LEG_FILLED, str(leg.filled))
            span.set_attribute(tm.LEG_STATE, str(leg.state))
            return ack

    def _fail(self, span: trace.Span, leg: Leg, exc: BaseException) -> None:
        span.record_exception(exc)
        span.set_attribute(tm.ERROR_TYPE, type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        leg.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OrderRejected) or (isinstance(exc, VenueError) and exc.retryable):
            # Definitive: the order is not at the venue. Earlier fills (other attempts) stay.
            if leg.state is LegState.SUBMITTED and leg.filled == ZERO:
                leg.transition(LegState.REJECTED)
            self.resting = False
        else:
            # AmbiguousOutcome, timeout, malformed reply, a connector bug: we do not know.
            if leg.state is not LegState.UNRESOLVED:
                leg.transition(LegState.UNRESOLVED)
            self.resting = True
        span.set_attribute(tm.LEG_STATE, str(leg.state))

    async def cancel(self, leg: Leg) -> OrderAck | None:
        """Cancel what rests of the leg's current order and fold in its final fills."""
        ex = self.executor
        with ex.tracer.start_as_current_span(tm.SPAN_CANCEL, attributes={
            tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index,
            tm.ORDER_CLIENT_ID: leg.current_client_order_id(),
        }, record_exception=False, set_status_on_exception=False) as span:
            try:
                ack = await asyncio.wait_for(
                    self.venue.cancel_order(leg.current_client_order_id()), ex.order_timeout_s)
            except Exception as exc:
                span.record_exception(exc)
                span.set_attribute(tm.ERROR_TYPE, type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                if leg.state is not LegState.UNRESOLVED and not leg.state.is_final:
                    leg.transition(LegState.UNRESOLVED)
                return None
            self.resting = apply_ack(leg, ack, self.residual)
            span.set_attribute(tm.ORDER_STATUS, str(ack.status))
            return ack

    async def refresh(self, leg: Leg) -> OrderAck | None:
        """Ask the venue for the leg's current order (fills that arrived while resting)."""
        try:
            ack = await asyncio.wait_for(self.venue.get_order(leg.current_client_order_id()),
                                         self.executor.order_timeout_s)
        except Exception:
            return None
        self.resting = apply_ack(leg, ack, self.residual)
        return ack


class TradeExecutor:
    """Runs approved trades: parallel entry legs, then commit or rollback."""

    def __init__(self, venues: Mapping[str, Venue], strategy: ExecutionStrategy,
                 execution: ExecutionSection, tracer: trace.Tracer, *, seed: int | None = None):
        self.venues = venues
        self.strategy = strategy
        self.execution = execution
        self.tracer = tracer
        self.order_timeout_s = max(execution.deadline_ms / 1000 * 20, 1.0)
        self.rng = random.Random(seed)
        self._size_steps: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        for vid, venue in venues.items():
            for m in venue.markets():
                for inst in (m.yes, m.no):
                    self._size_steps[(vid, inst)] = (m.size_step, m.min_size)

    def residual(self, leg: Leg) -> Decimal:
        """Below one size step a remainder cannot be traded: it snaps the leg to final."""
        return self._size_steps.get((leg.venue, leg.instrument), (Decimal("0.01"), ZERO))[0]

    def min_size(self, venue: str, instrument: str) -> Decimal:
        return self._size_steps.get((venue, instrument), (ZERO, ZERO))[1]

    # ------------------------------------------------------------------ entry

    async def execute(self, trade: Trade) -> Trade:
        trade.transition(TradeState.EXECUTING)
        opp = trade.opportunity
        trade.legs = [
            Leg(trade_id=trade.id, index=i, venue=spec.venue, instrument=spec.instrument,
                side=spec.side, size=opp.size, limit_price=spec.price,
                target_price=spec.best_price if spec.best_price is not None else spec.price,
                tick_size=spec.tick_size)
            for i, spec in enumerate(opp.legs)
        ]
        deadline = time.perf_counter() + self.execution.deadline_ms / 1000
        with self.tracer.start_as_current_span(tm.SPAN_EXECUTE, attributes={
            tm.TRADE_ID: trade.id, tm.STRATEGY: trade.strategy,
        }) as span:
            runs = [LegRun(self, leg, self.venues[leg.venue], deadline,
                           self._slippage_ticks()) for leg in trade.legs]
            async with asyncio.TaskGroup() as tg:
                for run in runs:
                    tg.create_task(self._run_leg(run, self.strategy))
            sent = [leg.submitted_at for leg in trade.legs if leg.submitted_at is not None]
            trade.on_wire_at = max(sent) if sent else None
            span.set_attribute(tm.TRADE_STATE, str(trade.state))
        if all(leg.state is LegState.FILLED for leg in trade.legs):
            await self._finalize(trade)
        else:
            await self._rollback(trade)
        trade.finished_at = time.perf_counter()
        return trade

    def _slippage_ticks(self) -> int:
        return int(getattr(self.strategy, "max_slippage_ticks", 0))

    async def _run_leg(self, run: LegRun, strategy: ExecutionStrategy) -> None:
        """Let the strategy work the leg, then leave it final or UNRESOLVED, nothing resting."""
        leg = run.leg
        try:
            await strategy.execute_leg(leg, run)  # type: ignore[arg-type]
        except Exception as exc:  # a plugin bug must not take the trade's other legs down
            span = trace.get_current_span()
            span.record_exception(exc)
            leg.error = f"{type(exc).__name__}: {exc}"
            if leg.state is LegState.PENDING:
                leg.transition(LegState.REJECTED)
        if run.resting and leg.state is not LegState.UNRESOLVED and not leg.state.is_final:
            await run.cancel(leg)
        if leg.state is LegState.UNRESOLVED:
            await self.reconcile(run)
        self._close_leg(leg)
        leg.finished_at = time.perf_counter()

    def _close_leg(self, leg: Leg) -> None:
        """Nothing rests any more: whatever is not FILLED ends CANCELLED (or stays UNRESOLVED)."""
        if leg.state in (LegState.SUBMITTED, LegState.PARTIALLY_FILLED):
            if leg.size - leg.filled < self.residual(leg) and leg.filled > ZERO:
                leg.transition(LegState.FILLED)
            else:
                leg.transition(LegState.CANCELLED)

    async def reconcile(self, run: LegRun) -> None:
        """Query the venue by client order id with backoff until the leg's outcome is known."""
        leg = run.leg
        give_up = time.perf_counter() + self.execution.reconcile_timeout_ms / 1000
        attempt = 0
        with self.tracer.start_as_current_span(tm.SPAN_QUERY, attributes={
            tm.TRADE_ID: leg.trade_id, tm.LEG_INDEX: leg.index,
            tm.ORDER_CLIENT_ID: leg.current_client_order_id(),
        }) as span:
            while leg.state is LegState.UNRESOLVED:
                try:
                    ack = await asyncio.wait_for(
                        run.venue.get_order(leg.current_client_order_id()), self.order_timeout_s)
                except UnknownOrder:
                    # The venue never saw it: nothing rests, nothing filled on this attempt.
                    leg.transition(LegState.REJECTED if leg.filled == ZERO
                                   else LegState.CANCELLED)
                    run.resting = False
                    break
                except Exception as exc:
                    span.add_event("query failed", {tm.ERROR_TYPE: type(exc).__name__})
                    if time.perf_counter() >= give_up:
                        break
                    await asyncio.sleep(backoff(attempt, self.rng))
                    attempt += 1
                    continue
                run.resting = apply_ack(leg, ack, run.residual)
                if run.resting:
                    await run.cancel(leg)
            span.set_attribute(tm.LEG_STATE, str(leg.state))

    # ------------------------------------------------------------------ finalize / rollback

    async def _finalize(self, trade: Trade) -> None:
        with self.tracer.start_as_current_span(tm.SPAN_FINALIZE, attributes={
            tm.TRADE_ID: trade.id,
        }) as span:
            trade.transition(TradeState.COMMITTED)
            span.set_attribute(tm.TRADE_HEDGED, str(trade.hedged_size))

    async def _rollback(self, trade: Trade) -> None:
        """Cancel what rests (done per leg), then unwind the unhedged excess of each leg."""
        trade.transition(TradeState.ROLLING_BACK)
        with self.tracer.start_as_current_span(tm.SPAN_ROLLBACK, attributes={
            tm.TRADE_ID: trade.id,
        }) as span:
            if any(leg.state is LegState.UNRESOLVED for leg in trade.legs):
                trade.transition(TradeState.UNRESOLVED)
                trade.error = "leg outcome unknown after reconcile timeout"
                span.set_status(Status(StatusCode.ERROR, trade.error))
                return
            await self.unwind_excess(trade)
            remaining = self.unhedged(trade)
            if any(leg.state is LegState.UNRESOLVED for leg in trade.unwind_legs):
                trade.transition(TradeState.UNRESOLVED)
                trade.error = "unwind leg outcome unknown"
            else:
                trade.transition(TradeState.ROLLED_BACK)
                if remaining:
                    trade.error = "unwind incomplete: " + ", ".join(
                        f"{inst} {qty}" for (_, inst), qty in remaining.items())
            span.set_attribute(tm.TRADE_STATE, str(trade.state))
            span.set_attribute(tm.TRADE_HEDGED, str(trade.hedged_size))
            if trade.error:
                span.set_status(Status(StatusCode.ERROR, trade.error))

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

    async def unwind_excess(self, trade: Trade) -> None:
        """Sell each leg's shares above the hedged size, chasing the bid within a loss cap."""
        deadline = time.perf_counter() + self.execution.unwind_deadline_ms / 1000
        tasks = []
        for (venue_id, instrument), excess in self.unhedged(trade).items():
            entry = next(leg for leg in trade.legs if leg.instrument == instrument)
            leg = Leg(trade_id=trade.id, index=len(trade.legs) + len(trade.unwind_legs),
                      venue=venue_id, instrument=instrument, side=Side.SELL, size=excess,
                      limit_price=ZERO, target_price=entry.average_price or entry.target_price,
                      tick_size=entry.tick_size, purpose="unwind")
            trade.unwind_legs.append(leg)
            tasks.append(self._unwind_leg(leg, deadline))
        async with asyncio.TaskGroup() as tg:
            for t in tasks:
                tg.create_task(t)

    async def _unwind_leg(self, leg: Leg, deadline: float) -> None:
        venue = self.venues[leg.venue]
        run = LegRun(self, leg, venue, deadline, self.execution.unwind_slippage_ticks)
        min_size = self.min_size(leg.venue, leg.instrument)
        while not leg.state.is_final and leg.state is not LegState.UNRESOLVED \
                and time.perf_counter() < deadline:
            book = venue.book(leg.instrument)
            if book is None or book.best_bid is None or leg.remaining < min_size:
                break
            floor = book.best_bid.price - leg.tick_size * self.execution.unwind_slippage_ticks
            price = max(floor, leg.tick_size)
            size = quantize_down(leg.remaining, self.residual(leg))
            request = OrderRequest(leg.next_client_order_id(), leg.venue, leg.instrument,
                                   Side.SELL, price, size, TimeInForce.FAK)
            ack = await run.submit(leg, request)
            if ack is None and leg.state is not LegState.UNRESOLVED:
                break
            if leg.state is LegState.UNRESOLVED:
                await self.reconcile(run)
            if leg.remaining >= self.residual(leg) and not leg.state.is_final:
                await asyncio.sleep(0.001)  # let the book move before chasing again
        if leg.state is LegState.UNRESOLVED:
            await self.reconcile(run)
        self._close_leg(leg)
        leg.finished_at = time.perf_counter()


def entry_legs_final(trade: Trade) -> bool:
    return all(leg.state.is_final for leg in trade.legs)


def describe_positions(trades: Sequence[Trade]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for t in trades:
        for key, qty in t.net_position().items():
            out[key] = out.get(key, ZERO) + qty
    return out
