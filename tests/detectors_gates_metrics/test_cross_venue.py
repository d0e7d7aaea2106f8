"""cross_venue: pairs from a checked mapping file; never trades inverted pairs as the same
bet, never trades pairs not marked equivalent; fees of both venues."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest
from dgm_helpers import PIPELINES, asks, paper
from hypothesis import given, settings
from hypothesis import strategies as st

from pr3dict_core.config import ConfigError
from pr3dict_core.model import Side, TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_detectors.cross_venue import CrossVenue, Pair, PairSpec, check_pairs, load_mapping

VENUES = ("poly", "kalshi")


def write(tmp_path: Path, text: str, name: str = "map.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def pair(pid, a, b, orientation="same", equivalent=True, va="poly", vb="kalshi"):
    return (f'[[pairs]]\nid = "{pid}"\nmarkets = {{ {va} = "{a}", {vb} = "{b}" }}\n'
            f'equivalent = {str(equivalent).lower()}\n'
            + (f'orientation = "{orientation}"\n' if orientation else ""))


# --------------------------------------------------------------------------- bad input


def test_missing_orientation_is_rejected_naming_file_and_entry(tmp_path):
    path = write(tmp_path, pair("ok", "a", "A") + pair("bad", "b", "B", orientation=None))
    with pytest.raises(ConfigError) as err:
        load_mapping(path, VENUES)
    (problem,) = err.value.problems
    assert problem.file == str(path)
    assert str(problem) == f"{path}: pairs[1].orientation: required key is missing (pair 'bad')"


def test_unknown_markets_and_venues_are_rejected(tmp_path):
    path = write(tmp_path, pair("x", "nope", "A") + pair("y", "b", "B", vb="kalshy"))
    with pytest.raises(ConfigError) as err:
        load_mapping(path, VENUES, {"poly": ["a", "b"], "kalshi": ["A", "B"]})
    text = str(err.value)
    assert f"{path}: pairs[0].markets.poly: pair 'x': no market 'nope' on venue 'poly'" in text
    assert "pairs[1].markets.kalshy: pair 'y': venue 'kalshy' is not one of this detector's " \
           "venues (poly, kalshi)" in text


def test_contradictory_pairs_are_rejected(tmp_path):
    # the same market paired twice, with another orientation
    path = write(tmp_path, pair("p1", "a", "A") + pair("p2", "a", "A", "inverted"))
    with pytest.raises(ConfigError) as err:
        load_mapping(path, VENUES)
    assert "pairs[1].markets.poly: pair 'p2': market 'a' on 'poly' is already paired with a " \
           "market on 'kalshi' by pairs[0] ('p1')" in str(err.value)
    # orientation around a cycle of three venues: a=A, A=x, but a is x's inverse
    three = ("poly", "kalshi", "third")
    path = write(tmp_path, pair("p1", "a", "A") + pair("p2", "A", "x", va="kalshi", vb="third")
                 + pair("p3", "a", "x", "inverted", vb="third"), "cycle.toml")
    with pytest.raises(ConfigError) as err:
        load_mapping(path, three)
    assert "pairs[2].orientation: pair 'p3': orientation 'inverted' contradicts" in str(err.value)
    # duplicate ids, a one-sided pair
    path = write(tmp_path, pair("p", "a", "A") + pair("p", "b", "B")
                 + '[[pairs]]\nid = "one"\nmarkets = { poly = "c" }\norientation = "same"\n',
                 "dup.toml")
    with pytest.raises(ConfigError) as err:
        load_mapping(path, VENUES)
    assert "pairs[1].id: pair 'p': id already used by pairs[0]" in str(err.value)
    assert "pairs[2].markets: pair 'one': a pair names exactly two markets" in str(err.value)


def test_validate_reports_a_bad_mapping_with_exit_78(tmp_path, run_pr3dict):
    mapping = write(tmp_path, pair("fed", "fed-cut-dec", "KXFEDDECISION-26DEC-C25")
                    + pair("ghost", "no-such-market", "KXCPIYOY-26JAN-T3.0"))
    text = (PIPELINES / "cross-venue-paper.toml").read_text()
    text = text.replace('"scenarios/', f'"{PIPELINES}/scenarios/').replace(
        '"mappings/poly-kalshi.toml"', f'"{mapping}"')
    pipeline = write(tmp_path, text, "cross.toml")
    outcome = run_pr3dict("validate", str(pipeline)).assert_failed(78)
    assert f"{mapping}: pairs[1].markets.poly: pair 'ghost': no market 'no-such-market' on " \
           "venue 'poly'" in outcome.err
    outcome = run_pr3dict("run", str(pipeline), "--cycles", "5").assert_failed(78)
    assert "nothing was run" in outcome.err


# --------------------------------------------------------------------------- detection


def venues_with(pairs_text: str, tmp_path: Path, *, markets=("a", "b")):
    poly = paper("poly", markets=markets, fee_rate="0.02")
    kalshi = paper("kalshi", markets=[m.upper() for m in markets], fee_model="kalshi",
                   fee_rate=None, size_step="1")
    path = write(tmp_path, pairs_text)
    pairs = load_mapping(path, VENUES)
    det = CrossVenue("x", CrossVenue.Config(venues=VENUES, mapping=str(path),
                                            min_edge=D("0.005")), pairs)
    det.bind({"poly": poly, "kalshi": kalshi})
    return poly, kalshi, det


def changed(*venues):
    return [v.book(i) for v in venues for m in v.markets() for i in (m.yes, m.no)]


def test_same_orientation_buys_yes_here_and_no_there_after_both_fees(tmp_path):
    poly, kalshi, det = venues_with(pair("p", "a", "A"), tmp_path)
    asks(poly, "a:yes", ("0.40", 20))
    asks(poly, "a:no", ("0.62", 20))
    asks(kalshi, "A:yes", ("0.45", 20))
    asks(kalshi, "A:no", ("0.52", 20))
    (opp,) = det.detect(changed(poly, kalshi))
    assert [(leg.venue, leg.instrument) for leg in opp.legs] == [("poly", "a:yes"),
                                                                 ("kalshi", "A:no")]
    assert all(leg.side is Side.BUY for leg in opp.legs) and opp.size == 20
    poly_fee = D(20) * D("0.02") * D("0.40") * D("0.60")
    kalshi_fee = D("0.35")  # ceil(0.07 * 20 * 0.52 * 0.48 = 0.34944) to the cent
    assert opp.fees == poly_fee + kalshi_fee
    assert opp.edge_per_share * 20 == 20 - D("0.92") * 20 - opp.fees


def test_inverted_pair_is_hedged_yes_with_yes_never_yes_with_no(tmp_path):
    poly, kalshi, det = venues_with(pair("p", "a", "A", "inverted"), tmp_path)
    # As a "same" pair, YES a (0.40) + NO A (0.50) would look like a 10-cent edge: but NO A
    # is the same bet as YES a, so that would be a doubled bet, not a hedge.
    asks(poly, "a:yes", ("0.40", 20))
    asks(poly, "a:no", ("0.70", 20))
    asks(kalshi, "A:yes", ("0.62", 20))
    asks(kalshi, "A:no", ("0.50", 20))
    assert list(det.detect(changed(poly, kalshi))) == []
    asks(kalshi, "A:yes", ("0.55", 20))  # YES a + YES A = 0.95 < 1
    (opp,) = det.detect(changed(poly, kalshi))
    assert [leg.instrument for leg in opp.legs] == ["a:yes", "A:yes"]


def test_pairs_not_marked_equivalent_are_never_traded(tmp_path):
    poly, kalshi, det = venues_with(pair("p", "a", "A", equivalent=False), tmp_path)
    for v, m in ((poly, "a"), (kalshi, "A")):
        asks(v, f"{m}:yes", ("0.10", 20))
        asks(v, f"{m}:no", ("0.10", 20))
    assert list(det.detect(changed(poly, kalshi))) == []
    assert det.refused == {"p": "not marked equivalent: never traded"}


prices = st.integers(1, 99).map(lambda c: D(c) / 100)


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(st.tuples(st.sampled_from(["same", "inverted"]), st.booleans()),
                      min_size=1, max_size=4),
       books=st.lists(st.tuples(prices, prices, prices, prices), min_size=4, max_size=4))
def test_never_pairs_inverted_or_non_equivalent_markets_as_the_same_bet(specs, books):
    names = [f"m{i}" for i in range(len(specs))]
    poly = paper("poly", markets=names, fee_rate="0.02")
    kalshi = paper("kalshi", markets=[n.upper() for n in names], fee_model="kalshi",
                   fee_rate=None, size_step="1")
    pairs = [Pair(f"p{i}", "poly", n, "kalshi", n.upper(), o == "inverted", eq, i)
             for i, (n, (o, eq)) in enumerate(zip(names, specs, strict=True))]
    det = CrossVenue("x", CrossVenue.Config(venues=VENUES, mapping="unused",
                                            min_edge=D("0.005")), pairs)
    det.bind({"poly": poly, "kalshi": kalshi})
    for n, (ya, na, yb, nb) in zip(names, books, strict=False):
        asks(poly, f"{n}:yes", (ya, 10))
        asks(poly, f"{n}:no", (na, 10))
        asks(kalshi, f"{n.upper()}:yes", (yb, 10))
        asks(kalshi, f"{n.upper()}:no", (nb, 10))
    by_name = {p.a: p for p in pairs}
    for opp in det.detect(changed(poly, kalshi)):
        a, b = opp.legs
        assert (a.venue, b.venue) == ("poly", "kalshi")
        p = by_name[a.market_id]
        assert p.equivalent and b.market_id == p.b
        same_outcome = a.instrument.endswith(":yes") == b.instrument.endswith(":yes")
        assert same_outcome == p.inverted  # the hedge is the other venue's complement
        assert opp.edge_per_share >= D("0.005")
        assert opp.size * (1 - opp.edge_per_share) == opp.cost


def test_check_pairs_accepts_the_example_mapping():
    pairs = load_mapping(PIPELINES / "mappings" / "poly-kalshi.toml", VENUES)
    assert {p.id: (p.inverted, p.equivalent) for p in pairs} == {
        "fed-dec": (False, True), "btc-150k": (False, False), "lal-bos": (True, True),
        "cpi-jan": (False, True), "shutdown-feb": (False, True)}
    assert check_pairs([PairSpec(id="z", markets={"poly": "a", "kalshi": "A"},
                                 orientation="same")], VENUES) == []


async def test_example_pipeline_trades_hedged_sets_across_venues(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = Engine.from_file(PIPELINES / "cross-venue-paper.toml")
    summary = await engine.run(cycles=120)
    await engine.close()
    assert summary.committed > 5 and summary.unresolved == 0
    det = engine.detectors[0]
    assert "btc-150k" in det.refused
    traded = {leg.market_id for t in engine.trades for leg in t.opportunity.legs}
    assert "btc-150k-2026" not in traded and "lakers-beat-celtics" in traded
    for t in engine.trades:
        if t.state is TradeState.REJECTED:
            continue
        a, b = t.opportunity.legs
        assert (a.venue, b.venue) == ("poly", "kalshi")
        inverted = a.market_id == "lakers-beat-celtics"
        assert (a.instrument.endswith(":yes") == b.instrument.endswith(":yes")) == inverted
    # Whatever was committed is a hedged set: per pair, shares of one side equal the other's.
    pos = {**{f"poly:{k}": v for k, v in engine.venues["poly"].positions().items()},
           **{f"kalshi:{k}": v for k, v in engine.venues["kalshi"].positions().items()}}
    for p in det.pairs:
        if not p.equivalent:
            continue
        b_yes, b_no = (f"kalshi:{p.b}:no", f"kalshi:{p.b}:yes") if p.inverted else \
            (f"kalshi:{p.b}:yes", f"kalshi:{p.b}:no")
        a_yes, a_no = f"poly:{p.a}:yes", f"poly:{p.a}:no"
        # YES on a is hedged by (NO-equivalent on b); unwinds may leave dust below one step
        assert abs(pos.get(a_yes, 0) - pos.get(b_no, 0)) < 1
        assert abs(pos.get(a_no, 0) - pos.get(b_yes, 0)) < 1
