"""Per-order fill accounting shared by the connectors.

Venues report fills in several places (the placement reply, order queries, websocket
pushes), often only as a cumulative filled size. A connector folds every observation into
one ``OrderRecord``; a new fill is added only when the cumulative size grows, with a stable
id (``<venue order id>:<n>``), so the engine never counts the same shares twice whichever
path reported them first.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from pr3dict_core.components import MalformedReply
from pr3dict_core.model import ZERO, Fill, OrderAck, OrderStatus, Side

FeeModel = Callable[[Decimal, Decimal], Decimal]  # (size, price) -> fee in USDC


def amount(value: object, what: str, at_most: Decimal | None = None) -> Decimal:
    """A number from a venue reply, checked: a string or int, finite, >= 0, and at most
    ``at_most``. Anything else raises MalformedReply (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise MalformedReply(f"{what}: expected a number, got {value!r:.40}")
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise MalformedReply(f"{what}: not a number: {value!r:.40}") from None
    if not number.is_finite() or number < ZERO or (at_most is not None and number > at_most):
        raise MalformedReply(f"{what}: {value!r:.40} is out of range")
    return number


class OrderRecord:
    __slots__ = ("client_order_id", "fees", "filled", "fills", "instrument", "market", "notional",
                 "price", "reason", "reversed", "reversed_notional", "side", "size", "status",
                 "venue_order_id")

    def __init__(self, client_order_id: str, venue_order_id: str, instrument: str, side: Side,
                 price: Decimal, size: Decimal, market: str = ""):
        self.client_order_id = client_order_id
        self.venue_order_id = venue_order_id
        self.instrument = instrument
        self.market = market
        self.side = side
        self.price = price
        self.size = size
        self.status = OrderStatus.OPEN
        self.reason = ""
        self.filled = ZERO
        self.notional = ZERO
        self.fees = ZERO
        self.reversed = ZERO  # shares of trades the venue undid (failed on chain)
        self.reversed_notional = ZERO
        self.fills: list[Fill] = []

    def observe(self, filled: Decimal, *, notional: Decimal | None = None,
                fees: Decimal | None = None, fee_model: FeeModel | None = None,
                timestamp: float = 0.0) -> bool:
        """Fold in a cumulative view. Without ``notional`` the new shares traded at the limit
        price (a resting order fills at its own price). True if a fill was added. A view
        that cannot be true (not finite, more than the order, a price outside [0, 1]) raises
        MalformedReply and changes nothing."""
        if not filled.is_finite() or filled > self.size or (
                notional is not None and not notional.is_finite()) or (
                fees is not None and not fees.is_finite()):
            raise MalformedReply(f"order {self.client_order_id}: impossible fill view "
                                 f"{filled}/{self.size}")
        delta = filled - self.filled
        if delta <= ZERO:
            return False
        d_notional = notional - self.notional if notional is not None else delta * self.price
        price = d_notional / delta
        if not ZERO <= price <= 1:
            raise MalformedReply(f"order {self.client_order_id}: fill price {price} outside "
                                 "[0, 1]")
        if fees is not None:
            d_fee = max(fees - self.fees, ZERO)
        elif fee_model is not None:
            d_fee = fee_model(delta, price)
        else:
            d_fee = ZERO
        self.fills.append(Fill(f"{self.venue_order_id}:{len(self.fills) + 1}",
                               self.client_order_id, price, delta, d_fee, timestamp))
        self.filled = filled
        self.notional += d_notional
        self.fees += d_fee
        if self.filled >= self.size:
            self.status = OrderStatus.FILLED
        return True

    def reverse(self, fill_id: str, size: Decimal, notional: Decimal) -> None:
        """The venue undid shares it had reported (a trade that failed on chain): a
        ``reversal:`` fill with negative size takes them out."""
        size = min(size, self.filled)
        if size <= ZERO:
            return
        price = notional / size if size else ZERO
        self.fills.append(Fill(fill_id, self.client_order_id, min(max(price, ZERO), Decimal(1)),
                               -size, ZERO))
        self.filled -= size
        self.notional -= size * price
        self.reversed += size
        self.reversed_notional += size * price
        if self.status is OrderStatus.FILLED:
            self.status = OrderStatus.CANCELLED
            self.reason = "a fill was reversed"

    def finish(self, status: OrderStatus, reason: str = "") -> None:
        if self.status is OrderStatus.OPEN:
            self.status = OrderStatus.FILLED if self.filled >= self.size else status
            self.reason = reason if self.status is not OrderStatus.FILLED else ""

    def ack(self) -> OrderAck:
        return OrderAck(self.client_order_id, self.status, tuple(self.fills),
                        self.venue_order_id, self.reason)
