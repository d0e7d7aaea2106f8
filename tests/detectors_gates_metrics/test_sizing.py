"""Equal-share sizing: depth, per-leg limit, capital and edge-weighted bankroll, whichever is
smallest; never more than any of them."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest
from dgm_helpers import asks, paper
from hypothesis import given, settings
from hypothesis import strategies as st

from pr3dict_core.config import ConfigError, load_pipeline
from pr3dict_core.model import Level, Market
from pr3dict_core.pipeline import Engine
from pr3dict_core.plugins import collect_components, make_plugin_manager
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_detectors.sizing import LegQuote, Limits, plan_equal_shares
from pr3dict_gates.capital import CapitalGate
from pr3dict_paper.venue import kalshi_fee, polymarket_fee

ONE = D(1)


def market(mid: str = "m", step: str = "0.01", min_size: str = "1") -> Market:
    return Market("v", mid, f"{mid}:yes", f"{mid}:no", size_step=D(step), min_size=D(min_size))


def quote(levels, *, mid="m", fee=None, step="0.01", min_size="1", inst=None) -> LegQuote:
    m = market(mid, step, min_size)
    return LegQuote("v", inst or m.yes, m, tuple(Level(D(p), D(s)) for p, s in levels),
                    fee or (lambda i, p, s: D(0)))


def plan(quotes, limits=None, min_edge="0.01", max_levels=10):
    return plan_equal_shares(quotes, payout=ONE, min_edge=D(min_edge), max_levels=max_levels,
                             limits=limits or Limits())


def test_depth_across_levels_and_three_legs():
    quotes = [quote([("0.30", 10), ("0.31", 10)]), quote([("0.30", 5), ("0.32", 20)]),
              quote([("0.30", 30)])]
    p = plan(quotes)
    # 5 @ 0.90, 5 @ 0.92, 10 @ 0.93; the next level (0.31 + 0.32 + 0.30 = 0.93) is gone
    assert p.size == 20 and p.limited_by == "depth"
    assert p.worst == (D("0.31"), D("0.32"), D("0.30"))
    assert p.best == (D("0.30"), D("0.30"), D("0.30"))
    assert p.cost == 5 * D("0.90") + 5 * D("0.92") + 10 * D("0.93")


def test_each_cap_binds_in_turn():
    quotes = [quote([("0.45", 100)]), quote([("0.50", 100)])]  # edge 0.05 per share
    assert plan(quotes).size == 100
    p = plan(quotes, Limits(max_size=D(30)))
    assert (p.size, p.limited_by) == (30, "max_size")
    p = plan(quotes, Limits(capital=D("19")))
    assert p.limited_by == "capital" and p.total_cost <= 19 and p.size == D("20")
    # edge-weighted bankroll: cost <= f * B * edge/cost -> cost^2 <= f * B * 0.05 * size
    # with cost = 0.95 size: size <= f * B * 0.05 / 0.95^2
    p = plan(quotes, Limits(bankroll=D(1000), kelly_fraction=D("0.5")))
    assert p.limited_by == "kelly"
    assert p.size == D("27.70")  # 0.5 * 1000 * 0.05 / 0.9025 = 27.700...
    assert p.total_cost ** 2 <= D("0.5") * 1000 * (p.size - p.total_cost)


def test_thin_edges_get_less_capital_than_fat_ones():
    limits = Limits(bankroll=D(1000), kelly_fraction=D(1))
    thin = plan([quote([("0.49", 500)]), quote([("0.50", 500)])], limits)
    fat = plan([quote([("0.45", 500)]), quote([("0.50", 500)])], limits)
    assert thin.size < fat.size


def test_size_step_of_the_coarsest_market_and_min_size():
    quotes = [quote([("0.40", "7.5")]), quote([("0.50", 30)], step="1", min_size="1")]
    assert plan(quotes).size == 7  # whole contracts on the second venue
    assert plan([quote([("0.40", "0.5")]), quote([("0.50", 1)])]) is None  # below min_size


def test_kalshi_fees_round_up_per_level():
    fee = kalshi_fee(D("0.07"))
    assert fee("x", D("0.5"), D(1)) == D("0.02")  # 0.0175 -> 2 cents
    assert fee("x", D("0.5"), D(100)) == D("1.75")
    quotes = [quote([("0.45", 10)], fee=polymarket_fee(D("0.02"))),
              quote([("0.50", 10)], fee=fee)]
    p = plan(quotes, min_edge="0.005")
    assert p.fees == D(10) * D("0.02") * D("0.45") * D("0.55") + D("0.18")  # ceil(0.175)


levels = st.lists(st.tuples(st.integers(1, 99), st.integers(1, 60)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(books=st.lists(levels, min_size=2, max_size=4),
       max_size=st.none() | st.integers(1, 80),
       capital=st.none() | st.integers(1, 200),
       bankroll=st.none() | st.integers(50, 5000),
       kelly=st.none() | st.sampled_from(["0.1", "0.5", "1", "3"]),
       min_edge=st.sampled_from(["0", "0.005", "0.02"]),
       fee_rate=st.sampled_from(["0", "0.02"]),
       kalshi=st.booleans())
def test_sizing_never_exceeds_any_limit(books, max_size, capital, bankroll, kelly, min_edge,
                                        fee_rate, kalshi):
    fees = [kalshi_fee(D("0.07")) if kalshi and k == 1 else polymarket_fee(D(fee_rate))
            for k in range(len(books))]
    quotes = [quote([(D(p) / 100, s) for p, s in sorted({p: s for p, s in lv}.items())],
                    fee=fees[k], inst=f"i{k}", step="1" if kalshi and k == 1 else "0.01")
              for k, lv in enumerate(books)]
    limits = Limits(max_size=None if max_size is None else D(max_size),
                    capital=None if capital is None else D(capital),
                    bankroll=None if bankroll is None else D(bankroll),
                    kelly_fraction=None if kelly is None else D(kelly))
    p = plan(quotes, limits, min_edge=min_edge)
    if p is None:
        return
    step = max(q.market.size_step for q in quotes)
    assert p.size > 0 and p.size % step == 0 and p.size >= 1
    # depth: never more than the book holds up to the worst price used
    for q, worst in zip(quotes, p.worst, strict=True):
        assert p.size <= sum(lv.size for lv in q.asks if lv.price <= worst)
    assert max_size is None or p.size <= max_size
    assert capital is None or p.total_cost <= capital
    if kelly is not None and bankroll is not None:
        assert p.total_cost ** 2 <= D(kelly) * bankroll * (p.size - p.total_cost)
    assert p.size - p.total_cost >= D(min_edge) * p.size  # every set clears min_edge


# --------------------------------------------------------------------------- configuration


def test_kelly_fraction_needs_a_bankroll(write_pipeline):
    path = write_pipeline("""
[pipeline]
name = "k"
[venues.sim]
type = "paper"
scenario = "{demo}"
[detectors.c]
type = "binary_complement"
venues = ["sim"]
kelly_fraction = "0.5"
""")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, collect_components(make_plugin_manager()))
    assert "detectors.c.kelly_fraction: needs a bankroll" in str(err.value)


def test_capital_gate_must_exist_and_is_read_live(write_pipeline):
    text = """
[pipeline]
name = "k"
[venues.sim]
type = "paper"
scenario = "{demo}"
[detectors.c]
type = "binary_complement"
venues = ["sim"]
capital_gate = "GATE"
[gates.cap]
type = "capital"
bankroll = "100"
"""
    with pytest.raises(ConfigError, match=r"detectors\.c\.capital_gate: no risk gate with id "
                                          r"'nope' \(defined in \[gates\]: cap\)"):
        Engine.from_file(write_pipeline(text.replace("GATE", "nope")))
    engine = Engine.from_file(write_pipeline(text.replace("GATE", "cap"), "ok.toml"))
    asyncio.run(engine.start())
    (det,) = engine.detectors
    assert det.sizer.limits().capital == 100


def test_detector_sizes_to_the_capital_gate_available_capital():
    venue = paper()
    asks(venue, "m:yes", ("0.45", 100))
    asks(venue, "m:no", ("0.50", 100))
    gate = CapitalGate("cap", CapitalGate.Config(bankroll=D(50)))
    det = BinaryComplement("c", BinaryComplement.Config(venues=("v",), capital_gate="cap"),
                           built={"gates": {"cap": gate}})
    det.bind({"v": venue})
    (opp,) = det.detect([venue.book("m:yes")])
    assert opp.cost <= 50 and opp.size == D("52.63")  # 52.63 * 0.95 = 49.9985
    gate.reserved["other"] = D(40)  # a trade in flight holds 40 of it
    (opp,) = det.detect([venue.book("m:yes")])
    assert opp.cost <= 10 and det.last_plan.limited_by == "capital"
