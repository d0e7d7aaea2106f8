"""What both simulated venues share: accounts, fault injection, websocket hubs, replies."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
from aiohttp import WSMsgType, web

from pr3dict_paper.scenario import RateLimitSpec, SimFaultSpec


@attrs.define(eq=False)
class Account:
    """A simulated trader; the same account can trade on both simulated venues."""

    name: str
    balance: Decimal  # starting USDC
    polymarket_address: str | None = None
    kalshi_key_id: str | None = None
    kalshi_public_key: Any = None
    heartbeat_id: str | None = None
    heartbeat_at: float = 0.0


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload, separators=(",", ":")), status=status,
                        content_type="application/json")


def http_error(status: int, payload: Any) -> web.HTTPException:
    """An aiohttp exception carrying a JSON body (raise it from a handler)."""
    exc = web.HTTPException(text=json.dumps(payload, separators=(",", ":")),
                            content_type="application/json")
    exc.set_status(status)
    return exc


class _Bucket:
    def __init__(self, spec: RateLimitSpec):
        self.spec = spec
        self.rate = spec.requests / spec.per_s
        self.tokens = float(spec.requests)
        self.updated = time.monotonic()

    def wait_for(self) -> float:
        """Take a token; seconds the request must queue for it (may exceed the limit)."""
        now = time.monotonic()
        self.tokens = min(float(self.spec.requests), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def give_back(self) -> None:
        self.tokens += 1


class Faults:
    """Fault injection from a scenario's ``[sim.faults]``, with its own seeded stream."""

    def __init__(self, spec: SimFaultSpec, seed: int):
        self.spec = spec
        self.rng = random.Random(seed ^ 0xFA17)
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def draw(self, rate: Decimal) -> bool:
        return bool(rate) and self.rng.random() < float(rate)  # a probability, not money

    def latency_s(self, route: str) -> float:
        table = self.spec.latency_ms
        if not table:
            return 0.0
        ms = table.get(route, table.get("*", 0.0))
        return ms / 1000

    async def throttle(self, who: str, group: str, on_limit: Callable[[], web.HTTPException]
                       ) -> None:
        """Queue the request while its bucket is empty; past ``queue_ms`` answer 429."""
        spec = self.spec.rate_limits.get(group)
        if spec is None:
            return
        bucket = self._buckets.get((who, group))
        if bucket is None:
            bucket = self._buckets[(who, group)] = _Bucket(spec)
        wait = bucket.wait_for()
        if wait <= 0:
            return
        if wait * 1000 > spec.queue_ms:
            bucket.give_back()
            raise on_limit()
        await asyncio.sleep(wait)


class Hub:
    """Open websockets of one feed; ``drop_all`` closes them (a dropped-connection fault)."""

    def __init__(self) -> None:
        self.sockets: dict[web.WebSocketResponse, Any] = {}

    def add(self, ws: web.WebSocketResponse, state: Any) -> None:
        self.sockets[ws] = state

    def remove(self, ws: web.WebSocketResponse) -> None:
        self.sockets.pop(ws, None)

    def send(self, ws: web.WebSocketResponse, payload: Any) -> None:
        if ws.closed:
            return
        text = json.dumps(payload, separators=(",", ":"))
        task = asyncio.ensure_future(_send(ws, text))
        task.add_done_callback(_ignore)

    async def drop_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1011, message=b"simulated drop")
        self.sockets.clear()

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server shutdown")
        self.sockets.clear()


async def _send(ws: web.WebSocketResponse, text: str) -> None:
    try:
        await ws.send_str(text)
    except (ConnectionError, RuntimeError):
        pass


def _ignore(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def ws_loop(ws: web.WebSocketResponse, on_text: Callable[[str], Any]) -> None:
    """Read a websocket until it closes: ``PING`` gets ``PONG``, other text goes to on_text."""
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if msg.data == "PING":
                await ws.send_str("PONG")
                continue
            result = on_text(msg.data)
            if asyncio.iscoroutine(result):
                await result
        elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


def now_ms() -> int:
    return time.time_ns() // 1_000_000
