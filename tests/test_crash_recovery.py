"""Crash safety: a real `pr3dict run` killed with SIGKILL at random points, restarted, recovered.

The paper venue keeps its state in a file here, so (like a real venue) it remembers every
order the killed engine sent. After the last restart, the journal and the venue must agree
on every position, and every order the venue saw must be in the journal.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from support import DEMO_SCENARIO, journal_orders

from pr3dict_core.journal import Journal

PR3DICT = Path(sys.executable).parent / "pr3dict"

PIPELINE = """
[pipeline]
name = "crash"


[journal]
url = "sqlite:///journal.sqlite"
[venues.sim]
type = "paper"
scenario = "{scenario}"
latency_ms = 15
state_file = "venue.state"

[detectors.c]
type = "binary_complement"
venues = ["sim"]
max_size = "20"

[gates.capital]
type = "capital"
bankroll = "100000"

[execution]
strategy = "market"
deadline_ms = 50
max_unwind_loss = "1"
"""


def venue_truth(path: Path) -> tuple[dict[str, Decimal], set[str]]:
    state = pickle.loads(path.read_bytes())
    engine = state["engine"]
    positions = {k: v for k, v in engine.positions("pr3dict").items() if v}
    orders = {cid for (account, cid) in engine._orders if account == "pr3dict"}
    return positions, orders


def test_sigkill_at_random_points_then_recover(tmp_path):
    (tmp_path / "p.toml").write_text(PIPELINE.replace("{scenario}", str(DEMO_SCENARIO)))
    rng = random.Random(1234)
    kills = interrupted = 0
    # Kill at random points, at least 8 times and until a kill has landed mid-trade.
    attempts = 0
    while attempts < 8 or (interrupted == 0 and attempts < 16):
        attempts += 1
        proc = subprocess.Popen([str(PR3DICT), "run", "p.toml", "--duration", "60", "--quiet"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        # Readiness: this run has sent orders (the journal's order count grew); then a
        # kill without warning somewhere in the middle.
        before, deadline = journal_orders(tmp_path / "journal.sqlite"), time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None \
                and journal_orders(tmp_path / "journal.sqlite") <= before:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kills += proc.returncode == -signal.SIGKILL
        journal = Journal(tmp_path / "journal.sqlite")
        interrupted += len(journal.open_trades())  # the next start must recover these
        journal.close()
    assert kills == attempts  # every run was killed, none died on its own
    assert interrupted > 0, "no kill landed mid-trade: the test proved nothing"

    # Restart: recovery runs before any trading; then stop after one cycle.
    done = subprocess.run([str(PR3DICT), "run", "p.toml", "--cycles", "1", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    journal = Journal(tmp_path / "journal.sqlite")
    try:
        assert journal.open_trades() == []  # nothing left unknown
        booked = {inst: qty for (_, inst), qty in journal.positions().items() if qty}
        ordered = {r[0] for r in journal.query("SELECT client_order_id FROM orders")}
        trades = journal.trades(limit=100000)
    finally:
        journal.close()
    positions, venue_orders = venue_truth(tmp_path / "venue.state")
    assert booked == positions  # no exposure unknown to the journal
    assert venue_orders <= ordered  # no order the journal does not know
    assert len(trades) > 20
    print(f"{interrupted} trades interrupted by SIGKILL and recovered")
    # Hedged or flat: on every market YES and NO holdings match.
    markets = {inst.rsplit(":", 1)[0] for inst in positions}
    for m in markets:
        assert positions.get(f"{m}:yes", 0) == positions.get(f"{m}:no", 0), m
