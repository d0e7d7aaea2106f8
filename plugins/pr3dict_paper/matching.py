"""An in-process, price-time priority matching engine for binary-outcome instruments.

The ``paper`` venue and the HTTP exchange simulator both trade against this engine, so it is the
hot path of every paper run and benchmark. Each book side is a sorted list of price keys (kept
with ``bisect``) plus one FIFO deque per price level with a running total: matching touches only
the levels it crosses, and ``book()`` costs O(levels), not O(orders).

Money, prices and sizes are ``Decimal`` (prices in USDC per share, within [tick, 1 - tick]).
The engine is synchronous and not thread-safe: one asyncio loop owns it.

Rules a caller can rely on:

- ``submit`` is idempotent per (account, client_order_id): the same request resent returns the
  order's current ack; the same id with a different request raises ``DuplicateOrder``.
- Matching is best price first, then earliest order; the execution price is the resting price.
- An order never trades with its own account (self-trade prevention). The taker skips its own
  resting orders and may trade with others' deeper liquidity; a GTC remainder that would then
  rest across its own opposite orders is cancelled (reason ``self_trade_prevention``), so the
  book is never crossed. ``set_liquidity`` is the exception: a quoter's new quotes win, and its
  own opposite orders they would cross are cancelled instead.
- Every trade yields one ``Fill`` for each side with the same fill id; only the taker pays a fee.
- Complementary matching (Polymarket's MINT and MERGE), for instruments joined with ``pair``:
  a BUY of YES at p also trades with resting BUYs of NO at q >= 1 - p (the taker pays 1 - q,
  the maker q: one YES and one NO are minted for 1), and a SELL of YES at p with resting SELLs
  of NO at q <= 1 - p (merged back into 1). Best effective price first; at equal prices the
  direct book goes first. Unpaired instruments (the paper venue's) never match across books.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import islice

from attrs import frozen

from pr3dict_core.model import (
    ONE,
    ZERO,
    Fill,
    Level,
    OrderAck,
    OrderStatus,
    Side,
    TimeInForce,
    to_decimal,
)

FeeFunction = Callable[[str, Decimal, Decimal], Decimal]

# Reasons carried by acks; short and stable, since journals and tests match on them.
REASON_CANCELLED = "cancelled"
REASON_REPLACED = "replaced"
REASON_FOK = "fok_not_filled"
REASON_FAK = "fak_remainder_cancelled"
REASON_POST_ONLY = "post_only_would_cross"
REASON_SELF_TRADE = "self_trade_prevention"

QUOTE_PREFIX = "liq:"  # client ids of orders placed by set_liquidity


# --------------------------------------------------------------------------- errors


class MatchingError(Exception):
    """Base of every engine error: ``code`` is a short machine string, ``message`` is for people."""

    def __init__(self, code: str, message: str = "") -> None:
        self.code = code
        self.message = message or code
        super().__init__(f"{code}: {self.message}")


class InvalidOrder(MatchingError):
    """The request itself is wrong (tick, size, price range, instrument); nothing was recorded."""


class UnknownInstrument(InvalidOrder):
    """The instrument was never added with ``add_instrument``."""

    def __init__(self, instrument: str) -> None:
        super().__init__("unknown_instrument", f"unknown instrument {instrument!r}")


class DuplicateOrder(MatchingError):
    """A client order id was reused for a *different* request (a resend of the same one is fine)."""


class UnknownOrderError(MatchingError):
    """No order with that (account, client_order_id)."""

    def __init__(self, account: str, client_order_id: str) -> None:
        super().__init__("unknown_order", f"no order {client_order_id!r} for account {account!r}")


# --------------------------------------------------------------------------- public views


@frozen
class OrderInfo:
    """Everything the engine knows about one order (an exchange's 'get order' answer)."""

    account: str
    client_order_id: str
    venue_order_id: str
    instrument: str
    side: Side
    price: Decimal
    size: Decimal
    remaining: Decimal  # not yet filled; it rests only while status is OPEN
    time_in_force: TimeInForce
    post_only: bool
    status: OrderStatus
    reason: str
    timestamp: float

    @property
    def filled(self) -> Decimal:
        return self.size - self.remaining


@frozen
class Match:
    """One trade between a taker and one resting maker, as told to ``on_match``.

    ``maker_instrument`` differs from ``instrument`` for a complementary match; each side's
    price is the one it traded at (they sum to 1 then).
    """

    fill_id: str
    instrument: str
    taker_account: str
    taker_client_order_id: str
    taker_side: Side
    taker_price: Decimal
    taker_fee: Decimal
    maker_account: str
    maker_client_order_id: str
    maker_instrument: str
    maker_side: Side
    maker_price: Decimal
    size: Decimal
    timestamp: float


MatchCallback = Callable[[Match], None]


# --------------------------------------------------------------------------- internals


_NO_FILLS: tuple[Fill, ...] = ()  # a quote keeps no fills (its owner is untracked)


class _Order:
    """Mutable engine-side order; callers only ever see ``OrderAck``/``OrderInfo`` copies.

    Compact, because a market maker quoting 10,000 markets keeps ~120,000 of them resting:
    the venue order id is derived from ``seq``, a quote's client id too, and a quote keeps no
    fills (issue 15: these quotes were 93% of a 10,000-market run's allocations).
    """

    __slots__ = (
        "_cid",
        "account",
        "fills",
        "instrument",
        "post_only",
        "price",
        "quote",
        "reason",
        "remaining",
        "resting",
        "seq",
        "side",
        "size",
        "status",
        "tif",
        "timestamp",
    )

    def __init__(
        self,
        seq: int,
        account: str,
        client_order_id: str | None,
        instrument: str,
        side: Side,
        price: Decimal,
        size: Decimal,
        tif: TimeInForce,
        post_only: bool,
        timestamp: float,
    ) -> None:
        self.seq = seq  # engine-wide arrival order: time priority and open_orders() order
        self.account = account
        self._cid = client_order_id  # None for a quote: derived from seq
        self.instrument = instrument
        self.side = side
        self.price = price
        self.size = size
        self.remaining = size
        self.tif = tif
        self.post_only = post_only
        self.timestamp = timestamp
        self.status = OrderStatus.OPEN
        self.reason = ""
        self.quote = client_order_id is None  # placed by set_liquidity
        self.fills: list[Fill] | tuple[Fill, ...] = _NO_FILLS if self.quote else []
        self.resting = False  # in a book level right now

    @property
    def client_order_id(self) -> str:
        cid = self._cid
        return cid if cid is not None else f"{QUOTE_PREFIX}o-{self.seq}"

    @property
    def venue_order_id(self) -> str:
        return f"o-{self.seq}"

    def same_request(
        self, instrument: str, side: Side, price: Decimal, size: Decimal, tif: TimeInForce,
        post_only: bool,
    ) -> bool:
        return (self.instrument, self.side, self.price, self.size, self.tif, self.post_only) == (
            instrument, side, price, size, tif, post_only,
        )

    def ack(self) -> OrderAck:
        return OrderAck(
            client_order_id=self.client_order_id,
            status=self.status,
            fills=tuple(self.fills),
            venue_order_id=self.venue_order_id,
            reason=self.reason,
        )


class _Level(list):  # type: ignore[type-arg]
    """One price level: its orders in arrival order (the list itself: one object per level,
    not two, for the ~120,000 levels of a 10,000-market maker) and the total they rest.

    Removed orders stay in the list as dead entries (``resting`` False) until they reach the
    head or the list is compacted, so a cancel in the middle of a queue costs O(1).
    """

    __slots__ = ("dead", "live", "price", "total")

    def __init__(self, price: Decimal) -> None:
        super().__init__()
        self.price = price
        self.total = ZERO
        self.live = 0
        self.dead = 0


_NEGATED: dict[Decimal, Decimal] = {}  # price -> -price: the keys of bid levels


class _BookSide:
    """Levels keyed so that ascending key order is best-first: asks by price, bids by -price."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, side: Side) -> None:
        self.sign = 1 if side is Side.SELL else -1
        self.keys: list[Decimal] = []  # sorted ascending: keys[0] is the best level
        self.levels: dict[Decimal, _Level] = {}

    def key(self, price: Decimal) -> Decimal:
        if self.sign > 0:
            return price
        key = _NEGATED.get(price)
        if key is None:  # one shared Decimal per bid price, not one per order
            if len(_NEGATED) > 65_536:
                _NEGATED.clear()
            key = _NEGATED[price] = -price
        return key

    def crosses(self, limit_key: Decimal) -> bool:
        """True if the best level here trades with an incoming order whose limit maps to key."""
        return bool(self.keys) and self.keys[0] <= limit_key

    def add(self, order: _Order) -> None:
        key = self.key(order.price)
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = _Level(order.price)
            bisect.insort(self.keys, key)
        level.append(order)
        # A level's first order shares its size object (most quote levels hold one order).
        level.total = level.total + order.remaining if level.live else order.remaining
        level.live += 1
        order.resting = True

    def remove(self, order: _Order) -> _Level:
        """Take ``order`` out of its level's counts; the caller tidies the level afterwards."""
        level = self.levels[self.key(order.price)]
        level.total -= order.remaining
        level.live -= 1
        level.dead += 1
        order.resting = False
        return level

    def aggregate(self) -> tuple[Level, ...]:
        levels = self.levels
        return tuple(Level(lv.price, lv.total) for lv in (levels[key] for key in self.keys))

    def tidy(self, level: _Level) -> None:
        """Drop an empty level, or dead entries at the head (and compact if mostly dead)."""
        if not level.live:
            key = self.key(level.price)
            del self.keys[bisect.bisect_left(self.keys, key)]
            del self.levels[key]
            return
        head = 0
        while not level[head].resting:
            head += 1
        if head:
            del level[:head]
            level.dead -= head
        if level.dead > 32 and level.dead > level.live:
            level[:] = [o for o in level if o.resting]
            level.dead = 0


class _Book:
    __slots__ = ("asks", "bids", "cache", "cache_seq", "instrument", "min_size", "seq", "tick_size")

    def __init__(self, instrument: str, tick_size: Decimal, min_size: Decimal) -> None:
        self.instrument = instrument
        self.tick_size = tick_size
        self.min_size = min_size
        self.bids = _BookSide(Side.BUY)
        self.asks = _BookSide(Side.SELL)
        self.seq = 0
        self.cache: tuple[tuple[Level, ...], tuple[Level, ...]] = ((), ())
        self.cache_seq = 0

    def side(self, side: Side) -> _BookSide:
        return self.bids if side is Side.BUY else self.asks


# --------------------------------------------------------------------------- the engine


class MatchingEngine:
    """Order books for many instruments, with accounts' positions, cash and fills."""

    def __init__(self, fee: FeeFunction | None = None, *,
                 on_match: MatchCallback | None = None,
                 untracked: frozenset[str] = frozenset(),
                 max_final_orders: int = 100_000, max_fills: int = 100_000) -> None:
        """``fee(instrument, price, size)`` is the taker's fee in USDC for one fill (default 0);
        ``on_match`` is called with every ``Match`` as it happens (the exchange simulator
        turns them into trades and pushes them to both owners). Accounts in ``untracked``
        (a synthetic market maker) keep positions and cash but no fill history; at most
        ``max_final_orders`` finished orders and each account's last ``max_fills`` fills stay
        queryable, oldest forgotten first, so a long run's memory stays flat."""
        self._fee = fee
        self._untracked = untracked
        self.max_final_orders = max_final_orders
        self._final: deque[tuple[str, str]] = deque()
        self._on_match = on_match
        self._complement: dict[str, str] = {}
        self._books: dict[str, _Book] = {}
        self._orders: dict[tuple[str, str], _Order] = {}
        self._open: dict[str, dict[str, dict[int, _Order]]] = {}  # account -> instrument -> seq
        self._positions: dict[str, dict[str, Decimal]] = {}
        self._cash: dict[str, Decimal] = {}
        self.max_fills = max_fills
        self._fills: dict[str, deque[Fill]] = {}  # account -> its last max_fills fills
        self._fill_counts: dict[str, int] = {}  # account -> fills ever (``fills``' since)
        self._order_seq = 0
        self._fill_seq = 0
        self._changed: set[str] = set()  # instruments whose book changed (take_changed)

    # ----------------------------------------------------------------- instruments

    def add_instrument(self, instrument: str, *, tick_size: Decimal, min_size: Decimal) -> None:
        """Add an instrument, or change its tick/min size (venues do this near 0 and 1).

        New rules apply to new orders only; resting orders stay where they are.
        """
        tick_size, min_size = to_decimal(tick_size), to_decimal(min_size)
        if not (tick_size.is_finite() and ZERO < tick_size < ONE / 2):
            raise ValueError(f"tick_size must be in (0, 0.5), got {tick_size}")
        if not (min_size.is_finite() and min_size > ZERO):
            raise ValueError(f"min_size must be > 0, got {min_size}")
        book = self._books.get(instrument)
        if book is None:
            self._books[instrument] = _Book(instrument, tick_size, min_size)
        else:
            book.tick_size, book.min_size = tick_size, min_size

    def pair(self, yes: str, no: str) -> None:
        """Join two instruments that together pay 1 for complementary matching (see above)."""
        self._book(yes), self._book(no)
        if yes == no:
            raise ValueError("an instrument cannot be its own complement")
        self._complement[yes] = no
        self._complement[no] = yes

    def complement(self, instrument: str) -> str | None:
        return self._complement.get(instrument)

    # ----------------------------------------------------------------- orders

    def submit(
        self,
        account: str,
        client_order_id: str,
        instrument: str,
        side: Side,
        price: Decimal,
        size: Decimal,
        tif: TimeInForce,
        *,
        post_only: bool = False,
        timestamp: float = 0.0,
    ) -> OrderAck:
        """Match a new order and return its ack; see the module docstring for the rules."""
        side, tif = Side(side), TimeInForce(tif)
        price, size = to_decimal(price), to_decimal(size)
        existing = self._orders.get((account, client_order_id))
        if existing is not None:
            if not existing.same_request(instrument, side, price, size, tif, post_only):
                raise DuplicateOrder(
                    "duplicate_order",
                    f"client order id {client_order_id!r} already used for a different order",
                )
            return existing.ack()
        if not client_order_id or client_order_id.startswith(QUOTE_PREFIX):
            raise InvalidOrder(
                "invalid_client_order_id",
                f"client_order_id must be non-empty and not start with {QUOTE_PREFIX!r}",
            )
        book = self._book(instrument)
        self._validate(book, price, size)
        if post_only and tif is not TimeInForce.GTC:
            raise InvalidOrder("post_only_requires_gtc", f"post_only cannot be {tif}")

        order = self._new_order(account, client_order_id, instrument, side, price, size, tif,
                                post_only, timestamp)
        self._orders[(account, client_order_id)] = order
        opposite = book.side(side.opposite)
        limit_key = opposite.key(price)

        comp = self._complement_side(instrument, side)
        if post_only:
            if opposite.crosses(limit_key) or (
                    comp is not None and comp.crosses(limit_key - opposite.sign)):
                self._finish(order, OrderStatus.REJECTED, REASON_POST_ONLY)
            else:
                self._rest(book, order)
            return order.ack()

        if comp is None:
            plan, available = self._plan(opposite, account, limit_key, size)
        else:
            plan, available = self._plan_pair(opposite, comp, account, limit_key, size)
        if tif is TimeInForce.FOK and available < size:
            self._finish(order, OrderStatus.CANCELLED, REASON_FOK)
            return order.ack()
        if plan:
            self._execute(book, order, plan, charge_fee=True)
        if not order.remaining:
            self._finish(order, OrderStatus.FILLED, "")
        elif tif is not TimeInForce.GTC:
            self._finish(order, OrderStatus.CANCELLED, REASON_FAK)
        elif opposite.crosses(limit_key):  # only own orders are left across: never self-trade
            self._finish(order, OrderStatus.CANCELLED, REASON_SELF_TRADE)
        else:
            self._rest(book, order)
        return order.ack()

    def cancel(self, account: str, client_order_id: str) -> OrderAck:
        """Cancel what rests; fills are kept. A final order's ack comes back unchanged."""
        order = self._lookup(account, client_order_id)
        if order is None:
            raise UnknownOrderError(account, client_order_id)
        if order.resting:
            self._unrest(order, OrderStatus.CANCELLED, REASON_CANCELLED)
        return order.ack()

    def decrease(self, account: str, client_order_id: str, by: Decimal) -> OrderAck:
        """Rest ``by`` fewer of a resting order, keeping its place in the queue (venues'
        "decrease order"); down to nothing it is cancelled."""
        order = self._lookup(account, client_order_id)
        if order is None:
            raise UnknownOrderError(account, client_order_id)
        by = to_decimal(by)
        if not order.resting or by <= ZERO:
            return order.ack()
        if by >= order.remaining:
            self._unrest(order, OrderStatus.CANCELLED, REASON_CANCELLED)
            return order.ack()
        book = self._books[order.instrument]
        book.side(order.side).levels[book.side(order.side).key(order.price)].total -= by
        order.remaining -= by
        order.size -= by
        book.seq += 1
        self._changed.add(book.instrument)
        return order.ack()

    def queue_ahead(self, account: str, client_order_id: str) -> Decimal | None:
        """How much rests ahead of a resting order at its price (price-time priority);
        None when it does not rest."""
        order = self._lookup(account, client_order_id)
        if order is None:
            raise UnknownOrderError(account, client_order_id)
        if not order.resting:
            return None
        book_side = self._books[order.instrument].side(order.side)
        ahead = ZERO
        for other in book_side.levels[book_side.key(order.price)]:
            if other is order:
                return ahead
            if other.resting:
                ahead += other.remaining
        return ahead

    def cancel_all(self, account: str, instrument: str | None = None) -> list[OrderAck]:
        """Cancel every resting order of ``account`` (on one instrument if given), oldest first."""
        by_instrument = self._open.get(account, {})
        if instrument is not None:
            self._book(instrument)
            groups = [by_instrument.get(instrument, {})]
        else:
            groups = list(by_instrument.values())
        orders = sorted((o for group in groups for o in group.values()), key=lambda o: o.seq)
        acks = []
        for order in orders:
            self._unrest(order, OrderStatus.CANCELLED, REASON_CANCELLED)
            acks.append(order.ack())
        return acks

    def get(self, account: str, client_order_id: str) -> OrderAck:
        """The current ack of one order.

        Orders placed by ``set_liquidity`` are forgotten once final, so only live quotes are found.
        """
        order = self._lookup(account, client_order_id)
        if order is None:
            raise UnknownOrderError(account, client_order_id)
        return order.ack()

    def describe(self, account: str, client_order_id: str) -> OrderInfo:
        """Price, size, side, instrument and remaining size of one order (acks lack them)."""
        order = self._lookup(account, client_order_id)
        if order is None:
            raise UnknownOrderError(account, client_order_id)
        return OrderInfo(
            account=order.account,
            client_order_id=order.client_order_id,
            venue_order_id=order.venue_order_id,
            instrument=order.instrument,
            side=order.side,
            price=order.price,
            size=order.size,
            remaining=order.remaining,
            time_in_force=order.tif,
            post_only=order.post_only,
            status=order.status,
            reason=order.reason,
            timestamp=order.timestamp,
        )

    def open_orders(self, account: str) -> list[OrderAck]:
        """Acks of the account's resting orders, oldest first."""
        groups = self._open.get(account, {}).values()
        orders = sorted((o for group in groups for o in group.values()), key=lambda o: o.seq)
        return [o.ack() for o in orders]

    # ----------------------------------------------------------------- liquidity

    def set_liquidity(
        self,
        account: str,
        instrument: str,
        side: Side,
        levels: Sequence[tuple[Decimal, Decimal]],
        *,
        timestamp: float = 0.0,
    ) -> list[Fill]:
        """Replace all of ``account``'s resting orders on one side with GTC quotes at ``levels``.

        For a synthetic market maker moving its quotes. Levels of size 0 are skipped; all others
        are validated like ``submit`` before anything changes. A quote that crosses other
        accounts' orders trades with them (the quoter is the taker and pays no fee); the
        quoter's own opposite orders it would cross are cancelled. Returns the fills of the
        *other* accounts' orders, so a caller can tell their owners.
        """
        side = Side(side)
        book = self._book(instrument)
        quotes = []
        for price, size in levels:
            price, size = to_decimal(price), to_decimal(size)
            if size == ZERO:
                continue
            self._validate(book, price, size)
            quotes.append((price, size))

        for order in sorted(self._open.get(account, {}).get(instrument, {}).values(),
                            key=lambda o: o.seq):
            if order.side is side:
                self._unrest(order, OrderStatus.CANCELLED, REASON_REPLACED)

        opposite = book.side(side.opposite)
        others: list[Fill] = []
        for price, size in quotes:
            order = self._new_order(account, None, instrument, side, price, size,
                                    TimeInForce.GTC, False, timestamp)
            limit_key = opposite.key(price)
            comp = self._complement_side(instrument, side)
            if comp is None:
                plan, _ = self._plan(opposite, account, limit_key, size)
            else:
                plan, _ = self._plan_pair(opposite, comp, account, limit_key, size)
            if plan:
                others.extend(self._execute(book, order, plan, charge_fee=False))
            if not order.remaining:
                self._finish(order, OrderStatus.FILLED, "")
                continue
            if opposite.crosses(limit_key):
                self._cancel_crossed_own(opposite, limit_key)
            self._rest(book, order)  # found through _open, never in _orders (see _lookup)
        return others

    # ----------------------------------------------------------------- views

    def book(
        self, instrument: str, depth: int | None = None
    ) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """Aggregated (bids best-first, asks best-first); cached until the book changes."""
        book = self._book(instrument)
        if book.cache_seq != book.seq:
            book.cache = (book.bids.aggregate(), book.asks.aggregate())
            book.cache_seq = book.seq
        bids, asks = book.cache
        if depth is None:
            return bids, asks
        depth = max(depth, 0)
        return bids[:depth], asks[:depth]

    def positions(self, account: str) -> dict[str, Decimal]:
        """Shares held per instrument (negative when sold short)."""
        return dict(self._positions.get(account, {}))

    def cash(self, account: str) -> Decimal:
        """USDC in minus USDC out over every fill, fees included."""
        return self._cash.get(account, ZERO)

    def fills(self, account: str, since: int = 0) -> list[Fill]:
        """The account's kept fills in order (its last ``max_fills``); ``since`` indexes its
        whole history (for polling: pass the count already seen)."""
        kept = self._fills.get(account)
        if not kept:
            return []
        oldest = self._fill_counts[account] - len(kept)  # history index of kept[0]
        return list(islice(kept, max(since - oldest, 0), None))

    def take_changed(self) -> set[str]:
        """The instruments whose book changed since the last call: a venue over 20,000
        instruments publishes what changed without comparing every sequence."""
        changed, self._changed = self._changed, set()
        return changed

    def sequence(self, instrument: str) -> int:
        """Grows whenever the instrument's book changes; equal numbers mean an equal book."""
        return self._book(instrument).seq

    # ----------------------------------------------------------------- internals

    def _lookup(self, account: str, client_order_id: str) -> _Order | None:
        """An order by client id. Quotes are not kept in ``_orders`` (120,000 of them for a
        10,000-market maker): a live one is found among the account's open orders."""
        order = self._orders.get((account, client_order_id))
        if order is None and client_order_id.startswith(f"{QUOTE_PREFIX}o-"):
            seq = client_order_id[len(QUOTE_PREFIX) + 2:]
            if seq.isdigit():
                for group in self._open.get(account, {}).values():
                    order = group.get(int(seq))
                    if order is not None:
                        return order
        return order

    def _book(self, instrument: str) -> _Book:
        book = self._books.get(instrument)
        if book is None:
            raise UnknownInstrument(instrument)
        return book

    @staticmethod
    def _validate(book: _Book, price: Decimal, size: Decimal) -> None:
        tick = book.tick_size
        if not price.is_finite() or price < tick or price > ONE - tick:
            raise InvalidOrder(
                "price_out_of_range", f"price {price} outside [{tick}, {ONE - tick}]"
            )
        if price % tick:
            raise InvalidOrder("invalid_tick", f"price {price} is not a multiple of tick {tick}")
        if not size.is_finite() or size <= ZERO:
            raise InvalidOrder("invalid_size", f"size must be > 0, got {size}")
        if size < book.min_size:
            raise InvalidOrder("below_min_size", f"size {size} below minimum {book.min_size}")

    def _new_order(
        self, account: str, client_order_id: str | None, instrument: str, side: Side,
        price: Decimal, size: Decimal, tif: TimeInForce, post_only: bool, timestamp: float,
    ) -> _Order:
        self._order_seq += 1
        return _Order(self._order_seq, account, client_order_id, instrument, side, price, size,
                      tif, post_only, timestamp)

    @staticmethod
    def _plan(
        opposite: _BookSide, account: str, limit_key: Decimal, size: Decimal
    ) -> tuple[list[tuple[_Order, Decimal]], Decimal]:
        """Which resting orders a taker would hit, and how much: computed before any change, so
        FOK can refuse without undoing anything. Returns (plan, total size it fills)."""
        plan: list[tuple[_Order, Decimal]] = []
        remaining = size
        levels = opposite.levels
        for key in opposite.keys:
            if key > limit_key:
                break
            for maker in levels[key]:
                if not maker.resting or maker.account == account:
                    continue
                take = maker.remaining if maker.remaining < remaining else remaining
                plan.append((maker, take))
                remaining -= take
                if not remaining:
                    return plan, size
        return plan, size - remaining

    def _complement_side(self, instrument: str, side: Side) -> _BookSide | None:
        """The complement's side a taker on ``instrument`` trades with: its bids for a BUY
        (MINT), its asks for a SELL (MERGE); None for an unpaired instrument."""
        comp = self._complement.get(instrument)
        if comp is None:
            return None
        return self._books[comp].side(side)

    @staticmethod
    def _plan_pair(
        opposite: _BookSide, comp: _BookSide, account: str, limit_key: Decimal, size: Decimal
    ) -> tuple[list[tuple[_Order, Decimal]], Decimal]:
        """``_plan`` over the direct book and the complement's, merged by effective price.

        A complement level at key k sits at k + opposite.sign in the direct key space (a NO
        bid at q is a YES ask at 1 - q; a NO ask at q is a YES bid at 1 - q).
        """
        plan: list[tuple[_Order, Decimal]] = []
        remaining = size
        shift = opposite.sign
        dkeys, ckeys = opposite.keys, comp.keys
        i = j = 0
        while True:
            kd = dkeys[i] if i < len(dkeys) else None
            kc = ckeys[j] + shift if j < len(ckeys) else None
            if kd is not None and kd <= limit_key and (kc is None or kd <= kc):
                level = opposite.levels[kd]
                i += 1
            elif kc is not None and kc <= limit_key:
                level = comp.levels[ckeys[j]]
                j += 1
            else:
                break
            for maker in level:
                if not maker.resting or maker.account == account:
                    continue
                take = maker.remaining if maker.remaining < remaining else remaining
                plan.append((maker, take))
                remaining -= take
                if not remaining:
                    return plan, size
        return plan, size - remaining

    def _execute(
        self, book: _Book, taker: _Order, plan: list[tuple[_Order, Decimal]], *, charge_fee: bool
    ) -> list[Fill]:
        """Apply a plan: fills for both sides, positions, cash, book. Returns the makers' fills."""
        opposite = book.side(taker.side.opposite)
        instrument = book.instrument
        fee_fn = self._fee if charge_fee else None
        on_match = self._on_match
        maker_fills: list[Fill] = []
        touched: list[tuple[_BookSide, _Level]] = []
        other_books: list[_Book] = []
        for maker, size in plan:
            self._fill_seq += 1
            fill_id = f"{instrument}:{self._fill_seq}"
            if maker.instrument == instrument:
                side_book = opposite
                price = maker.price
            else:  # complementary: the maker's own book, prices summing to 1
                other = self._books[maker.instrument]
                if other not in other_books:
                    other_books.append(other)
                side_book = other.side(maker.side)
                price = ONE - maker.price
            fee = to_decimal(fee_fn(instrument, price, size)) if fee_fn is not None else ZERO
            taker_fill = Fill(fill_id, taker.client_order_id, price, size, fee, taker.timestamp)
            maker_fill = Fill(fill_id, maker.client_order_id, maker.price, size, ZERO,
                              taker.timestamp)
            if not taker.quote:
                taker.fills.append(taker_fill)  # type: ignore[union-attr]
            if not maker.quote:
                maker.fills.append(maker_fill)  # type: ignore[union-attr]
            maker_fills.append(maker_fill)
            self._settle(taker.account, instrument, taker.side, taker_fill)
            self._settle(maker.account, maker.instrument, maker.side, maker_fill)

            taker.remaining -= size
            maker.remaining -= size
            level = side_book.levels[side_book.key(maker.price)]
            level.total -= size
            if not maker.remaining:
                side_book.remove(maker)
                self._close(maker, OrderStatus.FILLED, "")
            if not touched or touched[-1][1] is not level:
                touched.append((side_book, level))
            if on_match is not None:
                on_match(Match(fill_id, instrument, taker.account, taker.client_order_id,
                               taker.side, price, fee, maker.account, maker.client_order_id,
                               maker.instrument, maker.side, maker.price, size,
                               taker.timestamp))
        for side_book, level in touched:
            side_book.tidy(level)
        book.seq += 1
        self._changed.add(instrument)
        for other in other_books:
            other.seq += 1
            self._changed.add(other.instrument)
        return maker_fills

    def _settle(self, account: str, instrument: str, side: Side, fill: Fill) -> None:
        notional = fill.price * fill.size
        positions = self._positions.setdefault(account, {})
        if side is Side.BUY:
            positions[instrument] = positions.get(instrument, ZERO) + fill.size
            self._cash[account] = self._cash.get(account, ZERO) - notional - fill.fee
        else:
            positions[instrument] = positions.get(instrument, ZERO) - fill.size
            self._cash[account] = self._cash.get(account, ZERO) + notional - fill.fee
        if account not in self._untracked:
            kept = self._fills.get(account)
            if kept is None:
                kept = self._fills[account] = deque(maxlen=self.max_fills)
            kept.append(fill)
            self._fill_counts[account] = self._fill_counts.get(account, 0) + 1

    def _rest(self, book: _Book, order: _Order) -> None:
        book.side(order.side).add(order)
        order.status = OrderStatus.OPEN
        self._open.setdefault(order.account, {}).setdefault(order.instrument, {})[
            order.seq
        ] = order
        book.seq += 1
        self._changed.add(book.instrument)

    def _unrest(self, order: _Order, status: OrderStatus, reason: str) -> None:
        """Take a resting order off the book for good (cancel, replace, self-trade)."""
        book = self._books[order.instrument]
        book_side = book.side(order.side)
        level = book_side.remove(order)
        book_side.tidy(level)
        self._close(order, status, reason)
        book.seq += 1
        self._changed.add(book.instrument)

    def _close(self, order: _Order, status: OrderStatus, reason: str) -> None:
        """Final state for an order that rested: drop it from the open index (and forget quotes,
        which nobody can resend, so a long-running market maker does not grow memory)."""
        del self._open[order.account][order.instrument][order.seq]
        self._finish(order, status, reason)

    def _finish(self, order: _Order, status: OrderStatus, reason: str) -> None:
        order.status = status
        order.reason = reason
        if order.quote:
            return
        final = self._final
        final.append((order.account, order.client_order_id))
        if len(final) > self.max_final_orders:
            key = final.popleft()
            old = self._orders.get(key)
            if old is not None and old.status is not OrderStatus.OPEN:
                del self._orders[key]

    def _cancel_crossed_own(self, opposite: _BookSide, limit_key: Decimal) -> None:
        """Cancel the (own, by then) opposite orders a new quote would cross."""
        crossed: list[_Order] = []
        for key in opposite.keys:
            if key > limit_key:
                break
            crossed.extend(o for o in opposite.levels[key] if o.resting)
        for order in crossed:
            self._unrest(order, OrderStatus.CANCELLED, REASON_SELF_TRADE)
