"""Journal benchmark: SQLite against PostgreSQL (a real server on loopback).

- capital reservation round trip (``Journal.reserve``: one transaction that locks the
  book's row, checks and writes), p50/p99;
- decision -> wire with each backend (the paper pipeline of the README: the intent's
  durable commit is on that path), p50/p99, and with no journal;
- trades per second with 1, 2 and 4 engine processes sharing one PostgreSQL journal and
  one capital book, trading one `pr3dict sim` account (the engines compete for the same
  markets: leases let one engine trade an instrument at a time).

    python bench/bench_journal.py [--reservations N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "scaleout"))
sys.path.insert(0, str(REPO / "tests" / "venues"))

import psycopg  # noqa: E402
from pgserver import Postgres, open_root  # noqa: E402
from venue_fixtures import sim_process, stop_process  # noqa: E402

from pr3dict_core.journal import Journal  # noqa: E402
from pr3dict_core.metrics import percentile  # noqa: E402
from pr3dict_core.pipeline import Engine  # noqa: E402

PR3DICT = Path(sys.executable).parent / "pr3dict"
KEYS = REPO / "pipelines" / "keys"


async def reservations(journal: Journal, n: int) -> list[float]:
    journal.register_engine("bench")
    journal.open_book("bench", Decimal(10) ** 9)
    out = []
    for i in range(n):
        start = time.perf_counter()
        await journal.reserve("bench", f"t{i}", Decimal("12.5"))
        out.append((time.perf_counter() - start) * 1000)
        journal.settle_capital(f"t{i}", Decimal("-0.4"))
    journal.flush()
    return out


def paper_pipeline(folder: Path, journal: str) -> Path:
    text = (REPO / "pipelines/complement-paper.toml").read_text()
    text = text.replace('scenario = "scenarios/', f'scenario = "{REPO}/pipelines/scenarios/')
    password = 'password = { env = "PR3DICT_BENCH_PG_PASSWORD" }' if journal.startswith(
        "postgresql") else ""
    path = folder / f"paper-{abs(hash(journal))}.toml"
    path.write_text(text + f'\n[journal]\nurl = "{journal}"\n{password}\n')
    return path


async def decision_to_wire(path: Path, cycles: int) -> tuple[float, float, int]:
    engine = Engine.from_file(path)
    summary = await engine.run(cycles=cycles)
    await engine.close()
    return (summary.decision_to_wire_p50_ms or 0.0, summary.decision_to_wire_p99_ms or 0.0,
            summary.committed + summary.rolled_back)


SIM_PIPELINE = """
[pipeline]
name = "bench-engines"

[journal]
url = "{url}"
password = {{ env = "PR3DICT_BENCH_PG_PASSWORD" }}

[venues.poly]
type = "polymarket"
rest_url = "{rest}"
ws_url = "{ws}/ws"
private_key = {{ file = "{keys}/TEST-ONLY-sim-polymarket.key" }}
poll_wait_ms = 30
heartbeat_interval_ms = 0

[detectors.c]
type = "binary_complement"
venues = ["poly"]
max_size = "10"

[gates.capital]
type = "capital"
bankroll = "100000"

[execution]
strategy = "market"
rollback = "complete_or_unwind"
max_unwind_loss = "1"
"""


def condition_ids(url: str) -> list[str]:
    """Every market the simulator lists (Polymarket's public GET /markets)."""
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/markets", timeout=10) as reply:
        return [m["condition_id"] for m in json.load(reply)["data"]]


def engines_throughput(pg: Postgres, folder: Path, engines: int, seconds: float, *,
                       split: bool) -> float:
    """Final trades per second of ``engines`` processes on one account; ``split`` gives each
    its own group of markets (the deployment docs/scale-out.md suggests), else every engine
    watches every market and the leases decide who trades."""
    scenario = folder / "scenario.toml"
    text = (REPO / "pipelines/scenarios/sim.toml").read_text().replace('"../keys/', f'"{KEYS}/')
    scenario.write_text(text.replace('arb_probability = "0.08"', 'arb_probability = "0.5"'))
    sim, url = sim_process(scenario)
    db = pg.url(pg.create_database())
    markets = condition_ids(url)
    env = {**os.environ, "PR3DICT_BENCH_PG_PASSWORD": pg.password}
    try:
        procs = []
        for i in range(engines):
            path = folder / f"engines-{engines}-{i}.toml"
            text = SIM_PIPELINE.format(url=db, rest=url, ws=url.replace("http", "ws"),
                                       keys=KEYS)
            if split:
                group = ", ".join(f'"{m}"' for m in markets[i::engines])
                text = text.replace("heartbeat_interval_ms = 0",
                                    f"heartbeat_interval_ms = 0\nmarkets = [{group}]")
            path.write_text(text)
            procs.append(subprocess.Popen(
                [str(PR3DICT), "run", str(path), "--engine-id", f"e{i}", "--duration",
                 str(seconds), "--quiet"], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait(seconds + 120)
        with psycopg.connect(db, password=pg.password) as conn:
            n = conn.execute("SELECT count(*) FROM trades WHERE state IN "
                             "('committed', 'rolled_back')").fetchone()[0]
        return n / seconds
    finally:
        stop_process(sim)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reservations", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        open_root(folder)
        pg = Postgres(folder / "pg")
        pg.start()
        os.environ["PR3DICT_BENCH_PG_PASSWORD"] = pg.password
        try:
            rows = []
            sqlite_j = Journal(folder / "r.sqlite", "bench", engine_id="bench")
            pg_j = Journal(pg.url(pg.create_database()), "bench", engine_id="bench",
                           password=pg.password)
            for name, journal in (("sqlite", sqlite_j), ("postgresql", pg_j)):
                ms = asyncio.run(reservations(journal, args.reservations))
                journal.close()
                rows.append((f"reservation round trip, {name}", percentile(ms, 50),
                             percentile(ms, 99), f"{len(ms)} reservations"))
            os.chdir(folder)
            # Interleaved rounds (the machine's load changes; each round runs every backend
            # once); the table shows the median round's p50 and p99.
            wire: dict[str, list[tuple[float, float, int]]] = {}
            urls = {"no journal": "", "sqlite": f"sqlite:///{folder}/d.sqlite",
                    "postgresql": pg.url(pg.create_database())}
            for _ in range(args.rounds):
                for name, url in urls.items():
                    wire.setdefault(name, []).append(asyncio.run(decision_to_wire(
                        paper_pipeline(folder, url), args.cycles)))
            for name, results in wire.items():
                p50s = sorted(r[0] for r in results)
                p99s = sorted(r[1] for r in results)
                rows.append((f"decision -> wire, {name}", p50s[len(p50s) // 2],
                             p99s[len(p99s) // 2],
                             f"{results[0][2]} trades x {len(results)} rounds"))
            print(f"{'measure':<42} {'p50 ms':>9} {'p99 ms':>9}  note")
            for label, p50, p99, note in rows:
                print(f"{label:<42} {p50:>9.3f} {p99:>9.3f}  {note}")
            print(f"\n{'engines on one PostgreSQL journal, one sim account':<52} "
                  f"{'trades/s':>9}")
            for n in (1, 2, 4):
                rate = engines_throughput(pg, folder, n, args.seconds, split=True)
                print(f"{f'{n}, markets split among them':<52} {rate:>9.1f}")
            rate = engines_throughput(pg, folder, 4, args.seconds, split=False)
            print(f"{'4, every engine on every market (leases decide)':<52} {rate:>9.1f}")
        finally:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
