"""EIP-1559 fees from ``eth_feeHistory``, a hard fee cap, POL cost estimates and gas spend.

Why percentiles of recent tips rather than ``eth_maxPriorityFeePerGas``: the latter is one
node's opinion with no notion of urgency; the fee history gives the distribution actually
paid in the last blocks, so an urgency level can pick a point in it and scale it.

The cap is a safety stop: during a Polygon gas spike a merge can cost more than the edge it
settles, so above ``cap_gwei`` nothing is signed or sent (merging can wait; the shares are
still worth 1 USDC per set at resolution).
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, ClassVar, Self

from attrs import field, frozen

from pr3dict_core.config import ref
from pr3dict_core.model import Pr3dictError

from .options import at_least, between

log = logging.getLogger("pr3dict.polygon.gas")

GWEI = 10**9
URGENCIES = ("low", "normal", "high", "urgent")
_DEFAULT_URGENCY = {"low": Decimal("1"), "normal": Decimal("1.25"), "high": Decimal("1.5"),
                    "urgent": Decimal("2")}


class GasCapExceeded(Pr3dictError):
    """The fee needed to be included now is above the configured cap: nothing is sent."""


def wei_to_pol(wei: int) -> Decimal:
    """Exact: 1 POL = 1e18 wei."""
    return Decimal(wei).scaleb(-18)


def gwei(value: Decimal) -> int:
    return int((value * GWEI).to_integral_value(rounding=ROUND_CEILING))


def _urgency_table(instance: Any, attribute: Any, value: Mapping[str, Decimal]) -> None:
    missing = [u for u in URGENCIES if u not in value]
    unknown = [u for u in value if u not in URGENCIES]
    if missing or unknown:
        raise ValueError(f"urgency needs exactly the levels {', '.join(URGENCIES)}"
                         f" (missing: {', '.join(missing) or '-'}; unknown: "
                         f"{', '.join(unknown) or '-'})")
    if any(m <= 0 for m in value.values()):
        raise ValueError("urgency multipliers must be > 0")


def _positive(instance: Any, attribute: Any, value: Decimal) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _non_negative(instance: Any, attribute: Any, value: Decimal) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@frozen(kw_only=True)
class GasConfig:
    """``[rpc.<id>.gas]``: how fees are chosen for transactions sent through that pool."""

    cap_gwei: Decimal = field(default=Decimal("500"), validator=_positive)
    min_priority_fee_gwei: Decimal = field(default=Decimal("25"), validator=_non_negative)
    reward_percentile: int = field(default=50, validator=between(1, 99))
    fee_history_blocks: int = field(default=10, validator=between(1, 1024))
    base_fee_headroom: Decimal = field(default=Decimal("2"), validator=_positive)
    urgency: Mapping[str, Decimal] = field(factory=lambda: dict(_DEFAULT_URGENCY),
                                           validator=_urgency_table)
    refresh_ms: int = field(default=2000, validator=at_least(0))
    history_size: int = field(default=256, validator=at_least(2))
    spend_labels: int = field(default=10_000, validator=at_least(1))


@frozen
class FeeSample:
    """What one ``eth_feeHistory`` call said about the next block."""

    at: float  # time.time()
    block: int  # newest block in the window
    base_fee: int  # wei, base fee of the next block
    reward: int  # wei, median over the window of the configured reward percentile


@frozen
class Fees:
    """EIP-1559 fees for one transaction, in wei."""

    urgency: str
    base_fee: int
    max_priority_fee: int
    max_fee: int
    capped: bool = False  # max_fee was lowered to the cap (still above base + tip)

    def tx_fields(self) -> dict[str, int]:
        return {"maxFeePerGas": self.max_fee, "maxPriorityFeePerGas": self.max_priority_fee}


@frozen
class CostEstimate:
    """POL cost of ``gas`` units: expected at today's base fee, and the worst case at max fee."""

    gas: int
    fees: Fees
    expected_pol: Decimal
    max_pol: Decimal


@frozen
class Trend:
    direction: str  # rising | falling | flat | unknown
    change_pct: Decimal  # newest half vs oldest half of the window, base fee
    samples: int
    first_gwei: Decimal | None
    last_gwei: Decimal | None


class GasManager:
    """Fees, cap, estimates and spend for one chain; owned by an RpcPool (``pool.gas``)."""

    def __init__(self, request: Callable[[str, Sequence[Any]], Awaitable[Any]],
                 config: GasConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        self._request = request
        self.config = config or GasConfig()
        self._clock = clock
        self.cap_wei = gwei(self.config.cap_gwei)
        self.history: deque[FeeSample] = deque(maxlen=self.config.history_size)
        self._last: tuple[float, FeeSample] | None = None
        self._lock = asyncio.Lock()
        self.spent_pol = Decimal(0)
        self.transactions = 0
        self.by_action: dict[str, dict[str, Any]] = {}
        self.by_label: OrderedDict[str, Decimal] = OrderedDict()
        self.refusals = 0

    # ------------------------------------------------------------------ fees

    async def sample(self, *, fresh: bool = False) -> FeeSample:
        """The latest fee sample; concurrent callers share one ``eth_feeHistory`` request."""
        async with self._lock:
            now = self._clock()
            if not fresh and self._last is not None and \
                    (now - self._last[0]) * 1000 < self.config.refresh_ms:
                return self._last[1]
            raw = await self._request("eth_feeHistory", [
                hex(self.config.fee_history_blocks), "latest", [self.config.reward_percentile]])
            sample = parse_fee_history(raw)
            self._last = (now, sample)
            self.history.append(sample)
            return sample

    def fees_from(self, sample: FeeSample, urgency: str = "normal") -> Fees:
        """Pure fee arithmetic (tested without a node).

        tip = max(min_priority_fee, reward percentile) x urgency multiplier;
        max_fee = base_fee x headroom + tip, lowered to the cap when only the headroom exceeds
        it; if base_fee + tip alone exceeds the cap, GasCapExceeded.
        """
        try:
            multiplier = self.config.urgency[urgency]
        except KeyError:
            raise ValueError(f"unknown urgency {urgency!r}; one of {', '.join(URGENCIES)}") \
                from None
        floor = gwei(self.config.min_priority_fee_gwei)
        tip = int((Decimal(max(floor, sample.reward)) * multiplier)
                  .to_integral_value(rounding=ROUND_CEILING))
        headroom = int((Decimal(sample.base_fee) * self.config.base_fee_headroom)
                       .to_integral_value(rounding=ROUND_CEILING))
        needed = sample.base_fee + tip
        if needed > self.cap_wei:
            self.refusals += 1
            raise GasCapExceeded(
                f"gas cap {fmt(self.config.cap_gwei)} gwei exceeded: base fee "
                f"{fmt(_gwei(sample.base_fee))} + tip {fmt(_gwei(tip))} = "
                f"{fmt(_gwei(needed))} gwei "
                f"({urgency}); nothing sent")
        max_fee = headroom + tip
        capped = max_fee > self.cap_wei
        return Fees(urgency, sample.base_fee, tip, min(max_fee, self.cap_wei), capped)

    async def fees(self, urgency: str = "normal") -> Fees:
        return self.fees_from(await self.sample(), urgency)

    def check_cap(self, max_fee_per_gas: int) -> None:
        """Last line of defence before signing: no transaction may offer more than the cap."""
        if max_fee_per_gas > self.cap_wei:
            self.refusals += 1
            raise GasCapExceeded(f"maxFeePerGas {fmt(_gwei(max_fee_per_gas))} gwei is above "
                                 f"the cap {fmt(self.config.cap_gwei)} gwei; nothing sent")

    async def estimate_cost(self, gas: int, urgency: str = "normal") -> CostEstimate:
        fees = await self.fees(urgency)
        return CostEstimate(gas, fees, wei_to_pol(gas * (fees.base_fee + fees.max_priority_fee)),
                            wei_to_pol(gas * fees.max_fee))

    # ------------------------------------------------------------------ spend and trend

    def record_spend(self, label: str, action: str, gas_used: int, price_wei: int) -> Decimal:
        """Account a mined transaction (reverted ones cost gas too); returns its POL cost."""
        cost = wei_to_pol(gas_used * price_wei)
        self.spent_pol += cost
        self.transactions += 1
        row = self.by_action.setdefault(action, {"transactions": 0, "gas": 0,
                                                 "pol": Decimal(0)})
        row["transactions"] += 1
        row["gas"] += gas_used
        row["pol"] += cost
        if label:
            self.by_label[label] = self.by_label.pop(label, Decimal(0)) + cost
            while len(self.by_label) > self.config.spend_labels:
                self.by_label.popitem(last=False)
        return cost

    def trend(self, window: int | None = None) -> Trend:
        """Base fee of the newest half of the window against the oldest half (5 % = flat)."""
        samples = list(self.history)[-(window or len(self.history)):]
        if len(samples) < 2:
            last = _gwei(samples[-1].base_fee) if samples else None
            return Trend("unknown", Decimal(0), len(samples), last, last)
        half = len(samples) // 2
        old = statistics.fmean(s.base_fee for s in samples[:half])
        new = statistics.fmean(s.base_fee for s in samples[half:])
        change = Decimal(0) if old == 0 else (Decimal(str(new)) / Decimal(str(old)) - 1) * 100
        change = change.quantize(Decimal("0.01"))
        direction = "rising" if change > 5 else "falling" if change < -5 else "flat"
        return Trend(direction, change, len(samples), _gwei(samples[0].base_fee),
                     _gwei(samples[-1].base_fee))

    def report(self, window: int | None = None) -> dict[str, Any]:
        trend = self.trend(window)
        last = self.history[-1] if self.history else None
        return {
            "cap_gwei": fmt(self.config.cap_gwei),
            "latest": None if last is None else {
                "block": last.block, "base_fee_gwei": fmt(_gwei(last.base_fee)),
                "reward_gwei": fmt(_gwei(last.reward))},
            "trend": {"direction": trend.direction, "change_pct": str(trend.change_pct),
                      "samples": trend.samples,
                      "first_gwei": None if trend.first_gwei is None else fmt(trend.first_gwei),
                      "last_gwei": None if trend.last_gwei is None else fmt(trend.last_gwei)},
            "spent_pol": fmt(self.spent_pol),
            "transactions": self.transactions,
            "cap_refusals": self.refusals,
            "by_action": {k: {"transactions": v["transactions"], "gas": v["gas"],
                              "pol": fmt(v["pol"])} for k, v in self.by_action.items()},
        }


def parse_fee_history(raw: Any) -> FeeSample:
    """Reduce an ``eth_feeHistory`` result to one sample; tips of empty blocks are ignored."""
    try:
        base_fees = [int(v, 16) for v in raw["baseFeePerGas"]]
        oldest = int(raw["oldestBlock"], 16)
        rewards = [int(r[0], 16) for r in raw.get("reward") or [] if r]
        ratios = raw.get("gasUsedRatio") or []
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise Pr3dictError(f"malformed eth_feeHistory result: {exc!r}") from None
    if not base_fees:
        raise Pr3dictError("malformed eth_feeHistory result: empty baseFeePerGas")
    used = [r for r, ratio in zip(rewards, ratios, strict=False) if ratio and r > 0]
    reward = int(statistics.median(used)) if used else 0
    newest = oldest + max(len(base_fees) - 2, 0)
    return FeeSample(time.time(), newest, base_fees[-1], reward)


def _gwei(wei: int) -> Decimal:
    return Decimal(wei).scaleb(-9)


def fmt(value: Decimal) -> str:
    """Plain decimal text without trailing zeros or exponent (reports, logs)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# --------------------------------------------------------------------------- metrics sink


class GasTrackerSink:
    """``[sinks.<id>] type = "gas_tracker"``: gas price trend, spend per trade, RPC health.

    It observes the GasManager and endpoint statistics of the RpcPool named by ``rpc``; the
    trade records only decide which rows the per-trade table gets. Written as one JSON
    document at the end of the run (``path``), and available as ``report()`` meanwhile.
    """

    type: ClassVar[str] = "gas_tracker"

    @frozen(kw_only=True)
    class Config:
        rpc: str = ref("rpc")
        path: str | None = "runs/{run_id}/gas.json"
        trend_window: int = field(default=32, validator=at_least(2))
        max_rows: int = field(default=10_000, validator=at_least(1))

    def __init__(self, id: str, config: Config, pool: Any, path: Path | None):
        self.id = id
        self.config = config
        self.pool = pool
        self.path = path
        self.rows: deque[dict[str, Any]] = deque(maxlen=config.max_rows)
        self.rpc_samples: deque[dict[str, Any]] = deque(maxlen=config.max_rows)

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: Any) -> Self:
        path = ctx.path(config.path) if config.path else None
        return cls(id, config, ctx.lookup("rpc", config.rpc), path)

    def record(self, record: Any) -> None:
        gas: GasManager = self.pool.gas
        last = gas.history[-1] if gas.history else None
        self.rows.append({
            "trade_id": getattr(record, "trade_id", ""),
            "state": str(getattr(record, "state", "")),
            "hedged_size": str(getattr(record, "hedged_size", "")),
            "gas_pol": fmt(gas.by_label.get(getattr(record, "trade_id", ""), Decimal(0))),
            "base_fee_gwei": None if last is None else fmt(_gwei(last.base_fee)),
        })
        self.rpc_samples.append({"at": time.time(), "endpoints": [
            {k: e[k] for k in ("server.address", "server.port", "health", "latency_ewma_ms")}
            for e in self.pool.snapshot()]})

    def report(self) -> dict[str, Any]:
        gas: GasManager = self.pool.gas
        out = gas.report(self.config.trend_window)
        # gas_pol of a row is read when the trade is recorded; settlement may land later.
        rows = [dict(r, gas_pol=fmt(gas.by_label.get(r["trade_id"], Decimal(0))))
                for r in self.rows]
        return {"gas": out, "trades": rows, "rpc": {"endpoints": self.pool.snapshot(),
                                                    "samples": list(self.rpc_samples)}}

    async def close(self, summary: Mapping[str, Any]) -> None:
        report = self.report()
        log.info("gas: %s POL over %d transaction(s), trend %s", report["gas"]["spent_pol"],
                 report["gas"]["transactions"], report["gas"]["trend"]["direction"])
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(report, indent=1) + "\n")
