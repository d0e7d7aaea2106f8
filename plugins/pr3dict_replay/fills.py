"""Orders filled locally against displayed (recorded or live) books.

- A taker order walks the opposite side's displayed levels at its arrival, up to its
  limit price. What it took stays taken until the recorded size of that level changes (the
  recording cannot know we traded; when the level moves the market has moved on).
- A GTC remainder rests with ``queue_ahead`` = the displayed size at its price. Recorded
  volume at its price first works through the queue ahead, then fills the order: recorded
  trades there (Polymarket ``last_trade_price``, Kalshi ``trade``) and decreases of the
  displayed level (depletion: cancels ahead of us count too). A trade and the decrease it
  causes are counted once, whichever is recorded first (within ``CREDIT_S`` of each other).
  A recorded trade beyond its price (the taker swept past it) or a recorded opposite side
  that crosses it fills it too. Rest fills are maker fills at the order's own price,
  without fee.
- Our own resting orders keep price-time priority: on one side of one instrument, volume
  reaches a better price first, then the earlier order at a price; a later one fills from
  an event only once every order ahead of it is complete.
- Kalshi's YES and NO books are one book: taking YES asks at p also takes NO bids at 1 - p.

No randomness, and no time but the venue's clock (recorded time in a replay): the same
books, trades and orders give the same fills.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal

from pr3dict_core.components import OrderRejected, UnknownOrder
from pr3dict_core.model import ONE, ZERO, Market, OrderAck, OrderRequest, OrderStatus, Side
from pr3dict_core.model import TimeInForce as TIF
from pr3dict_venuekit.books import LocalBook
from pr3dict_venuekit.orders import OrderRecord

Key = tuple[str, bool, Decimal]  # (instrument, bid side?, price)


CREDIT_S = 1.0  # a trade and the level decrease it causes are recorded this close together


class _Resting:
    __slots__ = ("credit_at", "drops", "level_size", "queue_ahead", "rec", "trades")

    def __init__(self, rec: OrderRecord, queue_ahead: Decimal):
        self.rec = rec
        self.queue_ahead = queue_ahead  # displayed size ahead of us at our price
        self.level_size = queue_ahead  # the displayed size at our price, last seen
        # Volume counted from one kind of event that the other kind will report again:
        # trades not yet seen as a level decrease, decreases not yet seen as a trade.
        self.trades = ZERO
        self.drops = ZERO
        self.credit_at = 0.0

    def fresh(self, now: float) -> None:
        """Forget credits older than ``CREDIT_S``: the other report never came."""
        if now - self.credit_at > CREDIT_S:
            self.trades = self.drops = ZERO

    def reach(self, volume: Decimal) -> Decimal:
        """``volume`` traded or gone at our price (after our earlier orders' share): what
        of it passes the queue ahead and reaches us."""
        reached = max(volume - self.queue_ahead, ZERO)
        self.queue_ahead = max(self.queue_ahead - volume, ZERO)
        return min(reached, self.rec.size - self.rec.filled)


def _priority(r: _Resting) -> tuple[bool, Decimal]:
    """Sort key: per side, the better price first (a stable sort keeps time order)."""
    buy = r.rec.side is Side.BUY
    return (buy, -r.rec.price if buy else r.rec.price)


class FillSimulator:
    def __init__(self, venue_id: str, books: Mapping[str, LocalBook],
                 market_of: Callable[[str], Market | None],
                 fee: Callable[[str, Decimal, Decimal], Decimal],
                 twin: Callable[[str], str | None], clock: Callable[[], float] = lambda: 0.0):
        self.venue_id = venue_id
        self.clock = clock  # the replayed (or live) time stamped on fills, in seconds
        self.books = books
        self.market_of = market_of
        self.fee = fee
        self.twin = twin
        self.records: dict[str, OrderRecord] = {}
        self.resting: dict[str, list[_Resting]] = {}  # instrument -> orders resting on it
        self.positions: dict[str, Decimal] = {}
        self._taken: dict[Key, tuple[Decimal, Decimal]] = {}  # key -> (displayed, taken)
        self._n = 0

    # ------------------------------------------------------------------ displayed depth

    def _available(self, key: Key, displayed: Decimal) -> Decimal:
        seen = self._taken.get(key)
        if seen is None:
            return displayed
        if seen[0] != displayed:  # the level moved: what we took is forgotten
            del self._taken[key]
            return displayed
        return displayed - seen[1]

    def _take(self, key: Key, displayed: Decimal, size: Decimal) -> None:
        seen = self._taken.get(key)
        taken = seen[1] if seen is not None and seen[0] == displayed else ZERO
        self._taken[key] = (displayed, taken + size)
        inst, bid, price = key
        twin = self.twin(inst)
        if twin is not None:  # the same liquidity seen from the other outcome
            tkey = (twin, not bid, ONE - price)
            tside = self.books[twin].bids if not bid else self.books[twin].asks
            tdisplayed = tside.get(ONE - price, ZERO)
            tseen = self._taken.get(tkey)
            ttaken = tseen[1] if tseen is not None and tseen[0] == tdisplayed else ZERO
            self._taken[tkey] = (tdisplayed, ttaken + size)

    # ------------------------------------------------------------------ orders

    def submit(self, request: OrderRequest) -> OrderAck:
        if request.client_order_id in self.records:
            return self.records[request.client_order_id].ack()  # a resend
        market = self.market_of(request.instrument)
        if market is None:
            raise OrderRejected(f"venue {self.venue_id}: unknown instrument "
                                f"{request.instrument!r}")
        price, size, tick = request.price, request.size, market.tick_size
        if price % tick or not tick <= price <= ONE - tick:
            raise OrderRejected(f"venue {self.venue_id}: price {price} breaks the tick {tick}")
        if size % market.size_step or size < market.min_size:
            raise OrderRejected(f"venue {self.venue_id}: size {size} is below the minimum "
                                f"{market.min_size} or off the step {market.size_step}")
        self._n += 1
        rec = OrderRecord(request.client_order_id, f"{self.venue_id}-{self._n}",
                          request.instrument, request.side, price, size, market.market_id)
        self.records[rec.client_order_id] = rec
        buy = request.side is Side.BUY
        book = self.books[request.instrument]
        opposite = book.asks if buy else book.bids
        crossing = sorted((p for p in opposite if (p <= price if buy else p >= price)),
                          reverse=not buy)
        plan: list[tuple[Key, Decimal, Decimal]] = []  # (key, displayed, size taken)
        left = size
        for p in crossing:
            if left <= ZERO:
                break
            key = (request.instrument, not buy, p)
            displayed = opposite[p]
            take = min(left, self._available(key, displayed))
            if take > ZERO:
                plan.append((key, displayed, take))
                left -= take
        if request.time_in_force is TIF.FOK and left > ZERO:
            rec.finish(OrderStatus.CANCELLED, "fok_not_filled")
            return rec.ack()
        for key, displayed, take in plan:
            self._take(key, displayed, take)
            self._fill(rec, take, key[2], taker=True)
        if rec.filled >= rec.size:
            return rec.ack()
        if request.time_in_force is TIF.GTC:
            own = book.bids if buy else book.asks
            self.resting.setdefault(rec.instrument, []).append(
                _Resting(rec, own.get(price, ZERO)))
        else:
            rec.finish(OrderStatus.CANCELLED, "fak_remainder_cancelled")
        return rec.ack()

    def _fill(self, rec: OrderRecord, size: Decimal, price: Decimal, *, taker: bool) -> None:
        fee = self.fee(rec.instrument, price, size) if taker else ZERO
        rec.observe(rec.filled + size, notional=rec.notional + size * price,
                    fees=rec.fees + fee, timestamp=self.clock())
        sign = 1 if rec.side is Side.BUY else -1
        self.positions[rec.instrument] = self.positions.get(rec.instrument, ZERO) + sign * size

    def cancel(self, client_order_id: str) -> OrderAck:
        rec = self.get(client_order_id)
        if rec.status is OrderStatus.OPEN:
            rec.finish(OrderStatus.CANCELLED, "cancelled")
            self._unrest(rec)
        return rec.ack()

    def get(self, client_order_id: str) -> OrderRecord:
        rec = self.records.get(client_order_id)
        if rec is None:
            raise UnknownOrder(f"venue {self.venue_id}: no order {client_order_id!r}")
        return rec

    def _unrest(self, rec: OrderRecord) -> None:
        queue = self.resting.get(rec.instrument, [])
        queue[:] = [r for r in queue if r.rec is not rec]
        if not queue:
            self.resting.pop(rec.instrument, None)

    # ------------------------------------------------------------------ book changes

    def on_book(self, instrument: str) -> list[OrderRecord]:
        """The displayed book of ``instrument`` changed: fill what it reached."""
        queue = self.resting.get(instrument)
        if not queue:
            return []
        book = self.books[instrument]
        now = self.clock()
        touched = []
        used: dict[tuple[bool, Decimal], Decimal] = {}  # (buy, price) -> our earlier share
        blocked: set[bool] = set()  # sides where an order ahead is still open
        for r in sorted(queue, key=_priority):
            rec = r.rec
            buy = rec.side is Side.BUY
            size_now = (book.bids if buy else book.asks).get(rec.price, ZERO)
            drop = max(r.level_size - size_now, ZERO)
            r.level_size = size_now
            queued = ZERO
            if drop:
                r.fresh(now)
                seen = min(drop, r.trades)  # already counted as a trade
                r.trades -= seen
                drop -= seen
                if drop:
                    r.drops += drop
                    r.credit_at = now
                share = used.get((buy, rec.price), ZERO)
                queued = r.reach(max(drop - share, ZERO))
                used[buy, rec.price] = share + queued
            through = self._through(instrument, rec, book.asks if buy else book.bids)
            fill = min(rec.size - rec.filled, max(queued, through))
            if buy in blocked:
                fill = through  # only what crossed, and ``_take`` already shared that
            if fill > ZERO:
                self._fill(rec, fill, rec.price, taker=False)
                touched.append(rec)
                if rec.filled >= rec.size:
                    self._unrest(rec)
            if rec.filled < rec.size:
                blocked.add(buy)
        return touched

    def _through(self, instrument: str, rec: OrderRecord,
                 opposite: Mapping[Decimal, Decimal]) -> Decimal:
        """Displayed opposite depth at or through our price (the market traded through us):
        taken, so it fills nothing else."""
        buy = rec.side is Side.BUY
        need = rec.size - rec.filled
        through = ZERO
        for p, s in list(opposite.items()):
            if through < need and (p <= rec.price if buy else p >= rec.price):
                key = (instrument, not buy, p)
                take = min(self._available(key, s), need - through)
                if take > ZERO:
                    self._take(key, s, take)
                    through += take
        return through

    def on_trade(self, instrument: str, maker_bid: bool, price: Decimal,
                 size: Decimal) -> list[OrderRecord]:
        """A recorded trade of ``size`` at ``price`` against resting ``instrument`` orders
        on the bid side (``maker_bid``: the taker sold) or the ask side: fill what it
        reached, in price-time priority."""
        queue = self.resting.get(instrument)
        if not queue:
            return []
        now = self.clock()
        touched = []
        left = size  # of the trade, not yet taken by our orders ahead
        blocked = False  # an order ahead of this one is still open
        for r in sorted(queue, key=_priority):
            rec = r.rec
            if (rec.side is Side.BUY) is not maker_bid:
                continue
            if rec.price == price:
                r.fresh(now)
                seen = min(size, r.drops)  # already counted as a level decrease
                r.drops -= seen
                if size > seen:
                    r.trades += size - seen
                    r.credit_at = now
                fill = r.reach(max(left - seen, ZERO))  # the queue moves even if blocked
            elif (rec.price > price) if maker_bid else (rec.price < price):
                fill = min(left, rec.size - rec.filled)  # swept past our better price
            else:
                break  # a worse price than the trade's: nothing from here on is reached
            if fill > ZERO and not blocked:
                self._fill(rec, fill, rec.price, taker=False)
                touched.append(rec)
                left -= fill
                if rec.filled >= rec.size:
                    self._unrest(rec)
            blocked = blocked or rec.filled < rec.size
        return touched
