"""Helpers shared by the Polygon tests (a module, not a conftest, so tests can import it)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from aiohttp import web

from pr3dict_core.model import Fill, Leg, LegSpec, LegState, Opportunity, Side, Trade, TradeState

TRADER_FUNDS = 1_000 * 10**6  # 1,000 collateral (6 decimals)


def committed_trade(trade_id: str, yes: str = "m:yes", no: str = "m:no",
                    size: str = "10", filled: tuple[str, str] | None = None) -> Trade:
    """A COMMITTED binary-complement trade: bought ``size`` YES and ``size`` NO shares."""
    size_d = Decimal(size)
    specs = (LegSpec("sim", yes, Side.BUY, "0.45", size_d),
             LegSpec("sim", no, Side.BUY, "0.50", size_d))
    opp = Opportunity(id=f"o-{trade_id}", detector="c", kind="binary_complement", legs=specs,
                      size=size_d, edge_per_share="0.05", cost=size_d * Decimal("0.95"))
    trade = Trade(id=trade_id, opportunity=opp, state=TradeState.COMMITTED)
    for i, spec in enumerate(specs):
        leg = Leg(trade_id, i, spec.venue, spec.instrument, spec.side, size_d, spec.price,
                  spec.price, state=LegState.FILLED)
        got = Decimal(filled[i]) if filled else size_d
        fill = Fill(f"{trade_id}-f{i}", f"{trade_id}-{i}-1", spec.price, got)
        leg.fills[fill.fill_id] = fill
        trade.legs.append(leg)
    return trade


class FakeRpc:
    """A loopback JSON-RPC server that answers chain id correctly and misbehaves otherwise.

    ``mode`` picks the misbehaviour for every other method; ``calls`` counts requests per
    method. Modes: ok, garbage, html502, no_result, bad_quantity, truncated, hang, stale,
    rate_limited, error_object, not_object.
    """

    def __init__(self, mode: str = "ok", chain_id: int = 137, head: int = 1):
        self.mode, self.chain_id, self.head = mode, chain_id, head
        self.calls: dict[str, int] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    async def start(self) -> FakeRpc:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        method, rid = body["method"], body["id"]
        self.calls[method] = self.calls.get(method, 0) + 1

        def reply(result: Any) -> web.Response:
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

        if method == "eth_chainId":
            return reply(hex(self.chain_id))
        mode = self.mode
        if mode == "ok":
            return reply(hex(self.head) if method == "eth_blockNumber" else "0x0")
        if mode == "stale":
            return reply(hex(self.head))
        if mode == "garbage":
            return web.Response(body=b"\x00\xffnot json at all", content_type="application/json")
        if mode == "html502":
            return web.Response(status=502, text="<html>Bad Gateway</html>",
                                content_type="text/html")
        if mode == "no_result":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "foo": 1})
        if mode == "bad_quantity":
            return reply("zz")
        if mode == "truncated":
            return web.Response(text=json.dumps({"jsonrpc": "2.0", "id": rid})[:-5],
                                content_type="application/json")
        if mode == "hang":
            await self._release.wait()
            return reply("0x0")
        if mode == "rate_limited":
            return web.json_response({"jsonrpc": "2.0", "id": rid,
                                      "error": {"code": -32005, "message": "limit exceeded"}})
        if mode == "error_object":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "error": "oops"})
        if mode == "not_object":
            return web.json_response([1, 2, 3])
        raise AssertionError(f"unknown mode {mode}")
