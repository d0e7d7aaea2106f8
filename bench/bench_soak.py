"""Soak: RSS over time with 10,000 markets on the paper venue, tracing and journal on.

Target (DESIGN §9): RSS <= 200 MB with 10,000 markets, flat over a long run.

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
                   move_probability="0.05")
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

    def on_cycle(eng: Engine, cycle: int) -> None:
        nonlocal next_sample
        now = time.monotonic()
        if now >= next_sample:
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
        print(f"entries stopped during the soak (fail closed): {halted[:300]}")
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
    print(f"{'elapsed s':>10} {'trades':>10} {'RSS MB':>10}")
    for t, trades, rss in samples:
        print(f"{t:>10.0f} {trades:>10,} {rss:>10.1f}")
    after_warmup = [rss for t, _, rss in samples if t >= min(30, args.duration / 2)]
    if len(after_warmup) >= 2:
        print(f"growth after warm-up: {after_warmup[-1] - after_warmup[0]:+.1f} MB; "
              f"peak {max(r for _, _, r in samples):.1f} MB (target <= 200 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
