"""Helpers for the detector, gate and metrics tests: scripted venues, hand-built trades."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

from pr3dict_core.model import (
    Fill,
    Leg,
    LegSpec,
    LegState,
    Opportunity,
    Side,
    Trade,
    TradeState,
)
from pr3dict_paper.scenario import EventSpec, MarketSpec, ProcessSpec, ScenarioSpec
from pr3dict_paper.venue import MARKET_MAKER, PaperVenue

D = Decimal
REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"


def paper(vid: str = "v", *, markets=("m",), fee_model: str = "polymarket",
          fee_rate: str | None = "0", size_step: str = "0.01", events=(),
          fairs: dict[str, str] | None = None) -> PaperVenue:
    """A paper venue whose books only the test moves (no market process)."""
    fairs = fairs or {}
    spec = ScenarioSpec(
        seed=1, fee_model=fee_model, fee_rate=None if fee_rate is None else D(fee_rate),
        size_step=D(size_step),
        markets=tuple(MarketSpec(id=m, fair=D(fairs.get(m, "0.5"))) for m in markets),
        events=tuple(EventSpec(id=e, markets=tuple(ms), exhaustive=x) for e, ms, x in events),
        process=ProcessSpec(arb_probability=D(0), move_probability=D(0)))
    return PaperVenue(vid, spec, seed=1, latency_ms=0, faults=False, process=False)


def asks(venue: PaperVenue, instrument: str, *levels: tuple[str, int | str],
         bids=()) -> None:
    venue.engine.set_liquidity(MARKET_MAKER, instrument, Side.SELL,
                               [(D(p), D(s)) for p, s in levels])
    venue.engine.set_liquidity(MARKET_MAKER, instrument, Side.BUY,
                               [(D(p), D(s)) for p, s in bids])


_ids = itertools.count(1)


def make_trade(legs, *, state: TradeState = TradeState.COMMITTED, size=None,
               cost: str = "0", strategy: str = "market") -> Trade:
    """A finished trade. ``legs``: (venue, instrument, side, size, price, filled[, purpose])."""
    tid = f"t{next(_ids)}"
    specs = tuple(LegSpec(v, i, Side(s), D(p), D(n)) for v, i, s, n, p, *_ in legs)
    size = D(size if size is not None else (legs[0][3] if legs else 0))
    opp = Opportunity(id=tid, detector="d", kind="test", legs=specs, size=size,
                      edge_per_share=D(0), cost=D(cost))
    trade = Trade(id=tid, opportunity=opp, strategy=strategy)
    for k, (venue, inst, side, n, price, filled, *rest) in enumerate(legs):
        leg = Leg(trade_id=tid, index=k, venue=venue, instrument=inst, side=Side(side),
                  size=D(n), limit_price=D(price), target_price=D(price),
                  purpose=rest[0] if rest else "entry")
        if D(filled):
            leg.fills[f"{tid}-{k}"] = Fill(f"{tid}-{k}", f"{tid}-{k}-1", D(price), D(filled))
        leg.state = LegState.FILLED if D(filled) == D(n) else LegState.CANCELLED
        (trade.unwind_legs if rest and rest[0] == "unwind" else trade.legs).append(leg)
    trade.state = state
    return trade


def pending_trade(cost: str = "10", legs=(("v", "m:yes", "buy", "10", "0.5"),)) -> Trade:
    """A trade as a gate sees it at preflight: an opportunity, no legs yet."""
    tid = f"p{next(_ids)}"
    specs = tuple(LegSpec(v, i, Side(s), D(p), D(n)) for v, i, s, n, p in legs)
    opp = Opportunity(id=tid, detector="d", kind="test", legs=specs, size=specs[0].size,
                      edge_per_share=D(0), cost=D(cost))
    return Trade(id=tid, opportunity=opp)
