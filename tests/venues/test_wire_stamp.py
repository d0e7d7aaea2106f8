"""``decision -> wire`` is stamped when each order's request is written to the socket, the
signature is made while the intent commits, and the order goes out only once it is durable."""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from venue_fixtures import pm_book, poly_venue

from pr3dict_core import telemetry as tm
from pr3dict_core.config import ExecutionSection
from pr3dict_core.journal import Journal
from pr3dict_core.model import LegSpec, LegState, Side, TradeState
from pr3dict_core.pipeline import Engine
from pr3dict_paper.scenario import SimFaultSpec
from pr3dict_strategies.market import MarketStrategy

LATENCY_S = 0.3  # the simulator holds every order this long before it answers


@pytest.mark.parametrize("batch", [True, False])
async def test_wire_stamp_is_the_request_written_not_the_reply(make_sim, tmp_path, batch):
    sim = await make_sim(faults=SimFaultSpec(latency_ms={"POST /order": LATENCY_S * 1000,
                                                         "POST /orders": LATENCY_S * 1000}))
    venue = poly_venue(sim, websocket=False, request_timeout_ms=5000)
    received: list[tuple[str, bool, float]] = []  # (client order id, durable?, when)
    journal = Journal(tmp_path / "j.sqlite")
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    engine = Engine(venues={"poly": venue}, detectors=[],
                    strategy=MarketStrategy(MarketStrategy.Config()),
                    execution=ExecutionSection(deadline_ms=5000, order_timeout_ms=5000,
                                               batch_orders=batch),
                    journal=journal, tracer_provider=provider)
    await engine.start()
    m = venue.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", "50")])
    pm_book(sim, m.no, asks=[("0.50", "50")])
    place, place_many = venue.place_order, venue.place_orders

    def check(request):  # what the connector is handed: durable and signed
        rows = sqlite3.connect(journal.path).execute(
            "SELECT venue_order_id FROM orders WHERE client_order_id = ?",
            (request.client_order_id,)).fetchall()
        signed = "signature" in venue._signed[request.client_order_id][1]["order"]
        received.append((request.client_order_id, bool(rows and rows[0][0]) and signed,
                         engine.clock()))

    async def watched(request):
        check(request)
        return await place(request)

    async def watched_many(requests):
        for request in requests:
            check(request)
        return await place_many(requests)

    venue.place_order = watched  # type: ignore[method-assign]
    venue.place_orders = watched_many  # type: ignore[method-assign]
    legs = [LegSpec("poly", m.yes, Side.BUY, D("0.40"), D(10), m.market_id),
            LegSpec("poly", m.no, Side.BUY, D("0.50"), D(10), m.market_id)]
    trade = await engine.execute_trade(legs, size=D(10))
    await engine.close()
    assert trade.state is TradeState.COMMITTED
    assert all(durable for _, durable, _ in received) and len(received) == 2
    for leg in trade.legs:
        assert leg.state is LegState.FILLED
        # Handed over, then written, then (a venue latency later) answered.
        assert leg.submitted_at <= leg.on_wire_at
        assert leg.finished_at - leg.on_wire_at >= LATENCY_S
    assert trade.decided_at <= trade.submitted_at <= trade.on_wire_at
    submits = [s for s in spans.get_finished_spans() if s.name == tm.SPAN_SUBMIT]
    assert len(submits) == 2
    for s in submits:  # the stamp is on the span, between the start and the reply
        (event,) = [e for e in s.events if e.name == tm.EVENT_WIRE]
        assert s.start_time < event.timestamp <= s.end_time - LATENCY_S * 1e9
    assert trade.on_wire_at == max(leg.on_wire_at for leg in trade.legs)
    record = engine.statistics()
    assert record.decision_to_wire_p50_ms < record.decision_to_final_p50_ms - LATENCY_S * 1000
    # Both legs in one batch request, or one request each.
    assert sim.requests.get("POST /orders", 0) == (1 if batch else 0)
    assert sim.requests.get("POST /order", 0) == (0 if batch else 2)


async def test_a_leg_refused_before_sending_leaves_the_other_to_go_alone(make_sim, tmp_path):
    sim = await make_sim()
    venue = poly_venue(sim, websocket=False)
    engine = Engine(venues={"poly": venue}, detectors=[],
                    strategy=MarketStrategy(MarketStrategy.Config(max_slippage_ticks=0)),
                    execution=ExecutionSection(deadline_ms=5000), journal=Journal(
                        tmp_path / "j.sqlite"))
    await engine.start()
    m = venue.markets()[0]
    pm_book(sim, m.yes, asks=[("0.40", "50")])
    pm_book(sim, m.no, asks=[("0.50", "50")])
    legs = [LegSpec("poly", m.yes, Side.BUY, D("0.40"), D(10), m.market_id),
            LegSpec("poly", m.no, Side.BUY, D("0.505"), D(10), m.market_id)]  # off tick
    trade = await engine.execute_trade(legs, size=D(10))
    await engine.close()
    yes, no = trade.legs
    assert no.state is LegState.REJECTED and "tick" in no.error
    assert yes.filled == D(10)  # it went out alone, then was unwound
    assert sim.requests.get("POST /order", 0) >= 2 and not sim.requests.get("POST /orders")
    assert trade.state is TradeState.ROLLED_BACK


async def test_paper_venue_stamps_when_it_takes_the_order():
    from pr3dict_paper.scenario import MarketSpec, ProcessSpec, ScenarioSpec
    from pr3dict_paper.venue import PaperVenue

    spec = ScenarioSpec(seed=1, markets=(MarketSpec(id="m0"),),
                        process=ProcessSpec(arb_probability=D(0), move_probability=D(0)))
    venue = PaperVenue("v", spec, seed=1, latency_ms=LATENCY_S * 1000, faults=False,
                       process=False)
    engine = Engine(venues={"v": venue}, detectors=[],
                    strategy=MarketStrategy(MarketStrategy.Config()),
                    execution=ExecutionSection(deadline_ms=5000, order_timeout_ms=5000))
    await engine.start()
    m = venue.markets()[0]
    for inst in (m.yes, m.no):
        venue.set_book(inst, bids=[(D("0.40"), D(100))], asks=[(D("0.45"), D(100))])
    trade = await engine.execute_trade(
        [LegSpec("v", inst, Side.BUY, D("0.45"), D(1), m.market_id) for inst in (m.yes, m.no)],
        size=D(1), payout=D(1))
    await engine.close()
    assert trade.state is TradeState.COMMITTED
    for leg in trade.legs:
        assert leg.submitted_at <= leg.on_wire_at <= leg.finished_at - LATENCY_S


async def test_kalshi_legs_go_out_in_one_batch_with_honest_stamps(make_sim, tmp_path):
    from venue_fixtures import k_book, kalshi_venue

    sim = await make_sim(faults=SimFaultSpec(latency_ms={"*": LATENCY_S * 1000}))
    venue = kalshi_venue(sim, websocket=False, request_timeout_ms=5000)
    engine = Engine(venues={"kalshi": venue}, detectors=[],
                    strategy=MarketStrategy(MarketStrategy.Config(max_slippage_ticks=0)),
                    execution=ExecutionSection(deadline_ms=5000, order_timeout_ms=5000),
                    journal=Journal(tmp_path / "j.sqlite"))
    await engine.start()
    m = venue.markets()[0]
    k_book(sim, m.market_id, bids=[("0.45", "50")], asks=[("0.50", "50")])
    legs = [LegSpec("kalshi", m.yes, Side.BUY, D("0.50"), D(10), m.market_id),
            LegSpec("kalshi", m.no, Side.BUY, D("0.55"), D(10), m.market_id)]
    batches = {k: v for k, v in sim.requests.items() if "batched" in k}
    trade = await engine.execute_trade(legs, size=D(10))
    await engine.close()
    assert trade.state is TradeState.COMMITTED, trade.error
    sent = {k: v for k, v in sim.requests.items() if "batched" in k}
    assert sum(sent.values()) - sum(batches.values()) == 1  # both orders in one request
    for leg in trade.legs:
        assert leg.submitted_at <= leg.on_wire_at <= leg.finished_at - LATENCY_S
