"""Engine benchmark: the paper pipeline headless.

Prints decision -> wire p50/p99, decision -> final p50/p99, trades per second (every trade
the statistics counted), and the cost of tracing (BatchSpanProcessor with a no-op exporter,
every trade traced, and one in ten with ``sample_ratio = 0.1``) against tracing off, same
seed, runs interleaved, the best of each kept. The journal lives on /dev/shm when there is
one: a CPU-bound run, where tracing's cost shows most (its fsync is bench_floor's business).

    python bench/bench_engine.py [--cycles N] [--markets N] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import NullExporter, write_scenario
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pr3dict_core.pipeline import Engine


def write_pipeline(folder: Path, markets: int, concurrency: int = 64) -> Path:
    write_scenario(folder / "scenario.toml", markets, seed=11, arb_probability="0.2",
                   move_probability="0.3")
    pipeline = folder / "bench.toml"
    pipeline.write_text("""
[pipeline]
name = "bench"

[journal]
url = "sqlite:///JOURNAL"
[venues.sim]
type = "paper"
scenario = "scenario.toml"
[detectors.c]
type = "binary_complement"
venues = ["sim"]
max_size = "25"
[gates.capital]
type = "capital"
bankroll = "100000"
[gates.position]
type = "max_position"
max_leg_size = "100"
[execution]
strategy = "market"
deadline_ms = 30
max_concurrent_trades = CONCURRENCY
""".replace("CONCURRENCY", str(concurrency)).replace("JOURNAL", str(folder / "journal.sqlite")))
    return pipeline


async def run_once(pipeline: Path, cycles: int, provider: TracerProvider | None):
    # A fresh journal each run: an earlier run's trades would be recovered and re-checked
    # at start, and the runs compared would not do the same work.
    for leftover in pipeline.parent.glob("journal.sqlite*"):
        leftover.unlink()
    engine = Engine.from_file(pipeline, tracer_provider=provider)
    await engine.start()
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    summary = await engine.run(cycles=cycles)
    elapsed = time.perf_counter() - start
    CPU.append(time.process_time() - cpu)  # every thread of the process: the exporter's too
    await engine.close()
    # Every trade that executed, from the statistics (engine.trades keeps only the latest).
    return summary, elapsed, summary.committed + summary.rolled_back + summary.unresolved


CPU: list[float] = []  # process CPU seconds of each run_once, in order


def traced(ratio: float) -> TracerProvider:
    sampler = sampling.ParentBased(sampling.TraceIdRatioBased(ratio)) if ratio < 1 else None
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_export_batch_size=64))
    return provider


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        # Latency: one trade at a time (nothing queues behind other trades), tracing on.
        lat_dir = Path(tmp) / "latency"
        lat_dir.mkdir()
        provider = traced(1.0)
        lat, _, lat_trades = asyncio.run(run_once(write_pipeline(lat_dir, 8, concurrency=1),
                                                  args.cycles * 3, provider))
        provider.shutdown()
        pipeline = write_pipeline(Path(tmp), args.markets)
        times: dict[str, list[float]] = {"off": [], "on": [], "sampled": []}
        cpu: dict[str, list[float]] = {"off": [], "on": [], "sampled": []}
        summaries = []
        trades = 0
        for _ in range(args.repeat):
            for mode, ratio in (("off", None), ("on", 1.0), ("sampled", 0.1)):
                provider = traced(ratio) if ratio is not None else None
                summary, elapsed, trades = asyncio.run(run_once(pipeline, args.cycles,
                                                                provider))
                if provider is not None:
                    provider.shutdown()
                times[mode].append(elapsed)
                cpu[mode].append(CPU[-1])
                summaries.append(summary)
    best_off, best_on, best_sampled = (min(times[m]) for m in ("off", "on", "sampled"))
    cpu_off, cpu_on, cpu_sampled = (min(cpu[m]) for m in ("off", "on", "sampled"))
    wire50 = statistics.median(s.decision_to_wire_p50_ms for s in summaries)
    wire99 = statistics.median(s.decision_to_wire_p99_ms for s in summaries)
    fin50 = statistics.median(s.decision_to_final_p50_ms for s in summaries)
    fin99 = statistics.median(s.decision_to_final_p99_ms for s in summaries)
    rows = [
        ("one trade at a time, tracing on", ""),
        ("  trades", f"{lat_trades}"),
        ("  decision -> wire p50", f"{lat.decision_to_wire_p50_ms:.3f} ms"),
        ("  decision -> wire p99", f"{lat.decision_to_wire_p99_ms:.3f} ms"),
        ("  decision -> final p50", f"{lat.decision_to_final_p50_ms:.3f} ms"),
        ("  decision -> final p99", f"{lat.decision_to_final_p99_ms:.3f} ms"),
        (f"burst: {args.markets} markets x {args.cycles} cycles", ""),
        ("  trades per run", f"{trades}"),
        ("  decision -> wire p50 (queued)", f"{wire50:.3f} ms"),
        ("  decision -> wire p99 (queued)", f"{wire99:.3f} ms"),
        ("  decision -> final p50", f"{fin50:.3f} ms"),
        ("  decision -> final p99", f"{fin99:.3f} ms"),
        ("  trades/s, tracing off", f"{trades / best_off:,.0f}"),
        ("  trades/s, tracing on", f"{trades / best_on:,.0f}"),
        ("  cycle time, tracing off", f"{best_off / args.cycles * 1000:.3f} ms"),
        ("  cycle time, tracing on", f"{best_on / args.cycles * 1000:.3f} ms"),
        ("  trades/s, one trade in ten traced", f"{trades / best_sampled:,.0f}"),
        ("  tracing cost, every trade: wall / CPU (target <= 10%)",
         f"{(best_on / best_off - 1) * 100:+.1f} / {(cpu_on / cpu_off - 1) * 100:+.1f} %"),
        ("  tracing cost, sample_ratio 0.1: wall / CPU",
         f"{(best_sampled / best_off - 1) * 100:+.1f} / "
         f"{(cpu_sampled / cpu_off - 1) * 100:+.1f} %"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'engine benchmark (paper venue, in process)':<{width + 20}}")
    print("-" * (width + 20))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
