"""Shared by the record/replay/shadow tests: a `pr3dict sim` process and pipeline text."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PR3DICT = Path(sys.executable).parent / "pr3dict"
SIM_SCENARIO = REPO / "pipelines" / "scenarios" / "sim.toml"
MAPPING = REPO / "pipelines" / "mappings" / "sim-poly-kalshi.toml"


def read_line(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> str:
    """The next stdout line, or fail after ``timeout_s`` (no fixed sleep)."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sel.select(timeout=deadline - time.monotonic()):
            return proc.stdout.readline()
    raise AssertionError(f"no line from {proc.args} within {timeout_s} s")


class SimProcess:
    def __init__(self, proc: subprocess.Popen[str], url: str):
        self.proc = proc
        self.url = url
        self.tail = ""

    def served(self) -> dict[str, int]:
        """Stop the simulator and return the routes it served (its last stdout line)."""
        os.kill(self.proc.pid, signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        self.tail = out
        line = next(ln for ln in out.splitlines() if ln.startswith("pr3dict sim: served"))
        routes = {}
        for item in line.removeprefix("pr3dict sim: served ").split(", "):
            route, _, n = item.rpartition(" x")
            routes[route] = int(n)
        return routes


@contextlib.contextmanager
def sim_process(scenario: Path = SIM_SCENARIO) -> Iterator[SimProcess]:
    proc = subprocess.Popen([str(PR3DICT), "sim", str(scenario), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = read_line(proc)
        assert first.startswith("pr3dict sim: listening on http://127.0.0.1:"), first
        yield SimProcess(proc, first.split()[-1])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=30)


def venues_toml(url: str, *, key_env: str | None = None) -> str:
    """Both connectors pointed at a simulator; ``key_env`` names secrets that must never be
    read (shadow mode), otherwise the TEST-ONLY keys."""
    keys = REPO / "pipelines" / "keys"
    poly_key = f'{{ env = "{key_env}" }}' if key_env else \
        f'{{ file = "{keys / "TEST-ONLY-sim-polymarket.key"}" }}'
    kalshi_key = f'{{ env = "{key_env}" }}' if key_env else \
        f'{{ file = "{keys / "TEST-ONLY-sim-kalshi.pem"}" }}'
    ws = url.replace("http", "ws")
    return f"""
[venues.poly]
type = "polymarket"
rest_url = "{url}"
ws_url = "{ws}/ws"
private_key = {poly_key}
poll_wait_ms = 20

[venues.kalshi]
type = "kalshi"
rest_url = "{url}/trade-api/v2"
ws_url = "{ws}/trade-api/ws/v2"
key_id = "00000000-0000-4000-8000-00000000517e"
private_key = {kalshi_key}
poll_wait_ms = 20
read_per_s = 200
write_per_s = 100
"""


DETECTORS = f"""
[detectors.cross]
type = "cross_venue"
venues = ["poly", "kalshi"]
mapping = "{MAPPING}"
min_edge = "0.005"
max_size = "20"

[detectors.complement]
type = "binary_complement"
venues = ["poly"]
max_size = "10"

[execution]
strategy = "market"
deadline_ms = 500
order_timeout_ms = 1000
"""


def trades_of(metrics: Path) -> list[tuple]:
    """What a trade did, without ids and timings: comparable across runs."""
    out = []
    for line in metrics.read_text().splitlines():
        t = json.loads(line).get("trade")
        if t is None:
            continue
        legs = tuple((leg["venue"], leg["instrument"], leg["side"], leg["purpose"], leg["state"],
                      leg["filled"], leg["average_price"], leg["fees"]) for leg in t["legs"])
        out.append((t["kind"], t["state"], t["size"], t["realised_pnl"], legs))
    return out
