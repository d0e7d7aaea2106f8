"""The domain: markets, books, opportunities, trades, legs and their state machines.

Every price, size and amount is a ``Decimal``; prices are USDC per share in [0, 1].
Connectors convert a venue's own units at their boundary, so nothing in here knows
about cents or fixed-point strings.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_DOWN, Decimal

import attrs
from attrs import field, frozen

ZERO = Decimal(0)
ONE = Decimal(1)
USDC_UNIT = Decimal("0.000001")  # USDC has 6 decimals


class Pr3dictError(Exception):
    """An error the CLI reports without a traceback."""


class IllegalTransition(Pr3dictError):
    """A state machine was asked for a transition its table does not allow."""


def to_decimal(value: object) -> Decimal:
    """Convert a str/int/Decimal to Decimal; floats are refused (they carry binary noise)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"refusing to build a Decimal from {type(value).__name__} {value!r}")
    return Decimal(str(value))


def _price(instance: object, attribute: attrs.Attribute, value: Decimal) -> None:  # type: ignore[type-arg]
    if not ZERO <= value <= ONE:
        raise ValueError(f"{attribute.name} must be in [0, 1] USDC per share, got {value}")


def _non_negative(instance: object, attribute: attrs.Attribute, value: Decimal) -> None:  # type: ignore[type-arg]
    if value < ZERO:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def quantize_down(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down to a multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class TimeInForce(enum.StrEnum):
    GTC = "GTC"  # rests until cancelled
    FOK = "FOK"  # fill entirely now or not at all
    FAK = "FAK"  # fill what is possible now, cancel the rest


class Outcome(enum.StrEnum):
    YES = "yes"
    NO = "no"


# --------------------------------------------------------------------------- books


@frozen
class Level:
    price: Decimal = field(converter=to_decimal, validator=_price)
    size: Decimal = field(converter=to_decimal, validator=_non_negative)


@frozen
class Book:
    """One instrument's order book: bids best (highest) first, asks best (lowest) first."""

    venue: str
    instrument: str
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()
    timestamp: float = 0.0
    sequence: int = 0

    @property
    def best_bid(self) -> Level | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        return self.asks[0] if self.asks else None


def fill_cost(levels: Sequence[Level], size: Decimal) -> tuple[Decimal, Decimal]:
    """Walk ``levels`` for ``size`` shares: (shares available up to size, their total cost)."""
    remaining = size
    cost = ZERO
    for level in levels:
        if remaining <= ZERO:
            break
        take = min(level.size, remaining)
        cost += take * level.price
        remaining -= take
    return size - remaining, cost


# --------------------------------------------------------------------------- markets and fees


@frozen
class Market:
    """A binary market on one venue: a YES and a NO instrument that together pay 1 at resolution."""

    venue: str
    market_id: str
    yes: str
    no: str
    title: str = ""
    tick_size: Decimal = field(default=Decimal("0.01"), converter=to_decimal)
    min_size: Decimal = field(default=Decimal("1"), converter=to_decimal)
    size_step: Decimal = field(default=Decimal("0.01"), converter=to_decimal)

    def instrument(self, outcome: Outcome) -> str:
        return self.yes if outcome is Outcome.YES else self.no


# --------------------------------------------------------------------------- opportunities


@frozen
class LegSpec:
    """One leg of an opportunity as a detector saw it."""

    venue: str
    instrument: str
    side: Side
    # The worst price the detector priced in.
    price: Decimal = field(converter=to_decimal, validator=_price)
    size: Decimal = field(converter=to_decimal, validator=_non_negative)
    market_id: str = ""
    tick_size: Decimal = field(default=Decimal("0.01"), converter=to_decimal)
    best_price: Decimal | None = None  # best level when detected; slippage is measured from here


@frozen
class Opportunity:
    """An arbitrage a detector found: legs of equal shares and its expected edge after fees."""

    id: str
    detector: str
    kind: str
    legs: tuple[LegSpec, ...]
    size: Decimal = field(converter=to_decimal)
    edge_per_share: Decimal = field(converter=to_decimal)  # after fees
    cost: Decimal = field(converter=to_decimal)  # total to pay for all legs, fees included
    fees: Decimal = field(default=ZERO, converter=to_decimal)
    payout: Decimal = field(default=ONE, converter=to_decimal)  # paid per hedged set at resolution
    detected_at: float = field(factory=time.perf_counter)
    detect_started_at: float | None = None  # perf_counter when detection of this book began

    @property
    def expected_profit(self) -> Decimal:
        return self.edge_per_share * self.size


def opportunity_id(detector: str, legs: Iterable[LegSpec], nonce: int) -> str:
    """A short deterministic id: same detector, legs and nonce give the same id."""
    parts = (f"{leg.venue}:{leg.instrument}:{leg.side}" for leg in legs)
    key = "|".join([detector, str(nonce), *parts])
    return hashlib.blake2s(key.encode(), digest_size=6).hexdigest()


# --------------------------------------------------------------------------- states


class LegState(enum.StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    UNRESOLVED = "unresolved"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_LEG_STATES


_FINAL_LEG_STATES = frozenset({LegState.FILLED, LegState.CANCELLED, LegState.REJECTED})

class TradeState(enum.StrEnum):
    DETECTED = "detected"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXECUTING = "executing"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    UNRESOLVED = "unresolved"

    @property
    def is_final(self) -> bool:
        return self in {TradeState.REJECTED, TradeState.COMMITTED, TradeState.ROLLED_BACK}


TRADE_TRANSITIONS: dict[TradeState, frozenset[TradeState]] = {
    TradeState.DETECTED: frozenset({TradeState.APPROVED, TradeState.REJECTED}),
    TradeState.APPROVED: frozenset({TradeState.EXECUTING}),
    TradeState.EXECUTING: frozenset({TradeState.COMMITTED, TradeState.ROLLING_BACK}),
    # A rollback that completed the missing leg ends fully hedged: committed after all.
    TradeState.ROLLING_BACK: frozenset({TradeState.ROLLED_BACK, TradeState.COMMITTED,
                                        TradeState.UNRESOLVED}),
    TradeState.UNRESOLVED: frozenset({TradeState.ROLLING_BACK, TradeState.ROLLED_BACK,
                                      TradeState.COMMITTED}),
    TradeState.REJECTED: frozenset(),
    # A "break": the venue reversed a fill (Polymarket MATCHED -> FAILED) or reported a late
    # one after the trade was final; the trade is reopened and re-hedged like a short leg.
    TradeState.COMMITTED: frozenset({TradeState.ROLLING_BACK}),
    TradeState.ROLLED_BACK: frozenset({TradeState.ROLLING_BACK}),
}


# --------------------------------------------------------------------------- orders and fills


@frozen
class OrderRequest:
    """What goes on the wire for one leg attempt."""

    client_order_id: str
    venue: str
    instrument: str
    side: Side
    price: Decimal = field(converter=to_decimal, validator=_price)
    size: Decimal = field(converter=to_decimal, validator=_non_negative)
    time_in_force: TimeInForce = TimeInForce.FAK


@frozen
class Fill:
    fill_id: str
    client_order_id: str
    price: Decimal = field(converter=to_decimal)
    size: Decimal = field(converter=to_decimal)
    fee: Decimal = field(default=ZERO, converter=to_decimal)
    timestamp: float = 0.0


class OrderStatus(enum.StrEnum):
    OPEN = "open"  # resting, possibly partly filled
    FILLED = "filled"
    CANCELLED = "cancelled"  # done; may carry partial fills (FAK remainder, user cancel)
    REJECTED = "rejected"


@frozen
class OrderAck:
    """The venue's view of one order: its status and every fill so far."""

    client_order_id: str
    status: OrderStatus
    fills: tuple[Fill, ...] = ()
    venue_order_id: str = ""
    reason: str = ""

    @property
    def filled(self) -> Decimal:
        return sum((f.size for f in self.fills), ZERO)


def client_order_id(trade_id: str, leg_index: int, attempt: int) -> str:
    """Deterministic from (trade, leg, attempt), so a resend after a crash is idempotent."""
    return f"{trade_id}-{leg_index}-{attempt}"


REVERSAL_PREFIX = "reversal:"


def is_reversal(fill: Fill) -> bool:
    """A venue-reported undoing of earlier shares (a trade that failed on chain): its size is
    negative and its id starts with ``reversal:``."""
    return fill.fill_id.startswith(REVERSAL_PREFIX)


# --------------------------------------------------------------------------- venue outcomes


class Trigger(enum.StrEnum):
    """What happened to one order of a leg; the only input that changes a leg's state."""

    SENT = "sent"  # the intent is journaled and the order goes on the wire
    ACKED = "acked"  # the venue's checked view of the order (reply, query or push)
    REFUSED = "refused"  # definitively not at the venue (rejected, or never sent)
    LOST = "lost"  # unknown: timeout after send, 5xx, malformed reply
    NOT_FOUND = "not_found"  # the venue has no such order: it never arrived
    CLOSED = "closed"  # the engine is done with the leg and nothing of it rests
    ABANDONED = "abandoned"  # the strategy failed before anything was sent


@frozen
class VenueOutcome:
    """A typed answer about one order, produced by the one venue-call helper."""

    trigger: Trigger
    client_order_id: str = ""
    ack: OrderAck | None = None
    error: str = ""
    error_type: str = ""
    auth: bool = False  # refused because the venue refused our credentials

    @property
    def rests(self) -> bool:
        return self.ack is not None and self.ack.status is OrderStatus.OPEN


@attrs.define(eq=False)
class OrderRef:
    """One order of a leg as the journal holds it: what was sent, the venue's id for it
    (known before sending for Polymarket: the signed order's hash), and whether the venue
    has said it no longer rests."""

    request: OrderRequest
    venue_order_id: str = ""
    done: bool = False
    lost: bool = False  # the last word about it was LOST: its outcome is unknown
    final: bool = False  # the venue said it is filled or cancelled: that never changes


# --------------------------------------------------------------------------- legs and trades


@attrs.define(eq=False)
class Leg:
    """One leg being executed: its orders, every fill on them, and its state machine.

    The state changes only in ``apply``, by a ``VenueOutcome`` looked up in ``LEG_TABLE``
    (the (state, trigger) table), the way NautilusTrader's ``Order.apply`` works.
    """

    trade_id: str
    index: int
    venue: str
    instrument: str
    side: Side
    size: Decimal
    limit_price: Decimal  # worst acceptable price
    target_price: Decimal  # the price the detector saw
    tick_size: Decimal = Decimal("0.01")
    purpose: str = "entry"  # entry | unwind | complete
    state: LegState = LegState.PENDING
    fills: dict[str, Fill] = field(factory=dict)  # by fill id: duplicates never double-count
    orders: dict[str, OrderRef] = field(factory=dict)  # by client order id, oldest first
    attempts: int = 0
    error: str = ""
    submitted_at: float | None = None  # perf_counter when its first order was handed over
    on_wire_at: float | None = None  # perf_counter when that order's request was written
    finished_at: float | None = None
    unresolved_at: float | None = None  # perf_counter when the outcome became unknown
    unresolved_s: float = 0.0  # total time spent UNRESOLVED
    history: list[LegState] = field(factory=list)
    # Called as observer(leg, old_state) after every change (the journal listens).
    observer: Callable[[Leg, LegState], None] | None = field(default=None, repr=False)

    @property
    def final_on_reject(self) -> bool:
        """Entry legs end REJECTED when their only order is refused; unwind and completion
        legs try again with a new order until their deadline instead."""
        return self.purpose == "entry"

    @property
    def unknown(self) -> bool:
        """Some order's outcome is unknown: the leg is UNRESOLVED until the venue says."""
        return any(ref.lost for ref in self.orders.values())

    @property
    def resting(self) -> bool:
        """An order of this leg may still rest at the venue (or its outcome is unknown)."""
        return any(not ref.done for ref in self.orders.values())

    def next_client_order_id(self) -> str:
        self.attempts += 1
        return client_order_id(self.trade_id, self.index, self.attempts)

    def current_client_order_id(self) -> str:
        return client_order_id(self.trade_id, self.index, self.attempts)

    # ------------------------------------------------------------------ the one way in

    def apply(self, outcome: VenueOutcome, residual: Decimal = Decimal("0.01")) -> Decimal:
        """Apply one venue outcome; returns the change in filled shares (negative when the
        venue reversed fills). Raises IllegalTransition for a pair the table lacks."""
        handler = LEG_TABLE.get((self.state, outcome.trigger))
        if handler is None:
            raise IllegalTransition(f"leg {self.trade_id}/{self.index}: {self.state} "
                                    f"on {outcome.trigger}")
        before = self.filled
        ref = self.orders.get(outcome.client_order_id)
        if ref is not None and not self.state.is_final:
            if outcome.trigger is Trigger.ACKED:
                # An order's status only moves forward: an older push saying OPEN after a
                # final answer is stale.
                ref.final = ref.final or not outcome.rests
                ref.done, ref.lost = ref.final, False
                if outcome.ack is not None and outcome.ack.venue_order_id:
                    ref.venue_order_id = outcome.ack.venue_order_id
            elif outcome.trigger in (Trigger.REFUSED, Trigger.NOT_FOUND):
                ref.done, ref.lost = True, False
            elif outcome.trigger is Trigger.LOST:
                ref.done, ref.lost = False, True
        fills_changed = False
        if outcome.ack is not None:
            fills_changed = self._take_fills(outcome.ack)
        if outcome.error and outcome.trigger is not Trigger.ACKED:
            self.error = outcome.error
        new = handler(self, outcome, residual)
        if new is not self.state or fills_changed:
            self._to(new)
        return self.filled - before

    def _take_fills(self, ack: OrderAck) -> bool:
        """The ack is the venue's whole view of one order: it replaces what we knew of that
        order, unless it is older (fewer shares and no new reversal): pushes arrive out of
        order. True if anything changed."""
        cid = ack.client_order_id
        mine = {fid: f for fid, f in self.fills.items() if f.client_order_id == cid}
        known = sum((f.size for f in mine.values() if not is_reversal(f)), ZERO)
        told = sum((f.size for f in ack.fills if not is_reversal(f)), ZERO)
        new_reversal = any(is_reversal(f) and f.fill_id not in mine for f in ack.fills)
        if told < known and not new_reversal:
            return False  # stale
        theirs = {f.fill_id: f for f in ack.fills}
        if theirs == mine:
            return False
        for fid in mine:
            del self.fills[fid]
        self.fills.update(theirs)
        return True

    def _to(self, new: LegState) -> None:
        old = self.state
        if new is not old:
            self.history.append(old)
            self.state = new
            now = time.perf_counter()
            if new is LegState.UNRESOLVED:
                self.unresolved_at = now
            elif old is LegState.UNRESOLVED and self.unresolved_at is not None:
                self.unresolved_s += now - self.unresolved_at
                self.unresolved_at = None
        if self.observer is not None:
            self.observer(self, old)

    @property
    def filled(self) -> Decimal:
        return sum((f.size for f in self.fills.values()), ZERO)

    @property
    def remaining(self) -> Decimal:
        return max(self.size - self.filled, ZERO)

    @property
    def notional(self) -> Decimal:
        return sum((f.size * f.price for f in self.fills.values()), ZERO)

    @property
    def fees(self) -> Decimal:
        return sum((f.fee for f in self.fills.values()), ZERO)

    @property
    def average_price(self) -> Decimal | None:
        filled = self.filled
        return self.notional / filled if filled else None

    @property
    def cash_flow(self) -> Decimal:
        """USDC in (+) or out (-) from this leg's fills, fees included."""
        sign = -1 if self.side is Side.BUY else 1
        return sign * self.notional - self.fees

    @property
    def slippage(self) -> Decimal:
        """USDC lost against the target price (positive = worse than detected)."""
        avg = self.average_price
        if avg is None:
            return ZERO
        per_share = avg - self.target_price if self.side is Side.BUY else self.target_price - avg
        return per_share * self.filled

    @property
    def slippage_ticks(self) -> Decimal:
        avg = self.average_price
        if avg is None:
            return ZERO
        per_share = avg - self.target_price if self.side is Side.BUY else self.target_price - avg
        return per_share / self.tick_size


# --------------------------------------------------------------------------- the leg table
# Each handler returns the leg's next state; the fills and the order's `done` flag are
# already folded in. A (state, trigger) pair missing from the table is illegal.


def _working(leg: Leg) -> LegState:
    return LegState.PARTIALLY_FILLED if leg.filled > ZERO else LegState.SUBMITTED


def _complete(leg: Leg, residual: Decimal) -> bool:
    return leg.filled > ZERO and leg.size - leg.filled < residual


def _on_ack(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    if _complete(leg, residual):
        return LegState.FILLED
    assert o.ack is not None
    if o.ack.status is OrderStatus.REJECTED and leg.filled == ZERO and not leg.resting:
        leg.error = leg.error or o.ack.reason or "rejected"
        return LegState.REJECTED if leg.final_on_reject else LegState.SUBMITTED
    if leg.unknown:
        return LegState.UNRESOLVED
    return _working(leg)


def _on_refused(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    if leg.unknown:
        return LegState.UNRESOLVED
    if _complete(leg, residual):
        return LegState.FILLED
    if leg.filled == ZERO and leg.final_on_reject and not leg.resting:
        return LegState.REJECTED
    return _working(leg)


def _on_lost(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    return LegState.UNRESOLVED


def _on_closed(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    if leg.resting:
        raise IllegalTransition(f"leg {leg.trade_id}/{leg.index}: closed while an order "
                                "may rest")
    if _complete(leg, residual):
        return LegState.FILLED
    if leg.state is LegState.PENDING or (leg.filled == ZERO and not leg.orders):
        return LegState.REJECTED  # nothing of it ever reached the venue
    return LegState.CANCELLED


def _same(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    return leg.state


def _sent(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    return _working(leg)


def _abandoned(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    return LegState.REJECTED


def _final_ack(leg: Leg, o: VenueOutcome, residual: Decimal) -> LegState:
    """A final leg learns late truth (a fill after the cancel, a reversed fill): its state
    follows what it now holds; the trade decides whether that breaks the hedge."""
    if _complete(leg, residual):
        return LegState.FILLED
    if leg.filled > ZERO or leg.state is LegState.FILLED:
        return LegState.CANCELLED
    return leg.state


_T = Trigger
_S = LegState
LEG_TABLE: dict[tuple[LegState, Trigger], Callable[[Leg, VenueOutcome, Decimal], LegState]] = {
    (_S.PENDING, _T.SENT): _sent,
    (_S.PENDING, _T.ABANDONED): _abandoned,
    (_S.PENDING, _T.CLOSED): _on_closed,
    (_S.PENDING, _T.REFUSED): _on_refused,
    (_S.PENDING, _T.NOT_FOUND): _on_refused,
    **{(state, trigger): handler
       for state in (_S.SUBMITTED, _S.PARTIALLY_FILLED)
       for trigger, handler in ((_T.SENT, _sent), (_T.ACKED, _on_ack), (_T.REFUSED, _on_refused),
                                (_T.NOT_FOUND, _on_refused), (_T.LOST, _on_lost),
                                (_T.CLOSED, _on_closed), (_T.ABANDONED, _same))},
    # Unknown until the venue answers about every lost order; only the venue lifts it.
    (_S.UNRESOLVED, _T.ACKED): _on_ack,
    (_S.UNRESOLVED, _T.REFUSED): _on_refused,
    (_S.UNRESOLVED, _T.NOT_FOUND): _on_refused,
    (_S.UNRESOLVED, _T.LOST): _on_lost,
    (_S.UNRESOLVED, _T.ABANDONED): _same,
    **{(state, trigger): handler
       for state in (_S.FILLED, _S.CANCELLED, _S.REJECTED)
       for trigger, handler in ((_T.ACKED, _final_ack), (_T.REFUSED, _same),
                                (_T.NOT_FOUND, _same), (_T.LOST, _same), (_T.CLOSED, _same),
                                (_T.ABANDONED, _same))},
}


@attrs.define(eq=False)
class Trade:
    """An opportunity taken through preflight, execution and finalize or rollback."""

    id: str
    opportunity: Opportunity
    strategy: str = ""
    state: TradeState = TradeState.DETECTED
    legs: list[Leg] = field(factory=list)
    unwind_legs: list[Leg] = field(factory=list)
    reject_reason: str = ""
    gate: str = ""
    error: str = ""
    deadline_ms: int | None = None  # the execution deadline it ran under
    reserve: Decimal = ZERO  # the most it can spend (the capital gate reserves this)
    gas_spent: Decimal = ZERO  # native token (POL) settlers spent on it
    decided_at: float | None = None  # perf_counter when preflight approved
    submitted_at: float | None = None  # perf_counter when the last entry leg was handed to
    # its venue (before the HTTP request is built): ``decision -> submit``
    on_wire_at: float | None = None  # perf_counter when the last entry leg's request was
    # written to the socket (the paper venue: when it takes the order): ``decision -> wire``
    finished_at: float | None = None
    ended_at: float | None = None  # wall time of the last change, for a trade read back
    history: list[TradeState] = field(factory=list)
    observer: Callable[[Trade, TradeState], None] | None = field(default=None, repr=False)
    recorded: bool = field(default=False, repr=False)  # handed to statistics and sinks

    def transition(self, new: TradeState) -> None:
        if new not in TRADE_TRANSITIONS[self.state]:
            raise IllegalTransition(f"trade {self.id}: {self.state} -> {new}")
        old = self.state
        self.history.append(old)
        self.state = new
        if self.observer is not None:
            self.observer(self, old)

    @property
    def all_legs(self) -> list[Leg]:
        return [*self.legs, *self.unwind_legs]

    def net_position(self) -> dict[tuple[str, str], Decimal]:
        """Shares held per (venue, instrument) from every leg of this trade."""
        out: dict[tuple[str, str], Decimal] = {}
        for leg in self.all_legs:
            key = (leg.venue, leg.instrument)
            signed = leg.filled if leg.side is Side.BUY else -leg.filled
            out[key] = out.get(key, ZERO) + signed
        return out

    @property
    def hedged_size(self) -> Decimal:
        """Shares held on every entry instrument: the fully hedged part of the trade."""
        positions = self.net_position()
        held = [positions.get((leg.venue, leg.instrument), ZERO) for leg in self.legs]
        return max(min(held), ZERO) if held else ZERO

    @property
    def cash_flow(self) -> Decimal:
        return sum((leg.cash_flow for leg in self.all_legs), ZERO)

    @property
    def realised_pnl(self) -> Decimal:
        """Cash flow plus the 1 USDC per hedged set each hedged share pays at resolution."""
        return self.cash_flow + self.hedged_size * self.opportunity.payout

    @property
    def rollback_cost(self) -> Decimal:
        """What the unwind legs lost against what their shares cost to buy."""
        if not self.unwind_legs:
            return ZERO
        cost = ZERO
        for leg in self.unwind_legs:
            entry = next((e for e in self.legs if e.instrument == leg.instrument), None)
            if entry is None or entry.average_price is None:
                continue
            cost += entry.average_price * leg.filled - leg.notional + leg.fees
        return cost.quantize(USDC_UNIT)
