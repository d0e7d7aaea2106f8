"""A replay gives the same trades, exposure halts and unwinds included, whatever the load
(issue 11): the engine's deadlines and timers run on the recording's time."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from replay_helpers import MAPPING, PR3DICT, REPO, read_line

from pr3dict_core.clock import ReplayedTimeLoop, external, loop_factory
from pr3dict_replay.format import read_recording
from pr3dict_replay.venue import Player, ReplayVenue

RECORDING = REPO / "pipelines" / "recordings" / "sim-cross.jsonl.zst"
BUSY = "import sys; print('busy', flush=True)\nwhile True: pass"


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two busy loops (the machine has two cores): the engine's timers, were they on wall
    time, would fire at different points of the recording from run to run."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        for proc in procs:
            assert read_line(proc) == "busy\n"
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate(timeout=30)


def _pipeline(tmp_path: Path, name: str, *, journal: bool = False, speed: str = '"max"',
              concurrent: bool = False) -> Path:
    # Hybrid entries (rest, then chase on timers) with a tight deadline, and an unwind loss
    # cap of one cent: some unwinds end incomplete, the engine halts entries, and the
    # exposure worker completes or unwinds in the background until it lifts the halt.
    path = tmp_path / f"{name}.toml"
    venue = f"""type = "replay"
recording = "{RECORDING}"
latency_ms = 5
jitter_ms = 3
seed = 7
speed = {speed}
"""
    path.write_text(f"""
[pipeline]
name = "{name}"
concurrent_cycles = {str(concurrent).lower()}

[journal]
url = "{'sqlite:///journal/{pipeline}.sqlite' if journal else ''}"

[venues.poly]
{venue}
[venues.kalshi]
{venue}
[detectors.cross]
type = "cross_venue"
venues = ["poly", "kalshi"]
mapping = "{MAPPING}"
min_edge = "0.005"
max_size = "20"

[execution]
strategy = "hybrid"
fallback_after_ms = 10
deadline_ms = 40
unwind_deadline_ms = 100
max_unwind_loss = "0.01"

[sinks.metrics]
type = "jsonl"
path = "runs/{{run_id}}/metrics.jsonl"
""")
    return path


def _trades(tmp_path: Path, run_id: str) -> list[tuple]:
    """Every trade of a run in the order it finished: its number, state, why it was
    rejected, size, PnL and every leg's fills (the run id taken out)."""
    out = []
    for line in (tmp_path / "runs" / run_id / "metrics.jsonl").read_text().splitlines():
        t = json.loads(line).get("trade")
        if t is None:
            continue
        legs = tuple((leg["venue"], leg["instrument"], leg["side"], leg["purpose"],
                      leg["state"], leg["filled"], leg["average_price"], leg["fees"],
                      leg["attempts"]) for leg in t["legs"])
        out.append((t["trade_id"].removeprefix(run_id + "-"), t["state"],
                    t["reject_reason"].replace(run_id + "-", ""), t["size"],
                    t["realised_pnl"], t["rollback_cost"], legs))
    return out


def _held(err: str, run_id: str) -> list[str]:
    """What the run ended holding (the worker's unwinds included) and its last halt."""
    return [ln.replace(run_id + "-", "") for ln in err.splitlines()
            if ln.startswith(("  venue ", "  hedged ", "pr3dict: halted"))]


def test_replays_agree_after_exposure_halts_and_unwinds_under_load(run_pr3dict, tmp_path,
                                                                   cpu_load, monkeypatch):
    runs = {"r1": _pipeline(tmp_path, "plain"),
            "r2": _pipeline(tmp_path, "plain"),
            "j1": _pipeline(tmp_path, "journaled", journal=True),  # waits for its thread
            "p1": _pipeline(tmp_path, "paced", speed="4"),
            "c1": _pipeline(tmp_path, "concurrent", concurrent=True),
            "t1": _pipeline(tmp_path, "timers")}
    trades, held = {}, {}
    for run_id, pipeline in runs.items():
        if run_id == "t1":  # every batch through a timer: the shortcut changes nothing
            monkeypatch.setattr(ReplayedTimeLoop, "idle_before", lambda self, when: False)
        outcome = run_pr3dict("run", str(pipeline), "--run-id", run_id)
        assert outcome.code == 0, outcome.err
        trades[run_id] = _trades(tmp_path, run_id)
        held[run_id] = _held(outcome.err, run_id)
    # Once more in another process with another string hash seed (set iteration order).
    proc = subprocess.run([str(PR3DICT), "run", str(runs["r1"]), "--run-id", "s1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    trades["s1"], held["s1"] = _trades(tmp_path, "s1"), _held(proc.stderr, "s1")
    first = trades["r1"]
    for run_id in trades:
        assert trades[run_id] == first, run_id
        assert held[run_id] == held["r1"], run_id
    # The scenario: an unwind ended incomplete and halted entries; the exposure worker
    # then hedged it in the background, the halt lifted and trading went on.
    states = [t[1] for t in first]
    halted = [i for i, t in enumerate(first) if "left unhedged exposure" in t[2]]
    assert halted, states
    assert "committed" in states[halted[0]:], states
    assert any(leg[3] == "unwind" for t in first for leg in t[6])
    assert len(first) >= 50


def _run_replayed(player: Player, coro: Any) -> None:
    with asyncio.Runner(loop_factory=lambda: ReplayedTimeLoop(player)) as runner:
        runner.run(coro)


def _in_a_thread(fn: Any) -> None:
    """Run ``fn`` in a thread: a hang fails the test instead of stopping the suite."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the replayed loop hung"


def _player() -> tuple[Player, ReplayVenue]:
    player = Player(RECORDING, speed=None, batch_ns=1_000_000)
    return player, ReplayVenue("poly", player, source="poly", latency_ms=0)


def test_when_every_task_waits_the_recording_moves_to_the_earliest_timer():
    player, _ = _player()
    seen = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def sleeper(s: float) -> None:
            await asyncio.sleep(s)
            nxt = player._peek()
            seen.append((s, loop.time() - start, player.now_ns, nxt and nxt["t"]))

        # An hour of recorded time: waited for real, the test would hang (and fail below).
        await asyncio.gather(sleeper(3600.0), sleeper(1.5), sleeper(0.25))

    _in_a_thread(lambda: _run_replayed(player, main()))
    assert [s for s, _, _, _ in seen] == [0.25, 1.5, 3600.0]
    for s, elapsed, now_ns, nxt in seen:
        assert elapsed == pytest.approx(s, abs=1e-6)
        # Every record received until then was played, none after.
        assert abs(now_ns - player.start_ns - round(s * 1e9)) <= 2
        assert nxt is None or nxt > now_ns
    assert player.applied > 0


def test_the_recording_waits_for_a_thread_a_task_waits_for():
    player, _ = _player()
    order = []

    async def main() -> None:
        release = threading.Event()
        worker = external(_in_thread(release, order))
        sleeper = asyncio.ensure_future(asyncio.sleep(0.1))
        sleeper.add_done_callback(lambda _: order.append("timer"))
        await asyncio.sleep(0)  # the sleeper is waiting on its timer, the worker on its thread
        release.set()
        await asyncio.gather(worker, sleeper)

    _run_replayed(player, main())
    assert order == ["thread", "timer"]


def _in_thread(release: threading.Event, order: list[str]):  # type: ignore[no-untyped-def]
    import concurrent.futures

    future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def work() -> None:
        release.wait(30)
        order.append("thread")
        future.set_result(None)

    threading.Thread(target=work, daemon=True).start()
    return future


def test_only_venues_replaying_one_recording_get_a_replayed_loop():
    player, poly = _player()
    kalshi = ReplayVenue("kalshi", player, source="kalshi")
    factory = loop_factory([poly, kalshi])
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, ReplayedTimeLoop) and loop.source is player
        assert loop.time() == 0.0
    finally:
        loop.close()
    _, other = _player()  # another Player: another clock
    assert loop_factory([poly, other]) is None
    assert loop_factory([poly, object()]) is None  # a venue on wall time (paper, live)
    assert loop_factory([]) is None


def test_with_no_timer_at_all_the_recording_moves_to_its_next_record():
    player, poly = _player()
    woke: list[int] = []

    async def main() -> None:
        event = asyncio.Event()
        apply_ws = poly.decoder._apply_ws

        def spy(raw: bytes) -> None:
            apply_ws(raw)
            event.set()

        poly.decoder._apply_ws = spy  # type: ignore[method-assign]
        await event.wait()  # no timer anywhere: only a record of the recording can set it
        woke.append(player.now_ns)

    _in_a_thread(lambda: _run_replayed(player, main()))
    first = next(r for r in read_recording(RECORDING) if r["k"] == "ws" and r["v"] == "poly")
    assert woke == [first["t"]]
