"""Settle a committed binary-complement trade on chain: merge YES+NO back into collateral.

After buying ``n`` YES and ``n`` NO shares of one market for less than 1 USDC a set, the
profit is locked but the capital is tied up until resolution. ``mergePositions`` on the
conditional-tokens contract burns ``n`` of each and returns ``n`` collateral now (gas only,
no fee), so the bankroll is free for the next trade. After resolution, ``redeemPositions``
turns any remaining shares into collateral.

Paper runs have no real positions on chain. With ``mint_positions = true`` the settler first
*splits* ``n`` collateral into ``n`` YES + ``n`` NO (standing in for the venue delivering the
ERC-1155 shares) and then merges them: the whole on-chain path runs against a local node
while the trades themselves stay simulated. It is refused in live mode.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from decimal import ROUND_DOWN, Decimal
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Self

from attrs import field, frozen
from eth_utils import is_address, to_checksum_address
from opentelemetry import trace

from pr3dict_core.config import OptionError, SecretRef, ref
from pr3dict_core.model import Pr3dictError, Side, Trade

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

from .batch import BatchConfig, BatchTxManager, TxOp, TxResult
from .options import between
from .rpc import RpcPool

log = logging.getLogger("pr3dict.polygon.settlement")

# Package data, read through importlib.resources so it works from a wheel as from a checkout.
ARTIFACTS = resources.files(__package__) / "contracts" / "compiled.json"
YES_INDEX_SET, NO_INDEX_SET = 1, 2  # outcome 0 (Yes) and outcome 1 (No) of a binary condition
PARTITION = [YES_INDEX_SET, NO_INDEX_SET]
TOP_LEVEL = b"\x00" * 32  # parentCollectionId of every binary market
MAX_UINT256 = 2**256 - 1


class SettlementError(Pr3dictError):
    pass


@cache
def artifacts() -> dict[str, dict[str, Any]]:
    """ABI and bytecode of the project's own test contracts (contracts/compiled.json)."""
    return json.loads(ARTIFACTS.read_text(encoding="utf-8"))["contracts"]


def shares_to_units(shares: Decimal, decimals: int = 6) -> int:
    """Exact conversion, rounded down: a fraction of a unit cannot be merged."""
    return int(shares.scaleb(decimals).to_integral_value(rounding=ROUND_DOWN))


def units_to_shares(units: int, decimals: int = 6) -> Decimal:
    return Decimal(units).scaleb(-decimals)


def _address(instance: Any, attribute: Any, value: str) -> None:
    if not is_address(value):
        raise ValueError(f"{attribute.name}: not an address: {value!r}")


def _bytes32(instance: Any, attribute: Any, value: str) -> None:
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", value):
        raise ValueError(f"{attribute.name}: expected 0x and 64 hex digits, got {value!r}")


@frozen(kw_only=True)
class MarketCondition:
    """Which condition a binary market's YES and NO instruments are positions of."""

    yes: str  # instrument id of the YES leg (index set 1)
    no: str  # instrument id of the NO leg (index set 2)
    condition_id: str = field(validator=_bytes32)


@frozen(kw_only=True)
class SettlementResult:
    trade_id: str
    condition_id: str
    amount_units: int
    split: TxResult | None
    merge: TxResult

    @property
    def shares(self) -> Decimal:
        return units_to_shares(self.amount_units)


class CtfMergeSettler:
    """``[settlers.<id>] type = "ctf_merge"``: merge hedged YES+NO sets into collateral."""

    type: ClassVar[str] = "ctf_merge"

    @frozen(kw_only=True)
    class Config:
        rpc: str = ref("rpc")
        private_key: SecretRef
        conditional_tokens: str = field(validator=_address)
        collateral: str = field(validator=_address)
        collateral_decimals: int = field(default=6, validator=between(0, 36))
        markets: tuple[MarketCondition, ...] = field(default=())
        mint_positions: bool = False
        redeem_on_close: bool = False
        batch: BatchConfig = field(factory=BatchConfig)

        @markets.validator
        def _unique(self, attribute: Any, value: tuple[MarketCondition, ...]) -> None:
            seen: set[str] = set()
            for m in value:
                for instrument in (m.yes, m.no):
                    if instrument in seen:
                        raise ValueError(f"instrument {instrument!r} is mapped twice")
                    seen.add(instrument)

    def __init__(self, id: str, config: Config, pool: RpcPool, account: LocalAccount, *,
                 mode: str = "paper"):
        if config.mint_positions and mode == "live":
            raise SettlementError(f"settlers.{id}.mint_positions: minting positions is a paper "
                                  "stand-in for venue deliveries and is refused in live mode")
        self.id = id
        self.config = config
        self.pool = pool
        self.account = account
        self.mode = mode
        self.batch = BatchTxManager(pool, account, config.batch)
        abis = artifacts()
        self.ctf = pool.web3.eth.contract(address=to_checksum_address(config.conditional_tokens),
                                          abi=abis["MiniConditionalTokens"]["abi"])
        self.collateral = pool.web3.eth.contract(address=to_checksum_address(config.collateral),
                                                 abi=abis["TestCollateral"]["abi"])
        self._by_instrument = {i: m for m in config.markets for i in (m.yes, m.no)}
        self.position_ids: dict[str, tuple[int, int]] = {}  # condition id -> (yes, no)
        self.results: OrderedDict[str, SettlementResult] = OrderedDict()
        self.failures: list[str] = []

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: Any) -> Self:
        pool = ctx.lookup("rpc", config.rpc)
        try:
            from eth_account import Account  # imported only by pipelines that settle

            account = Account.from_key(ctx.resolve_secret(config.private_key))
        except (ValueError, TypeError):
            # never echo the secret in the message
            raise OptionError("private_key", "not a valid hex private key (32 bytes) in "
                              f"{config.private_key!r}") from None
        return cls(id, config, pool, account, mode=str(ctx.mode))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.check()
        await self.batch.start()
        if self.config.mint_positions:
            await self._ensure_allowance()

    async def check(self) -> None:
        """Check the contracts exist and every condition is a prepared binary one (read only:
        ``pr3dict validate`` calls it too)."""
        for label, address in (("conditional_tokens", self.config.conditional_tokens),
                               ("collateral", self.config.collateral)):
            code = await self.pool.request("eth_getCode", [to_checksum_address(address),
                                                           "latest"])
            if code in ("0x", "0x0", ""):
                raise SettlementError(f"settlers.{self.id}.{label}: no contract at {address} on "
                                      f"chain {self.pool.config.chain_id}")
        for market in self.config.markets:
            cid = bytes.fromhex(market.condition_id[2:])
            slots = await self.ctf.functions.getOutcomeSlotCount(cid).call()
            if slots != 2:
                raise SettlementError(
                    f"settlers.{self.id}.markets: condition {market.condition_id} "
                    f"({market.yes}/{market.no}) is "
                    f"{'not prepared' if slots == 0 else f'{slots}-outcome'}; need a binary one")
            self.position_ids[market.condition_id] = (
                await self._position_id(cid, YES_INDEX_SET),
                await self._position_id(cid, NO_INDEX_SET))

    async def close(self) -> None:
        try:
            if self.config.redeem_on_close:
                for market in self.config.markets:
                    if await self.is_resolved(market.condition_id):
                        result = await self.redeem(market.condition_id)
                        if not result.ok:
                            self.failures.append(f"redeem {market.condition_id}: "
                                                 f"{result.reason}")
        finally:
            await self.batch.close()
        if self.failures:
            log.error("settlers.%s: %d settlement(s) failed: %s", self.id, len(self.failures),
                      "; ".join(self.failures[:5]))

    # ------------------------------------------------------------------ settling

    def plan(self, trade: Trade) -> tuple[MarketCondition, int] | None:
        """(market, collateral units to merge), or None if this is not ours to merge."""
        entries = [leg for leg in trade.legs if leg.purpose == "entry"]
        markets = {id(self._by_instrument.get(leg.instrument)) for leg in entries}
        market = self._by_instrument.get(entries[0].instrument) if entries else None
        if market is None or len(markets) != 1 or len(entries) != 2:
            return None
        if {leg.instrument for leg in entries} != {market.yes, market.no} or \
                any(leg.side is not Side.BUY for leg in entries):
            return None
        return market, shares_to_units(trade.hedged_size, self.config.collateral_decimals)

    async def settle(self, trade: Trade) -> None:
        """Merge the trade's hedged sets; raises SettlementError when a transaction fails."""
        planned = self.plan(trade)
        if planned is None:
            log.debug("settlers.%s: trade %s is not a mapped binary complement", self.id,
                      trade.id)
            return
        market, units = planned
        span = trace.get_current_span()
        span.set_attributes({"pr3dict.settlement.condition_id": market.condition_id,
                             "pr3dict.settlement.amount_units": units})
        if units <= 0:
            return
        cid = bytes.fromhex(market.condition_id[2:])
        split: TxResult | None = None
        if self.config.mint_positions:
            split = await self.batch.execute(self._op("splitPosition", cid, units, trade.id))
            if not split.ok:
                self._fail(trade.id, "split", split)
        else:
            yes, no = await self.positions(market.condition_id)
            if min(yes, no) < units:
                log.warning("settlers.%s: trade %s wants %d units merged but the account holds "
                            "YES %d / NO %d; merging what is held", self.id, trade.id, units,
                            yes, no)
                units = min(yes, no)
                if units <= 0:
                    raise SettlementError(f"trade {trade.id}: no YES+NO sets of "
                                          f"{market.condition_id} held to merge")
        merge = await self.batch.execute(self._op("mergePositions", cid, units, trade.id))
        trade.gas_spent += sum((r.cost_pol for r in (split, merge)
                                if r is not None and r.cost_pol is not None), Decimal(0))
        span.set_attributes({"pr3dict.settlement.tx_hash": merge.tx_hash or "",
                             "pr3dict.settlement.status": str(merge.status)})
        self.results[trade.id] = SettlementResult(trade_id=trade.id,
                                                  condition_id=market.condition_id,
                                                  amount_units=units, split=split, merge=merge)
        while len(self.results) > 10_000:
            self.results.popitem(last=False)
        if not merge.ok:
            self._fail(trade.id, "merge", merge)
        log.info("settlers.%s: trade %s merged %s sets (%s), gas %s POL", self.id, trade.id,
                 units_to_shares(units, self.config.collateral_decimals), merge.tx_hash,
                 merge.cost_pol)

    def _fail(self, trade_id: str, what: str, result: TxResult) -> None:
        message = f"trade {trade_id}: {what} {result.status}: {result.reason}"
        self.failures.append(message)
        raise SettlementError(message)

    def _op(self, fn: str, cid: bytes, units: int, label: str) -> TxOp:
        data = self.ctf.encode_abi(fn, args=[self.collateral.address, TOP_LEVEL, cid, PARTITION,
                                             units])
        return TxOp(to=self.ctf.address, data=data, action=fn.removesuffix("Positions")
                    .removesuffix("Position").lower(), label=label)

    # ------------------------------------------------------------------ redeeming

    async def is_resolved(self, condition_id: str) -> bool:
        cid = bytes.fromhex(condition_id[2:])
        return int(await self.ctf.functions.payoutDenominator(cid).call()) > 0

    async def redeem(self, condition_id: str) -> TxResult:
        """After resolution: turn every YES and NO share of the condition into collateral."""
        if not await self.is_resolved(condition_id):
            raise SettlementError(f"condition {condition_id} is not resolved yet")
        cid = bytes.fromhex(condition_id[2:])
        data = self.ctf.encode_abi("redeemPositions", args=[self.collateral.address, TOP_LEVEL,
                                                            cid, PARTITION])
        return await self.batch.execute(TxOp(to=self.ctf.address, data=data, action="redeem",
                                             label=condition_id))

    # ------------------------------------------------------------------ queries

    async def positions(self, condition_id: str) -> tuple[int, int]:
        """(YES units, NO units) held by the settling account."""
        yes_id, no_id = self.position_ids[condition_id]
        yes, no = await self.ctf.functions.balanceOfBatch(
            [self.account.address] * 2, [yes_id, no_id]).call()
        return int(yes), int(no)

    async def collateral_balance(self) -> int:
        return int(await self.collateral.functions.balanceOf(self.account.address).call())

    async def _position_id(self, cid: bytes, index_set: int) -> int:
        # Ask the contract: collection ids differ between implementations (see docs).
        collection = await self.ctf.functions.getCollectionId(TOP_LEVEL, cid, index_set).call()
        return int(await self.ctf.functions.getPositionId(self.collateral.address,
                                                          collection).call())

    async def _ensure_allowance(self) -> None:
        allowance = await self.collateral.functions.allowance(self.account.address,
                                                              self.ctf.address).call()
        if int(allowance) >= 2**128:
            return
        data = self.collateral.encode_abi("approve", args=[self.ctf.address, MAX_UINT256])
        result = await self.batch.execute(TxOp(to=self.collateral.address, data=data,
                                               action="approve"))
        if not result.ok:
            raise SettlementError(f"settlers.{self.id}: collateral approval failed: "
                                  f"{result.reason}")
