"""Memory and start-up at scale: `pr3dict run` with 10,000 paper markets (peak RSS), the
Polymarket and Kalshi connectors starting against `pr3dict sim` with 10,000 markets at their
default settings, and RSS sampled over a soak of `pr3dict run`.

Targets (issue 15): peak RSS <= 200 MB at 10,000 markets; the connectors start with 10,000
markets at default settings; RSS flat over a soak that trades throughout.

    python bench/bench_memory.py [--markets N] [--cycles N] [--soak SECONDS] [--every S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import FLAT_MB_PER_MIN, slope_per_min, write_scenario

REPO = Path(__file__).resolve().parent.parent
PR3DICT = [sys.executable, "-m", "pr3dict_core.launch"]


def write_pipeline(folder: Path, markets: int) -> Path:
    """The paper pipeline of a user with 10,000 markets: journal, jsonl sink and spans on."""
    write_scenario(folder / "scenario.toml", markets, seed=5, arb_probability="0.002",
                   move_probability="0.05")
    pipeline = folder / "big.toml"
    pipeline.write_text(f"""
[pipeline]
name = "big"
[venues.sim]
type = "paper"
scenario = "scenario.toml"

[journal]
url = "sqlite:///{folder / 'journal.sqlite'}"
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
max_unwind_loss = "1"
[sinks.metrics]
type = "jsonl"
path = "{folder / 'metrics.jsonl'}"
[telemetry]
exporter = "jsonl"
path = "{folder / 'spans.jsonl'}"
""")
    return pipeline


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_peak(pipeline: Path, extra: Sequence[str]) -> tuple[float, float, str]:
    """(peak RSS MB, wall seconds, the summary's committed row) of one `pr3dict run`."""
    start = time.perf_counter()
    proc = subprocess.Popen([*PR3DICT, "run", str(pipeline), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    # ru_maxrss of the (only) child waited for so far is its peak; KB on Linux.
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pr3dict run failed ({proc.returncode}): {err[-2000:]}")
    committed = next((line.strip() for line in out.splitlines() if "committed" in line), "")
    return peak, wall, committed


def soak(pipeline: Path, seconds: float, every: float) -> list[tuple[float, float]]:
    """RSS of `pr3dict run` sampled every ``every`` seconds for ``seconds``."""
    proc = subprocess.Popen([*PR3DICT, "run", str(pipeline), "--quiet", "--duration",
                             str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    # The banner on stderr says the engine is about to start; sample from then on.
    assert proc.stderr is not None
    proc.stderr.readline()
    while proc.poll() is None:
        try:
            samples.append((time.monotonic() - start, rss_mb(proc.pid)))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            break
        time.sleep(every)  # sampling period, not a readiness wait
    proc.wait()
    return samples


# --------------------------------------------------------------------------- connectors


def write_sim_scenario(path: Path, markets: int) -> None:
    lines = ['seed = 3', 'fee_rate = "0.02"', "[sim]", "[[sim.accounts]]", 'name = "bench"',
             'polymarket_address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"',
             'kalshi_key_id = "bench-key"', f'kalshi_public_key = "{REPO}/pipelines/keys/'
             'TEST-ONLY-sim-kalshi.pub.pem"']
    for i in range(markets):
        lines += ["[[markets]]", f'id = "m{i}"', f'fair = "0.{20 + (i * 7) % 60:02d}"']
    path.write_text("\n".join(lines) + "\n")


async def start_connectors(url: str, markets: int) -> dict[str, float]:
    """Seconds each connector's ``start()`` takes against ``url``: default settings, but
    ``max_markets`` raised to ``markets`` (the default trades the first 50)."""
    from opentelemetry.trace import NoOpTracer

    from pr3dict_core.components import BuildContext
    from pr3dict_core.config import SecretRef
    from pr3dict_kalshi.venue import KalshiVenue
    from pr3dict_polymarket.venue import PolymarketVenue

    keys = REPO / "pipelines/keys"

    def resolve(ref: SecretRef | str) -> str:
        return Path(ref.file).read_text() if isinstance(ref, SecretRef) else str(ref)

    ctx = BuildContext(run_id="bench", base_dir=REPO, resolve_secret=resolve,
                       tracer=NoOpTracer(), mode="paper")
    out = {}
    for cls, options in (
        (PolymarketVenue, {"rest_url": url, "ws_url": url.replace("http", "ws") + "/ws",
                           "max_markets": markets,
                           "private_key": SecretRef(
                               file=str(keys / "TEST-ONLY-sim-polymarket.key"))}),
        (KalshiVenue, {"rest_url": url + "/trade-api/v2",
                       "ws_url": url.replace("http", "ws") + "/trade-api/ws/v2",
                       "key_id": "bench-key", "max_markets": markets,
                       "private_key": SecretRef(file=str(keys / "TEST-ONLY-sim-kalshi.pem"))}),
    ):
        venue = cls.from_config(cls.type, cls.Config(**options), ctx)
        start = time.perf_counter()
        try:
            await venue.start()
            out[cls.type] = time.perf_counter() - start
            out[f"{cls.type} markets"] = len(venue.markets())
        except Exception as exc:
            out[cls.type] = float("nan")
            out[f"{cls.type} error"] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            await venue.close()
    return out


def connector_start(markets: int, folder: Path) -> dict[str, float]:
    scenario = folder / "sim.toml"
    write_sim_scenario(scenario, markets)
    sim = subprocess.Popen([*PR3DICT, "sim", str(scenario), "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()  # "pr3dict sim: listening on URL"
        if "listening on" not in line:
            raise SystemExit(f"pr3dict sim did not start: {line}{sim.stderr.read()}")
        return asyncio.run(start_connectors(line.split("listening on")[1].strip(), markets))
    finally:
        sim.terminate()
        sim.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--soak", type=float, default=60, help="seconds (0: no soak)")
    parser.add_argument("--every", type=float, default=5)
    parser.add_argument("--only", choices=["rss", "connectors", "soak"], action="append")
    args = parser.parse_args(argv)
    only = set(args.only or ["rss", "connectors", "soak"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pipeline = write_pipeline(folder, args.markets)
        print(f"{'measure':<52} {'value':>12}  target")
        if "rss" in only:
            peak, wall, committed = run_peak(pipeline, ["--cycles", str(args.cycles)])
            print(f"{f'pr3dict run, {args.markets:,} paper markets: peak RSS':<52} "
                  f"{peak:>9.1f} MB  <= 200 MB   ({args.cycles} cycles, {wall:.1f} s; "
                  f"{committed})")
        if "connectors" in only:
            times = connector_start(args.markets, folder)
            for venue in ("polymarket", "kalshi"):
                label = f"{venue} connector start, {args.markets:,} markets (defaults)"
                error = times.get(f"{venue} error")
                value = f"{times[venue]:>10.2f} s" if not error else "    FAILED"
                print(f"{label:<52} {value}  starts       "
                      f"{error or str(int(times[f'{venue} markets'])) + ' markets loaded'}")
        if "soak" in only and args.soak > 0:
            samples = soak(pipeline, args.soak, args.every)
            quarters = [next((r for t, r in samples if t >= args.soak * q / 4), samples[-1][1])
                        for q in (1, 2, 3)] + [samples[-1][1]]
            label = f"soak {args.soak:.0f} s: RSS at 1/4, 1/2, 3/4, end"
            slope = slope_per_min([(t, r) for t, r in samples if t >= args.soak / 2])
            print(f"{label:<52} {'/'.join(f'{r:.0f}' for r in quarters):>12} MB  flat  "
                  f"(peak {max(r for _, r in samples):.0f} MB; second half {slope:+.2f} MB/min, "
                  f"{'FLAT' if slope <= FLAT_MB_PER_MIN else 'GROWING'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
