"""Polymarket CLOB wire facts shared by the connector and the simulator.

Amount math (what is signed), fee model, error messages, cursors and market ids. All
amounts on the wire are integers in 1e-6 units (USDC/pUSD and outcome tokens both have 6
decimals); prices are USDC per share.
"""

from __future__ import annotations

import base64
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from eth_hash.auto import keccak

# Tokens per market-websocket subscribe message (the first opens the feed, later ones add
# with "operation": "subscribe", shared/research/venues.md A6): the venue answers each with a
# book snapshot per token, and aiohttp refuses messages over 4 MB by default.
SUBSCRIBE_TOKENS = 500

UNIT = Decimal(1_000_000)
FEE_QUANTUM = Decimal("0.00001")  # fees are rounded to 5 decimals
SIZE_STEP = Decimal("0.01")  # sizes have 2 decimals
INITIAL_CURSOR = "MA=="
END_CURSOR = "LTE="
BATCH_LIMIT = 15
ORDER_TYPES = ("GTC", "GTD", "FOK", "FAK")

# Exact error strings the CLOB returns in {"error": ...} / batch "errorMsg".
ERR_BALANCE = "not enough balance / allowance"
ERR_FOK = "order couldn't be fully filled. FOK orders are fully filled or killed."
ERR_FAK = ("no orders found to match with FAK order. FAK orders are partially filled or killed "
           "if no match is found.")
ERR_POST_ONLY = "invalid post-only order: order crosses book"
ERR_UNAUTHORIZED = "Unauthorized/Invalid api key"
ERR_L1 = "Invalid L1 Request headers"
ERR_PAYLOAD = "Invalid order payload"
ERR_OWNER = "the order owner has to be the owner of the API KEY"
ERR_SIGNER = "the order signer address has to be the address of the API KEY"
ERR_SIGNATURE = "invalid signature"
ERR_NO_BOOK = "No orderbook exists for the requested token id"
ERR_MARKET = "market not found"
ERR_RATE = "Too Many Requests"
ERR_INTERNAL = "could not run the execution"
ERR_EXPIRATION = "invalid expiration"
# Reported live for marketable (FOK/FAK) BUYs: py-clob-client-v2 #99, rs-clob-client #114/#261.
ERR_MARKET_BUY_AMOUNTS = ("invalid amounts, the market buy orders maker amount supports a max "
                          "accuracy of 2 decimals, taker amount a max of 4 decimals")
# Reported live for limit BUYs whose amounts are too precise: py-clob-client #253, #305.
ERR_BUY_AMOUNTS = ("invalid amounts, the buy orders maker amount supports a max accuracy of 4 "
                   "decimals, taker amount a max of 2 decimals")
CANCEL_DONE = "already canceled or matched"
CANCEL_UNKNOWN = "order not found"


def err_tick(order_id: str, price: Decimal, tick: Decimal) -> str:
    return f"order {order_id} is invalid. Price ({price}) breaks minimum tick size rule: {tick}"


def err_size(order_id: str, size: Decimal, minimum: Decimal) -> str:
    return f"order {order_id} is invalid. Size ({size}) lower than the minimum: {minimum}"


def err_duplicate(order_id: str) -> str:
    return f"order {order_id} is invalid. Duplicated."


def err_marketable_min(amount: Decimal) -> str:
    return f"invalid amount for a marketable BUY order (${amount}), min size: $1"


def err_batch(n: int) -> str:
    return f"Too many orders in payload: {n}, max allowed: {BATCH_LIMIT}"


def amounts(side: str, price: Decimal, size: Decimal) -> tuple[int, int]:
    """(makerAmount, takerAmount) in 1e-6 units for a limit order of ``size`` shares.

    BUY gives collateral (size x price) for shares; SELL gives shares for collateral. The
    size has 2 decimals and the price sits on the tick, so both are exact.
    """
    shares = int(size * UNIT)
    collateral = int((size * price * UNIT).to_integral_value())
    return (collateral, shares) if side == "BUY" else (shares, collateral)


def market_buy_amounts(price: Decimal, size: Decimal) -> tuple[int, int]:
    """(makerAmount, takerAmount) of a marketable (FOK/FAK) BUY of up to ``size`` shares.

    The CLOB refuses market BUYs whose dollars (maker) have more than 2 decimals or whose
    shares (taker) have more than 4 (py-clob-client-v2 #99, rs-clob-client #114). As the
    official market-order builder does, the dollars are ``size x price`` rounded down to the
    cent and the shares are those dollars / ``price`` rounded down to 4 decimals: the order
    buys at most ``size`` shares (a little fewer when ``size x price`` is not whole cents) and
    its implied price is at or just above ``price``, below the next tick.
    """
    dollars = (size * price).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    shares = (dollars / price).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
    return int(dollars * UNIT), int(shares * UNIT)


def implied(side: str, maker_amount: int, taker_amount: int) -> tuple[Decimal, Decimal]:
    """(price, size in shares) of a signed order, from its amounts."""
    if maker_amount <= 0 or taker_amount <= 0:
        raise ValueError("amounts must be positive")
    if side == "BUY":
        return Decimal(maker_amount) / Decimal(taker_amount), Decimal(taker_amount) / UNIT
    return Decimal(taker_amount) / Decimal(maker_amount), Decimal(maker_amount) / UNIT


def fee(rate: Decimal, size: Decimal, price: Decimal) -> Decimal:
    """The taker fee in USDC: size x rate x p x (1 - p), rounded to 5 decimals (min 0.00001)."""
    if not rate or not size:
        return Decimal(0)
    raw = size * rate * price * (1 - price)
    if raw <= 0:
        return Decimal(0)
    return max(raw.quantize(FEE_QUANTUM, rounding=ROUND_HALF_UP), FEE_QUANTUM)


def cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def offset(cursor_text: str | None) -> int:
    """Decode ``next_cursor``; the initial cursor (or none) is 0, the end cursor -1."""
    if not cursor_text:
        return 0
    try:
        return int(base64.b64decode(cursor_text).decode())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {cursor_text!r}") from None


def sim_market_ids(market_id: str) -> tuple[str, str, str, str]:
    """(condition id, question id, YES token id, NO token id) the simulator derives from a
    scenario market id: stable, and shaped like the real ones (bytes32 hex, uint256)."""
    condition = keccak(b"pr3dict-sim/condition/" + market_id.encode())
    question = keccak(b"pr3dict-sim/question/" + market_id.encode())
    yes = int.from_bytes(keccak(condition + b"\x01"), "big")
    no = int.from_bytes(keccak(condition + b"\x02"), "big")
    return "0x" + condition.hex(), "0x" + question.hex(), str(yes), str(no)


def dec(value: Decimal) -> str:
    """A Decimal as the CLOB writes it: plain notation, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"

# Statuses of an accepted placement (docs: create-order, "insert statuses").
INSERT_STATUSES = frozenset({"matched", "live", "delayed", "unmatched"})
