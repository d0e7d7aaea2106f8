"""multi_outcome: every YES of an exhaustive negative-risk set when they sum below 1; sets
that are not exhaustive are refused; the paper venue's [[events]] process."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest
from dgm_helpers import PIPELINES, asks, paper
from hypothesis import given, settings
from hypothesis import strategies as st

from pr3dict_core.config import ConfigError
from pr3dict_core.model import Side, TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_detectors.multi_outcome import MultiOutcome
from pr3dict_paper.scenario import MarketProcess, load_scenario

EVENTS = (("fed", ("cut", "hold", "hike"), True), ("mayor", ("x", "y"), False))
MARKETS = ("cut", "hold", "hike", "x", "y", "solo")


def detector(venue, **kw):
    det = MultiOutcome("mo", MultiOutcome.Config(venues=(venue.id,), min_edge=D("0.01"), **kw))
    det.bind({venue.id: venue})
    return det


def yes_books(venue, markets=MARKETS):
    return [venue.book(f"{m}:yes") for m in markets]


def test_buys_every_outcome_when_yes_asks_sum_below_one_after_fees():
    venue = paper(markets=MARKETS, events=EVENTS, fee_rate="0.02")
    for m, p in (("cut", "0.20"), ("hold", "0.50"), ("hike", "0.25")):
        asks(venue, f"{m}:yes", (p, 30), ("0.90", 30))
    det = detector(venue)
    (opp,) = det.detect(yes_books(venue))
    assert opp.kind == "multi_outcome" and opp.payout == 1
    assert [leg.instrument for leg in opp.legs] == ["cut:yes", "hold:yes", "hike:yes"]
    assert {leg.size for leg in opp.legs} == {D(30)} and opp.size == 30
    assert all(leg.side is Side.BUY for leg in opp.legs)
    fees = sum(D(30) * D("0.02") * D(p) * (1 - D(p)) for p in ("0.20", "0.50", "0.25"))
    assert opp.fees == fees and opp.cost == D("0.95") * 30 + fees
    asks(venue, "hold:yes", ("0.56", 30))  # 1.01: no edge
    assert list(det.detect([venue.book("hold:yes")])) == []


def test_sets_that_are_not_exhaustive_are_refused_however_cheap():
    venue = paper(markets=MARKETS, events=EVENTS)
    asks(venue, "x:yes", ("0.20", 30))
    asks(venue, "y:yes", ("0.20", 30))  # 0.40 for both: but a third candidate may win
    det = detector(venue)
    assert list(det.detect(yes_books(venue))) == []
    assert "not exhaustive" in det.refused[("v", "mayor")]
    assert ("v", "mayor") not in det.sets and ("v", "fed") in det.sets


def test_only_sets_whose_books_changed_are_evaluated_and_events_option_filters():
    venue = paper(markets=("a", "b", "c", "d"),
                  events=(("e1", ("a", "b"), True), ("e2", ("c", "d"), True)))
    for m in "abcd":
        asks(venue, f"{m}:yes", ("0.45", 10))
    det = detector(venue)
    found = list(det.detect([venue.book("c:yes")]))
    assert [o.legs[0].market_id for o in found] == ["c"]
    assert list(detector(venue, events=("e1",)).sets) == [("v", "e1")]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.none() | st.integers(1, 99)), max_size=40))
def test_running_sum_matches_the_books(updates):
    venue = paper(markets=("a", "b", "c"), events=(("e", ("a", "b", "c"), True),))
    det = detector(venue)
    for index, cents in updates:
        m = "abc"[index]
        asks(venue, f"{m}:yes", *([] if cents is None else [(D(cents) / 100, 5)]))
        list(det.detect([venue.book(f"{m}:yes")]))
        state = det.sets[("v", "e")]
        current = [venue.book(f"{x}:yes").asks for x in "abc"]
        assert state.missing == sum(1 for a in current if not a)
        assert state.total == sum((a[0].price for a in current if a), D(0))


# --------------------------------------------------------------------------- the scenario


def write(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


MARKETS_TOML = "".join(f'[[markets]]\nid = "{m}"\nfair = "{f}"\n'
                       for m, f in (("a", "0.5"), ("b", "0.3"), ("c", "0.2")))


def test_events_are_checked_naming_the_scenario_file_and_entry(tmp_path):
    path = write(tmp_path, MARKETS_TOML + '[[events]]\nid = "e"\nmarkets = ["a", "b", "zz"]\n'
                 'exhaustive = true\n[[events]]\nid = "f"\nmarkets = ["a", "c"]\n'
                 'exhaustive = false\n')
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    text = str(err.value)
    assert f"{path}: events[0].markets[2]: event 'e': no market 'zz' in [[markets]]" in text
    assert f"{path}: events[0]: event 'e' is exhaustive, so its markets' fair values must " \
           "sum to 1, got 0.8" in text
    assert "events[1].markets[0]: event 'f': market 'a' is already in event 'e'" in text
    path = write(tmp_path, MARKETS_TOML + '[[events]]\nid = "g"\nmarkets = ["b"]\n'
                 'exhaustive = true\n')
    with pytest.raises(ConfigError,
                       match=r"events\[0\]\.markets: needs at least 2 item\(s\), got 1"):
        load_scenario(path)
    path = write(tmp_path, MARKETS_TOML + '[[events]]\nid = "e"\nmarkets = ["a", "b", "c"]\n')
    with pytest.raises(ConfigError, match=r"events\[0\]\.exhaustive: required key is missing"):
        load_scenario(path)


def test_event_process_keeps_exhaustive_sets_summing_to_one_with_windows_below():
    from pr3dict_core.model import Market

    spec = load_scenario(PIPELINES / "scenarios" / "neg-risk.toml")

    markets = [Market("v", m.id, f"{m.id}:yes", f"{m.id}:no") for m in spec.markets]
    proc = MarketProcess(spec, markets, seed=3)
    h = spec.process.spread_ticks
    windows = 0
    for _ in range(400):
        proc.step()
        for ev in proc.events:
            fairs = sum(m.fair_ticks for m in ev.members)
            assert fairs + ev.other_ticks == 100
            asks = []
            for member in ev.members:
                quotes = {(inst, side): lv for inst, side, lv in proc.quotes(member)}
                asks.append(min(p for p, _ in quotes[(member.market.yes, "ask")]))
            total = sum(asks)
            if not ev.spec.exhaustive:
                continue
            if ev.steps_left:
                windows += 1
                assert total < 1
            else:
                assert total == D(fairs + h * len(ev.members)) / 100 > 1
    assert windows > 10


def test_scenarios_without_events_walk_as_before():
    """The event and dislocation machinery must not touch the shared random stream: the
    process replays the original algorithm draw for draw."""
    from pr3dict_core.model import Market

    spec = load_scenario(PIPELINES / "scenarios" / "demo.toml")
    markets = [Market("v", m.id, f"{m.id}:yes", f"{m.id}:no") for m in spec.markets]
    proc = MarketProcess(spec, markets, seed=7)
    rng = random.Random(7)
    p = spec.process
    lo = p.spread_ticks + p.depth_levels
    shadow = [[int(m.fair / spec.tick_size), 0, 0, 0] for m in spec.markets]
    for _ in range(300):
        proc.step()
        for s in shadow:  # the original step, written out
            if rng.random() < float(p.move_probability):
                s[0] += rng.choice((-1, 1))
            s[0] = min(max(s[0], lo), 100 - lo)
            if s[1] > 0:
                s[1] -= 1
            elif rng.random() < float(p.arb_probability):
                s[1] = rng.randint(*p.arb_duration_steps)
                s[2] = rng.randint(*p.arb_edge_ticks)
                s[3] = rng.randint(0, s[2] + 2 * p.spread_ticks)
        assert [[st.fair_ticks, st.arb_steps_left, st.arb_edge, st.arb_split]
                for st in proc.states] == shadow


def test_dislocations_differ_per_venue_and_mirror_runs_opposite():
    from pr3dict_core.model import Market

    poly = load_scenario(PIPELINES / "scenarios" / "cross-poly.toml")
    kalshi = load_scenario(PIPELINES / "scenarios" / "cross-kalshi.toml")
    a = MarketProcess(poly, [Market("poly", m.id, "y", "n") for m in poly.markets], poly.seed)
    b = MarketProcess(kalshi, [Market("kalshi", m.id, "y", "n") for m in kalshi.markets],
                      kalshi.seed)
    apart = 0
    for _ in range(200):
        a.step()
        b.step()
        for sa, sb in zip(a.states, b.states, strict=True):
            if sb.mirror:
                assert sa.fair_ticks + sb.fair_ticks == 100  # YES here is NO there
            else:
                assert sa.fair_ticks == sb.fair_ticks  # one walk
            apart += sa.offset != sb.offset
    assert apart > 20  # but dislocations are each venue's own


async def test_example_pipeline_trades_exhaustive_sets_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = Engine.from_file(PIPELINES / "multi-outcome-paper.toml")
    summary = await engine.run(cycles=150)
    await engine.close()
    assert summary.committed > 5 and summary.unresolved == 0
    executed = [t for t in engine.trades if t.state is not TradeState.REJECTED]
    assert all(t.opportunity.kind == "multi_outcome" for t in executed)
    assert not any(leg.market_id.startswith("nyc-") for t in executed
                   for leg in t.opportunity.legs)
    assert {len(t.opportunity.legs) for t in executed} <= {4, 5}
    # every committed set holds equal shares of every outcome
    for t in executed:
        if t.state is TradeState.COMMITTED:
            assert len({leg.filled for leg in t.legs}) == 1
