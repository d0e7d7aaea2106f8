"""The demo pipeline end to end: through the engine, and through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from support import REPO

from pr3dict_core import telemetry as tm
from pr3dict_core.metrics import net_exposure
from pr3dict_core.model import TradeState
from pr3dict_core.pipeline import Engine

DEMO = REPO / "pipelines" / "complement-paper.toml"
PR3DICT = Path(sys.executable).parent / "pr3dict"


async def test_demo_commits_rolls_back_faults_and_leaves_no_exposure(tracer_provider,
                                                                     span_exporter, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = Engine.from_file(DEMO, tracer_provider=tracer_provider)
    summary = await engine.run(cycles=400)
    await engine.close()
    assert summary.committed > 20
    assert summary.rolled_back > 0  # the scenario injects rejects, partial fills, lost replies
    assert summary.unresolved == 0 and not engine.halted
    assert summary.realised_pnl > 0
    # Faults really happened and were handled.
    errors = {leg.error.split(":")[0] for t in engine.trades for leg in t.legs if leg.error}
    assert {"OrderRejected", "AmbiguousOutcome"} <= errors
    # Zero net exposure: on every market the venue holds as many YES as NO shares.
    venue = engine.venues["sim"]
    pairs = [(m.yes, m.no) for m in venue.markets()]
    assert net_exposure(venue.positions(), pairs) == 0
    # The engine's own bookkeeping agrees with the venue's truth.
    held: dict[str, Decimal] = {}
    for trade in engine.trades:
        for (_, inst), qty in trade.net_position().items():
            held[inst] = held.get(inst, Decimal(0)) + qty
    assert {k: v for k, v in held.items() if v} == {k: v for k, v in venue.positions().items()
                                                    if v}
    # One trace per opportunity that was executed or rejected.
    roots = [s for s in span_exporter.get_finished_spans() if s.name == tm.SPAN_OPPORTUNITY]
    assert len(roots) == len(engine.trades)
    assert len({r.context.trace_id for r in roots}) == len(roots)
    rolled = [t for t in engine.trades if t.state is TradeState.ROLLED_BACK]
    assert all(t.hedged_size * 2 == sum(v for v in t.net_position().values()) for t in rolled)


def test_same_seed_same_run(tmp_path, monkeypatch):
    import asyncio

    monkeypatch.chdir(tmp_path)

    async def once():
        engine = Engine.from_file(DEMO)
        summary = await engine.run(cycles=150)
        await engine.close()
        return [(t.state, t.opportunity.size, t.realised_pnl) for t in engine.trades], summary

    a, b = asyncio.run(once()), asyncio.run(once())
    assert a[0] == b[0] and a[1].realised_pnl == b[1].realised_pnl


def test_cli_run_writes_metrics_and_otlp_json_spans(tmp_path):
    proc = subprocess.run([str(PR3DICT), "run", str(DEMO), "--cycles", "200", "--run-id", "e2e"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "trades committed" in proc.stdout and "decision -> wire p99" in proc.stdout
    run_dir = tmp_path / "runs" / "e2e"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trades = [x["trade"] for x in lines if "trade" in x]
    assert trades and "summary" in lines[-1]
    assert lines[-1]["summary"]["committed"] == sum(t["state"] == "committed" for t in trades)
    assert {t["legs"][0]["purpose"] for t in trades} == {"entry"}
    requests = [json.loads(x) for x in (run_dir / "spans.jsonl").read_text().splitlines()]
    spans = [s for r in requests for rs in r["resourceSpans"] for ss in rs["scopeSpans"]
             for s in ss["spans"]]
    names = {s["name"] for s in spans}
    assert {tm.SPAN_OPPORTUNITY, tm.SPAN_DETECT, tm.SPAN_GATE, tm.SPAN_EXECUTE, tm.SPAN_SUBMIT,
            tm.SPAN_FINALIZE, tm.SPAN_ROLLBACK} <= names
    resource = requests[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": tm.RUN_ID, "value": {"stringValue": "e2e"}} in resource


def test_ctrl_c_stops_cleanly_with_exit_130(tmp_path):
    proc = subprocess.Popen([str(PR3DICT), "run", str(DEMO), "--duration", "60",
                             "--run-id", "sigint"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "sigint" / "metrics.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "trades committed" in out  # the summary is still printed
    last = json.loads(metrics.read_text().splitlines()[-1])
    assert "summary" in last  # sinks were closed, not abandoned
    assert (tmp_path / "runs" / "sigint" / "spans.jsonl").stat().st_size > 0  # flushed


@pytest.mark.parametrize("pipeline", sorted((REPO / "pipelines").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_pipeline_validates_and_runs(pipeline, run_pr3dict):
    run_pr3dict("validate", str(pipeline)).assert_success()
    outcome = run_pr3dict("run", str(pipeline), "--cycles", "60").assert_success()
    assert "trades committed" in outcome.out
    assert outcome.spans_named(tm.SPAN_OPPORTUNITY)


def test_graph_dot_and_text(run_pr3dict):
    dot = run_pr3dict("graph", str(DEMO)).assert_success().out
    assert dot.startswith('digraph "complement-paper"')
    assert '"venues.sim" -> "detectors.complement"' in dot
    assert '"gates.capital" -> "gates.position"' in dot
    text = run_pr3dict("graph", "--format", "text", str(DEMO)).assert_success().out
    assert "detector binary_complement" not in text and "detector complement [binary_complement]" \
        " <- sim" in text
