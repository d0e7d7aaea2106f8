"""Several engine processes, one PostgreSQL journal, one `pr3dict sim`.

Four `pr3dict run` processes trade the same Polymarket account (the simulator, in its own
process) with one shared capital book smaller than their demand. A watcher reads the
database throughout: the book's `used` always equals its entries and stays within the
bankroll. Then one engine is SIGKILLed mid-trade and not restarted: another adopts its
open trades once its lease expires and finishes them through the reconciler. At the end
no instrument was traded by two engines at once (from the journal's own timestamps),
nothing rests, and the venue's positions equal the journal's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parents[1] / "venues"))
from venue_fixtures import REPO, sim_process, stop_process

PR3DICT = Path(sys.executable).parent / "pr3dict"
KEYS = REPO / "pipelines" / "keys"
BANKROLL = Decimal(40)
LEASE_MS = 2000
FINAL = ("committed", "rolled_back", "rejected")

PIPELINE = """
[pipeline]
name = "scale-out"

[journal]
url = "{url}"
password = {{ env = "PR3DICT_TEST_PG_PASSWORD" }}
lease_ms = {lease}

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
bankroll = "{bankroll}"
book = "shared"

[execution]
strategy = "market"
deadline_ms = 300
order_timeout_ms = 1000
reconcile_timeout_ms = 2000
max_unwind_loss = "1"
rollback = "complete_or_unwind"
max_concurrent_trades = 2
"""

FAULTS = """
[sim.faults]
latency_ms = { "*" = 25 }
"""


class Watcher(threading.Thread):
    """Snapshots of the capital book, each in one REPEATABLE READ transaction."""

    def __init__(self, url: str, password: str):
        super().__init__(daemon=True)
        self.url, self.password = url, password
        self.stop = threading.Event()
        self.snapshots: list[tuple[Decimal, ...]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, password=self.password, autocommit=True) as conn:
                while not self.stop.is_set():
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        book = conn.execute("SELECT bankroll, used FROM capital_books "
                                            "WHERE name = 'shared'").fetchone()
                        rows = conn.execute("SELECT reserved, spent, state FROM "
                                            "capital_entries").fetchall()
                    if book is None:
                        continue
                    held = sum((Decimal(r[0]) if r[2] == "reserved" else Decimal(r[1])
                                for r in rows), Decimal(0))
                    reserved = sum((Decimal(r[0]) for r in rows if r[2] == "reserved"),
                                   Decimal(0))
                    # What trades spent beyond their own worst case (an unwind that lost
                    # more than its reservation) is not an over-commit by interleaving.
                    overrun = sum((max(Decimal(0), Decimal(r[1]) - Decimal(r[0]))
                                   for r in rows if r[2] == "final"), Decimal(0))
                    self.snapshots.append((Decimal(book[0]), Decimal(book[1]), held, reserved,
                                           overrun))
                    self.stop.wait(0.005)
        except BaseException as exc:  # reported by the test
            self.error = exc


def query(url: str, password: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, password=password, autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()


def start_engine(tmp_path: Path, engine_id: str, env: dict[str, str]) -> subprocess.Popen:
    folder = tmp_path / engine_id
    folder.mkdir(exist_ok=True)
    return subprocess.Popen([str(PR3DICT), "run", str(tmp_path / "p.toml"), "--engine-id",
                             engine_id, "--duration", "300", "--quiet"], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def wait_for(predicate, what: str, timeout: float = 120.0):
    """Readiness by polling state (the database), with a generous deadline for a loaded
    machine; returns the predicate's truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_four_engines_share_a_bankroll_and_adopt_a_dead_engines_trades(
        tmp_path, postgres, pg_url):
    from test_connector_crash import polymarket_truth  # the venue's own account view

    scenario = tmp_path / "scenario.toml"
    text = (REPO / "pipelines/scenarios/sim.toml").read_text().replace('"../keys/', f'"{KEYS}/')
    scenario.write_text(text.replace('arb_probability = "0.08"', 'arb_probability = "0.3"')
                        + FAULTS)
    sim, url = sim_process(scenario)
    password = postgres.password
    env = {**os.environ, "PR3DICT_TEST_PG_PASSWORD": password}
    (tmp_path / "p.toml").write_text(PIPELINE.format(
        url=pg_url, lease=LEASE_MS, rest=url, ws=url.replace("http", "ws"), keys=KEYS,
        bankroll=BANKROLL))
    engines: dict[str, subprocess.Popen] = {}
    watcher = Watcher(pg_url, password)
    try:
        for i in range(4):
            engines[f"e{i}"] = start_engine(tmp_path, f"e{i}", env)
        # Readiness: every engine has registered (its schema migration done, its lease held).
        wait_for(lambda: len(query(pg_url, password, "SELECT 1 FROM engines")) == 4
                 if _has_engines(pg_url, password) else False, "four engines")
        watcher.start()
        # Trading: every engine has finished trades, and the bankroll was short at least
        # once (a capital rejection: demand exceeds the shared bankroll).
        def all_four() -> bool:
            for name, proc in engines.items():
                assert proc.poll() is None, (name, proc.stderr.read())
            return len(query(pg_url, password, "SELECT DISTINCT engine_id FROM trades WHERE "
                             "state IN ('committed', 'rolled_back')")) == 4

        wait_for(all_four, "trades by all four")
        wait_for(lambda: query(pg_url, password,
                               "SELECT 1 FROM trades WHERE reject_reason LIKE "
                               "'insufficient capital%' LIMIT 1"), "a capital rejection")

        # SIGKILL e1 while it has a trade open; restart it and try again if the kill came
        # after its trades had finished (the new process takes its id over at once: same
        # host, the old pid is gone).
        victim = "e1"
        orphans: list[str] = []
        open_sql = ("SELECT id FROM trades WHERE engine_id = %s AND state NOT IN "
                    "('committed', 'rolled_back', 'rejected')")
        for _attempt in range(15):
            wait_for(lambda: query(pg_url, password, open_sql, (victim,)),
                     "an open trade of the victim")
            engines[victim].send_signal(signal.SIGKILL)
            engines[victim].wait(30)
            killed_at = time.monotonic()
            orphans = [r[0] for r in query(pg_url, password, open_sql, (victim,))]
            if orphans:
                break
            engines[victim] = start_engine(tmp_path, victim, env)
        assert orphans, "no kill landed mid-trade"
        del engines[victim]

        # Another engine adopts them once the lease lapses, and finishes them.
        def adopted() -> list[tuple]:
            rows = query(pg_url, password, "SELECT engine_id, state FROM trades WHERE id = "
                         "ANY(%s)", (orphans,))
            return rows if all(r[0] != victim and r[1] in FINAL for r in rows) else []

        rows = wait_for(adopted, "the dead engine's trades adopted and final", timeout=60)
        recovered_s = time.monotonic() - killed_at
        print(f"{len(orphans)} trade(s) of the killed engine adopted by "
              f"{sorted({r[0] for r in rows})} and final {recovered_s:.2f} s after the kill "
              f"(lease {LEASE_MS / 1000:.1f} s)")
        assert recovered_s < LEASE_MS / 1000 * 5

        for proc in engines.values():  # SIGTERM: trades in flight finish, exit 143
            proc.send_signal(signal.SIGTERM)
        for name, proc in engines.items():
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                if os.environ.get("PR3DICT_DEBUG_SPY"):
                    print(subprocess.run([os.environ["PR3DICT_DEBUG_SPY"], "dump", "--pid",
                                          str(proc.pid)], capture_output=True,
                                         text=True).stdout)
                raise
            assert proc.returncode == 143, (name, err)
    finally:
        watcher.stop.set()
        for proc in engines.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        watcher.join(30)
    try:
        assert watcher.error is None, watcher.error
        assert len(watcher.snapshots) > 50
        for bankroll, used, held, reserved, overrun in watcher.snapshots:
            assert used == held  # the book equals its entries in every snapshot
            # Reserved plus deployed (what final trades spent; a profit is negative, since a
            # hedged set counts at its payout) never exceeds the bankroll, whatever the
            # engines' interleaving; only a trade that spent beyond its own reservation can
            # push past it, and then nothing more is reserved until it is back within.
            assert used <= bankroll + overrun, (bankroll, used, reserved, overrun)
        assert any(s[3] > 0 for s in watcher.snapshots)
        print(f"{len(watcher.snapshots)} snapshots; most reserved at once "
              f"{max(s[3] for s in watcher.snapshots)} of {BANKROLL}; spent beyond "
              f"reservations {watcher.snapshots[-1][4]}")

        # No instrument was traded by two engines at once: per instrument, the spans from a
        # trade's first order to its final state never overlap across engines.
        spans: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
        for _trade, engine_id, venue, instrument, first, last in query(
                pg_url, password,
                "SELECT t.id, t.engine_id, o.venue, o.instrument, min(o.created_at), "
                "(SELECT max(at) FROM transitions x WHERE x.trade_id = t.id) FROM trades t "
                "JOIN orders o ON o.trade_id = t.id GROUP BY t.id, t.engine_id, o.venue, "
                "o.instrument"):
            spans.setdefault((venue, instrument), []).append((first, last, engine_id))
        overlaps = []
        for key, items in spans.items():
            items.sort()
            for (_, a1, ea), (b0, _, eb) in itertools.pairwise(items):
                if ea != eb and b0 < a1:
                    overlaps.append((key, ea, eb))
        assert not overlaps, overlaps[:5]
        assert len(spans) >= 2

        # Nothing left open or resting; the venue's positions equal the journal's.
        assert query(pg_url, password, "SELECT id FROM trades WHERE state NOT IN "
                     "('committed', 'rolled_back', 'rejected')") == []
        booked: dict[str, Decimal] = {}
        for inst, side, size in query(pg_url, password,
                                      "SELECT l.instrument, l.side, f.size FROM fills f JOIN "
                                      "legs l ON l.trade_id = f.trade_id AND l.idx = f.idx"):
            signed = Decimal(size) if side == "buy" else -Decimal(size)
            booked[inst] = booked.get(inst, Decimal(0)) + signed
        positions, _, resting, _ = asyncio.run(polymarket_truth(url))
        assert resting == 0
        assert {k: v for k, v in booked.items() if v} == {k: v for k, v in positions.items()
                                                          if v}
    finally:
        stop_process(sim)


def _has_engines(url: str, password: str) -> bool:
    return bool(query(url, password, "SELECT to_regclass('engines')")[0][0])
