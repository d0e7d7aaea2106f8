"""Every broken pipeline is refused before anything is created or connected.

Each case is a valid paper pipeline with one thing broken. Through ``run``, ``validate``
and ``validate --no-environment`` it must exit 78, name the exact dotted path, print no
traceback, leave the working directory as it was and open no connection (every endpoint
points at a loopback listener that counts what connects to it).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import DEMO_SCENARIO, REPO

from pr3dict_core.cli import main

KEYS = REPO / "pipelines" / "keys"
POLY_KEY = KEYS / "TEST-ONLY-sim-polymarket.key"
KALSHI_PEM = KEYS / "TEST-ONLY-sim-kalshi.pem"


class Listener:
    """A loopback port that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lis = Listener()
    yield lis
    lis.sock.close()


# The valid pipeline every case breaks: {table: {key: TOML literal}}.
BASE: dict[str, dict[str, str]] = {
    "pipeline": {"name": '"b"', "cycles": "1"},
    "venues.sim": {"type": '"paper"', "scenario": f'"{DEMO_SCENARIO}"'},
    "detectors.c": {"type": '"binary_complement"', "venues": '["sim"]'},
    "gates.capital": {"type": '"capital"', "bankroll": '"100"'},
    "sinks.metrics": {"type": '"jsonl"', "path": '"runs/{run_id}/metrics.jsonl"'},
    "telemetry": {"exporter": '"otlp"', "endpoint": '"http://127.0.0.1:{port}"'},
}
POLY = {"type": '"polymarket"', "rest_url": '"http://127.0.0.1:{port}"',
        "ws_url": '"ws://127.0.0.1:{port}"', "private_key": f'{{ file = "{POLY_KEY}" }}'}
KALSHI = {"type": '"kalshi"', "rest_url": '"http://127.0.0.1:{port}"',
          "ws_url": '"ws://127.0.0.1:{port}"', "key_id": '"k"',
          "private_key": f'{{ file = "{KALSHI_PEM}" }}'}
LIVE_GATES = {"gates.position": {"type": '"max_position"', "max_position": '"10"'}}
DROP = None  # a table or key to remove


def render(changes: dict[str, dict[str, str | None] | None]) -> str:
    tables = {name: dict(keys) for name, keys in BASE.items()}
    for name, keys in changes.items():
        if keys is DROP:
            tables.pop(name, None)
            continue
        table = tables.setdefault(name, {})
        for key, value in keys.items():
            if value is DROP:
                table.pop(key, None)
            else:
                table[key] = value
    lines = []
    for name, keys in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
        lines.append("")
    return "\n".join(lines)


Case = tuple[str, dict, tuple[str, ...], Callable[[Path], None] | None]


def case(id: str, changes: dict, *paths: str, setup: Callable[[Path], None] | None = None
         ) -> Case:
    return (id, changes, paths, setup)


def file_at(name: str, content: bytes | str) -> Callable[[Path], None]:
    def make(where: Path) -> None:
        (where / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return make


def dir_at(name: str) -> Callable[[Path], None]:
    return lambda where: (where / name).mkdir()


OUTSIDE = "../inputs"  # inputs a case needs live beside the working directory, not in it

CASES: list[Case] = [
    # [pipeline]
    case("name-not-string", {"pipeline": {"name": "3"}}, "pipeline.name"),
    case("name-escapes", {"pipeline": {"name": '"../../escaped"'}}, "pipeline.name"),
    case("name-with-slash", {"pipeline": {"name": '"a/b"'}}, "pipeline.name"),
    case("mode-unknown", {"pipeline": {"mode": '"yolo"'}}, "pipeline.mode"),
    case("cycles-zero", {"pipeline": {"cycles": "0"}}, "pipeline.cycles"),
    case("cycles-negative", {"pipeline": {"cycles": "-5"}}, "pipeline.cycles"),
    case("duration-nan", {"pipeline": {"duration_s": "nan"}}, "pipeline.duration_s"),
    case("duration-negative", {"pipeline": {"duration_s": "-1.0"}}, "pipeline.duration_s"),
    case("duration-inf", {"pipeline": {"duration_s": "inf"}}, "pipeline.duration_s"),
    case("duration-years", {"pipeline": {"duration_s": "1e12"}}, "pipeline.duration_s"),
    case("interval-1e23", {"pipeline": {"interval_ms": "1e23"}}, "pipeline.interval_ms"),
    case("interval-too-long", {"pipeline": {"interval_ms": "100000000000"}},
         "pipeline.interval_ms"),
    case("interval-negative", {"pipeline": {"interval_ms": "-1"}}, "pipeline.interval_ms"),
    case("journal-under-a-file", {"journal": {"url": '"sqlite:///afile/j.sqlite"'}},
         "journal.url", setup=file_at("afile", "x")),
    case("journal-is-a-directory", {"journal": {"url": '"sqlite:///adir"'}}, "journal.url",
         setup=dir_at("adir")),
    case("journal-url-unknown-scheme", {"journal": {"url": '"mysql://h/db"'}}, "journal.url"),
    case("journal-url-bare-path", {"journal": {"url": '"journal.sqlite"'}}, "journal.url"),
    case("journal-url-password-inline", {"journal": {
        "url": '"postgresql://u:hunter2@127.0.0.1/db"'}}, "journal.url"),
    case("journal-url-no-host", {"journal": {"url": '"postgresql:///db"'}}, "journal.url"),
    case("journal-lease-too-short", {"journal": {"lease_ms": "10"}}, "journal.lease_ms"),
    case("journal-password-not-a-ref", {"journal": {"password": '"hunter2"'}},
         "journal.password"),
    case("journal-old-place", {"pipeline": {"journal": '"j.sqlite"'}}, "pipeline.journal"),
    case("journal-unknown-key", {"journal": {"uri": '"sqlite:///j"'}}, "journal.uri"),
    case("telemetry-path-under-a-file", {"telemetry": {
        "exporter": '"jsonl"', "path": '"afile/{run_id}/spans.jsonl"'}}, "telemetry.path",
        setup=file_at("afile", "x")),
    case("sink-path-under-a-file", {"sinks.metrics": {"path": '"afile/m.jsonl"'}},
         "sinks.metrics.path", setup=file_at("afile", "x")),
    case("state-file-is-a-directory", {"venues.sim": {"state_file": '"adir"'}},
         "venues.sim.state_file", setup=dir_at("adir")),
    case("pipeline-unknown-key", {"pipeline": {"colour": '"red"'}}, "pipeline.colour"),
    case("waive-unknown-gate", {"pipeline": {"waive_live_gates": '["heat"]'}},
         "pipeline.waive_live_gates[0]"),
    case("waive-not-array", {"pipeline": {"waive_live_gates": '"capital"'}},
         "pipeline.waive_live_gates"),
    case("pipeline-missing", {"pipeline": DROP}, "pipeline"),
    case("section-misspelt", {"telemetery": {"exporter": '"none"'}}, "telemetery"),
    # [venues]
    case("venues-empty", {"venues.sim": DROP, "venues": {}}, "venues"),
    case("venues-missing", {"venues.sim": DROP}, "venues"),
    case("venue-type-unknown", {"venues.sim": {"type": '"papr"'}}, "venues.sim.type"),
    case("venue-type-missing", {"venues.sim": {"type": DROP}}, "venues.sim.type"),
    case("scenario-missing", {"venues.sim": {"scenario": '"nope.toml"'}}, "venues.sim.scenario"),
    case("scenario-a-directory", {"venues.sim": {"scenario": f'"{OUTSIDE}"'}},
         "venues.sim.scenario"),
    case("scenario-bad-fair", {"venues.sim": {"scenario": f'"{OUTSIDE}/bad-fair.toml"'}},
         "markets[0].fair"),
    case("latency-inf", {"venues.sim": {"latency_ms": "inf"}}, "venues.sim.latency_ms"),
    case("latency-nan", {"venues.sim": {"latency_ms": "nan"}}, "venues.sim.latency_ms"),
    case("latency-negative", {"venues.sim": {"latency_ms": "-3"}}, "venues.sim.latency_ms"),
    case("latency-string", {"venues.sim": {"latency_ms": '"fast"'}}, "venues.sim.latency_ms"),
    case("seed-float", {"venues.sim": {"seed": "1.5"}}, "venues.sim.seed"),
    # [detectors]
    case("detectors-empty", {"detectors.c": DROP, "detectors": {}}, "detectors"),
    case("detectors-missing", {"detectors.c": DROP}, "detectors"),
    case("detector-venues-string", {"detectors.c": {"venues": '"sim"'}}, "detectors.c.venues"),
    case("detector-venues-empty", {"detectors.c": {"venues": "[]"}}, "detectors.c.venues"),
    case("detector-venue-dangling", {"detectors.c": {"venues": '["nope"]'}},
         "detectors.c.venues[0]"),
    case("min-edge-float", {"detectors.c": {"min_edge": "0.01"}}, "detectors.c.min_edge"),
    case("min-edge-one", {"detectors.c": {"min_edge": '"1"'}}, "detectors.c.min_edge"),
    case("min-edge-negative", {"detectors.c": {"min_edge": '"-0.1"'}}, "detectors.c.min_edge"),
    case("min-edge-garbage", {"detectors.c": {"min_edge": '"abc"'}}, "detectors.c.min_edge"),
    case("bankroll-huge", {"detectors.c": {"bankroll": '"1e999999999"'}},
         "detectors.c.bankroll"),
    case("bankroll-negative", {"detectors.c": {"bankroll": '"-5"'}}, "detectors.c.bankroll"),
    case("bankroll-nan", {"detectors.c": {"bankroll": '"NaN"'}}, "detectors.c.bankroll"),
    case("kelly-without-bankroll", {"detectors.c": {"kelly_fraction": '"0.5"'}},
         "detectors.c.kelly_fraction"),
    case("kelly-above-one", {"detectors.c": {"kelly_fraction": '"2"', "bankroll": '"10"'}},
         "detectors.c.kelly_fraction"),
    case("capital-gate-dangling", {"detectors.c": {"capital_gate": '"nope"'}},
         "detectors.c.capital_gate"),
    case("capital-gate-wrong-type", {"detectors.c": {"capital_gate": '"position"'},
                                     **LIVE_GATES}, "detectors.c.capital_gate"),
    case("max-size-zero", {"detectors.c": {"max_size": '"0"'}}, "detectors.c.max_size"),
    case("every-validator-of-a-table", {"detectors.c": {
        "min_edge": '"2"', "max_levels": "0", "bankroll": '"-1"'}},
        "detectors.c.min_edge", "detectors.c.max_levels", "detectors.c.bankroll"),
    case("cross-venue-one-venue", {"detectors.x": {
        "type": '"cross_venue"', "venues": '["sim"]', "mapping": '"m.toml"'}},
        "detectors.x.venues"),
    case("cross-venue-mapping-missing", {
        "venues.sim2": {"type": '"paper"', "scenario": f'"{DEMO_SCENARIO}"'},
        "detectors.x": {"type": '"cross_venue"', "venues": '["sim", "sim2"]',
                        "mapping": '"missing-mapping.toml"'}}, "detectors.x.mapping"),
    case("multi-outcome-venues-string", {"detectors.m": {
        "type": '"multi_outcome"', "venues": '"sim"'}}, "detectors.m.venues"),
    # [gates]
    case("capital-bankroll-zero", {"gates.capital": {"bankroll": '"0"'}},
         "gates.capital.bankroll"),
    case("capital-fraction-above-one", {"gates.capital": {"max_trade_fraction": '"1.5"'}},
         "gates.capital.max_trade_fraction"),
    case("connectivity-venue-dangling", {"gates.conn": {
        "type": '"connectivity"', "venues": '["ghost"]'}}, "gates.conn.venues[0]"),
    case("connectivity-age-nan", {"gates.conn": {"type": '"connectivity"', "max_age_ms": "nan"}},
         "gates.conn.max_age_ms"),
    case("kill-switch-neither", {"gates.k": {"type": '"kill_switch"'}}, "gates.k.file"),
    case("loss-streak-cooldown-negative", {"gates.ls": {
        "type": '"loss_streak"', "max_consecutive_losses": "3", "cooldown_s": "-1.0"}},
        "gates.ls.cooldown_s"),
    case("daily-loss-hour-24", {"gates.dl": {
        "type": '"daily_loss"', "max_loss": '"5"', "reset_hour_utc": "24"}},
        "gates.dl.reset_hour_utc"),
    case("position-gate-without-limits", {"gates.position": {"type": '"max_position"'}},
         "gates.position.max_position"),
    case("gate-type-unknown", {"gates.x": {"type": '"capitol"'}}, "gates.x.type"),
    # [execution]
    case("deadline-zero", {"execution": {"deadline_ms": "0"}}, "execution.deadline_ms"),
    case("strategy-unknown", {"execution": {"strategy": '"yolo"'}}, "execution.strategy"),
    case("slippage-boolean", {"execution": {"max_slippage_ticks": "true"}},
         "execution.max_slippage_ticks"),
    case("time-in-force-unknown", {"execution": {"time_in_force": '"GTC"'}},
         "execution.time_in_force"),
    case("order-timeout-float", {"execution": {"order_timeout_ms": "1e23"}},
         "execution.order_timeout_ms"),
    case("unwind-loss-huge", {"execution": {"max_unwind_loss": '"1e999999999"'}},
         "execution.max_unwind_loss"),
    # [sinks] and [telemetry]
    case("prometheus-public-host", {"sinks.prom": {"type": '"prometheus"', "host": '"0.0.0.0"'}},
         "sinks.prom.host"),
    case("prometheus-port", {"sinks.prom": {"type": '"prometheus"', "port": "70000"}},
         "sinks.prom.port"),
    case("prometheus-buckets-string", {"sinks.prom": {
        "type": '"prometheus"', "buckets_ms": '"1,2"'}}, "sinks.prom.buckets_ms"),
    case("prometheus-buckets-unordered", {"sinks.prom": {
        "type": '"prometheus"', "buckets_ms": "[5, 1]"}}, "sinks.prom.buckets_ms"),
    case("prometheus-buckets-negative", {"sinks.prom": {
        "type": '"prometheus"', "buckets_ms": "[-1, 5]"}}, "sinks.prom.buckets_ms"),
    case("telemetry-exporter-unknown", {"telemetry": {"exporter": '"zipkin"'}},
         "telemetry.exporter"),
    case("telemetry-timeout-nan", {"telemetry": {"timeout_s": "nan"}}, "telemetry.timeout_s"),
    case("otlp-sink-interval-short", {"sinks.o": {"type": '"otlp"', "interval_ms": "10"}},
         "sinks.o.interval_ms"),
    # connectors
    case("polymarket-real-url-in-paper", {"venues.pm": {**POLY, "rest_url": DROP}},
         "venues.pm.rest_url"),
    case("polymarket-signature-type", {"venues.pm": {**POLY, "signature_type": "5"}},
         "venues.pm.signature_type"),
    case("polymarket-chain-1", {"venues.pm": {**POLY, "chain_id": "1"}}, "venues.pm.chain_id"),
    case("polymarket-inline-key", {"venues.pm": {**POLY, "private_key": '"0xabc"'}},
         "venues.pm.private_key"),
    case("polymarket-key-truncated", {"venues.pm": {
        **POLY, "private_key": f'{{ file = "{OUTSIDE}/short.key" }}'}}, "venues.pm.private_key"),
    case("polymarket-key-not-hex", {"venues.pm": {
        **POLY, "private_key": f'{{ file = "{OUTSIDE}/nothex.key" }}'}},
        "venues.pm.private_key"),
    case("polymarket-key-env-unset", {"venues.pm": {
        **POLY, "private_key": '{ env = "PR3DICT_TEST_UNSET_KEY" }'}}, "venues.pm.private_key"),
    case("polymarket-embedded-sim-missing", {"venues.pm": {
        **POLY, "embedded_sim": '"no-such-scenario.toml"'}}, "venues.pm.embedded_sim"),
    case("bad-key-with-jsonl-spans", {"telemetry": {"exporter": '"jsonl"', "endpoint": DROP},
                                      "venues.pm": {
        **POLY, "private_key": f'{{ file = "{OUTSIDE}/short.key" }}'}}, "venues.pm.private_key"),
    case("kalshi-corrupt-pem", {"venues.k": {
        **KALSHI, "private_key": f'{{ file = "{OUTSIDE}/corrupt.pem" }}'}},
        "venues.k.private_key"),
    case("kalshi-real-ws-in-paper", {"venues.k": {**KALSHI, "ws_url": DROP}}, "venues.k.ws_url"),
    case("kalshi-api-unknown", {"venues.k": {**KALSHI, "api": '"v3"'}}, "venues.k.api"),
    # live mode
    case("live-paper-venues-only", {"pipeline": {"mode": '"live"'}, **LIVE_GATES},
         "pipeline.mode"),
    case("live-without-capital-gate", {"pipeline": {"mode": '"live"'}, "venues.pm": POLY,
                                       "gates.capital": DROP, **LIVE_GATES}, "pipeline.mode"),
    case("live-without-position-gate", {"pipeline": {"mode": '"live"'}, "venues.pm": POLY},
         "pipeline.mode"),
    # rpc, settlers
    case("polygon-chain-1", {"rpc.p": {
        "type": '"polygon_pool"', "endpoints": '["http://127.0.0.1:{port}"]', "chain_id": "1"}},
        "rpc.p.chain_id"),
    case("polygon-no-endpoints", {"rpc.p": {"type": '"polygon_pool"'}}, "rpc.p.endpoints"),
    case("settler-rpc-dangling", {"settlers.s": {
        "type": '"ctf_merge"', "rpc": '"nope"', "private_key": '{ env = "K" }',
        "conditional_tokens": '"0x' + "1" * 40 + '"', "collateral": '"0x' + "2" * 40 + '"'}},
        "settlers.s.rpc"),
    case("gas-tracker-rpc-dangling", {"sinks.g": {"type": '"gas_tracker"', "rpc": '"nope"'}},
         "sinks.g.rpc"),
]

# Pipelines that are not TOML files at all: (id, how to make it, what the message says).
FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("not-utf8", lambda d: _write(d / "p.toml", b'[pipeline]\nname = "\xff\xfe"\n'),
     "not UTF-8"),
    ("a-directory", lambda d: _mkdir(d / "p.toml"), "is a directory"),
    ("missing", lambda d: d / "nope.toml", "no such file"),
    ("invalid-toml", lambda d: _write(d / "p.toml", b"[pipeline\nname = 1\n"), "invalid TOML"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


COMMANDS = [("run",), ("validate",), ("validate", "--no-environment")]


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Input files cases name, beside (not in) the working directory."""
    d = tmp_path / "inputs"
    d.mkdir()
    (d / "bad-fair.toml").write_text('[[markets]]\nid = "m"\nfair = "1.5"\n')
    (d / "short.key").write_text("0x2a36d5b45bb7\n")
    (d / "nothex.key").write_text("0x" + "zz" * 32 + "\n")
    (d / "corrupt.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n"
                                   "-----END PRIVATE KEY-----\n")
    return d


def refuse(args: list[str], cwd: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with chdir(cwd):
        code = main(args, stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(("id", "changes", "paths", "setup"), CASES, ids=[c[0] for c in CASES])
def test_broken_pipeline_is_refused_before_anything(id, changes, paths, setup, command,
                                                    tmp_path, inputs, listener):
    cwd = tmp_path / "work"
    cwd.mkdir()
    if setup is not None:
        setup(cwd)
    pipeline = cwd / "pipeline.toml"
    pipeline.write_text(render(changes).replace("{port}", str(listener.port)))
    before, connections = listing(cwd), listener.connections
    code, text = refuse([*command, str(pipeline)], cwd)
    assert code == 78, text
    for path in paths:
        assert f": {path}: " in text, f"{path!r} not named:\n{text}"
    assert "Traceback" not in text and "Error(" not in text, text
    assert "nothing was run" in text
    assert listing(cwd) == before
    assert listener.connections == connections


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(("id", "make", "message"), FILES, ids=[f[0] for f in FILES])
def test_a_pipeline_that_is_not_a_toml_file(id, make, message, command, tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    path = make(cwd)
    before = listing(cwd)
    code, text = refuse([*command, str(path)], cwd)
    assert code == 78, text
    assert f"{path}: {message}" in text
    assert "Traceback" not in text
    assert listing(cwd) == before


def test_there_are_at_least_60_cases():
    assert len(CASES) + len(FILES) >= 60


@pytest.mark.parametrize("id", ["name-escapes", "polymarket-key-truncated",
                                "capital-gate-dangling"])
def test_refused_through_a_real_process(id, tmp_path, inputs, listener):
    _, changes, paths, _ = next(c for c in CASES if c[0] == id)
    cwd = tmp_path / "work"
    cwd.mkdir()
    pipeline = cwd / "pipeline.toml"
    pipeline.write_text(render(changes).replace("{port}", str(listener.port)))
    before = listing(cwd)
    proc = subprocess.run([str(Path(sys.executable).parent / "pr3dict"), "run", str(pipeline)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 78, proc.stderr
    assert f": {paths[0]}: " in proc.stderr and "Traceback" not in proc.stderr
    assert listing(cwd) == before


@pytest.mark.parametrize("changes", [{}, {"venues.pm": POLY, "venues.k": KALSHI},
                                     {"pipeline": {"mode": '"live"'}, "venues.pm": POLY,
                                      **LIVE_GATES},
                                     {"pipeline": {"mode": '"live"',
                                                   "waive_live_gates": '["max_position"]'},
                                      "venues.pm": POLY}],
                         ids=["paper", "connectors", "live", "live-waived"])
def test_the_unbroken_pipelines_are_valid(changes, tmp_path, listener):
    """The base every case breaks is valid: each refusal is the case's own."""
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(render(changes).replace("{port}", str(listener.port)))
    code, text = refuse(["validate", "--no-environment", str(pipeline)], tmp_path)
    assert code == 0, text


GARBAGE = ["nan", "[]", '"1e999999999"', '{ env = "PR3DICT_TEST_UNSET" }']


@pytest.mark.parametrize("name", ["complement-paper.toml", "cross-venue-sim.toml"])
def test_no_value_of_any_key_crashes_the_loader(name, tmp_path):
    """Every key of a shipped pipeline, set to each kind of garbage: accepted or exit 78,
    never a traceback, and nothing written."""
    import shutil

    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    cwd = tmp_path / "work"
    cwd.mkdir()
    lines = (tmp_path / "pipelines" / name).read_text().splitlines()
    pipeline = tmp_path / "pipelines" / "mutant.toml"
    tried = 0
    for i, line in enumerate(lines):
        key, eq, _ = line.partition("=")
        if not eq or line.lstrip().startswith(("#", "[")):
            continue
        for garbage in GARBAGE:
            pipeline.write_text("\n".join([*lines[:i], f"{key.strip()} = {garbage}",
                                           *lines[i + 1:]]))
            code, text = refuse(["validate", "--no-environment", str(pipeline)], cwd)
            assert code in (0, 78), f"{key} = {garbage}:\n{text}"
            assert "Traceback" not in text
            tried += 1
    assert tried > 50 and list(cwd.iterdir()) == []
