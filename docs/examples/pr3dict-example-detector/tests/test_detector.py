"""Tests of the example detector, using pr3dict's pytest plugin (enabled in ../conftest.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pr3dict_example_detector
import pytest
from pr3dict_example_detector import TopOfBookComplement

from pr3dict_core.config import load_pipeline
from pr3dict_core.model import Book, Level, Market, Side
from pr3dict_core.plugins import collect_components

PIPELINE = Path(__file__).resolve().parent.parent / "pipeline.toml"


class StubVenue:
    """Just enough of a venue for a detector: markets, books and a fee model."""

    def __init__(self, books: dict[str, Book], fee_rate: str = "0.02"):
        self._books = books
        self.rate = Decimal(fee_rate)

    def markets(self) -> list[Market]:
        return [Market(venue="v", market_id="m", yes="m:yes", no="m:no")]

    def book(self, instrument: str) -> Book | None:
        return self._books.get(instrument)

    def fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        return size * self.rate * price * (1 - price)


def asks(instrument: str, *levels: tuple[str, str]) -> Book:
    return Book("v", instrument, asks=tuple(Level(p, s) for p, s in levels))


def detector(**options: str) -> TopOfBookComplement:
    config = TopOfBookComplement.Config(venues=("v",), **{k: Decimal(v) for k, v in
                                                          options.items()})
    return TopOfBookComplement("tob", config)


def test_buys_both_best_asks_capped_by_top_level_size():
    books = {"m:yes": asks("m:yes", ("0.40", "12"), ("0.41", "100")),
             "m:no": asks("m:no", ("0.55", "30"))}
    d = detector(size="20")
    d.bind({"v": StubVenue(books)})
    (opp,) = d.detect(list(books.values()))
    assert opp.size == Decimal("12")  # the YES top level holds only 12 shares
    assert [(leg.instrument, leg.side, leg.price) for leg in opp.legs] == [
        ("m:yes", Side.BUY, Decimal("0.40")), ("m:no", Side.BUY, Decimal("0.55"))]
    fees = Decimal("12") * Decimal("0.02") * (Decimal("0.40") * Decimal("0.60")
                                              + Decimal("0.55") * Decimal("0.45"))
    assert opp.fees == fees
    assert opp.edge_per_share == Decimal("0.05") - fees / 12


@pytest.mark.parametrize(("yes", "no", "options"), [
    ("0.50", "0.50", {}),                          # no edge at all
    ("0.45", "0.545", {}),                         # 0.005 before fees: below min_edge
    ("0.02", "0.96", {}),                          # NO ask above max_price
    ("0.02", "0.96", {"max_price": "0.97", "min_edge": "0.5"}),  # allowed, but edge too small
])
def test_ignores_markets_that_do_not_pay(yes, no, options):
    books = {"m:yes": asks("m:yes", (yes, "50")), "m:no": asks("m:no", (no, "50"))}
    d = detector(size="10", **options)
    d.bind({"v": StubVenue(books)})
    assert list(d.detect(list(books.values()))) == []


@pytest.fixture
def pm(pr3dict_pm, register_plugin):
    """The plugin manager with our plugin, whether or not the package is installed."""
    if not pr3dict_pm.has_plugin("example_detector"):
        register_plugin(pr3dict_example_detector, name="example_detector")
    return pr3dict_pm


def test_registered_and_options_checked(pm):
    registry = collect_components(pm)
    registration = registry.get("detectors", "top_of_book_complement")
    assert registration is not None and registration.plugin == "example_detector"
    config = load_pipeline(PIPELINE, registry)
    options = config.section("detectors")["tob"].options
    assert options.size == Decimal("20") and options.max_price == Decimal("0.95")


def test_pipeline_runs_and_traces_each_opportunity(pm, run_pr3dict):
    outcome = run_pr3dict("run", str(PIPELINE), "--cycles", "50").assert_success()
    assert "trades committed" in outcome.out
    roots = outcome.spans_named("handle opportunity")
    assert roots, "no opportunity was handled"
    assert {span.attributes["pr3dict.detector.id"] for span in roots} == {"tob"}
    assert {span.attributes["pr3dict.opportunity.kind"] for span in roots} == {
        "top_of_book_complement"}
