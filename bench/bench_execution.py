"""Execution benchmark: decision -> all legs on the wire, and parallel vs sequential legs.

With the journal (SQLite WAL, synchronous=FULL for intents) and tracing (BatchSpanProcessor)
on, against the in-process paper venue:

- decision -> all legs on the wire for 2, 4 and 8 legs, p50/p99 (venue latency 0);
- decision -> all legs final at a simulated venue latency of 20 ms, parallel (the engine)
  against sequential (the same legs one after another), and the parallel / latency ratio.

    python bench/bench_execution.py [--trades N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
from collections.abc import Sequence
from decimal import Decimal as D
from pathlib import Path

from common import NullExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pr3dict_core.config import ExecutionSection
from pr3dict_core.journal import Journal
from pr3dict_core.metrics import percentile
from pr3dict_core.model import LegSpec, Side
from pr3dict_core.pipeline import Engine
from pr3dict_paper.scenario import MarketSpec, ProcessSpec, ScenarioSpec
from pr3dict_paper.venue import PaperVenue
from pr3dict_strategies.market import MarketStrategy


class Sequential:
    """The baseline: the same strategy, but one leg at a time."""

    type = "sequential"

    def __init__(self, inner: MarketStrategy):
        self.inner = inner
        self.max_slippage_ticks = inner.max_slippage_ticks
        self.lock = asyncio.Lock()

    async def execute_leg(self, leg, ctx):  # type: ignore[no-untyped-def]
        async with self.lock:
            await self.inner.execute_leg(leg, ctx)


def venue(markets: int, latency_ms: float) -> PaperVenue:
    spec = ScenarioSpec(seed=1, markets=tuple(MarketSpec(id=f"m{i}") for i in range(markets)),
                        process=ProcessSpec(arb_probability=D(0), move_probability=D(0)))
    return PaperVenue("v", spec, seed=1, latency_ms=latency_ms, faults=False, process=False)


def legs_for(v: PaperVenue, n: int) -> list[LegSpec]:
    out = []
    for m in v.markets():
        for inst in (m.yes, m.no):
            out.append(LegSpec("v", inst, Side.BUY, D("0.45"), D(1), m.market_id))
    return out[:n]


def refill(v: PaperVenue) -> None:
    for m in v.markets():
        for inst in (m.yes, m.no):
            v.set_book(inst, bids=[(D("0.40"), D(100000))], asks=[(D("0.45"), D(100000))])


async def run(n_legs: int, trades: int, latency_ms: float, sequential: bool, folder: Path):
    v = venue((n_legs + 1) // 2, latency_ms)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    strategy = MarketStrategy(MarketStrategy.Config(max_slippage_ticks=0))
    engine = Engine(venues={"v": v}, detectors=[],
                    strategy=Sequential(strategy) if sequential else strategy,
                    execution=ExecutionSection(deadline_ms=1000), tracer_provider=provider,
                    journal=Journal(folder / f"j-{n_legs}-{latency_ms}-{sequential}.sqlite"))
    await engine.start()
    refill(v)
    legs = legs_for(v, n_legs)
    for _ in range(5):  # warm up
        await engine.execute_trade(legs, size=D(1), kind="bench")
    gc.collect()
    wire, final = [], []
    for _ in range(trades):
        trade = await engine.execute_trade(legs, size=D(1), kind="bench")
        wire.append((trade.on_wire_at - trade.decided_at) * 1000)
        final.append((trade.finished_at - trade.decided_at) * 1000)
    await engine.close()
    provider.shutdown()
    return wire, final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=400)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (2, 4, 8):
            wire, _ = asyncio.run(run(n, args.trades, 0, False, Path(tmp)))
            rows.append((f"{n} legs: decision -> wire p50 / p99",
                         f"{percentile(wire, 50):.3f} / {percentile(wire, 99):.3f} ms"))
        latency = 20.0
        for n in (2, 4, 8):
            _, par = asyncio.run(run(n, 30, latency, False, Path(tmp)))
            _, seq = asyncio.run(run(n, 10, latency, True, Path(tmp)))
            p, s = statistics.median(par), statistics.median(seq)
            rows.append((f"{n} legs @ {latency:.0f} ms: parallel / sequential",
                         f"{p:.1f} / {s:.1f} ms"))
            rows.append((f"{n} legs: parallel / latency, overhead",
                         f"{p / latency:.3f}x, {p - latency:+.2f} ms"))
    width = max(len(k) for k, _ in rows)
    print("execution benchmark (paper venue, journal FULL + tracing on)")
    print("-" * (width + 26))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
