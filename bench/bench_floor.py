"""The floor: what a 2-leg trade cannot avoid, pr3dict's ratio to it, and a user's script.

Against ``pr3dict sim`` in another process (loopback, static books), at 0 ms and 20 ms venue
latency, interleaved in one run:

- **floor**: 2 order signatures (EIP-712 digest + secp256k1) + one durable SQLite commit
  (WAL, synchronous=FULL) + two concurrent POST /order (HMAC headers, real orders the
  simulator matches), each part timed and summed per iteration;
- **pr3dict**: ``Engine.execute_trade`` through the polymarket connector, journal and tracing
  on; decision -> both orders acknowledged (p50 / p99), and decision -> wire;
- **official client**: a sequential py-clob-client script (bench/official_client.py) with
  coincurve installed, in its own virtual environment (``.venv-conformance``, made the way
  tests/venues/test_official_clients.py makes it, plus coincurve).

    python bench/bench_floor.py [--trades N] [--no-official]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import venv
from decimal import Decimal as D
from pathlib import Path

from common import NullExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pr3dict_core.config import ExecutionSection, SecretRef
from pr3dict_core.journal import Journal
from pr3dict_core.metrics import percentile
from pr3dict_core.model import LegSpec, OrderRequest, Side, TimeInForce
from pr3dict_core.pipeline import Engine
from pr3dict_polymarket.venue import PolymarketVenue
from pr3dict_strategies.market import MarketStrategy

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-conformance"
REQUIREMENTS = REPO / "tests" / "venues" / "official" / "requirements.txt"
PR3DICT = Path(sys.executable).parent / "pr3dict"
# TEST-ONLY wallets (the simulator registers any wallet that passes L1 auth).
ENGINE_KEY, FLOOR_KEY, OFFICIAL_KEY, UNTRACED_KEY, SINGLE_KEY = (
    "0x" + c * 32 for c in ("4a", "4b", "4c", "4d", "4e"))
SIZE = D(10)
ROUNDS = 3

SCENARIO = """
seed = 5
tick_size = "0.01"
min_size = "5"
size_step = "0.01"
fee_rate = "0.02"
[process]
move_probability = "0"
arb_probability = "0"
spread_ticks = 2
depth_levels = 3
level_size = "1000000"
[sim]
step_ms = 50
heartbeat_timeout_ms = 600000
default_balance = "1000000000"
[sim.faults]
latency_ms = {{ "*" = {latency} }}
{markets}
"""


def official_python() -> Path | None:
    """The official client's interpreter, with coincurve (installed once, then reused)."""
    python = VENV / "bin" / "python"
    try:
        if not python.exists():
            venv.EnvBuilder(with_pip=True).create(VENV)
            subprocess.run([str(python), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                           check=True, timeout=900)
        probe = "import coincurve, py_clob_client"
        if subprocess.run([str(python), "-c", probe], capture_output=True).returncode:
            subprocess.run([str(python), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", "coincurve", "py-clob-client"],
                           check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"official client unavailable: {exc}", file=sys.stderr)
        return None
    return python


def start_sim(folder: Path, latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    scenario = folder / f"sim-{latency_ms:g}.toml"
    markets = "\n".join(f'[[markets]]\nid = "m{i}"\nfair = "0.50"' for i in range(8))
    scenario.write_text(SCENARIO.format(latency=latency_ms, markets=markets))
    proc = subprocess.Popen([str(PR3DICT), "sim", str(scenario), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the listening line: it is ready
    if not first.startswith("pr3dict sim: listening on "):
        proc.kill()
        raise RuntimeError(first + (proc.stderr.read() if proc.stderr else ""))
    return proc, first.split()[-1]


def connector(vid: str, url: str, key: str) -> PolymarketVenue:
    config = PolymarketVenue.Config(rest_url=url, ws_url=url.replace("http", "ws") + "/ws",
                                    private_key=SecretRef(env="UNUSED"),
                                    max_requests_per_s=100_000.0)  # measure, do not pace
    return PolymarketVenue(vid, config, private_key=key, mode="paper")


class Floor:
    """The unavoidable parts, done as directly as they can be (same wallet work, same
    commit, same requests), each timed on its own."""

    def __init__(self, venue: PolymarketVenue, folder: Path):
        self.venue = venue
        self.db = sqlite3.connect(folder / "floor.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT, body TEXT)")
        self.n = 0

    async def once(self, legs: list[LegSpec]) -> tuple[float, float, float]:
        venue = self.venue
        bodies = []
        for leg in legs:  # the order's fields (untimed: pr3dict pays for this on its own)
            self.n += 1
            request = OrderRequest(f"floor-{self.n}", "floor", leg.instrument, Side.BUY,
                                   leg.price, SIZE, TimeInForce.FAK)
            oid, body = venue._build(request)
            bodies.append((oid, body, venue._domain(venue.market_of(leg.instrument))))
        t0 = time.perf_counter()
        for _, body, domain in bodies:
            body["order"]["signature"] = venue.signer.sign_digest(domain.digest(body["order"]))
        t1 = time.perf_counter()
        self.db.execute("BEGIN")
        for oid, body, _ in bodies:
            self.db.execute("INSERT INTO orders VALUES (?, ?)", (oid, body["orderType"]))
        self.db.execute("COMMIT")
        t2 = time.perf_counter()
        replies = await asyncio.gather(*(self.post(body) for _, body, _ in bodies))
        t3 = time.perf_counter()
        assert all(r.get("success") for r in replies), replies
        return t1 - t0, t2 - t1, t3 - t2

    async def post(self, body: dict) -> dict:
        venue = self.venue
        text = json.dumps(body, separators=(",", ":"))
        assert venue.http.session is not None
        async with venue.http.session.post(venue.rest_url + "/order", data=text,
                                           headers=venue._l2("POST", "/order", text)) as r:
            return await r.json()


def engine_for(url: str, key: str, folder: Path, provider: TracerProvider | None,
               batch: bool = True) -> Engine:
    venue = connector("poly", url, key)
    return Engine(venues={"poly": venue}, detectors=[],
                  strategy=MarketStrategy(MarketStrategy.Config(max_slippage_ticks=0)),
                  execution=ExecutionSection(deadline_ms=2000, batch_orders=batch),
                  tracer_provider=provider, journal=Journal(folder / f"engine-{key[2:4]}.sqlite"))


async def sweep(url: str, trades: int, folder: Path) -> list[tuple[str, str]]:
    """Many legs to one venue: one batch request against one request per leg."""
    batched = engine_for(url, ENGINE_KEY, folder, None)
    single = engine_for(url, SINGLE_KEY, folder, None, batch=False)
    await batched.start()
    await single.start()
    venue = batched.venues["poly"]
    every = [LegSpec("poly", inst, Side.BUY, venue.book(inst).asks[0].price, SIZE, m.market_id)
             for m in venue.markets() for inst in (m.yes, m.no)]
    rows = []
    for n in (2, 4, 8, 16):
        out: dict[str, list[float]] = {"bw": [], "ba": [], "sw": [], "sa": []}
        for i in range(trades + 5):
            for key, engine in (("b", batched), ("s", single)):
                trade = await engine.execute_trade(every[:n], size=SIZE)
                if i >= 5:
                    out[key + "w"].append((trade.on_wire_at - trade.decided_at) * 1000)
                    out[key + "a"].append((max(leg.finished_at for leg in trade.legs)
                                           - trade.decided_at) * 1000)
        rows.append((f"  {n} legs: wire p50/p99, batch | one by one",
                     f"{p(out['bw'], 50):.2f}/{p(out['bw'], 99):.2f} | "
                     f"{p(out['sw'], 50):.2f}/{p(out['sw'], 99):.2f} ms"))
        rows.append((f"  {n} legs: all acked p50/p99, batch | one by one",
                     f"{p(out['ba'], 50):.2f}/{p(out['ba'], 99):.2f} | "
                     f"{p(out['sa'], 50):.2f}/{p(out['sa'], 99):.2f} ms"))
    await batched.close()
    await single.close()
    return rows


async def measure(url: str, trades: int, folder: Path) -> dict[str, list[float]]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_export_batch_size=64))
    engine = engine_for(url, ENGINE_KEY, folder, provider)
    untraced = engine_for(url, UNTRACED_KEY, folder, None)  # the same, tracing off
    await engine.start()
    await untraced.start()
    venue = engine.venues["poly"]
    floor_venue = connector("floor", url, FLOOR_KEY)
    await floor_venue.start()
    floor = Floor(floor_venue, folder)
    m = venue.markets()[0]
    legs = [LegSpec("poly", inst, Side.BUY, venue.book(inst).asks[0].price, SIZE, m.market_id)
            for inst in (m.yes, m.no)]
    out: dict[str, list[float]] = {k: [] for k in (
        "acked", "wire", "submit", "floor", "sign", "commit", "post", "untraced")}
    for i in range(trades + 10):
        sign, commit, post = await floor.once(legs)
        trade = await engine.execute_trade(legs, size=SIZE)
        plain = await untraced.execute_trade(legs, size=SIZE)
        if i < 10:  # warm-up
            continue
        out["untraced"].append((max(leg.finished_at for leg in plain.legs)
                                - plain.decided_at) * 1000)
        if i % 50 == 0:
            gc.collect()
        assert all(leg.filled == SIZE for leg in trade.legs), trade.error
        acked = max(leg.finished_at for leg in trade.legs)
        out["acked"].append((acked - trade.decided_at) * 1000)
        out["wire"].append((trade.on_wire_at - trade.decided_at) * 1000)
        out["submit"].append((trade.submitted_at - trade.decided_at) * 1000)
        out["sign"].append(sign * 1000)
        out["commit"].append(commit * 1000)
        out["post"].append(post * 1000)
        out["floor"].append((sign + commit + post) * 1000)
    out["legs"] = [(str(leg.instrument), str(leg.price)) for leg in legs]  # type: ignore
    await engine.close()
    await untraced.close()
    await floor_venue.close()
    provider.shutdown()
    return out


def run_official(python: Path, url: str, legs: list[tuple[str, str]], trades: int
                 ) -> tuple[list[float], list[float]] | None:
    """(per trade: decision -> second reply; per order: the client's work before sending)."""
    (yes, py), (no, pn) = legs
    result = subprocess.run(
        [str(python), str(Path(__file__).parent / "official_client.py"), url, OFFICIAL_KEY,
         yes, no, py, pn, str(SIZE), str(trades)], capture_output=True, text=True, timeout=900)
    if result.returncode:
        print(f"official client failed: {result.stderr[-800:]}", file=sys.stderr)
        return None
    data = json.loads(result.stdout.splitlines()[-1])
    if data["errors"] or not data["coincurve"]:
        print(f"official client: {data['errors']} errors, coincurve {data['coincurve']}",
              file=sys.stderr)
    return data["ms"], data["build_ms"]


def p(values: list[float], q: float) -> float:
    return percentile(values, q) or 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--no-official", action="store_true")
    args = parser.parse_args()
    python = None if args.no_official else official_python()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        for latency in (0, 20):
            folder = Path(tmp) / f"l{latency}"
            folder.mkdir()
            proc, url = start_sim(folder, latency)
            trades = args.trades if latency == 0 else max(args.trades // 5, 30)
            r: dict[str, list] = {}
            official: list[float] = []
            official_build: list[float] = []
            try:  # rounds: pr3dict and the official client alternate under the same load
                for n in range(ROUNDS):
                    (folder / str(n)).mkdir()
                    part = asyncio.run(measure(url, trades // ROUNDS, folder / str(n)))
                    for key, values in part.items():
                        r.setdefault(key, []).extend(values)
                    if python is not None:
                        got = run_official(python, url, part["legs"],  # type: ignore
                                           trades // ROUNDS)
                        if got is not None:
                            official += got[0]
                            official_build += got[1]
            finally:
                proc.terminate()
                proc.communicate(timeout=20)
            rows.append((f"venue latency {latency} ms ({trades} trades)", ""))
            for key, label in (("sign", "floor: 2 signatures"), ("commit", "floor: 1 commit"),
                               ("post", "floor: 2 concurrent POST"), ("floor", "floor: sum")):
                rows.append((f"  {label} p50 / p99",
                             f"{p(r[key], 50):.3f} / {p(r[key], 99):.3f} ms"))
            for key, label in (("submit", "decision -> submit"), ("wire", "decision -> wire"),
                               ("acked", "decision -> both acked")):
                rows.append((f"  pr3dict {label} p50 / p99",
                             f"{p(r[key], 50):.3f} / {p(r[key], 99):.3f} ms"))
            rows.append(("  pr3dict, tracing off: both acked p50 / p99",
                         f"{p(r['untraced'], 50):.3f} / {p(r['untraced'], 99):.3f} ms"))
            rows.append(("  tracing cost on the I/O path, p50 (target <= 5%)",
                         f"{(p(r['acked'], 50) / p(r['untraced'], 50) - 1) * 100:+.1f} %"))
            rows.append(("  pr3dict / floor p50, p99 (target 1.5x, 3x)",
                         f"{p(r['acked'], 50) / p(r['floor'], 50):.2f}x, "
                         f"{p(r['acked'], 99) / p(r['floor'], 99):.2f}x"))
            if official:
                rows.append(("  official client (sequential) p50 / p99",
                             f"{p(official, 50):.3f} / {p(official, 99):.3f} ms"))
                rows.append(("  official / pr3dict p50 (target >= 2x)",
                             f"{p(official, 50) / p(r['acked'], 50):.2f}x"))
                # Why 2x is out of reach: the script pays latency + its own work + the
                # venue's per order, twice; pr3dict once, plus its own work and both orders'
                # venue work. 2x needs pr3dict's own work (with the durable intent) plus one
                # order's venue work to cost less than the script's work for one order.
                own = p(r["acked"], 50) - p(r["post"], 50)
                rows.append(("  official client's own work per order p50",
                             f"{p(official_build, 50):.3f} ms"))
                rows.append(("  pr3dict's own work per trade p50 (acked - floor POST)",
                             f"{own:.3f} ms"))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        proc, url = start_sim(Path(tmp), 0)
        try:
            rows.append((f"legs to one venue, 0 ms ({args.trades // 5} trades each)", ""))
            rows += asyncio.run(sweep(url, max(args.trades // 5, 20), Path(tmp)))
        finally:
            proc.terminate()
            proc.communicate(timeout=20)
    width = max(len(k) for k, _ in rows)
    print("floor benchmark (2 legs, polymarket connector, pr3dict sim in another process)")
    print("-" * (width + 28))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>26}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
