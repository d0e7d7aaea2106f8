"""The command line behaves as operators expect: help, usage errors, pipes, signals, logs."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from support import DEMO_SCENARIO, REPO

from pr3dict_core import logs
from pr3dict_core import telemetry as tm
from pr3dict_core.cli import build_parser, main
from pr3dict_core.plugins import make_plugin_manager
from pr3dict_venuekit.base import ConnectorBase

PR3DICT = Path(sys.executable).parent / "pr3dict"
DEMO = REPO / "pipelines" / "complement-paper.toml"

# Runs until stopped: no cycle limit, a short pause between cycles.
ENDLESS = f"""
[pipeline]
name = "endless"
interval_ms = 5

[venues.sim]
type = "paper"
scenario = "{DEMO_SCENARIO}"

[detectors.c]
type = "binary_complement"
venues = ["sim"]

[gates.capital]
type = "capital"
bankroll = "1000"
"""


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_every_argument_of_every_command_has_help():
    parser = build_parser(make_plugin_manager())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in [("pr3dict", parser), *sub.choices.items()]:
        for action in command._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {action.dest}")
    assert missing == []
    assert all(sub._choices_actions), "every command has a one-line help"


def test_top_level_help_says_what_the_tool_does(capsys):
    assert cli("--help")[0] == 0
    out = capsys.readouterr().out
    assert "Execute arbitrage on prediction markets" in out
    assert "exit codes:" in out and "143 terminated (SIGTERM)" in out
    assert "testable" not in out  # not the module's developer docstring


@pytest.mark.parametrize("argv", [
    ["run", "p.toml", "--cycles", "-5"],
    ["run", "p.toml", "--cycles", "0"],
    ["run", "p.toml", "--cycles", "many"],
    ["run", "p.toml", "--duration", "-1"],
    ["run", "p.toml", "--duration", "nan"],
    ["run", "p.toml", "--duration", "inf"],
    ["run", "p.toml", "--duration", "1e300"],
    ["journal", "j.sqlite", "--state", "bogus"],
    ["journal", "j.sqlite", "--limit", "-1"],
    ["--log-level", "loud", "plugins"],
    ["plugins", "--log-format", "xml"],
], ids=" ".join)
def test_bad_arguments_are_usage_errors(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(*argv)[0] == 2
    err = capsys.readouterr().err
    assert "usage: pr3dict" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_p_is_accepted_after_the_subcommand_too():
    code, out, _ = cli("plugins", "-p", "no:polygon")
    assert code == 0 and "polygon_pool" not in out and "paper" in out
    code, out, _ = cli("-p", "no:polygon", "plugins")
    assert code == 0 and "polygon_pool" not in out


def test_json_logs_carry_time_level_logger_and_run_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(ENDLESS)
    code, out, err = cli("run", str(pipeline), "--cycles", "3", "--run-id", "logrun",
                         "--log-level", "info", "--log-format", "json")
    assert code == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    started = next(r for r in records if r["message"].startswith("run logrun of endless"))
    assert started["level"] == "INFO" and started["logger"] == "pr3dict.cli"
    assert started["run_id"] == "logrun" and started["time"].endswith("Z")
    assert "run duration" in out


def test_a_record_inside_a_trade_span_names_the_trade():
    stream = io.StringIO()
    undo = logs.configure("info", "json", stream)
    try:
        tracer = TracerProvider().get_tracer("t")
        with tracer.start_as_current_span("handle opportunity",
                                          attributes={tm.TRADE_ID: "run-1-t7"}):
            logging.getLogger("pr3dict.test").warning("leg %d refused", 2)
        logging.getLogger("pr3dict.test").info("outside")
        logging.getLogger("pr3dict.test").debug("below the level")
    finally:
        undo()
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["trade_id"] == "run-1-t7" and inside["message"] == "leg 2 refused"
    assert len(inside["trace_id"]) == 32 and len(inside["span_id"]) == 16
    assert "trade_id" not in outside and outside["level"] == "INFO"


def test_text_logs_have_time_and_level():
    stream = io.StringIO()
    undo = logs.configure("warning", "text", stream)
    try:
        logging.getLogger("pr3dict.test").warning("careful")
    finally:
        undo()
    line = stream.getvalue().strip()
    assert line.endswith("WARNING pr3dict.test: careful") and line[:4].isdigit()


async def test_garbage_websocket_frames_log_one_line_not_a_traceback_each(caplog):
    """A peer sending 300 frames that cannot be parsed: counted, one warning, no traceback."""
    frames = 300
    connector = ConnectorBase("v", rest_url="http://127.0.0.1:9", ws_url="", timeout_s=1,
                              rate_per_s=100, poll_wait_s=0.01, websocket=True)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for i in range(frames):
            await ws.send_str(f"not json {i}")
        connector._closing = True  # one connection is enough for this test
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    session = __import__("aiohttp").ClientSession()
    try:
        async def connect():
            return await session.ws_connect(f"http://127.0.0.1:{port}/ws")

        async def on_open(ws):
            return None

        with caplog.at_level(logging.WARNING, logger="pr3dict"):
            await asyncio.wait_for(connector.run_websocket(connect, on_open, json.loads, "market"),
                                   30)
    finally:
        await session.close()
        await runner.cleanup()
    assert connector.bad_messages == frames
    warnings = [r for r in caplog.records if "bad market message" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "JSONDecodeError" in warnings[0].getMessage()


def test_closed_output_is_not_a_traceback():
    """``pr3dict ... | head`` where head has gone: exit 141, nothing on stderr."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    proc = subprocess.run([str(PR3DICT), "plugins"], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signals_stop_a_run_cleanly_with_their_exit_code(sig, code, tmp_path):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(ENDLESS)
    proc = subprocess.Popen([str(PR3DICT), "run", str(pipeline), "--duration", "120",
                             "--run-id", "sig"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    banner = proc.stderr.readline()  # printed once the signal handlers are in place
    assert banner.startswith("pr3dict: run sig of endless"), banner
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    name = signal.Signals(sig).name
    assert f"pr3dict: {name}: stopping: no new trades; finishing" in err
    assert "trades committed" in out and "run duration" in out
    assert "Traceback" not in err


def test_hedge_counts_sets_across_venues_and_leaves_the_rest():
    from decimal import Decimal as D

    from pr3dict_core.cli import hedge

    held = {("a", "m:yes"): D(10), ("a", "m:no"): D(4), ("b", "n:no"): D(6),
            ("a", "x:yes"): D(-2)}
    sets = [(("a", "m:yes"), ("a", "m:no")), (("a", "m:yes"), ("b", "n:no"))]
    hedged, rest = hedge(held, sets)
    assert hedged == 10 and rest == {("a", "x:yes"): D(-2)}


def test_end_of_run_lines_count_cross_venue_hedges_as_hedged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", str(REPO / "pipelines" / "cross-venue-paper.toml"),
                       "--cycles", "60")
    assert code == 0, err
    venues = [line for line in err.splitlines() if line.startswith("  venue ")]
    assert len(venues) == 2 and all("shares held in" in line for line in venues)
    (summary,) = [line for line in err.splitlines() if line.startswith("  hedged ")]
    assert "; 0 unhedged share(s)" in summary and not summary.startswith("  hedged   0 ")


def test_an_internal_error_is_one_line_and_a_logged_traceback(pr3dict_pm, register_plugin,
                                                              tmp_path, monkeypatch):
    import attrs as _attrs

    from pr3dict_core import hookimpl
    from pr3dict_core.config import ref

    class Boom:
        type = "test_boom"
        venue_ids = ("sim",)

        @_attrs.frozen(kw_only=True)
        class Config:
            venues: tuple[str, ...] = ref("venues", default=("sim",))

        def __init__(self, id):
            self.id = id

        @classmethod
        def from_config(cls, id, config, ctx):
            return cls(id)

        def bind(self, venues):
            raise RuntimeError("boom in bind")

        def detect(self, changed):
            return []

    class Plugin:
        @hookimpl
        def pr3dict_register_detectors(self, registry):
            registry.add(Boom)

    register_plugin(Plugin(), name="boom")
    monkeypatch.chdir(tmp_path)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(ENDLESS.replace('type = "binary_complement"', 'type = "test_boom"'))
    out, err = io.StringIO(), io.StringIO()
    code = main(["--log-format", "json", "run", str(pipeline), "--cycles", "1"], pm=pr3dict_pm,
                stdout=out, stderr=err)
    assert code == 1
    text = err.getvalue()
    assert "pr3dict: run failed with an internal error: RuntimeError: boom in bind" in text
    (record,) = [json.loads(line) for line in text.splitlines() if line.startswith("{")
                 and '"ERROR"' in line]
    assert record["logger"] == "pr3dict.cli" and "Traceback" in record["exception"]
    assert "trades committed" in out.getvalue()  # the summary is still printed


def test_halts_are_logged_when_they_appear_and_lift(caplog):
    from pr3dict_core.cli import _HaltLog
    from pr3dict_core.pipeline import Halt

    kill = {("kill", ""): Halt("kill", "", "kill switch: SIGUSR1")}
    unresolved = {("unresolved", "t1"): Halt("unresolved", "t1", "trade t1 is unresolved")}
    halts = _HaltLog()
    with caplog.at_level(logging.WARNING, logger="pr3dict"):
        halts.update({})
        halts.update(kill)
        halts.update(kill)
        halts.update({**kill, **unresolved})
        halts.update(kill)
    assert [r.getMessage() for r in caplog.records] == [
        "halted: kill switch: SIGUSR1", "halted: trade t1 is unresolved",
        "halt lifted: trade t1 is unresolved"]
