"""Start-up: `pr3dict --help`, `pr3dict validate` (a paper pipeline) and the first order after
`pr3dict run` starts (the polymarket connector against `pr3dict sim`), each in a fresh process.

Targets (issue 15): --help and validate <= 0.4 s; first order <= 0.6 s after start. Plugins
are imported only when a pipeline uses them (docs/architecture.md); `python -X importtime`
shows what a command imports.

    python bench/bench_startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PR3DICT = str(Path(sys.executable).parent / "pr3dict")
KEY = REPO / "pipelines/keys/TEST-ONLY-sim-polymarket.key"
ADDRESS = "0x9b302A07524FbD31a1E4a491c9f23B7C06695AF4"  # of KEY (keys/README.md)


def timed(argv: Sequence[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - start)
    return out


def write_first_order(folder: Path, url: str) -> Path:
    """A polymarket pipeline against the simulator at ``url``, whose books open windows at
    once (every step), so the first order follows the first books."""
    pipeline = folder / "first.toml"
    pipeline.write_text(f"""
[pipeline]
name = "first"
[venues.poly]
type = "polymarket"
rest_url = "{url}"
ws_url = "{url.replace('http', 'ws')}/ws"
private_key = {{ file = "{KEY}" }}
poll_wait_ms = 5

[journal]
url = "sqlite:///{folder / 'journal.sqlite'}"
[detectors.c]
type = "binary_complement"
venues = ["poly"]
max_size = "10"
[gates.capital]
type = "capital"
bankroll = "1000"
[execution]
strategy = "market"
deadline_ms = 500
order_timeout_ms = 1000
""")
    return pipeline


def write_sim_scenario(path: Path) -> None:
    lines = ['seed = 7', 'min_size = "5"', 'fee_rate = "0.02"',
             "[process]", 'arb_probability = "1"', 'move_probability = "0"', "spread_ticks = 1",
             "[sim]", "step_ms = 10", "[[sim.accounts]]", 'name = "bench"', 'balance = "100000"',
             f'polymarket_address = "{ADDRESS}"']
    for i in range(8):
        lines += ["[[markets]]", f'id = "m{i}"', f'fair = "0.{30 + 5 * i}"']
    path.write_text("\n".join(lines) + "\n")


async def first_orders(repeat: int, folder: Path) -> list[float]:
    """Seconds from spawning `pr3dict run` to the simulator receiving its first order."""
    from pr3dict_sim import SimServer

    write_sim_scenario(folder / "sim.toml")
    out = []
    for n in range(repeat):
        server = SimServer.from_file(folder / "sim.toml", port=0)
        await server.start()
        run_dir = folder / f"run{n}"
        run_dir.mkdir()
        pipeline = write_first_order(run_dir, server.url)
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            PR3DICT, "run", str(pipeline), "--quiet", "--duration", "30", cwd=run_dir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not any(route.startswith("POST /order") for route in server.requests):
                if proc.returncode is not None:
                    raise SystemExit("pr3dict run ended before its first order")
                await asyncio.sleep(0.001)  # sampling the simulator's counters, not a wait
            out.append(time.perf_counter() - start)
        finally:
            proc.terminate()
            await proc.wait()
            await server.stop()
    return out


def row(label: str, samples: list[float], target: str) -> str:
    return (f"{label:<46} {statistics.median(samples):>8.3f} s {min(samples):>8.3f} s  "
            f"{target}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    paper = REPO / "pipelines/complement-paper.toml"
    print(f"{f'command (fresh process, {args.repeat} runs)':<46} {'median':>10} "
          f"{'best':>10}  target")
    print(row("python -c pass (the interpreter alone)",
              timed([sys.executable, "-c", "pass"], args.repeat), "-"))
    print(row("pr3dict --help", timed([PR3DICT, "--help"], args.repeat), "<= 0.4 s"))
    print(row("pr3dict validate (paper pipeline)",
              timed([PR3DICT, "validate", str(paper)], args.repeat), "<= 0.4 s"))
    with tempfile.TemporaryDirectory() as tmp:
        firsts = asyncio.run(first_orders(max(args.repeat // 2, 3), Path(tmp)))
    print(row("pr3dict run: start -> first order at the venue", firsts, "<= 0.6 s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
