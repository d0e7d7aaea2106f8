"""Batched transactions from one account: queue, flush by size or age, track every receipt.

Why batch: settlements of concurrent trades arrive together; estimating their gas
concurrently and sending them back to back with consecutive nonces gets them into the same
block or two, instead of one round-trip chain per trade.

Why one manager per account: nonces are allocated locally under a lock (asking the node for
the pending count per transaction races with itself). The local counter is resynchronised from
the chain whenever a send is refused or a transaction is dropped.

Every submitted operation ends with a ``TxResult`` (confirmed, reverted, dropped, failed or
timed out) carrying the reason: nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import time
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

import attrs
from attrs import field, frozen
from eth_utils import keccak, to_checksum_address

from pr3dict_core.model import Pr3dictError

if TYPE_CHECKING:  # eth_account costs ~0.3 s to import: only when it is used
    from eth_account.signers.local import LocalAccount

from .gas import URGENCIES, Fees, GasCapExceeded, GasManager
from .options import above, at_least, one_of
from .rpc import JsonRpcError, RpcAmbiguous, RpcError, RpcPool

log = logging.getLogger("pr3dict.polygon.batch")


class TxStatus(enum.StrEnum):
    CONFIRMED = "confirmed"  # mined, status 1
    REVERTED = "reverted"  # mined, status 0 (gas was spent)
    DROPPED = "dropped"  # sent, then no endpoint knew it any more
    FAILED = "failed"  # never sent: estimate reverted, gas cap, refused by the node, ...
    TIMEOUT = "timeout"  # sent, still pending when we stopped waiting: outcome unknown


class TransactionFailed(Pr3dictError):
    def __init__(self, result: TxResult):
        self.result = result
        what = f" {result.tx_hash}" if result.tx_hash else ""
        super().__init__(f"{result.op.action} transaction{what} {result.status}: {result.reason}")


@frozen(kw_only=True)
class TxOp:
    """One contract call (or creation, ``to=None``) to send from the manager's account."""

    to: str | None
    data: str = "0x"
    value: int = 0
    gas: int | None = None  # None: eth_estimateGas x gas_limit_multiplier
    action: str = "call"  # short verb for logs and spend accounting: merge, split, approve
    label: str = ""  # groups spend (the trade id for settlements)
    urgency: str | None = None  # None: the manager's default


@frozen(kw_only=True)
class TxResult:
    op: TxOp
    status: TxStatus
    reason: str = ""
    tx_hash: str | None = None
    nonce: int | None = None
    block: int | None = None
    gas_used: int | None = None
    cost_pol: Decimal = Decimal(0)
    contract_address: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is TxStatus.CONFIRMED

    def raise_for_status(self) -> TxResult:
        if not self.ok:
            raise TransactionFailed(self)
        return self


@frozen(kw_only=True)
class BatchConfig:
    """``[settlers.<id>.batch]``: when to flush and how long to wait for receipts."""

    max_size: int = field(default=16, validator=at_least(1))
    max_age_ms: int = field(default=200, validator=at_least(0))
    poll_ms: int = field(default=500, validator=above(0))
    receipt_timeout_ms: int = field(default=120_000, validator=above(0))
    gas_limit_multiplier: Decimal = field(default=Decimal("1.2"))
    # Estimates are taken against the state before earlier operations land; a merge can
    # zero slots (both positions, the collateral held, an allowance) that a later split
    # writes again, each a cold SSTORE of 22,100 gas. A limit above what is used costs
    # nothing under EIP-1559 (gas used is paid, not the limit), so leave room for several.
    gas_limit_headroom: int = field(default=100_000, validator=at_least(0))
    urgency: str = field(default="normal", validator=one_of(URGENCIES))

    @gas_limit_multiplier.validator
    def _check_multiplier(self, attribute: Any, value: Decimal) -> None:
        if value < 1:
            raise ValueError(f"gas_limit_multiplier must be >= 1, got {value}")


@attrs.define(eq=False)
class _Item:
    op: TxOp
    future: asyncio.Future[TxResult]
    queued_at: float
    # The submitter's context: its RPC calls become children of the submitter's span (e.g.
    # "settle trade") although they run in the flusher and tracker tasks.
    context: contextvars.Context = attrs.field(factory=contextvars.copy_context)

    def run(self, coro: Any) -> asyncio.Task[Any]:
        return asyncio.create_task(coro, context=self.context.copy())


class BatchTxManager:
    """Queues ``TxOp``s for one account and sends them in batches through an RpcPool."""

    def __init__(self, pool: RpcPool, account: LocalAccount, config: BatchConfig | None = None,
                 *, gas: GasManager | None = None, chain_id: int | None = None):
        self.pool = pool
        self.account = account
        self.config = config or BatchConfig()
        self.gas = gas or pool.gas
        self.chain_id = chain_id or pool.config.chain_id
        self.address = account.address
        self.pending: dict[str, TxOp] = {}  # tx hash -> op, sent and not final
        self.results: list[TxResult] = []
        self._queue: list[_Item] = []
        self._changed = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._nonce: int | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._trackers: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        await self.resync_nonce()
        self._flusher = asyncio.create_task(self._flush_loop(), name="polygon.batch.flush")

    async def close(self) -> None:
        """Send what is queued, then wait for every sent transaction to reach a result."""
        self._closing = True
        self._changed.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        await self.flush()
        if self._trackers:
            await asyncio.gather(*self._trackers, return_exceptions=True)

    # ------------------------------------------------------------------ submitting

    def submit(self, op: TxOp) -> asyncio.Future[TxResult]:
        """Queue ``op``; the future resolves with its TxResult (never with an exception)."""
        if op.urgency is not None and op.urgency not in URGENCIES:
            raise ValueError(f"unknown urgency {op.urgency!r}")
        future: asyncio.Future[TxResult] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_result(TxResult(op=op, status=TxStatus.FAILED,
                                       reason="batch manager is closed"))
            return future
        self._queue.append(_Item(op, future, time.monotonic()))
        if len(self._queue) == 1 or len(self._queue) >= self.config.max_size:
            self._changed.set()
        return future

    async def execute(self, op: TxOp) -> TxResult:
        return await self.submit(op)

    async def flush(self) -> None:
        """Send everything queued now, in batches of ``max_size``."""
        while self._queue:
            batch = self._queue[: self.config.max_size]
            del self._queue[: self.config.max_size]
            await self._send_batch(batch)

    async def _flush_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            age_left = self.config.max_age_ms / 1000 - (time.monotonic() -
                                                        self._queue[0].queued_at)
            if len(self._queue) < self.config.max_size and age_left > 0 and not self._closing:
                self._changed.clear()
                try:
                    async with asyncio.timeout(age_left):
                        await self._changed.wait()
                except TimeoutError:
                    pass
                continue
            batch = self._queue[: self.config.max_size]
            del self._queue[: self.config.max_size]
            try:
                await self._send_batch(batch)
            except Exception as exc:  # never let the flusher die with futures unresolved
                log.exception("batch send failed")
                for item in batch:
                    self._finish(item, TxResult(op=item.op, status=TxStatus.FAILED,
                                                reason=f"internal error: {exc!r}"))

    # ------------------------------------------------------------------ sending

    async def resync_nonce(self) -> int:
        """Take the next nonce from the chain's pending count (after a refusal or a drop)."""
        count = await self.pool.request("eth_getTransactionCount", [self.address, "pending"])
        self._nonce = int(count, 16)
        return self._nonce

    async def _send_batch(self, batch: Sequence[_Item]) -> None:
        async with self._send_lock:
            if self._nonce is None:
                await self.resync_nonce()
            urgencies = {item.op.urgency or self.config.urgency for item in batch}
            fees: dict[str, Fees | Exception] = {}
            for urgency in urgencies:
                try:
                    fees[urgency] = await self.gas.fees(urgency)
                except Pr3dictError as exc:  # the cap, RPC errors, a malformed fee history
                    fees[urgency] = exc
            limits = await asyncio.gather(*(item.run(self._gas_limit(item.op))
                                            for item in batch))
            for item, limit in zip(batch, limits, strict=True):
                urgency = item.op.urgency or self.config.urgency
                fee = fees[urgency]
                if isinstance(fee, Exception):
                    self._finish(item, self._failed(item.op, f"no fee: {fee}"))
                elif isinstance(limit, str):
                    self._finish(item, self._failed(item.op, limit))
                else:
                    await item.run(self._send_one(item, limit, fee.tx_fields()))

    async def _gas_limit(self, op: TxOp) -> int | str:
        """The gas limit, or the reason the call would fail (a revert found before sending)."""
        if op.gas is not None:
            return op.gas
        call: dict[str, Any] = {"from": self.address, "data": op.data, "value": hex(op.value)}
        if op.to is not None:
            call["to"] = op.to
        try:
            estimate = int(await self.pool.request("eth_estimateGas", [call]), 16)
        except JsonRpcError as exc:
            return f"would revert (gas estimation): {revert_reason(exc)}"
        except RpcError as exc:
            return f"gas estimation failed: {exc}"
        return int((Decimal(estimate) * self.config.gas_limit_multiplier)
                   .to_integral_value(rounding=ROUND_CEILING)) + self.config.gas_limit_headroom

    async def _send_one(self, item: _Item, gas_limit: int, fee_fields: dict[str, int]) -> None:
        assert self._nonce is not None
        tx: dict[str, Any] = {
            "type": 2, "chainId": self.chain_id, "nonce": self._nonce, "gas": gas_limit,
            "value": item.op.value, "data": item.op.data, **fee_fields,
        }
        if item.op.to is not None:
            tx["to"] = to_checksum_address(item.op.to)
        try:
            self.gas.check_cap(tx["maxFeePerGas"])
        except GasCapExceeded as exc:
            self._finish(item, self._failed(item.op, str(exc)))
            return
        signed = self.account.sign_transaction(tx)
        tx_hash = "0x" + keccak(signed.raw_transaction).hex()
        try:
            await self.pool.send_raw_transaction(signed.raw_transaction)
        except JsonRpcError as exc:
            if not _already_known(exc.message):
                # Refused: the nonce was not consumed by this transaction.
                self._finish(item, self._failed(item.op, f"refused by the node: {exc.message}",
                                                nonce=tx["nonce"]))
                await self._safe_resync()
                return
        except RpcAmbiguous as exc:
            log.warning("%s %s: send is ambiguous (%s); tracking it by hash", item.op.action,
                        tx_hash, exc)
        except RpcError as exc:  # nothing reached a node
            self._finish(item, self._failed(item.op, f"not sent: {exc}"))
            return
        self._nonce += 1
        self.pending[tx_hash] = item.op
        task = item.run(self._track(item, tx_hash, tx))
        self._trackers.add(task)
        task.add_done_callback(self._trackers.discard)

    async def _safe_resync(self) -> None:
        try:
            await self.resync_nonce()
        except RpcError as exc:
            log.warning("nonce resync failed: %s", exc)

    # ------------------------------------------------------------------ receipts

    async def _track(self, item: _Item, tx_hash: str, tx: dict[str, Any]) -> None:
        """Poll for the receipt until it arrives or ``receipt_timeout_ms`` passes."""
        deadline = time.monotonic() + self.config.receipt_timeout_ms / 1000
        result: TxResult | None = None
        try:
            while result is None:
                try:
                    receipt = await self.pool.request("eth_getTransactionReceipt", [tx_hash])
                except RpcError as exc:
                    log.debug("receipt poll for %s failed: %s", tx_hash, exc)
                    receipt = None
                if receipt:
                    result = await self._settled(item.op, tx_hash, tx, receipt)
                elif time.monotonic() >= deadline:
                    result = await self._missing(item.op, tx_hash, tx)
                else:
                    await asyncio.sleep(min(self.config.poll_ms / 1000,
                                            max(deadline - time.monotonic(), 0)))
        except Exception as exc:  # a bug here must still resolve the future
            log.exception("tracking %s failed", tx_hash)
            result = TxResult(op=item.op, status=TxStatus.TIMEOUT, tx_hash=tx_hash,
                              nonce=tx["nonce"], reason=f"tracking failed: {exc!r}")
        finally:
            self.pending.pop(tx_hash, None)
            if result is None:  # cancelled
                result = TxResult(op=item.op, status=TxStatus.TIMEOUT, tx_hash=tx_hash,
                                  nonce=tx["nonce"], reason="stopped waiting (shutdown)")
            self._finish(item, result)

    async def _settled(self, op: TxOp, tx_hash: str, tx: dict[str, Any],
                       receipt: dict[str, Any]) -> TxResult:
        gas_used = int(receipt["gasUsed"], 16)
        price = int(receipt.get("effectiveGasPrice") or hex(tx["maxFeePerGas"]), 16)
        block = int(receipt["blockNumber"], 16)
        cost = self.gas.record_spend(op.label, op.action, gas_used, price)
        common: dict[str, Any] = {"op": op, "tx_hash": tx_hash, "nonce": tx["nonce"],
                                  "block": block, "gas_used": gas_used, "cost_pol": cost}
        if int(receipt["status"], 16) == 1:
            address = receipt.get("contractAddress")
            return TxResult(status=TxStatus.CONFIRMED, contract_address=address, **common)
        reason = await self._replay_reason(tx, block, gas_used)
        return TxResult(status=TxStatus.REVERTED, reason=reason, **common)

    async def _replay_reason(self, tx: dict[str, Any], block: int, gas_used: int) -> str:
        """Re-run the reverted call on the state before its block to read the revert data."""
        call: dict[str, Any] = {"from": self.address, "data": tx["data"], "value": hex(tx["value"]),
                                "gas": hex(tx["gas"])}
        if "to" in tx:
            call["to"] = tx["to"]
        try:
            await self.pool.request("eth_call", [call, hex(max(block - 1, 0))])
        except JsonRpcError as exc:
            return revert_reason(exc)
        except RpcError as exc:
            return f"reverted on chain (reason unavailable: {exc})"
        if gas_used >= tx["gas"]:
            return f"reverted on chain: out of gas (used all {tx['gas']})"
        return "reverted on chain (the replay did not revert: state changed within the block)"

    async def _missing(self, op: TxOp, tx_hash: str, tx: dict[str, Any]) -> TxResult:
        waited = self.config.receipt_timeout_ms
        try:
            known = await self.pool.request("eth_getTransactionByHash", [tx_hash])
        except RpcError as exc:
            return TxResult(op=op, status=TxStatus.TIMEOUT, tx_hash=tx_hash, nonce=tx["nonce"],
                            reason=f"no receipt after {waited} ms and lookup failed: {exc}")
        if known:
            return TxResult(op=op, status=TxStatus.TIMEOUT, tx_hash=tx_hash, nonce=tx["nonce"],
                            reason=f"still pending after {waited} ms (nonce {tx['nonce']})")
        await self._safe_resync()
        return TxResult(op=op, status=TxStatus.DROPPED, tx_hash=tx_hash, nonce=tx["nonce"],
                        reason=f"no endpoint knows the transaction after {waited} ms: dropped "
                               "from the mempool (evicted, replaced or never propagated)")

    # ------------------------------------------------------------------ results

    @staticmethod
    def _failed(op: TxOp, reason: str, nonce: int | None = None) -> TxResult:
        return TxResult(op=op, status=TxStatus.FAILED, reason=reason, nonce=nonce)

    def _finish(self, item: _Item, result: TxResult) -> None:
        self.results.append(result)
        if len(self.results) > 10_000:
            del self.results[:5_000]
        level = logging.INFO if result.ok else logging.ERROR
        log.log(level, "%s%s %s%s%s", result.op.action,
                f" [{result.op.label}]" if result.op.label else "", result.status,
                f" {result.tx_hash}" if result.tx_hash else "",
                f": {result.reason}" if result.reason else "")
        if not item.future.done():
            item.future.set_result(result)


def _already_known(message: str) -> bool:
    """The node has this very transaction already (a resend): it is in flight, track it."""
    text = message.lower()
    return "already known" in text or "known transaction" in text


# --------------------------------------------------------------------------- revert reasons

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)
_PANICS = {0x01: "assertion failed", 0x11: "arithmetic overflow or underflow",
           0x12: "division by zero", 0x21: "invalid enum value", 0x31: "pop on empty array",
           0x32: "array index out of bounds", 0x41: "out of memory",
           0x51: "call to an uninitialised function"}


def decode_revert_data(data: bytes) -> str | None:
    """The reason in ABI-encoded revert data, or None if it carries none we can read."""
    try:
        if data[:4] == _ERROR_STRING:
            from eth_abi import decode as abi_decode  # only when a revert is decoded

            return str(abi_decode(["string"], data[4:])[0])
        if data[:4] == _PANIC:
            from eth_abi import decode as abi_decode

            code = int(abi_decode(["uint256"], data[4:])[0])
            return f"panic 0x{code:02x} ({_PANICS.get(code, 'unknown')})"
    except Exception:  # malformed revert data from a node
        return None
    if len(data) >= 4:
        return f"custom error 0x{data[:4].hex()}"
    return None


def revert_reason(exc: JsonRpcError) -> str:
    """A readable reason from a JSON-RPC error (revert data preferred to the node's message)."""
    data = exc.data
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            decoded = decode_revert_data(bytes.fromhex(data[2:]))
        except ValueError:
            decoded = None
        if decoded:
            return f"reverted: {decoded}"
    return exc.message or f"JSON-RPC error {exc.code}"
