"""Record from a `pr3dict sim` process, replay it, and shadow-trade against it (issue 11)."""

from __future__ import annotations

import bisect
from decimal import Decimal
from pathlib import Path

from replay_helpers import DETECTORS, sim_process, trades_of, venues_toml

from pr3dict_replay.decode import Decoder
from pr3dict_replay.format import read_recording
from pr3dict_replay.venue import Player, ReplayVenue


def _state(decoder: Decoder) -> dict:
    return {i: (dict(b.bids), dict(b.asks)) for i, b in decoder.books.items()}


def test_replayed_books_equal_the_simulators_books_at_every_snapshot(recording):
    records = list(read_recording(recording))
    kinds = {(r["k"], r.get("v")) for r in records}
    assert {("ws", "poly"), ("rest", "poly"), ("ws", "kalshi"), ("rest", "kalshi")} <= kinds
    streams = {"poly": "polymarket", "kalshi": "kalshi"}
    # Books built only from the websocket streams (Polymarket book and price_change,
    # Kalshi orderbook_snapshot and orderbook_delta) ...
    replayed = {v: Decoder(v, t, lambda i: None) for v, t in streams.items()}
    timeline: dict[str, list[tuple[int, dict]]] = {v: [] for v in streams}
    snapshots: list[tuple[int, str, dict]] = []
    # A snapshot is comparable when its request and reply both fell while the stream was
    # live: from a venue's first message after a connect until its next gap.
    live_since: dict[str, int | None] = {v: None for v in streams}
    awaiting_first: set[str] = set()
    for n, r in enumerate(records):
        v = r.get("v")
        if r["k"] == "connect":
            awaiting_first.add(v)
        elif r["k"] == "gap":
            live_since[v] = None
        elif r["k"] == "ws" and v in awaiting_first:
            awaiting_first.discard(v)
            live_since[v] = r["t"]
        if r["k"] == "markets":
            replayed[v].apply(r)
        elif r["k"] in ("ws", "gap"):
            replayed[v].apply(r)
            timeline[v].append((n, _state(replayed[v])))
        since = live_since.get(v)
        comparable = since is not None and r.get("sent", 0) >= since
        if r["k"] == "rest" and comparable:  # ... against the simulator's own books
            truth = Decoder(v, streams[v], lambda i: None)
            truth.set_markets(next(m for m in records if m["k"] == "markets" and m["v"] == v))
            truth.apply(r)
            state = _state(truth)
            if v == "kalshi":  # one market's book per reply
                state = {i: b for i, b in state.items() if i.startswith(r["ticker"] + ":")}
            snapshots.append((n, v, state))
    assert len([s for s in snapshots if s[1] == "poly"]) >= 5
    assert len([s for s in snapshots if s[1] == "kalshi"]) >= 20
    # The stream was dropped and resumed, and the recording says so.
    assert sum(r["k"] == "connect" and r["v"] == "poly" for r in records) >= 2
    assert any(r["k"] == "gap" and r["v"] == "poly" for r in records)
    for n, v, truth in snapshots:
        # The REST reply and the stream race (by a few simulator steps on a loaded machine):
        # the snapshot must equal the streamed books at some point around it.
        pos = bisect.bisect([k for k, _ in timeline[v]], n)  # this venue's messages around
        near = [{i: state[i] for i in truth} for _, state in timeline[v][max(pos - 150, 0):
                                                                            pos + 150]]
        assert truth in near, f"{v} snapshot at record {n} matches no replayed book near it"


async def test_the_replay_venue_plays_every_record_into_its_books(recording):
    player = Player(recording, speed=None, batch_ns=1_000_000)
    poly = ReplayVenue("poly", player, source="poly", latency_ms=0)
    kalshi = ReplayVenue("kalshi", player, source="kalshi", latency_ms=0)
    direct = {v: Decoder(v, t, lambda i: None) for v, t in
              (("poly", "polymarket"), ("kalshi", "kalshi"))}
    for r in read_recording(recording):
        if r.get("v") in direct:
            direct[r["v"]].apply(r)
    changed = 0
    while not (poly.exhausted() and kalshi.exhausted()):
        changed += len(await poly.poll_books()) + len(await kalshi.poll_books())
    assert changed > 0
    assert _state(poly.decoder) == _state(direct["poly"])
    assert _state(kalshi.decoder) == _state(direct["kalshi"])
    assert {b.instrument for m in poly.markets() for b in (poly.book(m.yes), poly.book(m.no))}


def _replay_pipeline(recording: Path, tmp_path: Path, name: str = "replay",
                     speed: str = '"max"') -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[pipeline]
name = "{name}"

[journal]
url = ""

[venues.poly]
type = "replay"
recording = "{recording}"
latency_ms = 5
jitter_ms = 3
seed = 7
speed = {speed}

[venues.kalshi]
type = "replay"
recording = "{recording}"
latency_ms = 5
jitter_ms = 3
seed = 7
speed = {speed}
{DETECTORS}
[sinks.metrics]
type = "jsonl"
path = "runs/{{run_id}}/metrics.jsonl"
""")
    return path


def test_a_replay_twice_or_paced_gives_identical_trades(recording, run_pr3dict, tmp_path):
    pipeline = _replay_pipeline(recording, tmp_path)
    run_pr3dict("validate", str(pipeline)).assert_success()
    first = run_pr3dict("run", str(pipeline), "--run-id", "r1").assert_success()
    second = run_pr3dict("run", str(pipeline), "--run-id", "r2").assert_success()
    a = trades_of(tmp_path / "runs/r1/metrics.jsonl")
    b = trades_of(tmp_path / "runs/r2/metrics.jsonl")
    # Every trade, end to end (exposure halts and unwinds included: tests/replay/
    # test_determinism.py makes sure there are some, under load).
    assert a == b
    assert len(a) >= 20
    # Paced at 25x real time instead of as fast as possible: the same trades too.
    paced = _replay_pipeline(recording, tmp_path, "paced", speed="25")
    run_pr3dict("run", str(paced), "--run-id", "r3").assert_success()
    assert trades_of(tmp_path / "runs/r3/metrics.jsonl") == a
    assert any(t[1] == "committed" for t in a), first.out
    assert "trades committed" in second.out
    report = run_pr3dict("report", "r1", "--no-html").assert_success()
    assert "By market (realised / expected = capture)" in report.out
    assert "% captured)" in report.out
    assert "kalshi:FED-CUT-DEC" in report.out or "kalshi:BTC-150K-2026" in report.out


def test_a_shadow_run_trades_locally_and_the_simulator_sees_no_order(run_pr3dict, tmp_path,
                                                                      monkeypatch):
    monkeypatch.delenv("PR3DICT_NEVER_SET", raising=False)
    with sim_process() as sim:
        pipeline = tmp_path / "shadow.toml"
        pipeline.write_text(f"""
[pipeline]
name = "shadow"
mode = "shadow"
cycles = 60

[journal]
url = ""
{venues_toml(sim.url, key_env="PR3DICT_NEVER_SET")}
{DETECTORS}
[sinks.metrics]
type = "jsonl"
path = "runs/{{run_id}}/metrics.jsonl"
""")
        outcome = run_pr3dict("run", str(pipeline), "--run-id", "s1").assert_success()
        routes = sim.served()
    trades = trades_of(tmp_path / "runs/s1/metrics.jsonl")
    # Orders were filled locally (committed or rolled back, legs filled all the same).
    assert any(Decimal(leg[5]) > 0 for t in trades for leg in t[4]), outcome.out + outcome.err
    report = run_pr3dict("report", "s1", "--no-html").assert_success()
    assert "By market (realised / expected = capture)" in report.out
    public = {"GET /markets", "GET /markets/{condition_id}", "GET /clob-markets/{condition_id}",
              "POST /books", "GET /ws/market", "GET /trade-api/v2/markets",
              "GET /trade-api/v2/markets/{ticker}", "GET /trade-api/v2/markets/{ticker}/orderbook"}
    assert set(routes) <= public, routes  # no order, no auth, no account query
    assert routes.get("GET /ws/market", 0) >= 1
