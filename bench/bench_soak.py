"""Soak: RSS over time with 10,000 markets on the paper venue, tracing and journal on.

Target (DESIGN §9): RSS <= 200 MB with 10,000 markets, flat over a long run that trades
throughout. The market makers always leave a bid (deep levels) and a partly filled trade is
completed or unwound (``complete_or_unwind``), so nothing is left held that would stop
entries; each sample shows the trades of its interval, and a halt is reported with its time.

    python bench/bench_soak.py [--duration SECONDS] [--markets N] [--every SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import NullExporter, write_scenario
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pr3dict_core.pipeline import Engine


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_pipeline(folder: Path, markets: int) -> Path:
    write_scenario(folder / "scenario.toml", markets, seed=5, arb_probability="0.002",
                   move_probability="0.05", level_size="2000")
    pipeline = folder / "soak.toml"
    pipeline.write_text(f"""
[pipeline]
name = "soak"

[journal]
url = "sqlite:///{folder / 'journal.sqlite'}"
[venues.sim]
type = "paper"
scenario = "scenario.toml"
[detectors.c]
type = "binary_complement"
venues = ["sim"]
max_size = "25"
[gates.capital]
type = "capital"
bankroll = "1000000"
[execution]
strategy = "market"
deadline_ms = 30
rollback = "complete_or_unwind"
max_unwind_loss = "1"  # a soak keeps trading; a held position would stop entries
[sinks.memory]
type = "memory"
max_records = 1000
""")
    return pipeline


async def soak(pipeline: Path, duration: float, every: float) -> list[tuple[float, int, float]]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_export_batch_size=64))
    engine = Engine.from_file(pipeline, tracer_provider=provider)
    await engine.start()
    samples = [(0.0, 0, rss_mb())]
    start = time.monotonic()
    next_sample = start + every
    stop = asyncio.Event()
    halted_at: list[float] = []

    def on_cycle(eng: Engine, cycle: int) -> None:
        nonlocal next_sample
        now = time.monotonic()
        if eng.halted and not halted_at:
            halted_at.append(now - start)
        if now >= next_sample or now - start >= duration:
            s = eng.statistics()
            samples.append((now - start, s.committed + s.rolled_back, rss_mb()))
            next_sample = now + every
        if now - start >= duration:
            stop.set()

    await engine.run(stop=stop, on_cycle=on_cycle)
    halted = engine.halted
    await engine.close()
    provider.shutdown()
    if halted:
        print(f"entries STOPPED at {halted_at[0] if halted_at else 0:.0f} s (fail closed): "
              f"{halted[:300]}")
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--markets", type=int, default=10_000)
    parser.add_argument("--every", type=float, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = write_pipeline(Path(tmp), args.markets)
        samples = asyncio.run(soak(pipeline, args.duration, args.every))
    print(f"soak: {args.markets:,} markets, {args.duration:.0f} s, tracing + journal on")
    print(f"{'elapsed s':>10} {'trades':>10} {'trades/s':>10} {'RSS MB':>10}")
    last_t, last_n = 0.0, 0
    for t, trades, rss in samples:
        rate = (trades - last_n) / (t - last_t) if t > last_t else 0.0
        print(f"{t:>10.0f} {trades:>10,} {rate:>10.0f} {rss:>10.1f}")
        last_t, last_n = t, trades
    idle = [t for (t, n), (_, m) in zip(((t, n) for t, n, _ in samples[1:]),
                                         ((t, n) for t, n, _ in samples[:-1]), strict=True)
            if n == m]
    print("traded in every interval" if not idle else
          f"NO trades in the interval(s) ending at {', '.join(f'{t:.0f}' for t in idle)} s")
    after_warmup = [rss for t, _, rss in samples if t >= min(30, args.duration / 2)]
    if len(after_warmup) >= 2:
        print(f"growth after warm-up: {after_warmup[-1] - after_warmup[0]:+.1f} MB; "
              f"peak {max(r for _, _, r in samples):.1f} MB (target <= 200 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
