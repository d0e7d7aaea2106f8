"""A pool of JSON-RPC endpoints over web3's async HTTP provider.

Why a pool: a single public or paid Polygon endpoint stalls, rate-limits, lags behind the
head or simply dies, and a settlement that cannot reach the chain leaves positions unmerged.
The pool keeps a health score per endpoint, spreads calls round-robin over the healthy ones,
fails over at once when one breaks, retries idempotent calls with backoff, and re-probes dead
endpoints in the background until they come back.

Every endpoint is a web3 ``AsyncHTTPProvider`` with web3's own retries switched off
(``exception_retry_configuration=None``): retrying is the pool's job, and web3's default
retries would hide a dead node for ~2 s. Each provider gets its own keep-alive aiohttp
session (web3's default session closes the connection after every request).

``RpcPool.web3`` is an ``AsyncWeb3`` whose provider routes through the pool, so contract
calls, ``build_transaction`` and receipts get failover without knowing about it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

import aiohttp
import attrs
from attrs import field, frozen
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:  # web3 costs ~0.5 s to import: only a pipeline with an RPC pool pays it
    from web3.providers.rpc import AsyncHTTPProvider


from pr3dict_core.config import SecretRef
from pr3dict_core.model import Pr3dictError

from .gas import GasConfig, GasManager
from .options import above, at_least, between

log = logging.getLogger("pr3dict.polygon.rpc")

# --------------------------------------------------------------------------- errors


class RpcError(Pr3dictError):
    """Base of the pool's errors."""


class JsonRpcError(RpcError):
    """The endpoint answered with a JSON-RPC error object: the *request* failed, not the node.

    Examples: a revert in ``eth_call``/``eth_estimateGas``, ``nonce too low``. Never retried.
    """

    def __init__(self, method: str, code: int, message: str, data: Any = None):
        self.method, self.code, self.message, self.data = method, code, message, data
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")


class RpcUnavailable(RpcError):
    """No endpoint could answer within the retry budget (each endpoint's last error is listed)."""


class RpcAmbiguous(RpcError):
    """A non-idempotent call may have reached an endpoint, but its reply was lost or garbled.

    The caller must find out what happened (e.g. look the transaction up by hash); the pool
    never re-sends it on its own.
    """


class WrongChain(RpcError):
    """An endpoint reports a chain id other than the configured one."""


# Methods that change nothing on the node: safe to send again after a timeout or a garbled
# reply. Filter polling (eth_getFilterChanges) consumes state and is deliberately absent.
IDEMPOTENT_METHODS = frozenset({
    "eth_blockNumber", "eth_chainId", "net_version", "web3_clientVersion", "eth_syncing",
    "eth_gasPrice", "eth_maxPriorityFeePerGas", "eth_feeHistory", "eth_blobBaseFee",
    "eth_getBalance", "eth_getCode", "eth_getStorageAt", "eth_getTransactionCount",
    "eth_call", "eth_estimateGas", "eth_createAccessList", "eth_getLogs",
    "eth_getBlockByNumber", "eth_getBlockByHash", "eth_getBlockReceipts",
    "eth_getTransactionByHash", "eth_getTransactionReceipt",
    "eth_getBlockTransactionCountByNumber", "eth_getBlockTransactionCountByHash",
    "eth_getTransactionByBlockNumberAndIndex", "eth_getTransactionByBlockHashAndIndex",
    "eth_getProof", "txpool_status", "txpool_content",
})

# Methods whose result must be a hex quantity: anything else is a malformed reply.
_QUANTITY_METHODS = frozenset({
    "eth_blockNumber", "eth_chainId", "eth_gasPrice", "eth_maxPriorityFeePerGas",
    "eth_getBalance", "eth_getTransactionCount", "eth_estimateGas", "eth_blobBaseFee",
})

# JSON-RPC error codes that describe the endpoint (rate limit, overload), not the request.
_ENDPOINT_ERROR_CODES = frozenset({-32005})  # EIP-1474 "limit exceeded"


def _is_quantity(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) < 3:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def _check_result(method: str, result: Any) -> str | None:
    """Why ``result`` cannot be a valid answer to ``method`` (None when it looks right)."""
    if method in _QUANTITY_METHODS and not _is_quantity(result):
        return f"{method} returned {str(result)[:60]!r}, not a hex quantity"
    if method == "eth_feeHistory" and not (
        isinstance(result, dict) and isinstance(result.get("baseFeePerGas"), list)
        and all(_is_quantity(v) for v in result["baseFeePerGas"])
    ):
        return "eth_feeHistory returned no baseFeePerGas list"
    if method == "eth_sendRawTransaction" and not (
        isinstance(result, str) and result.startswith("0x") and len(result) == 66
    ):
        return f"eth_sendRawTransaction returned {str(result)[:60]!r}, not a transaction hash"
    return None


# --------------------------------------------------------------------------- endpoint state


class _Fault(Exception):
    """One failed attempt on one endpoint.

    ``sent`` is False only when the request provably had no effect (nothing connected, or the
    endpoint refused to process it); ``down`` means nothing is listening at all.
    """

    def __init__(self, error_type: str, detail: str, *, sent: bool, down: bool = False):
        super().__init__(f"{error_type}: {detail}")
        self.error_type, self.detail, self.sent, self.down = error_type, detail, sent, down


@attrs.define(eq=False)
class Endpoint:
    """One JSON-RPC URL, its web3 provider and its running health statistics."""

    url: str = field(repr=False)  # may carry an API key: never logged, never in spans
    address: str  # host, for server.address
    port: int
    provider: AsyncHTTPProvider | None = field(default=None, repr=False)
    success_ewma: float = 1.0
    latency_ewma_ms: float | None = None
    consecutive_failures: int = 0
    dead: bool = False
    refused: str = ""  # permanent: wrong chain
    stale: bool = False
    head: int | None = None
    next_probe_at: float = 0.0
    probe_backoff_ms: float = 0.0
    next_head_check_at: float = 0.0
    requests: int = 0
    failures: int = 0
    last_error: str = ""

    @property
    def label(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def usable(self) -> bool:
        return not self.dead and not self.refused

    def health(self, latency_target_ms: float) -> float:
        """0..1: the success-rate EWMA, scaled down when latency exceeds the target."""
        if not self.usable:
            return 0.0
        lat = self.latency_ewma_ms
        factor = 1.0 if lat is None or lat <= latency_target_ms else latency_target_ms / lat
        return self.success_ewma * factor


def _endpoint_for(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an RPC endpoint must be an http:// or https:// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(url=url, address=parts.hostname, port=port)


def _check_url(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    for url in value:
        _endpoint_for(url)
    if not value and not instance.secret_endpoints:
        raise ValueError("no endpoints: set `endpoints` and/or `secret_endpoints`")


# Polygon mainnet, the Amoy testnet, and anvil's default (a local devchain).
CHAIN_IDS = (137, 80002, 31337)


def _chain_id(instance: Any, attribute: Any, value: int) -> None:
    if value not in CHAIN_IDS:
        raise ValueError(f"must be a Polygon chain id: 137 (mainnet), 80002 (Amoy) or 31337 "
                         f"(a local anvil), got {value}")


# --------------------------------------------------------------------------- the pool


@functools.cache
def _pool_provider_class() -> type:
    """``_PoolProvider``, defined on first use so web3 is imported only by pipelines that
    use the Polygon layer."""
    from web3.providers.async_base import AsyncJSONBaseProvider

    class _PoolProvider(AsyncJSONBaseProvider):
        """Lets an ``AsyncWeb3`` talk through the pool: every request gets failover and retries."""

        def __init__(self, pool: RpcPool):
            super().__init__()
            self._pool = pool

        async def make_request(self, method: Any, params: Any) -> Any:
            return await self._pool.raw_request(str(method), params)

        async def is_connected(self, show_traceback: bool = False) -> bool:
            return any(ep.usable for ep in self._pool.endpoints)

    return _PoolProvider


class RpcPool:
    """``[rpc.<id>] type = "polygon_pool"``: several endpoints behind one health-aware client."""

    type: ClassVar[str] = "polygon_pool"

    @frozen(kw_only=True)
    class Config:
        endpoints: tuple[str, ...] = field(default=(), validator=_check_url)
        secret_endpoints: tuple[SecretRef, ...] = ()  # URLs that embed an API key
        chain_id: int = field(default=137, validator=_chain_id)
        request_timeout_ms: int = field(default=2000, validator=above(0))
        max_retries: int = field(default=3, validator=between(0, 10))
        retry_base_ms: int = field(default=50, validator=above(0))
        retry_max_ms: int = field(default=500, validator=above(0))
        ewma_alpha: float = field(default=0.2, validator=[above(0), between(0, 1)])
        latency_target_ms: int = field(default=250, validator=above(0))
        min_health: float = field(default=0.5, validator=between(0, 1))
        dead_after_failures: int = field(default=3, validator=at_least(1))
        reprobe_ms: int = field(default=1000, validator=above(0))
        reprobe_max_ms: int = field(default=30_000, validator=above(0))
        head_check_ms: int = field(default=2000, validator=at_least(0))
        max_block_lag: int = field(default=5, validator=at_least(0))
        broadcast_transactions: bool = True
        gas: GasConfig = field(factory=GasConfig)

    def __init__(self, id: str, config: Config, *, secret_urls: Sequence[str] = (),
                 tracer: trace.Tracer | None = None):
        """``secret_urls`` are the resolved ``secret_endpoints`` (kept out of the config)."""
        urls = [*config.endpoints, *secret_urls]
        if not urls:
            raise Pr3dictError(f"rpc.{id}: no endpoints configured "
                               "(set `endpoints` and/or `secret_endpoints`)")
        self.id = id
        self.config = config
        self.endpoints = [_endpoint_for(u) for u in urls]
        self.tracer = tracer or trace.get_tracer("pr3dict.polygon")
        from web3 import AsyncWeb3

        self.web3 = AsyncWeb3(_pool_provider_class()(self))
        self.gas = GasManager(self.request, config.gas)
        self.best_head: int | None = None
        self._rr = 0
        self._probe_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False

    @classmethod
    def for_urls(cls, id: str, urls: Sequence[str], *, tracer: trace.Tracer | None = None,
                 **options: Any) -> Self:
        """Build from plain URLs and Config options (tests, scripts, benchmarks)."""
        return cls(id, cls.Config(endpoints=tuple(urls), **options), tracer=tracer)

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: Any) -> Self:
        secret_urls = [ctx.resolve_secret(ref) for ref in config.secret_endpoints]
        for url in secret_urls:
            try:
                _endpoint_for(url)
            except ValueError:
                raise Pr3dictError(f"rpc.{id}.secret_endpoints: a secret is not an http(s) "
                                   "URL") from None
        return cls(id, config, secret_urls=secret_urls, tracer=ctx.tracer)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open one session per endpoint, check every chain id, then start the prober.

        A wrong chain on *any* endpoint refuses the whole pool: a misconfigured endpoint list
        is an operator error, and sending to the wrong network must never be a fallback.
        """
        if self._started:
            return
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_ms / 1000)
        for ep in self.endpoints:
            from web3.providers.rpc import AsyncHTTPProvider

            ep.provider = AsyncHTTPProvider(ep.url, exception_retry_configuration=None,
                                            request_kwargs={"timeout": timeout})
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
            await ep.provider.cache_async_session(session)
        self._started = True
        await asyncio.gather(*(self._probe(ep) for ep in self.endpoints))
        wrong = [ep for ep in self.endpoints if ep.refused]
        if wrong:
            await self.close()
            detail = "; ".join(f"{ep.label}: {ep.refused}" for ep in wrong)
            raise WrongChain(f"rpc.{self.id}: refusing to start, endpoint(s) on the wrong chain "
                             f"(expected chain id {self.config.chain_id}): {detail}")
        if not any(ep.usable for ep in self.endpoints):
            await self.close()
            detail = "; ".join(f"{ep.label}: {ep.last_error}" for ep in self.endpoints)
            raise RpcUnavailable(f"rpc.{self.id}: no endpoint answered at start: {detail}")
        for ep in self.endpoints:
            if ep.dead:
                log.warning("rpc.%s: endpoint %s is down at start (%s); will re-probe",
                            self.id, ep.label, ep.last_error)
        self._probe_task = asyncio.create_task(self._probe_loop(), name=f"rpc.{self.id}.probe")

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
            self._probe_task = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for ep in self.endpoints:
            if ep.provider is not None:
                await ep.provider.disconnect()
                ep.provider = None
        self._started = False

    # ------------------------------------------------------------------ public calls

    async def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """The ``result`` of a JSON-RPC call; raises JsonRpcError, RpcUnavailable, RpcAmbiguous."""
        response = await self.raw_request(method, list(params))
        return _unwrap(method, response)

    async def send_raw_transaction(self, raw: bytes | str) -> str:
        """Send a signed transaction; to every usable endpoint when ``broadcast_transactions``.

        Broadcasting the same signed bytes is safe (one hash, one nonce) and gets a
        transaction into the mempool even when the endpoint that would have been picked is
        silently dropping it.
        """
        data = raw if isinstance(raw, str) else "0x" + raw.hex()
        if not self.config.broadcast_transactions:
            return str(await self.request("eth_sendRawTransaction", [data]))
        return str(_unwrap("eth_sendRawTransaction", await self._broadcast(
            "eth_sendRawTransaction", [data])))

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-endpoint health, latency and counters (for metrics sinks and `status`)."""
        target = self.config.latency_target_ms
        return [{
            "pool": self.id, "server.address": ep.address, "server.port": ep.port,
            "health": round(ep.health(target), 4), "success_ewma": round(ep.success_ewma, 4),
            "latency_ewma_ms": None if ep.latency_ewma_ms is None else round(ep.latency_ewma_ms,
                                                                             3),
            "requests": ep.requests, "failures": ep.failures, "dead": ep.dead,
            "refused": ep.refused, "stale": ep.stale, "head": ep.head,
            "last_error": ep.last_error,
        } for ep in self.endpoints]

    # ------------------------------------------------------------------ routing

    def _order(self) -> list[Endpoint]:
        """Healthy endpoints round-robin, then the rest by health, dead ones last."""
        target, floor = self.config.latency_target_ms, self.config.min_health
        healthy: list[Endpoint] = []
        weak: list[Endpoint] = []
        dead: list[Endpoint] = []
        for ep in self.endpoints:
            if ep.refused:
                continue
            if ep.dead:
                dead.append(ep)
            elif not ep.stale and ep.health(target) >= floor:
                healthy.append(ep)
            else:
                weak.append(ep)
        if len(healthy) > 1:
            start = self._rr % len(healthy)
            self._rr += 1
            healthy = healthy[start:] + healthy[:start]
        if weak:
            weak.sort(key=lambda ep: (ep.stale, -ep.health(target)))
        if dead:
            dead.sort(key=lambda ep: ep.next_probe_at)
        return healthy + weak + dead

    def _backoff_s(self, round_no: int) -> float:
        """Full jitter between the base and an exponentially growing ceiling (capped)."""
        base, cap = self.config.retry_base_ms, self.config.retry_max_ms
        ceiling = min(cap, base * 2 ** (round_no + 1))
        return random.uniform(min(base, ceiling), ceiling) / 1000

    async def raw_request(self, method: str, params: Any) -> Any:
        """The whole JSON-RPC response dict (``result`` or ``error``), after failover/retries.

        Failover to an endpoint not yet tried for this call is immediate; going back to one
        already tried waits an exponential backoff with jitter. A non-idempotent call is only
        re-sent when the failed attempt provably sent nothing (connection refused).
        """
        if not self._started:
            raise RpcError(f"rpc.{self.id}: pool not started")
        idempotent = method in IDEMPOTENT_METHODS
        with self.tracer.start_as_current_span(
            method, kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False,
            attributes={"rpc.system.name": "jsonrpc", "rpc.method": method,
                        "pr3dict.rpc.pool": self.id},
        ) as span:
            faults: list[tuple[Endpoint, _Fault]] = []
            tried: set[int] = set()
            rounds = 0
            for attempt in range(self.config.max_retries + 1):
                candidates = self._order()
                if not candidates:
                    self._fail_span(span, None, "no_endpoint")
                    raise RpcUnavailable(f"rpc.{self.id}: {method}: every endpoint is refused "
                                         f"({self._refusals()})")
                order = [ep for ep in candidates if id(ep) not in tried]
                if not order:  # every endpoint failed once in this call: back off, go again
                    await asyncio.sleep(self._backoff_s(rounds))
                    rounds += 1
                    tried.clear()
                    order = self._order() or candidates
                ep = order[0]
                tried.add(id(ep))
                try:
                    response = await self._attempt(ep, method, params)
                except _Fault as fault:
                    faults.append((ep, fault))
                    span.add_event("rpc.attempt.failed", {
                        "server.address": ep.address, "server.port": ep.port,
                        "error.type": fault.error_type, "pr3dict.rpc.attempt": attempt})
                    if fault.sent and not idempotent:
                        self._fail_span(span, ep, fault.error_type)
                        raise RpcAmbiguous(
                            f"rpc.{self.id}: {method} sent to {ep.label} but {fault}; it may "
                            "or may not have taken effect, so it is not re-sent") from None
                    continue
                span.set_attributes({"server.address": ep.address, "server.port": ep.port,
                                     "pr3dict.rpc.attempts": attempt + 1,
                                     "pr3dict.rpc.endpoint.health":
                                         round(ep.health(self.config.latency_target_ms), 4)})
                error = response.get("error")
                if error is not None:
                    code = error.get("code")
                    span.set_attribute("rpc.response.status_code", str(code))
                    span.set_attribute("error.type", str(code))
                    span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:200]))
                return response
            ep, last = faults[-1]
            self._fail_span(span, ep, last.error_type)
            detail = "; ".join(f"{e.label}: {f}" for e, f in faults)
            raise RpcUnavailable(f"rpc.{self.id}: {method} failed after {len(faults)} "
                                 f"attempt(s): {detail}")

    @staticmethod
    def _fail_span(span: trace.Span, ep: Endpoint | None, error_type: str) -> None:
        if ep is not None:
            span.set_attributes({"server.address": ep.address, "server.port": ep.port})
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))

    def _refusals(self) -> str:
        return "; ".join(f"{ep.label}: {ep.refused}" for ep in self.endpoints if ep.refused)

    async def _broadcast(self, method: str, params: list[Any]) -> Any:
        """Send to every usable endpoint; the first good answer wins, the rest finish alone."""
        targets = [ep for ep in self._order() if ep.usable and not ep.stale] or self._order()
        if not targets:
            raise RpcUnavailable(f"rpc.{self.id}: {method}: every endpoint is refused "
                                 f"({self._refusals()})")
        with self.tracer.start_as_current_span(
            method, kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False,
            attributes={"rpc.system.name": "jsonrpc", "rpc.method": method,
                        "pr3dict.rpc.pool": self.id, "pr3dict.rpc.broadcast": len(targets)},
        ) as span:
            tasks = {asyncio.create_task(self._attempt(ep, method, params)): ep for ep in targets}
            pending = set(tasks)
            errors: list[Any] = []
            faults: list[tuple[Endpoint, _Fault]] = []
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    ep = tasks[task]
                    exc = task.exception()
                    if isinstance(exc, _Fault):
                        faults.append((ep, exc))
                    elif exc is not None:
                        raise exc
                    elif task.result().get("error") is not None:
                        errors.append(task.result())
                    else:
                        for rest in pending:  # let slower endpoints finish on their own
                            self._background.add(rest)
                            rest.add_done_callback(self._background.discard)
                            rest.add_done_callback(_consume)
                        span.set_attributes({"server.address": ep.address,
                                             "server.port": ep.port})
                        return task.result()
            if errors:
                error = errors[0]["error"]
                span.set_attribute("error.type", str(error.get("code")))
                span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:200]))
                return errors[0]
            detail = "; ".join(f"{e.label}: {f}" for e, f in faults)
            ep, last = faults[-1]
            self._fail_span(span, ep, last.error_type)
            if all(not f.sent for _, f in faults):
                raise RpcUnavailable(f"rpc.{self.id}: {method} reached no endpoint: {detail}")
            raise RpcAmbiguous(f"rpc.{self.id}: {method} may have been sent but no endpoint "
                               f"confirmed it: {detail}")

    # ------------------------------------------------------------------ one attempt

    async def _attempt(self, ep: Endpoint, method: str, params: Any) -> dict[str, Any]:
        """One call to one endpoint; updates its health; raises _Fault when the node is at fault."""
        if ep.provider is None:
            raise _Fault("closed", "pool is closed", sent=False)
        ep.requests += 1
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self.config.request_timeout_ms / 1000):
                    response: Any = await ep.provider.make_request(method, params)  # type: ignore[arg-type]
            except TimeoutError:
                raise _Fault("timeout", f"no reply within {self.config.request_timeout_ms} ms",
                             sent=True) from None
            except aiohttp.ClientConnectorError as exc:
                raise _Fault("connection_refused", _short(exc), sent=False, down=True) from None
            except aiohttp.ClientResponseError as exc:  # 429: refused unprocessed, safe to resend
                raise _Fault(f"http_{exc.status}", _short(exc), sent=exc.status != 429) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise _Fault(type(exc).__name__, _short(exc), sent=True) from None
            except (ValueError, TypeError) as exc:  # JSON / UTF-8 decoding of the body
                raise _Fault("malformed_response", _short(exc), sent=True) from None
            problem = self._validate(ep, method, response)
            if problem is not None:
                raise _Fault(*problem, sent=True)
        except _Fault as fault:
            self._record(ep, started, fault)
            raise
        self._record(ep, started, None)
        return response

    def _validate(self, ep: Endpoint, method: str, response: Any) -> tuple[str, str] | None:
        error = response.get("error") if isinstance(response, dict) else None
        if not isinstance(response, dict) or (error is None and "result" not in response):
            return "malformed_response", f"not a JSON-RPC response: {str(response)[:80]!r}"
        if error is not None:
            if not isinstance(error, dict) or not isinstance(error.get("code"), int):
                return "malformed_response", f"bad error object: {str(error)[:80]!r}"
            if error["code"] in _ENDPOINT_ERROR_CODES:
                return f"rpc_error_{error['code']}", str(error.get("message", ""))[:120]
            return None
        result = response["result"]
        bad = _check_result(method, result)
        if bad is not None:
            return "malformed_response", bad
        if method == "eth_chainId" and int(result, 16) != self.config.chain_id:
            ep.refused = f"chain id {int(result, 16)}, expected {self.config.chain_id}"
            log.error("rpc.%s: endpoint %s refused: %s", self.id, ep.label, ep.refused)
            return "wrong_chain", ep.refused
        if method == "eth_blockNumber":
            return self._observe_head(ep, int(result, 16))
        return None

    def _observe_head(self, ep: Endpoint, head: int) -> tuple[str, str] | None:
        ep.head = head
        if self.best_head is None or head > self.best_head:
            self.best_head = head
        behind = self.best_head - head
        ep.stale = behind > self.config.max_block_lag
        if ep.stale:
            return "stale_block", f"head {head} is {behind} blocks behind {self.best_head}"
        return None

    def _record(self, ep: Endpoint, started: float, fault: _Fault | None) -> None:
        a = self.config.ewma_alpha
        if fault is None or not fault.down:  # a refused connection says nothing about latency
            ms = (time.perf_counter() - started) * 1000
            ep.latency_ewma_ms = ms if ep.latency_ewma_ms is None else \
                (1 - a) * ep.latency_ewma_ms + a * ms
        if fault is None:
            ep.success_ewma = (1 - a) * ep.success_ewma + a
            ep.consecutive_failures = 0
            return
        ep.success_ewma = (1 - a) * ep.success_ewma
        ep.consecutive_failures += 1
        ep.failures += 1
        ep.last_error = str(fault)
        if fault.error_type == "stale_block":
            return  # lagging, not dead: it stays out of rotation until it catches up
        if not ep.dead and (fault.down or
                            ep.consecutive_failures >= self.config.dead_after_failures):
            ep.dead = True
            ep.probe_backoff_ms = self.config.reprobe_ms
            ep.next_probe_at = time.monotonic() + ep.probe_backoff_ms / 1000
            log.warning("rpc.%s: endpoint %s taken out (%s); re-probe in %d ms", self.id,
                        ep.label, fault, ep.probe_backoff_ms)

    # ------------------------------------------------------------------ probing

    async def _probe(self, ep: Endpoint) -> None:
        """Chain id and head of one endpoint; a success brings a dead endpoint back."""
        try:
            await self._attempt(ep, "eth_chainId", [])
            await self._attempt(ep, "eth_blockNumber", [])
        except _Fault:
            if ep.dead:
                ep.probe_backoff_ms = min(ep.probe_backoff_ms * 2, self.config.reprobe_max_ms)
                ep.next_probe_at = time.monotonic() + ep.probe_backoff_ms / 1000
            return
        if ep.dead:
            ep.dead = False
            # Back on probation: exactly at the health floor, one more failure drops it.
            ep.success_ewma = max(ep.success_ewma, self.config.min_health)
            log.info("rpc.%s: endpoint %s is back", self.id, ep.label)

    async def _probe_loop(self) -> None:
        """Re-probe dead endpoints when due, and check live heads every ``head_check_ms``."""
        tick = max(0.05, min(self.config.reprobe_ms, self.config.head_check_ms or 10**9) / 4000)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            due: list[Awaitable[Any]] = []
            for ep in self.endpoints:
                if ep.refused:
                    continue
                if ep.dead and now >= ep.next_probe_at:
                    due.append(self._probe(ep))
                elif not ep.dead and self.config.head_check_ms and now >= ep.next_head_check_at:
                    ep.next_head_check_at = now + self.config.head_check_ms / 1000
                    due.append(self._check_head(ep))
            if due:
                await asyncio.gather(*due, return_exceptions=True)

    async def _check_head(self, ep: Endpoint) -> None:
        try:
            await self._attempt(ep, "eth_blockNumber", [])
        except _Fault:
            pass


def _unwrap(method: str, response: dict[str, Any]) -> Any:
    error = response.get("error")
    if error is not None:
        raise JsonRpcError(method, error.get("code", 0), str(error.get("message", "")),
                           error.get("data"))
    return response["result"]


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


__all__ = [
    "IDEMPOTENT_METHODS", "Endpoint", "JsonRpcError", "RpcAmbiguous", "RpcError", "RpcPool",
    "RpcUnavailable", "WrongChain",
]
