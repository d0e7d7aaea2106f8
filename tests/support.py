"""Scripted paper venues and engines for tests."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pr3dict_core.config import ExecutionSection
from pr3dict_core.pipeline import Engine
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_paper.scenario import FaultSpec, MarketSpec, ProcessSpec, ScenarioSpec
from pr3dict_paper.venue import PaperVenue
from pr3dict_sinks.basic import MemorySink
from pr3dict_strategies.market import MarketStrategy

D = Decimal
REPO = Path(__file__).resolve().parent.parent
DEMO_SCENARIO = REPO / "pipelines" / "scenarios" / "demo.toml"

MINIMAL = """
[pipeline]
name = "t"
cycles = 5

[venues.sim]
type = "paper"
scenario = "{demo}"

[detectors.c]
type = "binary_complement"
venues = ["sim"]
"""


def scripted_venue(vid: str = "v", *, markets=("m",), fee_rate="0", faults: FaultSpec | None = None,
                   latency_ms: float = 0) -> PaperVenue:
    spec = ScenarioSpec(
        seed=1, fee_rate=D(fee_rate), markets=tuple(MarketSpec(id=m) for m in markets),
        process=ProcessSpec(arb_probability=D(0), move_probability=D(0)),
        faults=faults or FaultSpec())
    return PaperVenue(vid, spec, seed=1, latency_ms=latency_ms, faults=faults is not None,
                      process=False)


def set_book(venue: PaperVenue, instrument: str, *, bids=(), asks=()) -> None:
    """Replace the market maker's quotes on one instrument."""
    venue.set_book(instrument, bids=[(D(p), D(s)) for p, s in bids],
                   asks=[(D(p), D(s)) for p, s in asks])


def arb_books(venue: PaperVenue, market: str = "m") -> None:
    """YES 0.45 + NO 0.50 asks (edge 0.05), both with bids to unwind into."""
    set_book(venue, f"{market}:yes", bids=[("0.43", 100)], asks=[("0.45", 10), ("0.56", 50)])
    set_book(venue, f"{market}:no", bids=[("0.48", 100)], asks=[("0.50", 10), ("0.60", 50)])


def engine_for(venue: PaperVenue, *, gates=(), tracer_provider=None, min_edge="0.01",
               max_size=None, execution: ExecutionSection | None = None, strategy=None,
               detectors=None) -> Engine:
    detector = BinaryComplement("c", BinaryComplement.Config(
        venues=(venue.id,), min_edge=D(min_edge),
        max_size=None if max_size is None else D(max_size)))
    return Engine(
        venues={venue.id: venue}, detectors=detectors or [detector],
        strategy=strategy or MarketStrategy(MarketStrategy.Config()),
        gates=list(gates), sinks=[MemorySink("mem")], tracer_provider=tracer_provider,
        execution=execution or ExecutionSection(deadline_ms=50, reconcile_timeout_ms=300),
    )


def journal_orders(journal: Path) -> int:
    """How many order intents a journal holds (0 while it does not exist): a running
    process is trading once this grows. Read-only, so the writer is never disturbed."""
    import sqlite3

    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0
