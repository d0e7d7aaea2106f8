"""Equal-share sizing over several books, and the risk caps every built-in detector applies.

An arbitrage buys the same number of shares on every leg (a hedged *set* pays ``payout`` at
resolution). :func:`plan_equal_shares` walks the legs' ask depth level by level, keeps a
chunk of shares only while its edge after every venue's fee is at least ``min_edge`` per
share, and then applies the risk caps. The size taken is the smallest of

- **depth**: what the books offer at a price that still clears ``min_edge``;
- **per-leg limit**: ``max_size`` shares;
- **capital**: the set's total cost (prices and fees) must fit the available capital, read
  live from a ``capital`` gate (``capital_gate``) or else the static ``bankroll``;
- **edge-weighted bankroll**: the cost may be at most ``kelly_fraction * bankroll * r``,
  where ``r = edge / cost`` is the set's return after fees. A thin edge gets little capital;
  a fat one more, never more than the other caps allow.

The result is rounded down to the coarsest size step of the legs' markets, and dropped if it
is below the largest ``min_size``. Prices, sizes and money are ``Decimal`` throughout.

The built-in detectors price a set of legs when one of its books changed, and skip it when
that change cannot change the answer (``Watch``): the set found nothing last time, and
either its asks are the very same (a new tuple is a change: connectors and replays keep an
unchanged side's tuple, ``LocalBook``) and so are the limits, or it was rejected on its best
asks and the changed book's best ask is no better. A set that was offered last time is
priced again on any change of its books (the engine may not have taken it). Fee rates are
read when a set is priced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs
from attrs import frozen

from pr3dict_core.config import ref
from pr3dict_core.model import (
    ONE,
    ZERO,
    LegSpec,
    Level,
    Market,
    Opportunity,
    Pr3dictError,
    Side,
    opportunity_id,
    quantize_down,
)

FeeFunction = Callable[[str, Decimal, Decimal], Decimal]


def _optional_positive(instance: object, attribute: attrs.Attribute, value: Decimal | None  # type: ignore[type-arg]
                       ) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _needs_bankroll(instance: SizingOptions, attribute: attrs.Attribute, value: Decimal | None  # type: ignore[type-arg]
                    ) -> None:
    if value is not None and instance.bankroll is None and instance.capital_gate is None:
        raise ValueError("needs a bankroll: set `bankroll` or `capital_gate`")


@frozen(kw_only=True)
class SizingOptions:
    """Options every built-in detector shares (flat keys in its ``[detectors.<id>]`` table)."""

    # USDC per share; a set pays 1, so an edge of 1 or more can never be found.
    min_edge: Decimal = attrs.field(default=Decimal("0.005"), validator=[
        attrs.validators.ge(Decimal(0)), attrs.validators.lt(Decimal(1))])
    max_size: Decimal | None = attrs.field(default=None, validator=_optional_positive)
    max_levels: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    bankroll: Decimal | None = attrs.field(default=None, validator=_optional_positive)
    capital_gate: str | None = ref("gates", types=["capital"], default=None)
    kelly_fraction: Decimal | None = attrs.field(default=None, validator=[
        _optional_positive, attrs.validators.optional(attrs.validators.le(Decimal(1))),
        _needs_bankroll])


@attrs.define(slots=True)
class LegQuote:
    """One leg to size: the instrument's asks (best first) and its venue's fee function."""

    venue: str
    instrument: str
    market: Market
    asks: Sequence[Level]
    fee: FeeFunction


@frozen
class Plan:
    """How many shares to buy on every leg, and what they cost."""

    size: Decimal
    cost: Decimal  # prices only, all legs
    fees: Decimal  # every leg's taker fee
    worst: tuple[Decimal, ...]  # per leg: the deepest price used (the order's limit)
    best: tuple[Decimal, ...]  # per leg: the best ask when detected
    limited_by: str  # depth | max_size | capital | kelly

    @property
    def total_cost(self) -> Decimal:
        return self.cost + self.fees


class Limits:
    """The live caps for one evaluation: per-leg shares, capital, edge-weighted bankroll."""

    __slots__ = ("bankroll", "capital", "kelly_fraction", "max_size")

    def __init__(self, max_size: Decimal | None = None, capital: Decimal | None = None,
                 bankroll: Decimal | None = None, kelly_fraction: Decimal | None = None):
        self.max_size = max_size
        self.capital = capital
        self.bankroll = bankroll
        self.kelly_fraction = kelly_fraction

    def key(self) -> tuple[Decimal | None, ...]:
        return (self.max_size, self.capital, self.bankroll, self.kelly_fraction)


class Sizer:
    """Binds :class:`SizingOptions` to the pipeline (the capital gate) and produces Limits."""

    def __init__(self, detector_id: str, options: SizingOptions):
        self.detector_id = detector_id
        self.options = options
        self._gate: Any = None
        self._caps: tuple[Decimal | None, ...] | None = None

    def bind_gate(self, built: Any) -> None:
        """Find the ``capital_gate`` among the built gates (called when the engine starts)."""
        name = self.options.capital_gate
        if name is None:
            return
        gates = built.get("gates", {}) if built is not None else {}
        gate = gates.get(name)
        if gate is None:
            raise Pr3dictError(
                f"detectors.{self.detector_id}.capital_gate: no gate with id {name!r} "
                f"(defined: {', '.join(sorted(gates)) or 'none'})")
        if not hasattr(gate, "available"):
            raise Pr3dictError(
                f"detectors.{self.detector_id}.capital_gate: gate {name!r} (type "
                f"{getattr(gate, 'type', '?')}) has no `available` capital to size against")
        self._gate = gate

    def limits(self) -> Limits:
        o = self.options
        capital = o.bankroll
        bankroll = o.bankroll
        if self._gate is not None:
            capital = max(self._gate.available, ZERO)
            if bankroll is None:
                bankroll = capital
        return Limits(o.max_size, capital, bankroll, o.kelly_fraction)

    def caps(self) -> tuple[Decimal | None, ...]:
        """The limits' values: the very same tuple while they are equal, so a detector's
        hot loop compares them by identity (``Watch``). Static without a capital gate."""
        if self._caps is not None and self._gate is None:
            return self._caps
        caps = self.limits().key()
        if caps != self._caps:
            self._caps = caps
        return self._caps  # type: ignore[return-value]


class Watch:
    """What a set of legs was last priced at (each leg's asks and best ask, the limits,
    whether the best asks alone rejected it, whether it was offered): a detector prices it
    again only when a change of one of its books may change the answer (see the module's
    docstring)."""

    __slots__ = ("asks", "best", "caps", "offered", "rejected")

    def __init__(self, legs: int) -> None:
        self.asks: list[Sequence[Level] | None] = [None] * legs
        self.best: list[Decimal | None] = [None] * legs
        self.caps: tuple[Decimal | None, ...] | None = None
        self.rejected = False
        self.offered = False  # set by the detector when its last pricing was an opportunity

    def moved(self, leg: int, asks: Sequence[Level], caps: tuple[Decimal | None, ...]
              ) -> bool:
        """Whether ``leg``'s book, now with ``asks``, may change the answer: the set was
        offered last time (the engine may not have taken it: a trade in flight on one of
        its instruments, a gate), or its asks or the limits are new and it was not
        rejected on best asks that are no better now (a rejection reads the best asks
        only; a better best of another leg is that leg's change)."""
        if not self.offered:
            if self.asks[leg] is asks and self.caps is caps:
                return False
            if self.rejected and asks:
                best = self.best[leg]
                if best is not None and asks[0].price >= best:
                    return False
        # Due: until ``priced`` it counts as never priced, so a pricing that does not
        # finish (a detector error, a caller that stops early) leaves it due, not stale.
        self.caps = None
        self.rejected = False
        return True

    def priced(self, asks: Sequence[Sequence[Level]], caps: tuple[Decimal | None, ...],
               rejected: bool) -> None:
        self.asks[:] = asks
        self.best[:] = [a[0].price if a else None for a in asks]
        self.caps = caps
        self.rejected = rejected
        self.offered = False


def best_sum(quotes: Sequence[LegQuote]) -> Decimal:
    return sum((q.asks[0].price for q in quotes), ZERO)


def _walk(quotes: Sequence[LegQuote], payout: Decimal, min_edge: Decimal,
          max_levels: int, cap: Decimal | None) -> list[tuple[Decimal, tuple[Level, ...]]]:
    """Chunks of equal shares, best prices first, each clearing ``min_edge`` after fees."""
    n = len(quotes)
    idx = [0] * n
    used = [ZERO] * n
    levels = [q.asks[:max_levels] for q in quotes]
    chunks: list[tuple[Decimal, tuple[Level, ...]]] = []
    total = ZERO
    while all(idx[k] < len(levels[k]) for k in range(n)):
        current = tuple(levels[k][idx[k]] for k in range(n))
        chunk = min(current[k].size - used[k] for k in range(n))
        if cap is not None:
            chunk = min(chunk, cap - total)
        if chunk <= ZERO:
            break
        price = sum((lv.price for lv in current), ZERO)
        fees = sum((quotes[k].fee(quotes[k].instrument, current[k].price, chunk)
                    for k in range(n)), ZERO)
        if (payout - price) * chunk - fees < min_edge * chunk:
            break
        chunks.append((chunk, current))
        total += chunk
        for k in range(n):
            used[k] += chunk
            if used[k] >= current[k].size:
                idx[k] += 1
                used[k] = ZERO
    return chunks


def _price_out(quotes: Sequence[LegQuote], chunks: Sequence[tuple[Decimal, tuple[Level, ...]]],
               size: Decimal) -> tuple[Decimal, Decimal, tuple[Decimal, ...]]:
    """(price cost, fees, worst price per leg) of the first ``size`` shares of ``chunks``.

    Fees are charged per leg per price level, as a venue charges them per fill.
    """
    n = len(quotes)
    cost = ZERO
    per_level: list[dict[Decimal, Decimal]] = [{} for _ in range(n)]
    remaining = size
    worst = [ZERO] * n
    for chunk, current in chunks:
        if remaining <= ZERO:
            break
        take = min(chunk, remaining)
        remaining -= take
        for k in range(n):
            p = current[k].price
            cost += p * take
            per_level[k][p] = per_level[k].get(p, ZERO) + take
            worst[k] = p
    fees = sum((quotes[k].fee(quotes[k].instrument, p, qty)
                for k in range(n) for p, qty in per_level[k].items()), ZERO)
    return cost, fees, tuple(worst)


def _largest(step: Decimal, upper: Decimal, ok: Callable[[Decimal], bool]) -> Decimal:
    """The largest multiple of ``step`` in [0, upper] satisfying ``ok`` (a prefix property)."""
    lo, hi = 0, int(upper / step)
    if hi <= 0 or ok(hi * step):
        return max(hi, 0) * step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid * step):
            lo = mid
        else:
            hi = mid
    return lo * step


def plan_equal_shares(quotes: Sequence[LegQuote], *, payout: Decimal, min_edge: Decimal,
                      max_levels: int, limits: Limits) -> Plan | None:
    """The most shares of every leg such that every share clears ``min_edge`` and every
    cap in ``limits`` holds; None if that is below the markets' minimum size."""
    if not quotes or any(not q.asks for q in quotes):
        return None
    if payout - best_sum(quotes) < min_edge:  # cheap reject: fees only make it worse
        return None
    step = max(q.market.size_step for q in quotes)
    min_size = max(q.market.min_size for q in quotes)
    cap = None if limits.max_size is None else quantize_down(limits.max_size, step)
    chunks = _walk(quotes, payout, min_edge, max_levels, cap)
    depth = sum((c for c, _ in chunks), ZERO)
    size = quantize_down(depth, step)
    limited_by = "max_size" if cap is not None and size >= cap else "depth"

    def total(s: Decimal) -> Decimal:
        c, f, _ = _price_out(quotes, chunks, s)
        return c + f

    if limits.capital is not None and size > ZERO and total(size) > limits.capital:
        capital = limits.capital
        size = _largest(step, size, lambda s: total(s) <= capital)
        limited_by = "capital"
    if limits.kelly_fraction is not None and limits.bankroll is not None and size > ZERO:
        weight = limits.kelly_fraction * limits.bankroll

        def within(s: Decimal) -> bool:
            t = total(s)
            return t * t <= weight * (s * payout - t)

        if not within(size):
            size = _largest(step, size, within)
            limited_by = "kelly"
    if size <= ZERO or size < min_size:
        return None
    cost, fees, worst = _price_out(quotes, chunks, size)
    if (payout * size - cost - fees) < min_edge * size:  # per-fill fee rounding can bite
        return None
    return Plan(size, cost, fees, worst, tuple(q.asks[0].price for q in quotes), limited_by)


def opportunity_from_plan(detector: str, kind: str, nonce: int, quotes: Sequence[LegQuote],
                          plan: Plan, payout: Decimal = ONE) -> Opportunity:
    """What a plan describes: ``plan.size`` shares bought on every quoted leg."""
    legs = tuple(
        LegSpec(q.venue, q.instrument, Side.BUY, worst, plan.size, q.market.market_id,
                q.market.tick_size, best_price=best)
        for q, worst, best in zip(quotes, plan.worst, plan.best, strict=True))
    return Opportunity(
        id=opportunity_id(detector, legs, nonce), detector=detector, kind=kind, legs=legs,
        size=plan.size, edge_per_share=(plan.size * payout - plan.total_cost) / plan.size,
        cost=plan.total_cost, fees=plan.fees, payout=payout)
