"""Soak: RSS over time with 10,000 markets on the paper venue, tracing and journal on.

Target (DESIGN §9): RSS <= 200 MB with 10,000 markets, flat over a long run that trades
throughout. The market makers always leave a bid (deep levels) and a partly filled trade is
completed or unwound (``complete_or_unwind``), so nothing is left held that would stop
entries; each sample shows the trades of its interval, and a halt is reported with its time.

Each sample also shows Python's allocated blocks (``sys.getallocatedblocks``: live Python
objects, cheap) and, on glibc, malloc's bytes in use and free inside its heaps
(``mallinfo2``): RSS rising with the blocks is live objects, RSS rising with malloc's free
bytes is fragmentation. "Flat" is the least-squares slope over the second half (<= 0.2
MB/min). The bounded histories (10,000 trades or orders each) fill in the first 2-4 minutes at
10,000 markets, so a shorter run shows warm-up, not a leak: judge with ``--duration 600`` or
more (docs/execution.md has the 30-minute figures).

    python bench/bench_soak.py [--duration SECONDS] [--markets N] [--every SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from common import FLAT_MB_PER_MIN, NullExporter, slope_per_min, write_scenario
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pr3dict_core.pipeline import Engine


class Sample(NamedTuple):
    t: float
    trades: int
    rss: float  # MB
    blocks: int  # Python's allocated blocks
    malloc_used: float  # MB in use in malloc's heaps (nan if not glibc)
    malloc_free: float  # MB free inside malloc's heaps


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc >= 2.33
        return None
    fn.restype = _MallInfo2
    return fn


MALLINFO2 = _mallinfo2()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def sample(t: float, trades: int) -> Sample:
    used = free = float("nan")
    if MALLINFO2 is not None:
        info = MALLINFO2()
        used, free = (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20
    return Sample(t, trades, rss_mb(), sys.getallocatedblocks(), used, free)


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


async def soak(pipeline: Path, duration: float, every: float) -> list[Sample]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_export_batch_size=64))
    engine = Engine.from_file(pipeline, tracer_provider=provider)
    await engine.start()
    samples = [sample(0.0, 0)]
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
            samples.append(sample(now - start, s.committed + s.rolled_back))
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
    print(f"{'elapsed s':>10} {'trades':>10} {'trades/s':>9} {'RSS MB':>8} "
          f"{'Py blocks':>10} {'malloc used':>12} {'malloc free':>12}")
    last = samples[0]
    for x in samples:
        rate = (x.trades - last.trades) / (x.t - last.t) if x.t > last.t else 0.0
        print(f"{x.t:>10.0f} {x.trades:>10,} {rate:>9.0f} {x.rss:>8.1f} {x.blocks:>10,} "
              f"{x.malloc_used:>12.1f} {x.malloc_free:>12.1f}")
        last = x
    idle = [b.t for a, b in itertools.pairwise(samples) if a.trades == b.trades]
    print("traded in every interval" if not idle else
          f"NO trades in the interval(s) ending at {', '.join(f'{t:.0f}' for t in idle)} s")
    second_half = [x for x in samples if x.t >= args.duration / 2]
    if len(second_half) >= 3:
        rss = slope_per_min([(x.t, x.rss) for x in second_half])
        blocks = slope_per_min([(x.t, x.blocks) for x in second_half])
        free = slope_per_min([(x.t, x.malloc_free) for x in second_half])
        verdict = "FLAT" if rss <= FLAT_MB_PER_MIN else "GROWING"
        print(f"second half ({second_half[0].t:.0f}-{second_half[-1].t:.0f} s): RSS "
              f"{second_half[0].rss:.1f} -> {second_half[-1].rss:.1f} MB, slope {rss:+.2f} MB/min "
              f"({verdict}, flat <= {FLAT_MB_PER_MIN} MB/min); Python blocks {blocks:+,.0f}/min; "
              f"malloc free {free:+.2f} MB/min")
    print(f"peak RSS {max(x.rss for x in samples):.1f} MB (target <= 200 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
