"""Prometheus metrics of real runs: scraped over HTTP and read with prometheus_client's parser;
the textfile a run leaves behind; the gauges an operator alerts on (halts, kill switch,
unresolved trades, unhedged exposure) follow the engine's state."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from decimal import Decimal as D

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import arb_books, engine_for, scripted_venue, set_book
from test_restart_state import EXECUTION, exposure_books, until

from pr3dict_core.components import AmbiguousOutcome
from pr3dict_core.model import TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_sinks.prometheus import PrometheusSink


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, as Prometheus would read the exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return reply.read().decode()


PIPELINE = """
[pipeline]
name = "prom-run"
[venues.sim]
type = "paper"
scenario = "{demo}"
[detectors.c]
type = "binary_complement"
venues = ["sim"]
min_edge = "0.005"
[gates.pos]
type = "max_position"
max_leg_size = "1000"
[sinks.prom]
type = "prometheus"
port = 0
textfile = "out/pr3dict.prom"
"""


async def test_a_real_run_is_scraped_parsed_and_left_in_a_textfile(write_pipeline, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = Engine.from_file(write_pipeline(PIPELINE))
    (sink,) = engine.sinks
    assert isinstance(sink, PrometheusSink)
    try:
        await engine.run(cycles=150)
        running = samples(await asyncio.to_thread(scrape, sink.url))
        await engine.kill("operator test")
        killed = samples(await asyncio.to_thread(scrape, sink.url))
    finally:
        await engine.close()

    info = {labels: v for (name, labels), v in running.items() if name == "pr3dict_run_info"}
    assert info == {(("mode", "paper"), ("pipeline", "prom-run"),
                     ("run_id", engine.run_id)): 1.0}
    (build,) = [dict(labels) for name, labels in running if name == "pr3dict_build_info"]
    assert build["version"] and build["python"]
    trades = {dict(labels)["state"]: v for (name, labels), v in running.items()
              if name == "pr3dict_trades_total"}
    assert trades.get("committed", 0) > 0
    assert running[("pr3dict_opportunities_total", ())] == engine.stats.opportunities > 0
    # Nothing stops entries in a clean run; every cause reads 0 (not "no data").
    halted = {dict(labels)["cause"]: v for (name, labels), v in running.items()
              if name == "pr3dict_halted"}
    assert {"unresolved", "exposure", "kill", "auth", "journal"} <= set(halted)
    assert set(halted.values()) == {0.0}
    assert running[("pr3dict_kill_switch_engaged", ())] == 0
    assert running[("pr3dict_trades_unresolved", ())] == 0
    assert running[("pr3dict_unhedged_exposure_shares", (("venue", "sim"),))] == 0
    # Buckets from 10 µs to 10 s, and a count that matches the executed trades.
    bounds = [float(dict(labels)["le"]) for name, labels in running
              if name == "pr3dict_leg_skew_seconds_bucket"]
    assert min(bounds) == 1e-05 and max(b for b in bounds if b != float("inf")) == 10
    executed = sum(v for k, v in trades.items() if k != "rejected")
    assert running[("pr3dict_decision_to_final_seconds_count",
                    (("strategy", "market"),))] == executed
    # Units in names: every sample of a money, time or gas metric says which.
    names = {name for name, _ in running}
    assert "pr3dict_gas_spent_pol_total" in names and "pr3dict_gas_spent_total" not in names
    assert not any(n.startswith("pr3dict_ratio") for n in names)  # rates: the query's job

    assert killed[("pr3dict_kill_switch_engaged", ())] == 1
    assert killed[("pr3dict_halted", (("cause", "kill"),))] == 1

    # The run is over: the endpoint is gone, its final values are in the textfile.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(sink.url, timeout=2)
    final = samples((tmp_path / "out" / "pr3dict.prom").read_text())
    assert final[("pr3dict_run_end_time_seconds", ())] >= final[
        ("pr3dict_run_start_time_seconds", ())] > 0
    assert final[("pr3dict_kill_switch_engaged", ())] == 1
    assert final[("pr3dict_opportunities_total", ())] == engine.stats.opportunities
    for key, value in running.items():
        if key[0] == "pr3dict_trades_total":
            assert final[key] == value  # the kill came after the last cycle: no new trade
    assert not list((tmp_path / "out").glob("*.tmp*"))  # written whole, then renamed


class Flaky:
    """A paper venue whose NO orders lose their reply and whose order queries fail until
    ``recovered`` is set: the trade is UNRESOLVED, then reconciled."""

    def __init__(self, inner):
        self._inner = inner
        self.recovered = False

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def place_order(self, request):
        if request.instrument.endswith(":no") and not self.recovered:
            await self._inner.place_order(request)
            raise AmbiguousOutcome("reply lost after send")
        return await self._inner.place_order(request)

    async def get_order(self, cid):
        if not self.recovered:
            raise ConnectionError("venue unreachable")
        return await self._inner.get_order(cid)


def gauges(sink: PrometheusSink) -> dict[str, float]:
    values = samples(sink.render())
    return {"unresolved": values[("pr3dict_trades_unresolved", ())],
            "halted_unresolved": values[("pr3dict_halted", (("cause", "unresolved"),))],
            "halted_exposure": values[("pr3dict_halted", (("cause", "exposure"),))],
            "shares": values[("pr3dict_unhedged_exposure_shares", (("venue", "v"),))],
            "usdc": values[("pr3dict_unhedged_exposure_usdc", (("venue", "v"),))]}


async def test_unresolved_gauges_follow_the_engine():
    inner = scripted_venue()
    venue = Flaky(inner)
    engine = engine_for(inner)
    engine.venues["v"] = venue
    sink = PrometheusSink("prom", serve=False)
    engine.sinks.append(sink)
    await engine.start()
    try:
        arb_books(inner)
        (opp,) = await engine.scan()
        trade = await engine.execute_opportunity(opp)
        assert trade.state is TradeState.UNRESOLVED
        assert gauges(sink)["unresolved"] == 1 and gauges(sink)["halted_unresolved"] == 1
        venue.recovered = True  # the venue answers again: the resolver finds the fill
        await until(lambda: not engine.halts)
        assert gauges(sink)["unresolved"] == 0 and gauges(sink)["halted_unresolved"] == 0
    finally:
        await engine.close()


async def test_exposure_gauges_follow_the_engine():
    venue = scripted_venue()
    engine = engine_for(venue, execution=EXECUTION)
    sink = PrometheusSink("prom", serve=False)
    engine.sinks.append(sink)
    await engine.start()
    try:
        arb_books(venue)
        (opp,) = await engine.scan()
        exposure_books(venue)  # NO fills 4 of 10, nobody bids for the 6 excess YES
        rolled = await engine.execute_opportunity(opp)
        assert rolled.state is TradeState.ROLLED_BACK
        now = gauges(sink)
        assert now["halted_exposure"] == 1
        assert (D(str(now["shares"])), D(str(now["usdc"]))) == (D(6), D("2.7"))  # at 0.45
        set_book(venue, "m:yes", bids=[("0.40", 100)], asks=[("0.45", 10)])  # a bid appears
        await until(lambda: not engine.halts)
        assert gauges(sink)["halted_exposure"] == 0 and gauges(sink)["shares"] == 0
    finally:
        await engine.close()


def test_pr3dict_run_leaves_the_textfile_and_names_it(write_pipeline, run_pr3dict, tmp_path):
    path = write_pipeline(PIPELINE.replace('textfile = "out/pr3dict.prom"\n', ""))
    outcome = run_pr3dict("run", str(path), "--cycles", "60", "--run-id", "prom-1")
    outcome.assert_success()
    assert "runs/prom-1/metrics.prom" in outcome.out + outcome.err  # named with the outputs
    final = samples((tmp_path / "runs" / "prom-1" / "metrics.prom").read_text())
    assert final[("pr3dict_run_info", (("mode", "paper"), ("pipeline", "prom-run"),
                                       ("run_id", "prom-1")))] == 1
    assert sum(v for (name, _), v in final.items() if name == "pr3dict_trades_total") > 0
    assert final[("pr3dict_run_end_time_seconds", ())] > 0
