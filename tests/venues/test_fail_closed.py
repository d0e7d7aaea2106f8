"""Failing closed, through the CLI against `pr3dict sim` in its own process: refused
credentials stop the run, secrets never reach any output, and the kill switch signal is
honoured even while pr3dict is still starting."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from venue_fixtures import REPO, sim_process, stop_process

from pr3dict_core.config import SecretRef
from pr3dict_polymarket.venue import PolymarketVenue

PR3DICT = Path(sys.executable).parent / "pr3dict"
KEYS = REPO / "pipelines" / "keys"
KALSHI_KEY_ID = "00000000-0000-4000-8000-00000000517e"


@pytest.fixture(scope="module")
def sim():
    proc, url = sim_process(REPO / "pipelines/scenarios/sim.toml")
    yield url
    stop_process(proc)


def venues(url: str, poly_creds: str = "", heartbeat_ms: int = 0) -> str:
    ws = url.replace("http", "ws")
    return f"""
[venues.poly]
type = "polymarket"
rest_url = "{url}"
ws_url = "{ws}/ws"
private_key = {{ env = "PR3DICT_TEST_POLY_KEY" }}
heartbeat_interval_ms = {heartbeat_ms}
poll_wait_ms = 30
{poly_creds}

[venues.kalshi]
type = "kalshi"
rest_url = "{url}/trade-api/v2"
ws_url = "{ws}/trade-api/ws/v2"
key_id = "{KALSHI_KEY_ID}"
private_key = {{ file = "{KEYS}/TEST-ONLY-sim-kalshi.pem" }}
poll_wait_ms = 30
read_per_s = 400
write_per_s = 200

[detectors.cross]
type = "cross_venue"
venues = ["poly", "kalshi"]
mapping = "{REPO / 'pipelines/mappings/sim-poly-kalshi.toml'}"
max_size = "10"

[detectors.complement]
type = "binary_complement"
venues = ["poly"]
max_size = "10"

[execution]
deadline_ms = 300
order_timeout_ms = 1000
"""


CREDS = """api_key = { env = "PR3DICT_TEST_API_KEY" }
api_secret = { env = "PR3DICT_TEST_API_SECRET" }
api_passphrase = { env = "PR3DICT_TEST_API_PASSPHRASE" }"""


def poly_key() -> str:
    return (KEYS / "TEST-ONLY-sim-polymarket.key").read_text().split()[-1].strip()


async def derive(url: str) -> tuple[str, str, str]:
    venue = PolymarketVenue("d", PolymarketVenue.Config(
        rest_url=url, private_key=SecretRef(file="unused"), websocket=False,
        heartbeat_interval_ms=0), private_key=poly_key(), mode="paper")
    await venue.http.start()
    try:
        return await venue.derive_api_key()
    finally:
        await venue.http.close()


def run(tmp_path: Path, pipeline: str, env: dict[str, str], *args: str
        ) -> subprocess.CompletedProcess[str]:
    (tmp_path / "p.toml").write_text(pipeline)
    return subprocess.run([str(PR3DICT), "run", "p.toml", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, **env})


def test_no_secret_reaches_any_output(sim, tmp_path):
    key = poly_key()
    api_key, api_secret, passphrase = asyncio.run(derive(sim))
    pem = (KEYS / "TEST-ONLY-sim-kalshi.pem").read_text().splitlines()
    secrets = {key, key.removeprefix("0x"), api_secret, passphrase,
               *(line for line in pem[1:-1] if len(line) > 40)}
    pipeline = f"""
[pipeline]
name = "secrets"
cycles = 60
{venues(sim, CREDS, heartbeat_ms=500)}

[journal]
url = "sqlite:///journal.sqlite"
[sinks.metrics]
type = "jsonl"
path = "runs/{{run_id}}/metrics.jsonl"

[telemetry]
exporter = "console"
"""
    done = run(tmp_path, pipeline, {
        "PR3DICT_TEST_POLY_KEY": key, "PR3DICT_TEST_API_KEY": api_key,
        "PR3DICT_TEST_API_SECRET": api_secret, "PR3DICT_TEST_API_PASSPHRASE": passphrase,
        "PR3DICT_TRACE_PLUGINS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pr3dict_resolve_secret" in done.stderr and "<secret withheld>" in done.stderr
    assert "submit order" in done.stderr  # spans were printed: the test looked at them
    outputs = {"stdout": done.stdout.encode(), "stderr": done.stderr.encode()}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "p.toml":
            outputs[str(path)] = path.read_bytes()
    assert any(p.endswith("metrics.jsonl") for p in outputs)
    for where, data in outputs.items():
        for secret in secrets:
            assert secret.encode() not in data, f"a secret leaked into {where}"


@pytest.mark.parametrize("heartbeat_ms", [0, 300])
def test_refused_credentials_stop_the_run(sim, tmp_path, heartbeat_ms):
    """Wrong L2 credentials: the first refusal (an order, or a heartbeat) stops entries and
    ends the run non-zero; nothing is completed or unwound into the refusing venue."""
    pipeline = f"""
[pipeline]
name = "badauth"
cycles = 400

[journal]
url = "sqlite:///journal.sqlite"
{venues(sim, CREDS, heartbeat_ms)}
"""
    done = run(tmp_path, pipeline, {
        "PR3DICT_TEST_POLY_KEY": poly_key(), "PR3DICT_TEST_API_KEY": "not-a-key",
        "PR3DICT_TEST_API_SECRET": "bm90LWEtc2VjcmV0", "PR3DICT_TEST_API_PASSPHRASE": "nope"})
    assert done.returncode == 1, done.stderr[-2000:]
    assert "refused our credentials" in done.stderr
    assert "Traceback" not in done.stderr
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    try:
        poly_orders = db.execute("SELECT COUNT(*) FROM orders WHERE venue = 'poly'"
                                 ).fetchone()[0]
        rescue_legs = db.execute("SELECT COUNT(*) FROM legs WHERE venue = 'poly' AND "
                                 "purpose != 'entry'").fetchone()[0]
        executed = db.execute("SELECT COUNT(*) FROM trades WHERE state != 'rejected'"
                              ).fetchone()[0]
    finally:
        db.close()
    assert rescue_legs == 0  # nothing sent into the venue that refused us
    assert executed <= 4  # at most the trades already in flight (max_concurrent_trades)
    if heartbeat_ms:
        assert poly_orders <= 4


def sigusr1_caught(pid: int) -> bool:
    """The process has a handler for SIGUSR1 (bit 10 of SigCgt in /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGUSR1 - 1)))
    except FileNotFoundError:
        pass
    return False


def test_sigusr1_while_starting_is_the_kill_switch_not_death(tmp_path):
    pipeline = (REPO / "pipelines/complement-paper.toml").read_text().replace(
        'scenario = "scenarios/', f'scenario = "{REPO}/pipelines/scenarios/')
    (tmp_path / "p.toml").write_text(pipeline)
    proc = subprocess.Popen([str(PR3DICT), "run", "p.toml", "--cycles", "30"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not sigusr1_caught(proc.pid) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.001)  # readiness: the handler is installed (before the heavy imports)
    os.kill(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "halted: kill switch: SIGUSR1" in err
