"""Scenario files for the paper venue, and the seeded process that moves its quotes.

A scenario lists binary markets and how their books behave: a fair probability that
random-walks in ticks, a market maker quoting YES and NO around it with depth, arbitrage
windows that open now and then (YES ask + NO ask below 1), and injected faults. Everything
is integer ticks and Decimal, driven by one seeded ``random.Random``: same seed, same run.

Optional parts, each off unless a scenario asks for it (older scenarios run unchanged):

- ``[[events]]``: sets of mutually exclusive markets (Polymarket negative-risk events). Their
  fair prices move by passing a tick from one outcome to another, so an exhaustive set's
  fairs always sum to 1 and its YES asks to more than 1, except during event windows when
  the YES asks are pulled to sum to 1 - edge. A non-exhaustive (augmented) set keeps some
  probability on outcomes it does not list, so its YES asks can sum below 1 without any
  arbitrage: the trap the ``multi_outcome`` detector must refuse.
- ``[process] dislocation_*``: now and then one market's fair price on *this* venue jumps a
  few ticks for a few steps (a venue leading or lagging the other). Two scenarios with the
  same seed and the same number of markets walk in lockstep, market by market, so their
  books differ only by dislocations: cross-venue windows. Dislocations are drawn from a
  stream seeded by the seed *and the venue id*, so two venues dislocate independently.
- ``mirror = true`` on a market: its fair moves opposite to the shared walk, for a market
  that is another venue's market with YES and NO swapped (an inverted pair).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Literal

import attrs
from attrs import field, frozen

from pr3dict_core.config import ConfigError, ConfigProblem, structure, tomllib
from pr3dict_core.model import Market

_ge0 = attrs.validators.ge(0)


def _prob(instance: object, attribute: attrs.Attribute, value: Decimal) -> None:  # type: ignore[type-arg]
    if not Decimal(0) <= value <= Decimal(1):
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


@frozen(kw_only=True)
class MarketSpec:
    id: str
    title: str = ""
    fair: Decimal = field(default=Decimal("0.5"), validator=_prob)  # starting P(YES)
    mirror: bool = False  # the fair moves opposite to the shared walk (an inverted twin)


@frozen(kw_only=True)
class ProcessSpec:
    move_probability: Decimal = field(default=Decimal("0.3"), validator=_prob)  # fair moves a tick
    # Each side's half-spread, in ticks.
    spread_ticks: int = field(default=2, validator=attrs.validators.ge(1))
    depth_levels: int = field(default=3, validator=attrs.validators.ge(1))
    level_size: Decimal = field(default=Decimal("40"), validator=_ge0)
    arb_probability: Decimal = field(default=Decimal("0.05"), validator=_prob)
    arb_edge_ticks: tuple[int, int] = (2, 5)  # ask sum = 1 - edge, edge drawn in this range
    arb_duration_steps: tuple[int, int] = (1, 3)
    arb_size: Decimal = field(default=Decimal("30"), validator=_ge0)  # shares at the arb level
    # One venue's fair jumps for a while (cross-venue windows); 0 turns it off.
    dislocation_probability: Decimal = field(default=Decimal(0), validator=_prob)
    dislocation_ticks: tuple[int, int] = (3, 6)
    dislocation_steps: tuple[int, int] = (1, 3)


@frozen(kw_only=True)
class FaultSpec:
    reject_rate: Decimal = field(default=Decimal(0), validator=_prob)
    partial_fill_rate: Decimal = field(default=Decimal(0), validator=_prob)
    timeout_rate: Decimal = field(default=Decimal(0), validator=_prob)  # applied, reply lost


@frozen(kw_only=True)
class EventSpec:
    """A set of mutually exclusive markets (a negative-risk event): at most one resolves YES."""

    id: str
    markets: tuple[str, ...] = field(validator=attrs.validators.min_len(2))
    exhaustive: bool  # False: outcomes not listed may win (augmented negative risk)
    title: str = ""
    arb_probability: Decimal | None = field(  # event windows; default: [process] arb_probability
        default=None, validator=attrs.validators.optional(_prob))


@frozen(kw_only=True)
class SimAccountSpec:
    """A test account of the ``pr3dict sim`` exchange simulator (TEST-ONLY keys)."""

    name: str
    balance: Decimal | None = field(default=None, validator=attrs.validators.optional(_ge0))
    polymarket_address: str | None = None  # the wallet (EOA) allowed to sign orders
    kalshi_key_id: str | None = None
    kalshi_public_key: str | None = None  # PEM file, relative to the scenario file


@frozen(kw_only=True)
class RateLimitSpec:
    """A token bucket per account and route group: over it, requests queue; past
    ``queue_ms`` of waiting they get 429."""

    requests: int = field(validator=attrs.validators.ge(1))
    per_s: float = field(default=1.0, validator=attrs.validators.gt(0))
    queue_ms: float = field(default=0.0, validator=_ge0)


@frozen(kw_only=True)
class SimFaultSpec:
    """Faults ``pr3dict sim`` injects (all off by default); see docs/venues.md."""

    latency_ms: dict[str, float] = field(factory=dict)  # "METHOD /path" (or "*") -> ms
    delayed_rate: Decimal = field(default=Decimal(0), validator=_prob)  # PM `delayed` replies
    delay_ms: float = field(default=100.0, validator=_ge0)  # before a delayed order matches
    error_rate: Decimal = field(default=Decimal(0), validator=_prob)  # 5xx, nothing applied
    accepted_timeout_rate: Decimal = field(default=Decimal(0), validator=_prob)
    hang_ms: float = field(default=3000.0, validator=_ge0)  # how long such a reply hangs
    trade_failed_rate: Decimal = field(default=Decimal(0), validator=_prob)  # MATCHED->FAILED
    settle_ms: float = field(default=50.0, validator=_ge0)  # MATCHED -> MINED/FAILED
    ws_drop_every_s: float = field(default=0.0, validator=_ge0)  # 0 = never
    rate_limits: dict[str, RateLimitSpec] = field(factory=dict)  # group -> bucket
    seed: int | None = None  # fault draws; default: the scenario's seed


@frozen(kw_only=True)
class SimSpec:
    """The ``[sim]`` table: how ``pr3dict sim`` serves this scenario (the paper venue
    ignores it)."""

    step_ms: float = field(default=50.0, validator=attrs.validators.gt(0))  # market clock
    polymarket_min_size: Decimal | None = None  # default: the scenario's min_size
    polymarket_fee_rate: Decimal | None = None  # default: the scenario's fee_rate, or 0
    kalshi_fee_multiplier: Decimal = field(default=Decimal(1), validator=_ge0)
    kalshi_maker_fees: bool = False
    # false: the legacy order endpoints (POST/DELETE /portfolio/orders[/batched|/{id}]) are
    # gone, as Kalshi has announced; they answer as routes the server does not serve
    kalshi_legacy_orders: bool = True
    heartbeat_timeout_ms: float = field(default=10000.0, validator=attrs.validators.gt(0))
    auto_register: bool = True  # any wallet passing L1 auth gets a Polymarket account
    default_balance: Decimal = field(default=Decimal("10000"), validator=_ge0)
    chain_id: int = 137
    max_clock_skew_s: float = field(default=30.0, validator=attrs.validators.gt(0))
    accounts: tuple[SimAccountSpec, ...] = ()
    faults: SimFaultSpec = field(factory=SimFaultSpec)


FEE_MODELS = ("polymarket", "kalshi")
DEFAULT_FEE_RATE = {"polymarket": Decimal(0), "kalshi": Decimal("0.07")}


@frozen(kw_only=True)
class ScenarioSpec:
    seed: int = 0
    tick_size: Decimal = Decimal("0.01")
    min_size: Decimal = Decimal("1")
    size_step: Decimal = Decimal("0.01")
    # polymarket: size * rate * p * (1 - p) to 6 decimals; kalshi: the same, rounded UP to
    # the cent per fill. fee_rate defaults to 0 (polymarket) or 0.07 (kalshi).
    fee_model: Literal["polymarket", "kalshi"] = "polymarket"
    fee_rate: Decimal | None = field(default=None, validator=attrs.validators.optional(_ge0))
    latency_ms: float = field(default=0.0, validator=_ge0)
    process: ProcessSpec = field(factory=ProcessSpec)
    faults: FaultSpec = field(factory=FaultSpec)
    markets: tuple[MarketSpec, ...] = ()
    events: tuple[EventSpec, ...] = ()
    sim: SimSpec = field(factory=SimSpec)  # only `pr3dict sim` reads this

    @property
    def effective_fee_rate(self) -> Decimal:
        return DEFAULT_FEE_RATE[self.fee_model] if self.fee_rate is None else self.fee_rate


def load_scenario(path: Path) -> ScenarioSpec:
    """Read a scenario file; problems are reported like pipeline errors (file: path: message)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(str(path), "", "no such scenario file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(str(path), "", f"invalid TOML: {exc}")]) from None
    spec, errors = structure(raw, ScenarioSpec, "")
    if errors:
        raise ConfigError([ConfigProblem(str(path), p, m) for p, m in errors])
    if not spec.markets:
        raise ConfigError([ConfigProblem(str(path), "markets", "at least one market is required")])
    problems = [ConfigProblem(str(path), p, m) for p, m in check_events(spec)]
    if problems:
        raise ConfigError(problems)
    return spec


def check_events(spec: ScenarioSpec) -> list[tuple[str, str]]:
    """Problems with ``[[events]]``: unknown or shared markets, fairs that cannot be a set."""
    out: list[tuple[str, str]] = []
    fairs = {m.id: m.fair for m in spec.markets}
    owner: dict[str, str] = {}
    ids: set[str] = set()
    for i, ev in enumerate(spec.events):
        where = f"events[{i}]"
        if ev.id in ids:
            out.append((f"{where}.id", f"event id {ev.id!r} is used twice"))
        ids.add(ev.id)
        for j, mid in enumerate(ev.markets):
            if mid not in fairs:
                out.append((f"{where}.markets[{j}]", f"event {ev.id!r}: no market {mid!r} in "
                            "[[markets]]"))
            elif mid in owner:
                out.append((f"{where}.markets[{j}]", f"event {ev.id!r}: market {mid!r} is "
                            f"already in event {owner[mid]!r}"))
            else:
                owner[mid] = ev.id
        total = sum((fairs.get(m, Decimal(0)) for m in ev.markets), Decimal(0))
        if ev.exhaustive and total != 1:
            out.append((where, f"event {ev.id!r} is exhaustive, so its markets' fair values "
                        f"must sum to 1, got {total}"))
        elif not ev.exhaustive and total > 1:
            out.append((where, f"event {ev.id!r}: its markets' fair values sum to {total}, "
                        "above 1"))
    for m in spec.markets:
        if m.mirror and m.id in owner:
            out.append(("markets", f"market {m.id!r} is in event {owner[m.id]!r} and cannot "
                        "also be mirrored"))
    return out


@attrs.define
class _MarketState:
    market: Market
    fair_ticks: int
    arb_steps_left: int = 0
    arb_edge: int = 0
    arb_split: int = 0  # how many of the edge ticks come off the YES ask
    mirror: bool = False
    in_event: bool = False
    event_cut: int = -1  # during an event window: ticks the YES ask sits below fair
    offset: int = 0  # a dislocation: ticks added to the fair on this venue
    offset_steps_left: int = 0

    def quote_key(self) -> tuple[int, ...]:
        """What the quotes depend on: equal keys, equal quotes (no need to requote)."""
        if self.arb_steps_left > 0:
            return (self.fair_ticks, self.arb_edge, self.arb_split, self.event_cut, self.offset)
        return (self.fair_ticks, -1, -1, self.event_cut, self.offset)


@attrs.define
class _EventState:
    spec: EventSpec
    members: list[_MarketState]
    other_ticks: int  # probability on outcomes the event does not list (augmented sets)
    steps_left: int = 0


class MarketProcess:
    """Moves each market's quotes one step at a time, deterministically for a seed."""

    def __init__(self, spec: ScenarioSpec, markets: list[Market], seed: int):
        self.spec = spec
        self.rng = random.Random(seed)
        self.ticks_per_unit = int(Decimal(1) / spec.tick_size)
        # One Decimal per price, shared by every quote at it (120,000 resting quotes at
        # 10,000 markets would otherwise hold a Decimal each).
        self.prices = [i * spec.tick_size for i in range(self.ticks_per_unit + 1)]
        self.states = [
            _MarketState(m, int(ms.fair / spec.tick_size), mirror=ms.mirror)
            for m, ms in zip(markets, spec.markets, strict=True)
        ]
        by_id = {st.market.market_id: st for st in self.states}
        self.events: list[_EventState] = []
        for ev in spec.events:
            members = [by_id[mid] for mid in ev.markets]
            for st in members:
                st.in_event = True
            listed = sum(st.fair_ticks for st in members)
            self.events.append(_EventState(ev, members, max(self.ticks_per_unit - listed, 0)))
        # Dislocations come from their own stream, seeded by the venue too: two venues on
        # scenarios with one seed share the walk but dislocate independently.
        venue = markets[0].venue if markets else ""
        self.dislocation_rng = random.Random(seed ^ zlib.crc32(venue.encode()))

    def _chance(self, p: Decimal) -> bool:
        return self.rng.random() < float(p)  # a probability draw, not money

    def step(self) -> None:
        proc = self.spec.process
        edge_lo, edge_hi = proc.arb_edge_ticks
        dur_lo, dur_hi = proc.arb_duration_steps
        lo = proc.spread_ticks + proc.depth_levels
        for st in self.states:
            if st.in_event:
                continue
            if self._chance(proc.move_probability):
                move = self.rng.choice((-1, 1))
                st.fair_ticks += -move if st.mirror else move
            st.fair_ticks = min(max(st.fair_ticks, lo), self.ticks_per_unit - lo)
            if st.arb_steps_left > 0:
                st.arb_steps_left -= 1
            elif self._chance(proc.arb_probability):
                st.arb_steps_left = self.rng.randint(dur_lo, dur_hi)
                st.arb_edge = self.rng.randint(edge_lo, edge_hi)
                st.arb_split = self.rng.randint(0, st.arb_edge + 2 * proc.spread_ticks)
        for ev in self.events:
            self._step_event(ev)
        if proc.dislocation_probability:
            self._dislocate()

    def _step_event(self, ev: _EventState) -> None:
        """Pass a tick between two outcomes (the sum stays put); open or age event windows."""
        proc = self.spec.process
        n = len(ev.members)
        if self._chance(proc.move_probability):
            buckets = n + (0 if ev.spec.exhaustive else 1)  # the last one: unlisted outcomes
            src, dst = self.rng.sample(range(buckets), 2)
            a = ev.members[src].fair_ticks if src < n else ev.other_ticks
            b = ev.members[dst].fair_ticks if dst < n else ev.other_ticks
            if a - 1 >= (1 if src < n else 0) and b + 1 <= self.ticks_per_unit - 1:
                for idx, delta in ((src, -1), (dst, 1)):
                    if idx < n:
                        ev.members[idx].fair_ticks += delta
                    else:
                        ev.other_ticks += delta
        if ev.steps_left > 0:
            ev.steps_left -= 1
            if ev.steps_left == 0:
                for st in ev.members:
                    st.event_cut = -1
            return
        chance = proc.arb_probability if ev.spec.arb_probability is None \
            else ev.spec.arb_probability
        if self._chance(chance):
            ev.steps_left = self.rng.randint(*proc.arb_duration_steps)
            edge = self.rng.randint(*proc.arb_edge_ticks)
            cuts = [0] * n
            for _ in range(edge):
                cuts[self.rng.randrange(n)] += 1
            for st, cut in zip(ev.members, cuts, strict=True):
                st.event_cut = cut

    def _dislocate(self) -> None:
        proc = self.spec.process
        rng = self.dislocation_rng
        for st in self.states:
            if st.in_event:
                continue
            if st.offset_steps_left > 0:
                st.offset_steps_left -= 1
                if st.offset_steps_left == 0:
                    st.offset = 0
            elif rng.random() < float(proc.dislocation_probability):
                st.offset_steps_left = rng.randint(*proc.dislocation_steps)
                st.offset = rng.choice((-1, 1)) * rng.randint(*proc.dislocation_ticks)

    def quotes(self, st: _MarketState) -> Iterator[tuple[str, str, list[tuple[Decimal, Decimal]]]]:
        """(instrument, side, [(price, size)...]) for the market maker's quotes now."""
        proc = self.spec.process
        h = proc.spread_ticks
        fair = st.fair_ticks
        if st.offset:
            lo = h + proc.depth_levels
            fair = min(max(fair + st.offset, lo), self.ticks_per_unit - lo)
        yes_fair, no_fair = fair, self.ticks_per_unit - fair
        yes_ask, no_ask = yes_fair + h, no_fair + h
        arb: dict[str, tuple[int, Decimal]] = {}
        if st.event_cut >= 0:
            # An event window: this outcome's YES ask sits event_cut ticks below its fair,
            # so the set's YES asks sum to 1 - edge.
            arb["yes"] = (yes_fair - st.event_cut, proc.arb_size)
        elif st.arb_steps_left > 0:
            # Pull both asks down so they sum to 1 - edge; keep each within the book.
            cut = 2 * h + st.arb_edge
            yes_cut = min(st.arb_split, cut)
            arb["yes"] = (yes_ask - yes_cut, proc.arb_size)
            arb["no"] = (no_ask - (cut - yes_cut), proc.arb_size)
        prices, top = self.prices, self.ticks_per_unit
        for name, fair, ask in (("yes", yes_fair, yes_ask), ("no", no_fair, no_ask)):
            inst = st.market.yes if name == "yes" else st.market.no
            bids = [(fair - h - i, proc.level_size) for i in range(proc.depth_levels)]
            asks = [(ask + i, proc.level_size) for i in range(proc.depth_levels)]
            if name in arb:
                price_ticks, size = arb[name]
                price_ticks = max(price_ticks, 1)
                best_bid = fair - h
                if price_ticks <= best_bid:  # never cross our own bids: pull them below
                    bids = [(price_ticks - 1 - i, proc.level_size)
                            for i in range(proc.depth_levels) if price_ticks - 1 - i >= 1]
                asks = [(price_ticks, size)] + [(p, s) for p, s in asks if p > price_ticks]
            yield inst, "bid", [(prices[p], s) for p, s in bids if 0 < p <= top]
            yield inst, "ask", [(prices[p], s) for p, s in asks if 0 <= p < top]
