"""The journal on SQLite and on PostgreSQL: the same semantics, one writer per SQLite file,
a capital book no interleaving of engines can over-commit, and instrument leases.

PostgreSQL is a real server on loopback (``conftest.py``); engines here are ``Journal``
objects with their own connection and worker thread, so their transactions really
interleave.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from support import DEMO_SCENARIO

from pr3dict_core.journal import Journal, JournalError
from pr3dict_core.model import TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_core.stores import StoreError

PR3DICT = Path(sys.executable).parent / "pr3dict"
D = Decimal

PIPELINE = """
[pipeline]
name = "{name}"
cycles = 40

[journal]
url = "{url}"
{password}
[venues.sim]
type = "paper"
scenario = "{demo}"
seed = 7

[detectors.c]
type = "binary_complement"
venues = ["sim"]

[gates.capital]
type = "capital"
bankroll = "{bankroll}"
"""


def pipeline(tmp_path: Path, url: str, *, name: str = "backends", bankroll: str = "1000",
             file: str = "p.toml") -> Path:
    password = 'password = { env = "PR3DICT_TEST_PG_PASSWORD" }' if url.startswith(
        "postgresql") else ""
    path = tmp_path / file
    path.write_text(PIPELINE.format(name=name, url=url, password=password, demo=DEMO_SCENARIO,
                                    bankroll=bankroll))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.sqlite'}"
    return request.getfixturevalue("pg_url")


def test_a_paper_run_journals_the_same_on_both_backends(tmp_path, journal_url):
    """Same pipeline, same seed: the same trades, fills and positions in either journal,
    and a second run (a new process's recovery) finds nothing open."""
    path = pipeline(tmp_path, journal_url)

    async def run(run_id: str):
        engine = Engine.from_file(path, run_id=run_id)
        summary = await engine.run(cycles=40)
        await engine.close()
        return summary

    first = asyncio.run(run("run-1"))
    assert first.committed > 0
    second = asyncio.run(run("run-2"))
    assert second.committed > 0
    password = None
    if journal_url.startswith("postgresql"):
        import os
        password = os.environ["PR3DICT_TEST_PG_PASSWORD"]
    journal = Journal(journal_url.removeprefix("sqlite:///"), password=password,
                      read_only=True)
    try:
        rows = journal.trades(limit=100_000)
        by_state: dict[str, int] = {}
        for r in rows:
            by_state[r["state"]] = by_state.get(r["state"], 0) + 1
        assert by_state.get("committed", 0) == first.committed + second.committed
        assert by_state.get("rolled_back", 0) == first.rolled_back + second.rolled_back
        assert journal.open_trades() == []
        assert {r["engine_id"] for r in rows} == {f"{__import__('socket').gethostname()}"
                                                  "/backends"}
        trade = journal.load_trade(next(r["id"] for r in rows if r["state"] == "committed"))
        assert trade.state is TradeState.COMMITTED
        assert all(leg.filled == leg.size for leg in trade.legs)
        assert journal.leases() == []  # nothing in flight
        bankroll, used, reserved = journal.book("main")
        assert bankroll == D(1000) and reserved == 0
        spent = sum((D(r[0]) for r in journal.query(
            "SELECT spent FROM capital_entries WHERE state = 'final'")), D(0))
        assert used == spent
    finally:
        journal.close()
    journal_text = subprocess.run([str(PR3DICT), "journal", str(path), "--limit", "2"],
                                  capture_output=True, text=True, cwd=tmp_path,
                                  env=None, timeout=60)
    assert journal_text.returncode == 0, journal_text.stderr
    assert "engines" in journal_text.stdout and "capital books" in journal_text.stdout
    assert "lease expired" in journal_text.stdout  # both runs stopped cleanly


def test_a_second_run_on_one_sqlite_journal_is_refused(tmp_path):
    """One writer per SQLite journal: the second process is refused, naming the journal
    and the process that holds it; the first runs on untouched. The lock is the kernel's:
    it goes with the process, so a SIGKILL never leaves it stale."""
    path = pipeline(tmp_path, "sqlite:///j.sqlite", name="single")
    first = subprocess.Popen([str(PR3DICT), "run", str(path), "--cycles", "100000000",
                              "--duration", "120", "--quiet"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        lock = tmp_path / "j.sqlite.lock"
        # Readiness: the first run holds the lock (its pid is written in the lock file).
        while str(first.pid) not in (lock.read_text() if lock.exists() else ""):
            assert first.poll() is None, first.stderr.read()
        second = subprocess.run([str(PR3DICT), "run", str(path), "--cycles", "1", "--quiet"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"journal {tmp_path / 'j.sqlite'} is in use by another process (pid " \
               f"{first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # untouched
        first.kill()  # SIGKILL: the kernel drops the lock
        first.wait(30)
        third = subprocess.run([str(PR3DICT), "run", str(path), "--cycles", "3", "--quiet"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert third.returncode == 0, third.stderr
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)


def test_two_pipeline_files_never_share_a_default_journal(tmp_path):
    """Two files with one pipeline name would share journal/NAME.sqlite: the second is
    refused with both files named, before anything runs."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = pipeline(tmp_path / "a", "sqlite:///journal/{pipeline}.sqlite", name="same")
    b = pipeline(tmp_path / "b", "sqlite:///journal/{pipeline}.sqlite", name="same")
    ok = subprocess.run([str(PR3DICT), "run", str(a), "--cycles", "2", "--quiet"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([str(PR3DICT), "run", str(b), "--cycles", "2", "--quiet"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert f"belongs to pipeline file {a}, not {b}" in refused.stderr


def test_the_capital_book_is_never_over_committed(postgres, pg_url):
    """Four engines reserve and settle against one bankroll at once, for real (four
    connections, four worker threads). A fifth connection watches: at every look the
    book's `used` equals what its entries say, and never exceeds the bankroll."""
    bankroll = D(100)
    journals = [Journal(pg_url, f"run{i}", engine_id=f"e{i}", password=postgres.password)
                for i in range(4)]
    for j in journals:
        j.register_engine("p")
    journals[0].open_book("main", bankroll)
    stop = threading.Event()
    seen: list[tuple[Decimal, Decimal, Decimal]] = []

    def watch() -> None:
        with psycopg.connect(pg_url, password=postgres.password, autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    used = D(conn.execute("SELECT used FROM capital_books").fetchone()[0])
                    rows = conn.execute("SELECT reserved, spent, state FROM "
                                        "capital_entries").fetchall()
                held = sum((D(r[0]) if r[2] == "reserved" else D(r[1]) for r in rows), D(0))
                seen.append((used, held, sum((D(r[0]) for r in rows if r[2] == "reserved"),
                                             D(0))))

    watcher = threading.Thread(target=watch)
    watcher.start()
    rng = random.Random(5)
    granted: dict[str, Decimal] = {}

    async def engine(i: int) -> None:
        journal = journals[i]
        for n in range(60):
            trade_id = f"e{i}-{n}"
            amount = D(rng.randint(1, 40))
            reserved, available = await journal.reserve("main", trade_id, amount)
            assert available >= 0
            if reserved:
                granted[trade_id] = amount
                await asyncio.sleep(0)
                # Settled at what it spent: some lose a little, some come back whole.
                journal.settle_capital(trade_id, rng.choice([D(0), D("0.5"), amount / 4]))

    async def main() -> None:
        await asyncio.gather(*(engine(i) for i in range(4)))
        for j in journals:
            j.flush()

    try:
        asyncio.run(main())
    finally:
        stop.set()
        watcher.join(30)
        for j in journals:
            j.close()
    assert len(granted) > 20 and len(seen) > 10
    for used, held, reserved_now in seen:
        assert used == held  # the book and its entries agree in every snapshot
        assert used <= bankroll and reserved_now <= bankroll


def test_instrument_leases_are_exclusive(postgres, pg_url):
    """Engines claim overlapping instruments at once: a claim gets all of a trade's
    instruments or none, and while one engine holds an instrument no other gets it."""
    journals = [Journal(pg_url, f"run{i}", engine_id=f"e{i}", password=postgres.password)
                for i in range(4)]
    for j in journals:
        j.register_engine("p")
    instruments = [("poly", f"tok{k}") for k in range(5)]
    holder: dict[tuple[str, str], str] = {}
    rng = random.Random(11)
    wins = refusals = 0

    async def engine(i: int) -> None:
        nonlocal wins, refusals
        journal = journals[i]
        for n in range(40):
            want = rng.sample(instruments, 2)
            trade_id = f"e{i}-{n}"
            held_by = await journal.claim(trade_id, want)
            if held_by:
                refusals += 1
                assert "is leased by engine e" in held_by
                continue
            wins += 1
            for key in want:
                assert key not in holder, (key, holder[key], f"e{i}")
                holder[key] = f"e{i}"
            await asyncio.sleep(0.002)
            for key in want:
                del holder[key]
            journal.release(trade_id)
            await asyncio.to_thread(journal.flush)

    async def main() -> None:
        await asyncio.gather(*(engine(i) for i in range(4)))

    asyncio.run(main())
    for j in journals:
        j.close()
    assert wins > 10 and refusals > 0


def test_an_engine_id_in_use_is_refused_and_a_dead_engines_trades_adopted(postgres, pg_url):
    """A live engine's id is refused to a second process; once its lease expires, another
    engine adopts its open trades (with their leases and halts), and only one does."""
    alive = Journal(pg_url, "r1", engine_id="east", password=postgres.password,
                    lease_ms=1000)
    alive.register_engine("p")
    # Another process on another host would be refused with the holder named.
    with psycopg.connect(pg_url, password=postgres.password, autocommit=True) as conn:
        conn.execute("UPDATE engines SET host = 'elsewhere', pid = 1 WHERE engine_id = 'east'")
    twin = Journal(pg_url, "r2", engine_id="east", password=postgres.password)
    with pytest.raises(JournalError, match=r"engine id 'east' is held by pid 1 on elsewhere"):
        twin.register_engine("p")
    twin.close()
    from pr3dict_core.testing import make_trade
    trade = make_trade(state="executing")
    alive.trade_transition(trade, None)
    asyncio.run(alive.claim(trade.id, [("sim", "m:yes"), ("sim", "m:no")]))
    alive.set_halt("exposure", trade.id, "worked")
    alive.flush()
    others = [Journal(pg_url, f"r{i}", engine_id=f"west{i}", password=postgres.password)
              for i in range(3)]
    for o in others:
        o.register_engine("p")
    assert others[0].orphaned_trades() == []  # east is alive
    with psycopg.connect(pg_url, password=postgres.password, autocommit=True) as conn:
        conn.execute("UPDATE engines SET expires_at = 0 WHERE engine_id = 'east'")  # died
    (orphan,) = others[0].orphaned_trades()
    assert orphan[:2] == (trade.id, "east")
    results = [o.adopt(trade.id, "east") for o in others]
    assert results.count(True) == 1  # exactly one engine takes it over
    winner = others[results.index(True)]
    assert [t.id for t in winner.open_trades()] == [trade.id]
    assert {lease[2] for lease in winner.leases()} == {winner.engine_id}
    assert winner.active_halts() == [("exposure", trade.id, "worked")]
    for j in (alive, *others):
        j.close()


def test_a_bad_postgresql_journal_is_a_clear_error(tmp_path, postgres):
    """A wrong password or a dead server: one line naming the database (never the
    password), exit 1, nothing traded."""
    url = postgres.url("postgres")
    path = pipeline(tmp_path, url)
    env = {**__import__("os").environ, "PR3DICT_TEST_PG_PASSWORD": "wrong-secret"}
    bad = subprocess.run([str(PR3DICT), "run", str(path), "--cycles", "1", "--quiet"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 1
    assert f"journal {url}: cannot connect" in bad.stderr
    assert "wrong-secret" not in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    with pytest.raises(StoreError, match="cannot connect"):
        Journal(f"postgresql://{'pr3dict'}@127.0.0.1:1/x", password="x")


def test_the_database_dying_mid_run_stops_the_run_and_a_restart_recovers(tmp_path):
    """PostgreSQL crashes (immediate shutdown) under a running engine: no order goes out
    without a durable intent, the run ends non-zero with the journal named (no traceback,
    no hang); once the database is back, the next run recovers and trades."""
    from pgserver import Postgres, open_root

    open_root(tmp_path)
    pg = Postgres(tmp_path / "pg")
    pg.start()
    try:
        url = pg.url(pg.create_database())
        path = pipeline(tmp_path, url, name="db-dies")
        env = {**__import__("os").environ, "PR3DICT_TEST_PG_PASSWORD": pg.password}
        run = subprocess.Popen([str(PR3DICT), "run", str(path), "--cycles", "100000000",
                                "--duration", "120", "--quiet"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def trades() -> int:
            with psycopg.connect(url, password=pg.password) as conn:
                if conn.execute("SELECT to_regclass('trades')").fetchone()[0] is None:
                    return 0
                return conn.execute("SELECT count(*) FROM trades WHERE state = 'committed'"
                                    ).fetchone()[0]

        while trades() < 5:  # readiness: the engine trades
            assert run.poll() is None, run.stderr.read()
        pg.crash()
        try:
            _, err = run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            import os
            if os.environ.get("PR3DICT_DEBUG_SPY"):
                print(subprocess.run([os.environ["PR3DICT_DEBUG_SPY"], "dump", "--pid",
                                      str(run.pid)], capture_output=True, text=True).stdout)
            run.kill()
            raise
        assert run.returncode == 1, err[-2000:]
        assert "journal" in err and "Traceback" not in err
        pg.start()  # crash recovery in the server; the journal is as last committed
        again = subprocess.run([str(PR3DICT), "run", str(path), "--cycles", "20", "--quiet"],
                               cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0, again.stderr[-2000:]
        with psycopg.connect(url, password=pg.password) as conn:
            open_now = conn.execute("SELECT count(*) FROM trades WHERE state NOT IN "
                                    "('committed', 'rolled_back', 'rejected')").fetchone()[0]
            runs = conn.execute("SELECT count(DISTINCT run_id) FROM trades").fetchone()[0]
        assert open_now == 0 and runs == 2
    finally:
        pg.stop()


def test_validate_checks_that_the_shared_journal_is_reachable(tmp_path, postgres, pg_url):
    """`pr3dict validate` connects to a PostgreSQL journal as `run` would (read only): a
    wrong password is reported at `journal.url`, exit 78, the password never shown."""
    import os

    path = pipeline(tmp_path, pg_url)
    good = subprocess.run([str(PR3DICT), "validate", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    env = {**os.environ, "PR3DICT_TEST_PG_PASSWORD": "not-the-password"}
    bad = subprocess.run([str(PR3DICT), "validate", str(path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 78
    assert "environment: journal.url: journal postgresql://" in bad.stderr
    assert "not-the-password" not in bad.stderr
