"""``pr3dict test PIPELINE...``: the ``[[tests]]`` of pipeline files, run like pytest.

A test feeds the pipeline recorded books (``recording``: every polymarket, kalshi or replay
venue plays that recording) or inline books (``[[tests.books]]`` on ``paper`` venues, whose
market process is then off), runs the detectors, gates and strategy, and checks
``[tests.expect]``. See ``docs/pipeline-tests.md``.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from attrs import frozen

from pr3dict_core import hookimpl
from pr3dict_core.config import (
    EX_CONFIG,
    ComponentSpec,
    ConfigError,
    ConfigProblem,
    PipelineConfig,
    load_pipelines,
    structure,
)
from pr3dict_core.model import Opportunity, Trade, TradeState

from .format import VENUE_TYPES

EX_OK, EX_FAILED = 0, 1


@frozen(kw_only=True)
class Range:
    min: Decimal | None = None
    max: Decimal | None = None

    def holds(self, value: Decimal) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def __str__(self) -> str:
        return f"[{'-inf' if self.min is None else self.min}, " \
               f"{'inf' if self.max is None else self.max}]"


@frozen(kw_only=True)
class Expect:
    opportunities: int | None = None  # exactly this many detected
    min_opportunities: int | None = None
    kinds: tuple[str, ...] | None = None  # the kinds detected, as a set
    markets: tuple[str, ...] = ()  # each appears in some opportunity
    edge: Range | None = None  # every opportunity's edge per share (after fees)
    trades: dict[str, int] = attrs.field(factory=dict)  # final state -> count
    realised_pnl: Range | None = None  # summed over trades
    rejected_by: tuple[str, ...] | None = None  # the gates that rejected, as a set


@frozen(kw_only=True)
class BookSpec:
    venue: str
    instrument: str
    bids: tuple[tuple[Decimal, Decimal], ...] = ()
    asks: tuple[tuple[Decimal, Decimal], ...] = ()


@frozen(kw_only=True)
class TestSpec:
    name: str
    recording: str | None = None
    books: tuple[BookSpec, ...] = ()
    cycles: int | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.ge(1)))
    expect: Expect


_STATES = {s.value for s in TradeState if s.is_final}


def check_tests(config: PipelineConfig) -> tuple[list[TestSpec], list[ConfigProblem]]:
    """The ``[[tests]]`` tables as specs, and every problem with its TOML path."""
    file = str(config.file)
    specs, problems = [], []
    raw = config.tests
    if not isinstance(raw, list):
        return [], [ConfigProblem(file, "tests", "expected an array of tables ([[tests]])")]
    venues = config.section("venues")
    for n, table in enumerate(raw):
        where = f"tests[{n}]"
        if not isinstance(table, dict):
            problems.append(ConfigProblem(file, where, "expected a table"))
            continue
        spec, errors = structure(table, TestSpec, where)
        problems.extend(ConfigProblem(file, p, m) for p, m in errors)
        if spec is None:
            continue
        if (spec.recording is None) == (not spec.books):
            problems.append(ConfigProblem(file, where, "needs exactly one input: `recording` "
                                          "or [[tests.books]]"))
        if spec.recording is not None:
            path = _path(config, spec.recording)
            if not path.exists():
                problems.append(ConfigProblem(file, f"{where}.recording", f"no such file {path}"))
            if not any(v.type in (*VENUE_TYPES, "replay") for v in venues.values()):
                problems.append(ConfigProblem(file, f"{where}.recording", "no polymarket, "
                                              "kalshi or replay venue to play it"))
        for i, book in enumerate(spec.books):
            v = venues.get(book.venue)
            if v is None or v.type != "paper":
                problems.append(ConfigProblem(file, f"{where}.books[{i}].venue",
                                              f"{book.venue!r} is not a paper venue of this "
                                              "pipeline (inline books need one)"))
        for state in spec.expect.trades:
            if state not in _STATES:
                choices = ", ".join(sorted(_STATES))
                problems.append(ConfigProblem(file, f"{where}.expect.trades.{state}",
                                              f"not a final trade state ({choices})"))
        rejected_by = spec.expect.rejected_by or ()
        for gate in rejected_by:
            if gate not in config.section("gates"):
                problems.append(ConfigProblem(file, f"{where}.expect.rejected_by",
                                              f"no gate {gate!r} in this pipeline"))
        specs.append(spec)
    return specs, problems


def _path(config: PipelineConfig, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else config.file.parent / p


# --------------------------------------------------------------------------- running


class _Collect:
    def __init__(self) -> None:
        self.trades: list[Trade] = []

    @hookimpl
    def pr3dict_trade_finished(self, trade: Trade) -> None:
        self.trades.append(trade)


def _variant(config: PipelineConfig, spec: TestSpec) -> PipelineConfig:
    """The pipeline as a test runs it: no journal, no sinks or settlers, replayed venues."""
    from .venue import ReplayVenue

    components = {k: dict(v) for k, v in config.components.items()
                  if k not in ("sinks", "settlers")}
    if spec.recording is not None:
        path = str(_path(config, spec.recording))
        for vid, v in list(components.get("venues", {}).items()):
            if v.type in (*VENUE_TYPES, "replay"):
                opts = v.options if v.type == "replay" else ReplayVenue.Config(
                    recording=path, latency_ms=getattr(v.options, "latency_ms", None))
                opts = attrs.evolve(opts, recording=path, speed="max",
                                    source=getattr(opts, "source", None) or vid)
                components["venues"][vid] = ComponentSpec("venues", vid, "replay", opts)
    pipeline = attrs.evolve(config.pipeline, mode="paper")
    return attrs.evolve(config, pipeline=pipeline, components=components,
                        journal=attrs.evolve(config.journal, url=""))


def _run_one(config: PipelineConfig, spec: TestSpec, ctx: Any, run_id: str
             ) -> tuple[list[Opportunity], list[Trade]]:
    from opentelemetry.sdk.trace import TracerProvider

    from pr3dict_core.pipeline import Engine

    collector = _Collect()
    ctx.pm.register(collector)
    try:
        engine = Engine.from_config(_variant(config, spec), ctx.registry, ctx.pm,
                                    tracer_provider=TracerProvider(), run_id=run_id)
        seen: list[Opportunity] = []
        for detector in engine.detectors:
            detect = detector.detect

            def spy(changed: Any, _detect: Any = detect) -> list[Opportunity]:
                found = list(_detect(changed))
                seen.extend(found)
                return found

            detector.detect = spy  # type: ignore[method-assign]
        # A recording's test runs on a loop whose time is the recording's, as `pr3dict run`.
        with asyncio.Runner(loop_factory=engine.loop_factory()) as runner:
            runner.run(_drive(engine, spec))
        return seen, collector.trades
    finally:
        ctx.pm.unregister(collector)


async def _drive(engine: Any, spec: TestSpec) -> None:
    await engine.start()
    try:
        for book in spec.books:
            venue = engine.venues[book.venue]
            venue.process = None  # scripted books only
            venue.faults = None
            venue.set_book(book.instrument, bids=book.bids, asks=book.asks)
        finite = [v for v in engine.venues.values() if hasattr(v, "exhausted")]
        stop = asyncio.Event()

        def on_cycle(engine: Any, cycle: int) -> None:
            if finite and all(v.exhausted() for v in finite):
                stop.set()

        cycles = spec.cycles or (None if finite else 1)
        await engine.run(cycles=cycles, stop=stop, on_cycle=on_cycle)
    finally:
        await engine.close()


def evaluate(expect: Expect, opportunities: list[Opportunity], trades: list[Trade]
             ) -> list[str]:
    """Every expectation that does not hold, as 'what: expected X, got Y'."""
    out = []
    n = len(opportunities)
    if expect.opportunities is not None and n != expect.opportunities:
        out.append(f"opportunities: expected {expect.opportunities}, got {n}")
    if expect.min_opportunities is not None and n < expect.min_opportunities:
        out.append(f"opportunities: expected at least {expect.min_opportunities}, got {n}")
    kinds = sorted({o.kind for o in opportunities})
    if expect.kinds is not None and kinds != sorted(set(expect.kinds)):
        out.append(f"kinds: expected {sorted(set(expect.kinds))}, got {kinds}")
    markets = {leg.market_id for o in opportunities for leg in o.legs} | \
        {leg.instrument for o in opportunities for leg in o.legs}
    missing = [m for m in expect.markets if m not in markets]
    if missing:
        out.append(f"markets: expected {missing} among the opportunities, got "
                   f"{sorted({leg.market_id for o in opportunities for leg in o.legs})}")
    if expect.edge is not None:
        bad = [o.edge_per_share for o in opportunities if not expect.edge.holds(o.edge_per_share)]
        if bad:
            out.append(f"edge: expected every edge in {expect.edge}, got {len(bad)} outside "
                       f"(e.g. {bad[0]})")
    counts: dict[str, int] = {}
    for t in trades:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    for state, want in sorted(expect.trades.items()):
        if counts.get(state, 0) != want:
            out.append(f"trades.{state}: expected {want}, got {counts.get(state, 0)}")
    pnl = sum((t.realised_pnl for t in trades if t.state is not TradeState.REJECTED),
              Decimal(0))
    if expect.realised_pnl is not None and not expect.realised_pnl.holds(pnl):
        out.append(f"realised_pnl: expected {expect.realised_pnl}, got {pnl}")
    gates = sorted({t.gate for t in trades if t.state is TradeState.REJECTED and t.gate})
    if expect.rejected_by is not None and gates != sorted(set(expect.rejected_by)):
        out.append(f"rejected_by: expected {sorted(set(expect.rejected_by))}, got {gates}")
    return out


def run_tests(args: Any, ctx: Any) -> int:
    out, err = ctx.stdout, ctx.stderr
    try:
        configs = load_pipelines(args.pipelines, ctx.registry)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return EX_CONFIG
    plans, problems = [], []
    for config in configs:
        specs, found = check_tests(config)
        problems.extend(found)
        plans.extend((config, s) for s in specs)
    if problems:
        for problem in problems:
            print(problem, file=err)
        print(f"pr3dict test: {len(problems)} problem(s) in [[tests]]; nothing was run",
              file=err)
        return EX_CONFIG
    start = time.perf_counter()
    failed = 0
    for n, (config, spec) in enumerate(plans):
        label = f"{args.pipelines[configs.index(config)]}::{spec.name}"
        try:
            opps, trades = _run_one(config, spec, ctx, f"test-{n + 1}")
            failures = evaluate(spec.expect, opps, trades)
        except Exception as exc:  # a test that cannot run fails; the others still run
            failures = [f"error: {type(exc).__name__}: {exc}"]
        failed += bool(failures)
        print(f"{label} {'FAILED' if failures else 'PASSED'}", file=out)
        for line in failures:
            print(f"    {line}", file=out)
    passed = len(plans) - failed
    summary = ", ".join(x for x in (f"{failed} failed" if failed else "",
                                    f"{passed} passed" if passed else "") if x) or "no tests"
    print(f"{'=' * 8} {summary} in {time.perf_counter() - start:.2f}s {'=' * 8}", file=out)
    return EX_FAILED if failed else EX_OK
