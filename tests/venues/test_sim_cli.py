"""`pr3dict sim` as a process, and the sim pipelines through the CLI and the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from venue_fixtures import REPO

from pr3dict_core import telemetry as tm
from pr3dict_core.pipeline import Engine

PR3DICT = Path(sys.executable).parent / "pr3dict"
KEYS = REPO / "pipelines" / "keys"


def test_sim_command_serves_a_pipeline_run_against_it(run_pr3dict, tmp_path):
    proc = subprocess.Popen([str(PR3DICT), "sim", str(REPO / "pipelines/scenarios/sim.toml"),
                             "--port", "0", "--duration", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("pr3dict sim: listening on http://127.0.0.1:"), \
            first + proc.stderr.read()
        url = first.split()[-1]
        pipeline = tmp_path / "against-sim.toml"
        pipeline.write_text(f"""
[pipeline]
name = "against-sim"
cycles = 40

[venues.poly]
type = "polymarket"
rest_url = "{url}"
ws_url = "{url.replace('http', 'ws')}/ws"
private_key = {{ file = "{KEYS / 'TEST-ONLY-sim-polymarket.key'}" }}
poll_wait_ms = 40

[venues.kalshi]
type = "kalshi"
rest_url = "{url}/trade-api/v2"
ws_url = "{url.replace('http', 'ws')}/trade-api/ws/v2"
key_id = "00000000-0000-4000-8000-00000000517e"
private_key = {{ file = "{KEYS / 'TEST-ONLY-sim-kalshi.pem'}" }}
poll_wait_ms = 40
read_per_s = 200
write_per_s = 100

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
deadline_ms = 200
""")
        run_pr3dict("validate", str(pipeline)).assert_success()
        outcome = run_pr3dict("run", str(pipeline)).assert_success()
        assert "trades committed" in outcome.out
        submits = outcome.spans_named(tm.SPAN_SUBMIT)
        assert submits and all(s.kind.name == "CLIENT" for s in submits)  # venue calls
        assert {s.attributes[tm.SERVER_ADDRESS] for s in submits} == {"127.0.0.1"}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_paper_mode_refuses_a_real_venue(run_pr3dict, tmp_path):
    pipeline = tmp_path / "real.toml"
    pipeline.write_text(f"""
[pipeline]
name = "real"

[venues.poly]
type = "polymarket"
private_key = {{ file = "{KEYS / 'TEST-ONLY-sim-polymarket.key'}" }}

[detectors.c]
type = "binary_complement"
venues = ["poly"]
""")
    outcome = run_pr3dict("validate", str(pipeline))
    assert outcome.code != 0 and "paper mode" in outcome.err
    assert "clob.polymarket.com" in outcome.err


async def test_cross_venue_sim_pipeline_trades_through_both_connectors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = Engine.from_file(REPO / "pipelines/cross-venue-sim.toml")
    summary = await engine.run(cycles=120)
    await engine.close()
    assert summary.committed > 3 and summary.unresolved == 0 and not engine.halted
    venues = {leg.venue for t in engine.trades for leg in t.legs}
    assert venues == {"poly", "kalshi"}
    # what the engine thinks it holds is what the connectors were told by the venues
    held: dict[tuple[str, str], object] = {}
    for t in engine.trades:
        for key, qty in t.net_position().items():
            held[key] = held.get(key, 0) + qty
    for vid, venue in engine.venues.items():
        mine = {i: q for (v, i), q in held.items() if v == vid and q}
        assert mine == dict(venue.positions())
