"""Bad venue replies, retries and the kill switch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

import attrs
from support import DEMO_SCENARIO, arb_books, engine_for, scripted_venue, set_book

from pr3dict_core.components import RateLimited
from pr3dict_core.config import ExecutionSection
from pr3dict_core.model import Fill, LegState, OrderAck, OrderStatus, TradeState
from pr3dict_strategies.limit import LimitStrategy

PR3DICT = Path(sys.executable).parent / "pr3dict"


class LyingVenue:
    """Applies orders at the real venue but answers with a malformed reply."""

    def __init__(self, inner, how):
        self._inner, self.how = inner, how

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def place_order(self, request):
        ack = await self._inner.place_order(request)
        if not request.instrument.endswith(":no"):
            return ack
        if self.how == "not an ack":
            return {"status": "matched"}
        if self.how == "wrong id":
            return attrs.evolve(ack, client_order_id="someone-else")
        if self.how == "overfill":
            extra = Fill("ghost", request.client_order_id, "0.5", request.size)
            return attrs.evolve(ack, fills=(*ack.fills, extra))
        raise AssertionError(self.how)


async def run_lying(how):
    inner = scripted_venue()
    engine = engine_for(inner)
    engine.venues["v"] = LyingVenue(inner, how)
    await engine.start()
    arb_books(inner)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    return inner, trade


async def test_malformed_replies_are_reconciled_never_trusted():
    for how in ("not an ack", "wrong id", "overfill"):
        inner, trade = await run_lying(how)
        no = trade.legs[1]
        assert LegState.UNRESOLVED in no.history, how  # the reply was not believed
        # The venue's truth (asked by client order id) decided: filled, exactly once.
        assert no.state is LegState.FILLED and no.filled == 10, how
        assert "MalformedReply" in no.error, how
        assert trade.state is TradeState.COMMITTED, how
        assert inner.positions() == {"m:yes": D(10), "m:no": D(10)}, how


async def test_malformed_pushes_are_dropped():
    venue = scripted_venue()
    engine = engine_for(venue)
    await engine.start()
    executor = engine._executor
    arb_books(venue)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    leg = trade.legs[0]
    cid = leg.current_client_order_id()
    before = dict(leg.fills)
    lies = [
        (Fill("f", cid, "7", "1"),),  # price outside [0, 1]
        (Fill("f", cid, "0.5", "1E+400"),),  # not within the order
        (Fill("f", cid, "0.5", "NaN"),),  # not finite
        (Fill("f", cid, "0.5", "-3"),),  # negative without being a reversal
        (Fill("f", "someone-else", "0.5", "1"),),  # another order's fill
        (Fill("f", cid, "0.5", "6"), Fill("g", cid, "0.5", "6")),  # more than the order
    ]
    for fills in lies:
        executor.on_order_update(OrderAck(cid, OrderStatus.OPEN, fills))
    executor.on_order_update(OrderAck("not-ours", OrderStatus.FILLED, ()))
    await engine.close()
    assert trade.state is TradeState.COMMITTED and leg.fills == before


class ThrottledVenue:
    def __init__(self, inner, fail_times):
        self._inner, self.left, self.calls = inner, fail_times, 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def place_order(self, request):
        self.calls += 1
        if self.left:
            self.left -= 1
            raise RateLimited("429 Too Many Requests")
        return await self._inner.place_order(request)


async def test_rate_limited_orders_are_retried_with_backoff(tracer_provider, span_exporter):
    inner = scripted_venue()
    venue = ThrottledVenue(inner, fail_times=2)
    engine = engine_for(inner, tracer_provider=tracer_provider,
                        execution=ExecutionSection(deadline_ms=2000))
    engine.venues["v"] = venue
    await engine.start()
    arb_books(inner)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert trade.state is TradeState.COMMITTED
    assert venue.calls == 4  # each leg refused once, then placed
    retries = [e for s in span_exporter.get_finished_spans() for e in s.events
               if e.name == "retry"]
    assert len(retries) == 2 and retries[0].attributes["error.type"] == "RateLimited"
    # Same client order id on the resend: idempotent at the venue.
    assert len(inner.engine.fills("pr3dict")) == 2


async def test_rate_limit_past_the_deadline_rejects_the_leg():
    inner = scripted_venue()
    engine = engine_for(inner, execution=ExecutionSection(deadline_ms=5))
    engine.venues["v"] = ThrottledVenue(inner, fail_times=100)
    await engine.start()
    arb_books(inner)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    assert {leg.state for leg in trade.legs} == {LegState.REJECTED}
    assert trade.state is TradeState.ROLLED_BACK and inner.positions() == {}


async def test_kill_switch_cancels_resting_orders_and_stops_entries():
    venue = scripted_venue()
    engine = engine_for(venue, strategy=LimitStrategy(),
                        execution=ExecutionSection(deadline_ms=5000))
    await engine.start()
    arb_books(venue)
    (opp,) = await engine.scan()
    set_book(venue, "m:no", bids=[("0.48", 100)], asks=[("0.70", 50)])
    task = asyncio.ensure_future(engine.execute_opportunity(opp))
    await asyncio.sleep(0.02)
    assert len(venue.engine.open_orders("pr3dict")) == 1  # NO rests
    started = time.perf_counter()
    await engine.kill("operator")
    trade = await task
    assert time.perf_counter() - started < 1  # did not wait for the 5 s deadline
    assert venue.engine.open_orders("pr3dict") == []
    assert trade.state is TradeState.ROLLED_BACK
    arb_books(venue)
    (opp,) = await engine.scan()
    blocked = await engine.execute_opportunity(opp)
    assert blocked.state is TradeState.REJECTED
    assert blocked.reject_reason == "kill switch: operator"
    await engine.close()


def test_sigusr1_and_kill_file_halt_entries(tmp_path):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"""
[pipeline]
name = "k"
kill_switch_file = "{tmp_path / 'STOP'}"
[venues.sim]
type = "paper"
scenario = "{DEMO_SCENARIO}"
[detectors.c]
type = "binary_complement"
venues = ["sim"]
""")
    for how in ("signal", "file"):
        proc = subprocess.Popen([str(PR3DICT), "run", str(pipeline), "--duration", "30",
                                 "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        seen = [proc.stderr.readline()]  # the banner: the signal handlers are in place
        assert seen[0].startswith("pr3dict: run "), seen
        if how == "signal":
            os.kill(proc.pid, signal.SIGUSR1)
        else:
            (tmp_path / "STOP").touch()
        while "halted: kill switch" not in seen[-1]:  # logged once the engine halted
            seen.append(proc.stderr.readline())
            assert seen[-1], seen  # the process ended early
        os.kill(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
        err = "".join(seen) + rest
        assert proc.returncode == 130, err
        expected = "SIGUSR1" if how == "signal" else "kill switch file"
        assert f"halted: kill switch: {expected}" in err
        (tmp_path / "STOP").unlink(missing_ok=True)


class Crash(BaseException):
    """The process dies here."""


class CrashAfterPlace:
    """Applies the first order at the venue, then the engine 'dies'."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def place_order(self, request):
        await self._inner.place_order(request)
        raise Crash


class Unreachable:
    """Queries fail until `heal()`."""

    def __init__(self, inner):
        self._inner, self.down, self.queries = inner, True, 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def get_order(self, cid):
        self.queries += 1
        if self.down:
            raise ConnectionResetError("venue unreachable")
        return await self._inner.get_order(cid)


async def test_recovery_that_cannot_reach_the_venue_fails_closed_until_it_can(tmp_path):
    from pr3dict_core.journal import Journal

    venue = scripted_venue()
    crashed = engine_for(venue)
    crashed.venues["v"] = CrashAfterPlace(venue)
    crashed.journal = Journal(tmp_path / "j.sqlite", "run1")
    await crashed.start()
    arb_books(venue)
    (opp,) = await crashed.scan()
    try:
        await crashed.execute_opportunity(opp)
    except BaseException as exc:  # the TaskGroup wraps the crash
        assert any(isinstance(e, Crash) for e in getattr(exc, "exceptions", [exc]))
    crashed.journal.close()
    assert venue.positions()  # the venue did fill something before the 'crash'

    unreachable = Unreachable(venue)
    engine = engine_for(venue)
    engine.venues["v"] = unreachable
    engine.journal = Journal(tmp_path / "j.sqlite", "run2")
    await engine.start()  # recovery: the venue does not answer
    assert "recovery left trades unresolved" in engine.halted
    (trade,) = engine.recovered
    assert trade.state is TradeState.UNRESOLVED
    arb_books(venue)
    (opp,) = await engine.scan()
    assert (await engine.execute_opportunity(opp)).state is TradeState.REJECTED  # fail closed
    unreachable.down = False  # the venue is back: the background resolver settles it
    for _ in range(100):
        if trade.state is not TradeState.UNRESOLVED:
            break
        await asyncio.sleep(0.05)
    assert trade.state in (TradeState.COMMITTED, TradeState.ROLLED_BACK)
    assert engine.halted == ""  # entries resume
    await engine.close()
    pos = venue.positions()
    assert pos.get("m:yes", 0) == pos.get("m:no", 0)  # hedged or flat after all


async def test_transient_retries_are_configurable():
    """`[execution] max_retries = 0`: a rate-limited order is not resent; the leg is refused."""
    inner = scripted_venue()
    engine = engine_for(inner, execution=ExecutionSection(deadline_ms=500, max_retries=0))
    venue = ThrottledVenue(inner, fail_times=1)
    engine.venues["v"] = venue
    await engine.start()
    arb_books(inner)
    (opp,) = await engine.scan()
    trade = await engine.execute_opportunity(opp)
    await engine.close()
    (refused,) = [leg for leg in trade.legs if leg.state is LegState.REJECTED]
    assert len(refused.orders) == 1 and "RateLimited" in refused.error  # never resent
    assert venue.calls == 3  # refused once; the other leg placed, then unwound
