"""``SimServer``: one aiohttp server on loopback speaking both venues' protocols.

Polymarket's CLOB is served at the root (``/book``, ``/order``, ``/ws/market``, ...), Kalshi
under ``/trade-api/v2`` and ``/trade-api/ws/v2``. Each venue has its own matching engine
and market maker over the scenario's markets; both walk the same seeded fair prices and
dislocate independently, so cross-venue windows open now and then. A clock task steps the
markets every ``[sim] step_ms`` and runs the dead-man switch, GTD expiry and websocket drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from pr3dict_kalshi.protocol import load_public_key
from pr3dict_paper.scenario import ScenarioSpec, load_scenario
from pr3dict_polymarket.signing import to_checksum_address

from .common import Account, Faults
from .kalshi import KalshiSim
from .polymarket import PolymarketSim

log = logging.getLogger("pr3dict.sim")


class SimServer:
    def __init__(self, spec: ScenarioSpec, *, base_dir: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, page_size: int = 100,
                 clock: bool = True):
        self.spec = spec
        self.host = host
        self.port = port
        self.page_size = page_size
        self.clock = clock
        self.secret = secrets.token_hex(16)  # API credentials differ per server run
        # ids (orders, trades, fills, heartbeats) never repeat across runs: a live venue's
        # ids are unique, and a journal replayed against a restarted sim must not match old ids
        self.rng = random.Random(f"{spec.seed}/{self.secret}")
        faults = spec.sim.faults
        self.faults = Faults(faults, spec.seed if faults.seed is None else faults.seed)
        base_dir = base_dir or Path.cwd()
        self.accounts: list[Account] = []
        for a in spec.sim.accounts:
            pub = None
            if a.kalshi_public_key:
                path = Path(a.kalshi_public_key)
                pub = load_public_key((path if path.is_absolute() else base_dir / path
                                       ).read_text())
            self.accounts.append(Account(
                a.name, spec.sim.default_balance if a.balance is None else a.balance,
                to_checksum_address(a.polymarket_address) if a.polymarket_address else None,
                a.kalshi_key_id, pub))
        self.polymarket = PolymarketSim(self, spec)
        self.kalshi = KalshiSim(self, spec)
        self.app = web.Application(middlewares=[self._latency])
        self.polymarket.add_routes(self.app)
        self.kalshi.add_routes(self.app)
        self._runner: web.AppRunner | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self.steps = 0
        self.requests: dict[str, int] = {}  # "METHOD /route" -> count (printed on stop)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: object) -> SimServer:
        path = Path(path)
        return cls(load_scenario(path), base_dir=path.parent, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ accounts

    def account_by_address(self, address: str) -> Account | None:
        address = to_checksum_address(address)
        for a in self.accounts:
            if a.polymarket_address == address:
                return a
        if not self.spec.sim.auto_register:
            return None
        account = Account(address.lower(), self.spec.sim.default_balance, address)
        self.accounts.append(account)
        return account

    def account_by_kalshi_key(self, key_id: str) -> Account | None:
        for a in self.accounts:
            if key_id and a.kalshi_key_id == key_id and a.kalshi_public_key is not None:
                return a
        return None

    # ------------------------------------------------------------------ faults

    @web.middleware
    async def _latency(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = f"{request.method} {resource.canonical if resource else request.path}"
        self.requests[route] = self.requests.get(route, 0) + 1
        delay = self.faults.latency_s(route)
        if delay:
            await asyncio.sleep(delay)
        return await handler(request)

    async def throttle(self, request: web.Request, who: str, group: str,
                       on_limit: Callable[[], web.HTTPException]) -> None:
        await self.faults.throttle(who, group, on_limit)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def polymarket_url(self) -> str:
        return self.url

    @property
    def polymarket_ws(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def kalshi_url(self) -> str:
        return f"{self.url}/trade-api/v2"

    @property
    def kalshi_ws(self) -> str:
        return f"ws://{self.host}:{self.port}/trade-api/ws/v2"

    async def start(self) -> str:
        """Listen (port 0 picks a free one) and start the market clock; returns the URL."""
        self.polymarket.requote()
        self.kalshi.requote()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5,
                                     handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self.clock:
            self._clock_task = asyncio.ensure_future(self._run_clock())
        return self.url

    async def stop(self) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._clock_task
            self._clock_task = None
        await self.polymarket.market_hub.close()
        await self.polymarket.user_hub.close()
        await self.kalshi.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def step(self) -> None:
        """Advance both venues' markets one step (the clock does this every ``step_ms``)."""
        self.steps += 1
        self.polymarket.step()
        self.kalshi.step()

    async def step_async(self, chunk: int = 500) -> None:
        """``step()`` in slices of ``chunk`` markets, yielding between them: a step of
        10,000 markets takes about a second, and requests must not wait for all of it."""
        self.steps += 1
        for venue in (self.polymarket, self.kalshi):
            venue.process.step()
            states = venue.process.states
            for start in range(0, len(states), chunk):
                venue.requote(states[start:start + chunk], publish=False)
                await asyncio.sleep(0)
            venue.publish_books()

    async def _run_clock(self) -> None:
        sim = self.spec.sim
        interval = sim.step_ms / 1000
        drop_every = sim.faults.ws_drop_every_s
        next_drop = time.monotonic() + drop_every if drop_every else None
        busy = 0.0
        while True:
            # At least as long as the last step took: a step costs O(markets) (about a
            # second at 10,000), so a large scenario slows its clock instead of starving
            # the requests (which are also served between the step's slices).
            await asyncio.sleep(max(interval, busy))
            try:
                started = time.perf_counter()
                await self.step_async()
                busy = time.perf_counter() - started
                now = time.monotonic()
                timeout = sim.heartbeat_timeout_ms / 1000
                for account in self.accounts:
                    if account.heartbeat_id is not None and now - account.heartbeat_at > timeout:
                        log.info("sim: heartbeat lost for %s: cancelling its orders",
                                 account.name)
                        account.heartbeat_id = None
                        self.polymarket.cancel_account(account)
                self.polymarket.expire(time.time())
                if next_drop is not None and now >= next_drop:
                    next_drop = now + drop_every
                    await self.polymarket.market_hub.drop_all()
                    await self.polymarket.user_hub.drop_all()
                    await self.kalshi.hub.drop_all()
            except Exception:  # the clock must keep going
                log.exception("sim: clock step failed")
