"""One keep-alive aiohttp session per venue, with transport failures mapped to typed errors.

What happened on the wire decides the error, never the HTTP verb:

- the connection could not be opened: nothing was sent -> ``VenueUnavailable`` (retryable);
- anything that fails after the request may have left (timeout, disconnect, truncated or
  malformed body) -> ``AmbiguousOutcome``: the caller reconciles, it never assumes failure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pr3dict_core.components import AmbiguousOutcome, BuildContext, VenueUnavailable
from pr3dict_core.config import SecretRef, check_input_file
from pr3dict_core.execution import WIRE_STAMP
from pr3dict_core.model import Pr3dictError


def is_loopback(url: str) -> bool:
    """True when ``url``'s host is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_mode(venue_id: str, mode: str, *urls: str) -> None:
    """Paper mode never sends real orders: every endpoint must be on loopback (a simulator)."""
    if mode == "live":
        return
    remote = [u for u in urls if u and not is_loopback(u)]
    if remote:
        raise Pr3dictError(
            f"venue {venue_id}: the pipeline is in paper mode but {remote[0]} is not a loopback "
            "address; paper mode only talks to a local simulator (`pr3dict sim`). Use "
            "mode = \"live\" and `pr3dict run --live` to trade on the real venue.")


def endpoint_problems(config: Any, mode: str) -> list[tuple[str, str]]:
    """A connector Config's ``check_mode``: in paper mode, rest_url and ws_url on loopback."""
    if mode == "live" or config.embedded_sim is not None:
        return []
    return [(key, f"{getattr(config, key)} is not a loopback address and the pipeline is in "
             "paper mode, which only talks to a local simulator: set `embedded_sim`, point "
             "it at `pr3dict sim`, or use mode = \"live\"")
            for key in ("rest_url", "ws_url") if not is_loopback(getattr(config, key))]


def embedded_scenario(ctx: BuildContext, config: Any) -> None:
    """The scenario file ``embedded_sim`` names must exist (checked when built)."""
    if config.embedded_sim is not None:
        check_input_file(ctx.path(config.embedded_sim), "embedded_sim", "scenario file")


def secret(ctx: BuildContext, ref: SecretRef | None) -> str | None:
    """Resolve an optional secret (the core resolves relative files against the pipeline)."""
    return None if ref is None else ctx.resolve_secret(ref)


def strip_comments(text: str) -> str:
    """Key files may carry ``#`` comment lines (our TEST-ONLY keys do)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


class TokenBucket:
    """An async token bucket: ``await acquire(n)`` waits until ``n`` tokens are there."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(rate, 1.0))
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, n: float = 1.0) -> None:
        if self.rate <= 0:
            return
        n = min(n, self.capacity)
        async with self._lock:
            self._refill()
            while self.tokens < n:
                await asyncio.sleep((n - self.tokens) / self.rate)
                self._refill()
            self.tokens -= n


class Reply:
    """An HTTP reply: status, raw text, and the JSON body parsed on demand."""

    __slots__ = ("_json", "headers", "status", "text")

    def __init__(self, status: int, text: str, headers: Mapping[str, str]):
        self.status = status
        self.text = text
        self.headers = headers
        self._json: Any = ...

    def json(self) -> Any:
        """The body as JSON; a malformed or truncated body is an ``AmbiguousOutcome``."""
        if self._json is ...:
            try:
                self._json = json.loads(self.text) if self.text else None
            except ValueError:
                raise AmbiguousOutcome(
                    f"malformed reply (HTTP {self.status}): {self.text[:120]!r}") from None
        return self._json


# No venue reply we use comes near this (a 500-token /books is about 0.5 MB); a larger one
# is refused unread rather than held in memory.
MAX_REPLY_BYTES = 8 * 1024 * 1024


# Connections the pool keeps beyond the request slots: the websockets take theirs from it.
WEBSOCKET_CONNECTIONS = 4


async def _on_body_sent(_session: Any, ctx: Any, _params: Any) -> None:
    """aiohttp fires this as it hands a request's body to the socket (a non-blocking write
    in the same step): the engine's ``decision -> wire`` stamp for an order."""
    stamp = ctx.trace_request_ctx
    if stamp is not None:
        stamp()


_WIRE_TRACE = aiohttp.TraceConfig()
_WIRE_TRACE.on_request_chunk_sent.append(_on_body_sent)
_WIRE_TRACE.freeze()


class HttpClient:
    """A keep-alive ``ClientSession`` for one venue with a per-request timeout.

    At most ``connections`` requests are in flight; the others wait for a slot *before* their
    timeout starts, so 10,000 requests gathered at once (markets at start) queue instead of
    timing out while they wait for a connection.
    """

    def __init__(self, base_url: str, *, timeout_s: float, venue_id: str,
                 connections: int = 32):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.venue_id = venue_id
        self.connections = connections
        self.session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        if self.session is None:
            connector = aiohttp.TCPConnector(
                limit=self.connections + WEBSOCKET_CONNECTIONS, keepalive_timeout=60,
                enable_cleanup_closed=True)
            self._slots = asyncio.Semaphore(self.connections)
            self.session = aiohttp.ClientSession(connector=connector,
                                                 json_serialize=json.dumps,
                                                 trace_configs=[_WIRE_TRACE])

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def request(self, method: str, path: str, *, params: Any = None,
                      body: str | None = None, headers: Mapping[str, str] | None = None,
                      timeout_s: float | None = None) -> Reply:
        """Send one request; see the module docstring for how failures map to errors.
        ``params``: a mapping, or (name, value) pairs for a repeated name."""
        if self.session is None or self._slots is None:
            raise VenueUnavailable(f"venue {self.venue_id}: not started")
        async with self._slots:  # queued here, outside the timeout
            return await self._request(method, path, params, body, headers, timeout_s)

    async def _request(self, method: str, path: str, params: Any, body: str | None,
                       headers: Mapping[str, str] | None, timeout_s: float | None) -> Reply:
        assert self.session is not None
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        url = self.base_url + path
        what = f"venue {self.venue_id}: {method} {path}"
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                async with self.session.request(method, url, params=params, data=body,
                                                headers=hdrs,
                                                trace_request_ctx=WIRE_STAMP.get()) as resp:
                    length = resp.content_length
                    if length is not None and length <= MAX_REPLY_BYTES:
                        raw = await resp.read()  # the common case: one read
                    else:  # too large, or no length given: read up to the cap
                        chunks, size = [], 0
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            size += len(chunk)
                            if size > MAX_REPLY_BYTES:  # a hostile or broken venue
                                raise AmbiguousOutcome(f"{what}: reply larger than "
                                                       f"{MAX_REPLY_BYTES} bytes")
                            chunks.append(chunk)
                        raw = b"".join(chunks)
                    text = raw.decode(resp.get_encoding())
                    return Reply(resp.status, text, resp.headers)
        except aiohttp.ClientConnectorError as exc:
            raise VenueUnavailable(f"{what}: cannot connect: {exc}") from None
        except TimeoutError:
            raise AmbiguousOutcome(f"{what}: no reply within {timeout_s or self.timeout_s} s")\
                from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError, aiohttp.ClientResponseError, UnicodeDecodeError,
                LookupError) as exc:
            raise AmbiguousOutcome(f"{what}: {type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise AmbiguousOutcome(f"{what}: {type(exc).__name__}: {exc}") from None
