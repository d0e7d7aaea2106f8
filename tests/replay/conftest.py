from __future__ import annotations

import subprocess

import pytest
from replay_helpers import PR3DICT, REPO, SIM_SCENARIO, read_line, sim_process, venues_toml


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A few seconds of both venues' market data recorded from a `pr3dict sim` process,
    with REST snapshots every 0.25 s (the simulator's own books, to compare with) and
    websocket drops (reconnects the recording must survive)."""
    tmp = tmp_path_factory.mktemp("recording")
    # The simulator drops every websocket every 0.7 s: the recording spans reconnects.
    scenario = tmp / "sim-drops.toml"
    scenario.write_text(SIM_SCENARIO.read_text().replace(
        '"../keys/', f'"{REPO}/pipelines/keys/') + "\n[sim.faults]\nws_drop_every_s = 0.7\n")
    with sim_process(scenario) as sim:
        pipeline = tmp / "record.toml"
        pipeline.write_text(f'[pipeline]\nname = "rec"\n{venues_toml(sim.url)}\n'
                            '[detectors.c]\ntype = "binary_complement"\nvenues = ["poly"]\n')
        out = tmp / "rec.jsonl.zst"
        proc = subprocess.Popen([str(PR3DICT), "record", str(pipeline), "--duration", "2.5",
                                 "--snapshot-s", "0.25", "--poll-ms", "50", "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = read_line(proc)
        assert first.startswith("pr3dict record: recording 2 venue(s)"), \
            first + (proc.stderr.read() if proc.poll() is not None else "")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    return out
