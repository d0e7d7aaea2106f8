"""Scenario files for the paper venue, and the seeded process that moves its quotes.

A scenario lists binary markets and how their books behave: a fair probability that
random-walks in ticks, a market maker quoting YES and NO around it with depth, arbitrage
windows that open now and then (YES ask + NO ask below 1), and injected faults. Everything
is integer ticks and Decimal, driven by one seeded ``random.Random``: same seed, same run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

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


@frozen(kw_only=True)
class ProcessSpec:
    move_probability: Decimal = field(default=Decimal("0.3"), validator=_prob)  # fair moves a tick
    spread_ticks: int = field(default=2, validator=attrs.validators.ge(1))  # each side's half-spread
    depth_levels: int = field(default=3, validator=attrs.validators.ge(1))
    level_size: Decimal = field(default=Decimal("40"), validator=_ge0)
    arb_probability: Decimal = field(default=Decimal("0.05"), validator=_prob)
    arb_edge_ticks: tuple[int, int] = (2, 5)  # ask sum = 1 - edge, edge drawn in this range
    arb_duration_steps: tuple[int, int] = (1, 3)
    arb_size: Decimal = field(default=Decimal("30"), validator=_ge0)  # shares at the arb level


@frozen(kw_only=True)
class FaultSpec:
    reject_rate: Decimal = field(default=Decimal(0), validator=_prob)
    partial_fill_rate: Decimal = field(default=Decimal(0), validator=_prob)
    timeout_rate: Decimal = field(default=Decimal(0), validator=_prob)  # applied, reply lost


@frozen(kw_only=True)
class ScenarioSpec:
    seed: int = 0
    tick_size: Decimal = Decimal("0.01")
    min_size: Decimal = Decimal("1")
    size_step: Decimal = Decimal("0.01")
    fee_rate: Decimal = field(default=Decimal(0), validator=_ge0)  # C * rate * p * (1 - p)
    latency_ms: float = field(default=0.0, validator=_ge0)
    process: ProcessSpec = field(factory=ProcessSpec)
    faults: FaultSpec = field(factory=FaultSpec)
    markets: tuple[MarketSpec, ...] = ()


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
    return spec


@attrs.define
class _MarketState:
    market: Market
    fair_ticks: int
    arb_steps_left: int = 0
    arb_edge: int = 0
    arb_split: int = 0  # how many of the edge ticks come off the YES ask

    def quote_key(self) -> tuple[int, int, int]:
        """What the quotes depend on: equal keys, equal quotes (no need to requote)."""
        if self.arb_steps_left > 0:
            return (self.fair_ticks, self.arb_edge, self.arb_split)
        return (self.fair_ticks, -1, -1)


class MarketProcess:
    """Moves each market's quotes one step at a time, deterministically for a seed."""

    def __init__(self, spec: ScenarioSpec, markets: list[Market], seed: int):
        self.spec = spec
        self.rng = random.Random(seed)
        self.ticks_per_unit = int(Decimal(1) / spec.tick_size)
        self.states = [
            _MarketState(m, int(ms.fair / spec.tick_size)) for m, ms in zip(markets, spec.markets)
        ]

    def _chance(self, p: Decimal) -> bool:
        return self.rng.random() < float(p)  # a probability draw, not money

    def step(self) -> None:
        proc = self.spec.process
        edge_lo, edge_hi = proc.arb_edge_ticks
        dur_lo, dur_hi = proc.arb_duration_steps
        for st in self.states:
            if self._chance(proc.move_probability):
                st.fair_ticks += self.rng.choice((-1, 1))
            lo = proc.spread_ticks + proc.depth_levels
            st.fair_ticks = min(max(st.fair_ticks, lo), self.ticks_per_unit - lo)
            if st.arb_steps_left > 0:
                st.arb_steps_left -= 1
            elif self._chance(proc.arb_probability):
                st.arb_steps_left = self.rng.randint(dur_lo, dur_hi)
                st.arb_edge = self.rng.randint(edge_lo, edge_hi)
                st.arb_split = self.rng.randint(0, st.arb_edge + 2 * proc.spread_ticks)

    def quotes(self, st: _MarketState) -> Iterator[tuple[str, str, list[tuple[Decimal, Decimal]]]]:
        """(instrument, side, [(price, size)...]) for the market maker's quotes now."""
        proc = self.spec.process
        tick = self.spec.tick_size
        h = proc.spread_ticks
        yes_fair, no_fair = st.fair_ticks, self.ticks_per_unit - st.fair_ticks
        yes_ask, no_ask = yes_fair + h, no_fair + h
        arb: dict[str, tuple[int, Decimal]] = {}
        if st.arb_steps_left > 0:
            # Pull both asks down so they sum to 1 - edge; keep each within the book.
            cut = 2 * h + st.arb_edge
            yes_cut = min(st.arb_split, cut)
            arb["yes"] = (yes_ask - yes_cut, proc.arb_size)
            arb["no"] = (no_ask - (cut - yes_cut), proc.arb_size)
        for name, fair, ask in (("yes", yes_fair, yes_ask), ("no", no_fair, no_ask)):
            inst = st.market.yes if name == "yes" else st.market.no
            bids = [((fair - h - i) * tick, proc.level_size) for i in range(proc.depth_levels)]
            asks = [((ask + i) * tick, proc.level_size) for i in range(proc.depth_levels)]
            if name in arb:
                price_ticks, size = arb[name]
                price_ticks = max(price_ticks, 1)
                best_bid = fair - h
                if price_ticks <= best_bid:  # never cross our own bids: pull them below
                    bids = [((price_ticks - 1 - i) * tick, proc.level_size)
                            for i in range(proc.depth_levels) if price_ticks - 1 - i >= 1]
                asks = [(price_ticks * tick, size)] + [
                    (p, s) for p, s in asks if p > price_ticks * tick]
            yield inst, "bid", [(p, s) for p, s in bids if p > 0]
            yield inst, "ask", [(p, s) for p, s in asks if p < 1]
