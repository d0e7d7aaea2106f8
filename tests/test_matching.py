"""The paper venue's matching engine: order types, priority, idempotency, self-trade prevention,
quotes, and a stateful property test of the book's invariants."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pr3dict_core.model import Fill, Level, OrderStatus, Side, TimeInForce
from pr3dict_paper.matching import (
    DuplicateOrder,
    InvalidOrder,
    MatchingEngine,
    MatchingError,
    UnknownInstrument,
    UnknownOrderError,
)

D = Decimal
BUY, SELL = Side.BUY, Side.SELL
GTC, FOK, FAK = TimeInForce.GTC, TimeInForce.FOK, TimeInForce.FAK


def make_engine(fee=None) -> MatchingEngine:
    engine = MatchingEngine(fee=fee)
    engine.add_instrument("X", tick_size=D("0.01"), min_size=D("1"))
    engine.add_instrument("Y", tick_size=D("0.001"), min_size=D("5"))
    return engine


@pytest.fixture
def engine() -> MatchingEngine:
    return make_engine()


def levels(*pairs: tuple[str, str]) -> tuple[Level, ...]:
    return tuple(Level(D(p), D(s)) for p, s in pairs)


# --------------------------------------------------------------------------- GTC and the book


def test_gtc_rests_and_book_aggregates_levels(engine: MatchingEngine) -> None:
    engine.submit("a", "1", "X", BUY, D("0.40"), D("10"), GTC)
    engine.submit("b", "1", "X", BUY, D("0.40"), D("5"), GTC)
    engine.submit("a", "2", "X", BUY, D("0.45"), D("1"), GTC)
    ack = engine.submit("c", "1", "X", SELL, D("0.60"), D("3"), GTC)
    engine.submit("c", "2", "X", SELL, D("0.55"), D("2.5"), GTC)

    assert ack.status is OrderStatus.OPEN and ack.fills == () and ack.venue_order_id
    bids, asks = engine.book("X")
    assert bids == levels(("0.45", "1"), ("0.40", "15"))
    assert asks == levels(("0.55", "2.5"), ("0.60", "3"))
    assert engine.book("X", depth=1) == (levels(("0.45", "1")), levels(("0.55", "2.5")))
    assert engine.book("X", depth=0) == ((), ())
    assert engine.book("Y") == ((), ())


def test_gtc_partial_fill_rests_remainder_at_its_limit(engine: MatchingEngine) -> None:
    engine.submit("a", "s", "X", SELL, D("0.50"), D("4"), GTC)
    ack = engine.submit("b", "b", "X", BUY, D("0.52"), D("10"), GTC)

    assert ack.status is OrderStatus.OPEN
    assert ack.filled == D("4")
    assert [(f.price, f.size) for f in ack.fills] == [(D("0.50"), D("4"))]
    assert engine.book("X") == (levels(("0.52", "6")), ())
    assert engine.get("a", "s").status is OrderStatus.FILLED
    assert engine.describe("b", "b").remaining == D("6")


def test_limit_price_is_respected(engine: MatchingEngine) -> None:
    engine.submit("a", "s", "X", SELL, D("0.51"), D("4"), GTC)
    ack = engine.submit("b", "b", "X", BUY, D("0.50"), D("4"), GTC)
    assert ack.status is OrderStatus.OPEN and not ack.fills
    assert engine.book("X") == (levels(("0.50", "4")), levels(("0.51", "4")))


def test_price_time_priority_and_resting_execution_price(engine: MatchingEngine) -> None:
    engine.submit("m1", "1", "X", SELL, D("0.52"), D("5"), GTC)
    engine.submit("m2", "1", "X", SELL, D("0.51"), D("5"), GTC)
    engine.submit("m3", "1", "X", SELL, D("0.51"), D("5"), GTC)
    engine.submit("m4", "1", "X", SELL, D("0.53"), D("5"), GTC)

    ack = engine.submit("t", "1", "X", BUY, D("0.52"), D("12"), FAK)

    assert ack.status is OrderStatus.FILLED
    assert [(f.price, f.size) for f in ack.fills] == [
        (D("0.51"), D("5")),
        (D("0.51"), D("5")),
        (D("0.52"), D("2")),
    ]
    maker_ids = [engine.fills(m)[0].fill_id if engine.fills(m) else None for m in
                 ("m2", "m3", "m1", "m4")]
    assert maker_ids == [f.fill_id for f in ack.fills] + [None]
    assert engine.book("X") == ((), levels(("0.52", "3"), ("0.53", "5")))


def test_time_priority_survives_cancels_in_the_middle_of_a_level(engine: MatchingEngine) -> None:
    for i in range(100):
        engine.submit(f"m{i}", "1", "X", SELL, D("0.50"), D("1"), GTC)
    for i in range(1, 99):
        engine.cancel(f"m{i}", "1")  # leaves m0 and m99; the deque is compacted lazily
    assert engine.book("X") == ((), levels(("0.50", "2")))
    engine.cancel("m0", "1")
    ack = engine.submit("t", "1", "X", BUY, D("0.50"), D("1"), FOK)
    assert ack.status is OrderStatus.FILLED
    assert engine.get("m99", "1").status is OrderStatus.FILLED
    assert engine.book("X") == ((), ())


# --------------------------------------------------------------------------- FOK and FAK


def test_fok_fills_entirely_across_levels(engine: MatchingEngine) -> None:
    engine.submit("a", "1", "X", SELL, D("0.50"), D("3"), GTC)
    engine.submit("b", "1", "X", SELL, D("0.51"), D("3"), GTC)
    ack = engine.submit("t", "1", "X", BUY, D("0.51"), D("5"), FOK)
    assert ack.status is OrderStatus.FILLED
    assert ack.filled == D("5")
    assert engine.book("X") == ((), levels(("0.51", "1")))


def test_fok_not_filled_changes_nothing(engine: MatchingEngine) -> None:
    engine.submit("a", "1", "X", SELL, D("0.50"), D("3"), GTC)
    engine.submit("b", "1", "X", SELL, D("0.52"), D("3"), GTC)  # beyond the limit
    seq, book = engine.sequence("X"), engine.book("X")

    ack = engine.submit("t", "1", "X", BUY, D("0.51"), D("4"), FOK)

    assert ack.status is OrderStatus.CANCELLED
    assert ack.reason == "fok_not_filled"
    assert ack.fills == ()
    assert engine.book("X") == book and engine.sequence("X") == seq
    assert engine.fills("a") == [] and engine.positions("t") == {}


def test_fok_does_not_count_own_liquidity(engine: MatchingEngine) -> None:
    engine.submit("t", "own", "X", SELL, D("0.50"), D("5"), GTC)
    engine.submit("a", "1", "X", SELL, D("0.50"), D("2"), GTC)
    ack = engine.submit("t", "1", "X", BUY, D("0.50"), D("3"), FOK)
    assert ack.status is OrderStatus.CANCELLED and ack.reason == "fok_not_filled"


def test_fak_fills_what_it_can_and_cancels_the_rest(engine: MatchingEngine) -> None:
    engine.submit("a", "1", "X", BUY, D("0.50"), D("3"), GTC)
    engine.submit("b", "1", "X", BUY, D("0.48"), D("3"), GTC)

    ack = engine.submit("t", "1", "X", SELL, D("0.49"), D("10"), FAK)

    assert ack.status is OrderStatus.CANCELLED
    assert ack.reason == "fak_remainder_cancelled"
    assert [(f.price, f.size) for f in ack.fills] == [(D("0.50"), D("3"))]
    assert engine.book("X") == (levels(("0.48", "3")), ())  # nothing of t rests
    assert engine.open_orders("t") == []


def test_fak_fully_filled_and_fak_with_nothing_to_hit(engine: MatchingEngine) -> None:
    engine.submit("a", "1", "X", BUY, D("0.50"), D("3"), GTC)
    assert engine.submit("t", "1", "X", SELL, D("0.50"), D("3"), FAK).status is OrderStatus.FILLED
    ack = engine.submit("t", "2", "X", SELL, D("0.50"), D("3"), FAK)
    assert ack.status is OrderStatus.CANCELLED and ack.fills == ()


# --------------------------------------------------------------------------- idempotency


def test_resubmitting_the_same_request_is_idempotent(engine: MatchingEngine) -> None:
    engine.submit("m", "1", "X", SELL, D("0.50"), D("2"), GTC)
    first = engine.submit("t", "c1", "X", BUY, D("0.50"), D("5"), GTC)
    seq, positions, cash = engine.sequence("X"), engine.positions("t"), engine.cash("t")

    again = engine.submit("t", "c1", "X", BUY, D("0.50"), D("5"), GTC)

    assert again == first
    assert engine.sequence("X") == seq
    assert engine.positions("t") == positions and engine.cash("t") == cash
    assert len(engine.fills("t")) == 1

    # The resend reports the order as it is now, e.g. after more fills as a maker.
    engine.submit("m", "2", "X", SELL, D("0.50"), D("1"), GTC)
    now = engine.submit("t", "c1", "X", BUY, D("0.50"), D("5"), GTC)
    assert now.filled == D("3") and now.venue_order_id == first.venue_order_id
    assert now == engine.get("t", "c1")
    # Equal Decimals are the same request.
    assert engine.submit("t", "c1", "X", BUY, D("0.5"), D("5.00"), GTC) == now


def test_reusing_an_id_for_another_request_is_a_duplicate(engine: MatchingEngine) -> None:
    engine.submit("t", "c1", "X", BUY, D("0.50"), D("5"), GTC)
    with pytest.raises(DuplicateOrder) as err:
        engine.submit("t", "c1", "X", BUY, D("0.51"), D("5"), GTC)
    assert err.value.code == "duplicate_order"
    # Another account may use the same id.
    assert engine.submit("u", "c1", "X", BUY, D("0.51"), D("5"), GTC).status is OrderStatus.OPEN


def test_final_orders_stay_idempotent(engine: MatchingEngine) -> None:
    fok = engine.submit("t", "f", "X", BUY, D("0.50"), D("5"), FOK)
    assert fok.status is OrderStatus.CANCELLED
    engine.submit("m", "1", "X", SELL, D("0.50"), D("5"), GTC)
    assert engine.submit("t", "f", "X", BUY, D("0.50"), D("5"), FOK) == fok  # not re-run


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("instrument", "price", "size", "code"),
    [
        ("X", "0.505", "1", "invalid_tick"),
        ("Y", "0.5005", "5", "invalid_tick"),
        ("X", "0", "1", "price_out_of_range"),
        ("X", "1", "1", "price_out_of_range"),
        ("X", "0.995", "1", "price_out_of_range"),
        ("X", "-0.5", "1", "price_out_of_range"),
        ("X", "NaN", "1", "price_out_of_range"),
        ("X", "0.50", "0", "invalid_size"),
        ("X", "0.50", "-1", "invalid_size"),
        ("X", "0.50", "Infinity", "invalid_size"),
        ("X", "0.50", "0.5", "below_min_size"),
        ("Y", "0.501", "4.99", "below_min_size"),
        ("Z", "0.50", "1", "unknown_instrument"),
    ],
)
def test_invalid_orders_raise_and_leave_no_trace(
    engine: MatchingEngine, instrument: str, price: str, size: str, code: str
) -> None:
    with pytest.raises(InvalidOrder) as err:
        engine.submit("a", "1", instrument, BUY, D(price), D(size), GTC)
    assert err.value.code == code
    assert isinstance(err.value, MatchingError) and err.value.message
    with pytest.raises(UnknownOrderError):
        engine.get("a", "1")


def test_edge_prices_are_valid(engine: MatchingEngine) -> None:
    assert engine.submit("a", "1", "X", BUY, D("0.01"), D("1"), GTC).status is OrderStatus.OPEN
    assert engine.submit("a", "2", "X", SELL, D("0.99"), D("1"), GTC).status is OrderStatus.OPEN
    assert engine.submit("a", "3", "Y", SELL, D("0.999"), D("5"), GTC).status is OrderStatus.OPEN


def test_floats_are_refused(engine: MatchingEngine) -> None:
    with pytest.raises(TypeError):
        engine.submit("a", "1", "X", BUY, 0.5, D("1"), GTC)  # type: ignore[arg-type]


def test_unknown_instrument_everywhere(engine: MatchingEngine) -> None:
    for call in (lambda: engine.book("Z"), lambda: engine.sequence("Z"),
                 lambda: engine.cancel_all("a", "Z"),
                 lambda: engine.set_liquidity("a", "Z", BUY, [])):
        with pytest.raises(UnknownInstrument) as err:
            call()
        assert err.value.code == "unknown_instrument"


def test_tick_size_change_applies_to_new_orders(engine: MatchingEngine) -> None:
    engine.submit("a", "1", "X", BUY, D("0.50"), D("1"), GTC)
    engine.add_instrument("X", tick_size=D("0.001"), min_size=D("1"))
    assert engine.submit("a", "2", "X", BUY, D("0.501"), D("1"), GTC).status is OrderStatus.OPEN
    assert engine.book("X")[0] == levels(("0.501", "1"), ("0.50", "1"))


# --------------------------------------------------------------------------- cancel


def test_cancel_keeps_fills_and_is_idempotent(engine: MatchingEngine) -> None:
    engine.submit("m", "1", "X", SELL, D("0.50"), D("2"), GTC)
    engine.submit("t", "1", "X", BUY, D("0.50"), D("5"), GTC)
    seq = engine.sequence("X")

    ack = engine.cancel("t", "1")

    assert ack.status is OrderStatus.CANCELLED and ack.reason == "cancelled"
    assert ack.filled == D("2")
    assert engine.book("X") == ((), ())
    assert engine.sequence("X") > seq
    assert engine.cancel("t", "1") == ack
    assert engine.open_orders("t") == []


def test_cancel_of_a_filled_order_returns_it_unchanged(engine: MatchingEngine) -> None:
    engine.submit("m", "1", "X", SELL, D("0.50"), D("2"), GTC)
    filled = engine.submit("t", "1", "X", BUY, D("0.50"), D("2"), GTC)
    assert filled.status is OrderStatus.FILLED
    assert engine.cancel("t", "1") == filled
    assert engine.cancel("m", "1").status is OrderStatus.FILLED


def test_cancel_unknown(engine: MatchingEngine) -> None:
    with pytest.raises(UnknownOrderError) as err:
        engine.cancel("t", "nope")
    assert err.value.code == "unknown_order"


def test_cancel_all(engine: MatchingEngine) -> None:
    engine.submit("a", "1", "X", BUY, D("0.40"), D("1"), GTC)
    engine.submit("a", "2", "Y", BUY, D("0.400"), D("5"), GTC)
    engine.submit("a", "3", "X", SELL, D("0.60"), D("1"), GTC)
    engine.submit("b", "1", "X", BUY, D("0.40"), D("1"), GTC)

    assert [a.client_order_id for a in engine.open_orders("a")] == ["1", "2", "3"]
    acks = engine.cancel_all("a", "X")
    assert [a.client_order_id for a in acks] == ["1", "3"]
    assert all(a.status is OrderStatus.CANCELLED for a in acks)
    assert [a.client_order_id for a in engine.open_orders("a")] == ["2"]
    assert [a.client_order_id for a in engine.cancel_all("a")] == ["2"]
    assert engine.cancel_all("a") == [] and engine.cancel_all("nobody") == []
    assert engine.book("X") == (levels(("0.40", "1")), ())


# --------------------------------------------------------------------------- self-trade, post-only


def test_self_trade_prevention_skips_own_orders(engine: MatchingEngine) -> None:
    engine.submit("a", "own", "X", SELL, D("0.50"), D("5"), GTC)
    engine.submit("b", "1", "X", SELL, D("0.52"), D("2"), GTC)

    ack = engine.submit("a", "buy", "X", BUY, D("0.55"), D("4"), GTC)

    # It traded with b behind its own ask, then would have rested across its own ask.
    assert [(f.price, f.size) for f in ack.fills] == [(D("0.52"), D("2"))]
    assert ack.status is OrderStatus.CANCELLED and ack.reason == "self_trade_prevention"
    assert engine.get("a", "own").status is OrderStatus.OPEN
    assert engine.get("a", "own").fills == ()
    assert engine.book("X") == ((), levels(("0.50", "5")))


def test_self_trade_prevention_rests_when_not_crossing_own(engine: MatchingEngine) -> None:
    engine.submit("a", "own", "X", SELL, D("0.56"), D("5"), GTC)
    ack = engine.submit("a", "buy", "X", BUY, D("0.55"), D("4"), GTC)
    assert ack.status is OrderStatus.OPEN


def test_post_only(engine: MatchingEngine) -> None:
    engine.submit("m", "1", "X", SELL, D("0.50"), D("5"), GTC)
    seq = engine.sequence("X")

    rejected = engine.submit("t", "1", "X", BUY, D("0.50"), D("1"), GTC, post_only=True)
    assert rejected.status is OrderStatus.REJECTED
    assert rejected.reason == "post_only_would_cross"
    assert engine.sequence("X") == seq and engine.fills("m") == []
    assert engine.submit("t", "1", "X", BUY, D("0.50"), D("1"), GTC, post_only=True) == rejected

    ok = engine.submit("t", "2", "X", BUY, D("0.49"), D("1"), GTC, post_only=True)
    assert ok.status is OrderStatus.OPEN
    # Crossing one's own order would cross the book too: rejected as well.
    own = engine.submit("m", "2", "X", BUY, D("0.50"), D("1"), GTC, post_only=True)
    assert own.status is OrderStatus.REJECTED
    with pytest.raises(InvalidOrder) as err:
        engine.submit("t", "3", "X", BUY, D("0.49"), D("1"), FAK, post_only=True)
    assert err.value.code == "post_only_requires_gtc"


# --------------------------------------------------------------------------- fills, fees, money


def test_fills_fees_positions_and_cash() -> None:
    engine = make_engine(fee=lambda instrument, price, size: D("0.01") * size)
    engine.submit("m", "m1", "X", SELL, D("0.40"), D("3"), GTC)
    engine.submit("m", "m2", "X", SELL, D("0.45"), D("3"), GTC)

    ack = engine.submit("t", "t1", "X", BUY, D("0.45"), D("5"), GTC, timestamp=12.5)

    assert ack.fills == (
        Fill("X:1", "t1", D("0.40"), D("3"), D("0.03"), 12.5),
        Fill("X:2", "t1", D("0.45"), D("2"), D("0.02"), 12.5),
    )
    assert engine.fills("m") == [
        Fill("X:1", "m1", D("0.40"), D("3"), D("0"), 12.5),
        Fill("X:2", "m2", D("0.45"), D("2"), D("0"), 12.5),
    ]
    assert engine.fills("m", since=1) == engine.fills("m")[1:]
    assert engine.fills("nobody") == []
    assert engine.positions("t") == {"X": D("5")}
    assert engine.positions("m") == {"X": D("-5")}
    assert engine.cash("t") == -(D("1.20") + D("0.90")) - D("0.05")
    assert engine.cash("m") == D("2.10")
    assert engine.cash("nobody") == 0

    # A seller taker pays the fee out of its proceeds; fill ids run engine-wide.
    engine.submit("b", "b1", "Y", BUY, D("0.300"), D("10"), GTC)
    sell = engine.submit("t", "t2", "Y", SELL, D("0.300"), D("10"), FOK)
    assert [f.fill_id for f in sell.fills] == ["Y:3"]
    assert engine.cash("t") == -(D("1.20") + D("0.90")) - D("0.05") + D("3") - D("0.10")
    assert engine.positions("t") == {"X": D("5"), "Y": D("-10")}


def test_history_is_bounded_so_a_long_run_stays_flat() -> None:
    """A soak trades for hours: fills and final orders are kept up to their caps, oldest
    forgotten first, while positions and cash still count every fill."""
    engine = MatchingEngine(max_final_orders=3, max_fills=3)
    engine.add_instrument("X", tick_size=D("0.01"), min_size=D("1"))
    for i in range(10):
        engine.submit("m", f"m{i}", "X", SELL, D("0.40"), D("1"), GTC)
        engine.submit("t", f"t{i}", "X", BUY, D("0.40"), D("1"), FOK)

    assert [f.client_order_id for f in engine.fills("t")] == ["t7", "t8", "t9"]
    assert [f.client_order_id for f in engine.fills("t", since=8)] == ["t8", "t9"]
    assert engine.fills("t", since=2) == engine.fills("t")  # older ones are gone
    assert engine.fills("t", since=10) == []
    assert engine.positions("t") == {"X": D("10")} and engine.cash("t") == D("-4.00")
    assert engine.get("t", "t9").status is OrderStatus.FILLED
    with pytest.raises(UnknownOrderError):
        engine.get("t", "t0")


# --------------------------------------------------------------------------- set_liquidity


def test_set_liquidity_replaces_one_side_only(engine: MatchingEngine) -> None:
    engine.set_liquidity("mm", "X", BUY, [(D("0.40"), D("10")), (D("0.39"), D("20"))])
    engine.set_liquidity("mm", "X", SELL, [(D("0.60"), D("10"))])
    engine.submit("a", "1", "X", SELL, D("0.60"), D("1"), GTC)

    fills = engine.set_liquidity("mm", "X", SELL, [(D("0.58"), D("5")), (D("0.59"), D("0"))])

    assert fills == []
    assert engine.book("X") == (
        levels(("0.40", "10"), ("0.39", "20")),
        levels(("0.58", "5"), ("0.60", "1")),
    )
    open_ids = [a.client_order_id for a in engine.open_orders("mm")]
    assert len(open_ids) == 3
    quote = engine.describe("mm", open_ids[-1])
    assert (quote.side, quote.price, quote.size) == (SELL, D("0.58"), D("5"))
    engine.set_liquidity("mm", "X", BUY, [])
    assert engine.book("X")[0] == ()


def test_set_liquidity_crossing_others_trades_at_their_price() -> None:
    engine = make_engine(fee=lambda instrument, price, size: D("0.01") * size)
    engine.submit("a", "1", "X", BUY, D("0.60"), D("5"), GTC)

    fills = engine.set_liquidity("mm", "X", SELL, [(D("0.58"), D("3")), (D("0.59"), D("10"))])

    assert [(f.client_order_id, f.price, f.size, f.fee) for f in fills] == [
        ("1", D("0.60"), D("3"), D("0")),
        ("1", D("0.60"), D("2"), D("0")),
    ]
    assert engine.get("a", "1").status is OrderStatus.FILLED
    assert all(f.fee == 0 for f in engine.fills("mm"))
    assert engine.cash("mm") == D("3.00")
    assert engine.positions("mm") == {"X": D("-5")}
    assert engine.book("X") == ((), levels(("0.59", "8")))


def test_set_liquidity_cancels_own_orders_it_would_cross(engine: MatchingEngine) -> None:
    engine.set_liquidity("mm", "X", SELL, [(D("0.51"), D("5")), (D("0.60"), D("5"))])
    engine.set_liquidity("mm", "X", BUY, [(D("0.55"), D("5"))])
    bids, asks = engine.book("X")
    assert bids == levels(("0.55", "5"))
    assert asks == levels(("0.60", "5"))
    assert engine.fills("mm") == []


def test_set_liquidity_validates_everything_first(engine: MatchingEngine) -> None:
    engine.set_liquidity("mm", "X", BUY, [(D("0.40"), D("10"))])
    book = engine.book("X")
    with pytest.raises(InvalidOrder):
        engine.set_liquidity("mm", "X", BUY, [(D("0.41"), D("1")), (D("0.415"), D("1"))])
    assert engine.book("X") == book


# --------------------------------------------------------------------------- sequence


def test_sequence_moves_with_the_book(engine: MatchingEngine) -> None:
    s0 = engine.sequence("X")
    engine.submit("a", "1", "X", BUY, D("0.40"), D("1"), GTC)
    s1 = engine.sequence("X")
    assert s1 > s0
    engine.book("X")
    engine.submit("a", "2", "X", BUY, D("0.40"), D("1"), FAK)  # nothing to hit
    assert engine.sequence("X") == s1
    engine.submit("b", "1", "X", SELL, D("0.40"), D("1"), FAK)
    s2 = engine.sequence("X")
    assert s2 > s1
    assert engine.sequence("Y") == 0


# --------------------------------------------------------------------------- properties

ACCOUNTS = ("a", "b", "c", "mm")
INSTRUMENTS = {"X": (D("0.01"), D("1")), "Y": (D("0.01"), D("2"))}
prices = st.integers(min_value=40, max_value=60).map(lambda n: D(n) / 100)
sizes = st.sampled_from([D("0.5"), D("1"), D("2"), D("3"), D("5"), D("7.5"), D("10")])
sides = st.sampled_from(list(Side))
tifs = st.sampled_from(list(TimeInForce))


def fee_fn(instrument: str, price: Decimal, size: Decimal) -> Decimal:
    return (D("0.02") * price * (1 - price) * size).quantize(D("0.000001"))


class EngineMachine(RuleBasedStateMachine):
    """Random submits, cancels and quote moves; the book's invariants hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = MatchingEngine(fee=fee_fn)
        for name, (tick, min_size) in INSTRUMENTS.items():
            self.engine.add_instrument(name, tick_size=tick, min_size=min_size)
        self.requests: dict[tuple[str, str], tuple] = {}
        self.next_id = 0
        self.last_seq = dict.fromkeys(INSTRUMENTS, 0)

    def snapshot(self) -> dict[str, object]:
        return {i: (self.engine.book(i), self.engine.sequence(i)) for i in INSTRUMENTS}

    def check_sequence(self, before: dict[str, object]) -> None:
        for i, (book, seq) in before.items():
            if self.engine.book(i) != book:
                assert self.engine.sequence(i) > seq

    @rule(
        account=st.sampled_from(ACCOUNTS[:3]),
        instrument=st.sampled_from(sorted(INSTRUMENTS)),
        side=sides,
        price=prices,
        size=sizes,
        tif=tifs,
        post_only=st.booleans(),
    )
    def submit(self, account, instrument, side, price, size, tif, post_only) -> None:
        post_only = post_only and tif is TimeInForce.GTC
        self.next_id += 1
        cid = str(self.next_id)
        before = self.snapshot()
        if size < INSTRUMENTS[instrument][1]:
            with pytest.raises(InvalidOrder):
                self.engine.submit(account, cid, instrument, side, price, size, tif,
                                   post_only=post_only)
            assert self.snapshot() == before
            return
        ack = self.engine.submit(account, cid, instrument, side, price, size, tif,
                                 post_only=post_only)
        self.requests[(account, cid)] = (instrument, side, price, size, tif, post_only)
        if tif is TimeInForce.FOK:
            assert (ack.status, ack.filled) in {
                (OrderStatus.FILLED, size),
                (OrderStatus.CANCELLED, D(0)),
            }
            if ack.status is OrderStatus.CANCELLED:
                assert self.snapshot() == before
        if ack.status is OrderStatus.REJECTED:
            assert self.snapshot() == before
        for f in ack.fills:
            assert f.price <= price if side is Side.BUY else f.price >= price
        self.check_sequence(before)

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def resubmit(self, data) -> None:
        key = data.draw(st.sampled_from(sorted(self.requests)))
        instrument, side, price, size, tif, post_only = self.requests[key]
        before, ack = self.snapshot(), self.engine.get(*key)
        again = self.engine.submit(*key, instrument, side, price, size, tif, post_only=post_only)
        assert again == ack
        assert self.snapshot() == before

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        key = data.draw(st.sampled_from(sorted(self.requests)))
        before_ack, before = self.engine.get(*key), self.snapshot()
        ack = self.engine.cancel(*key)
        assert ack.status is not OrderStatus.OPEN
        assert ack.fills == before_ack.fills
        if before_ack.status is not OrderStatus.OPEN:
            assert ack == before_ack
        self.check_sequence(before)

    @rule(account=st.sampled_from(ACCOUNTS),
          instrument=st.none() | st.sampled_from(sorted(INSTRUMENTS)))
    def cancel_all(self, account, instrument) -> None:
        before = self.snapshot()
        self.engine.cancel_all(account, instrument)
        assert all(
            instrument is not None and self.engine.describe(account, a.client_order_id).instrument
            != instrument
            for a in self.engine.open_orders(account)
        )
        self.check_sequence(before)

    @rule(
        account=st.sampled_from(("mm", "mm", "a")),
        instrument=st.sampled_from(sorted(INSTRUMENTS)),
        side=sides,
        quotes=st.lists(st.tuples(prices, sizes.filter(lambda s: s >= 2)), max_size=4),
    )
    def set_liquidity(self, account, instrument, side, quotes) -> None:
        before = self.snapshot()
        fills = self.engine.set_liquidity(account, instrument, side, quotes)
        assert all(f.fee == 0 for f in fills)
        mine = [
            self.engine.describe(account, a.client_order_id)
            for a in self.engine.open_orders(account)
        ]
        assert all(
            o.price in {p for p, _ in quotes}
            for o in mine
            if o.instrument == instrument and o.side is side
        )
        self.check_sequence(before)

    # ----------------------------------------------------------------- invariants

    @invariant()
    def book_is_sorted_and_never_crossed(self) -> None:
        for i in INSTRUMENTS:
            bids, asks = self.engine.book(i)
            assert all(a.price > b.price for a, b in itertools.pairwise(bids))
            assert all(a.price < b.price for a, b in itertools.pairwise(asks))
            assert all(lv.size > 0 for lv in (*bids, *asks))
            if bids and asks:
                assert bids[0].price < asks[0].price

    @invariant()
    def book_totals_match_resting_orders(self) -> None:
        totals: dict[tuple[str, Side, Decimal], Decimal] = {}
        for account in ACCOUNTS:
            for ack in self.engine.open_orders(account):
                assert ack.status is OrderStatus.OPEN
                o = self.engine.describe(account, ack.client_order_id)
                assert 0 < o.remaining <= o.size
                key = (o.instrument, o.side, o.price)
                totals[key] = totals.get(key, D(0)) + o.remaining
        for i in INSTRUMENTS:
            bids, asks = self.engine.book(i)
            book = {(i, Side.BUY, lv.price): lv.size for lv in bids}
            book |= {(i, Side.SELL, lv.price): lv.size for lv in asks}
            assert book == {k: v for k, v in totals.items() if k[0] == i}

    @invariant()
    def orders_never_overfill(self) -> None:
        for key, (_, _, _, size, tif, _) in self.requests.items():
            ack, info = self.engine.get(*key), self.engine.describe(*key)
            assert 0 <= ack.filled <= size
            assert ack.filled == info.filled
            if ack.status is OrderStatus.FILLED:
                assert ack.filled == size
            if tif is TimeInForce.FOK:
                assert ack.filled in {D(0), size}

    @invariant()
    def money_and_shares_are_conserved(self) -> None:
        for i in INSTRUMENTS:
            assert sum((self.engine.positions(a).get(i, D(0)) for a in ACCOUNTS), D(0)) == 0
        fees = sum((f.fee for a in ACCOUNTS for f in self.engine.fills(a)), D(0))
        assert sum((self.engine.cash(a) for a in ACCOUNTS), D(0)) + fees == 0

    @invariant()
    def every_trade_has_two_sides(self) -> None:
        by_id: dict[str, list[tuple[str, Fill]]] = {}
        for a in ACCOUNTS:
            for f in self.engine.fills(a):
                by_id.setdefault(f.fill_id, []).append((a, f))
        for pair in by_id.values():
            assert len(pair) == 2
            (a1, f1), (a2, f2) = pair
            assert a1 != a2
            assert (f1.price, f1.size) == (f2.price, f2.size)
            assert f1.fee == 0 or f2.fee == 0

    @invariant()
    def sequence_never_goes_back(self) -> None:
        for i in INSTRUMENTS:
            seq = self.engine.sequence(i)
            assert seq >= self.last_seq[i]
            self.last_seq[i] = seq


EngineMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMachine = EngineMachine.TestCase


def test_decrease_keeps_queue_priority_and_cancels_at_zero(engine):
    engine.submit("a", "a1", "X", BUY, D("0.40"), D("10"), GTC)
    engine.submit("b", "b1", "X", BUY, D("0.40"), D("10"), GTC)
    engine.decrease("a", "a1", D("4"))
    assert engine.book("X")[0] == (Level(D("0.40"), D("16")),)
    engine.submit("c", "c1", "X", SELL, D("0.40"), D("6"), FAK)
    assert engine.get("a", "a1").filled == D("6")  # still first in the queue
    assert engine.get("a", "a1").status is OrderStatus.FILLED
    assert engine.get("b", "b1").filled == D("0")
    engine.decrease("b", "b1", D("10"))
    assert engine.get("b", "b1").status is OrderStatus.CANCELLED
    assert engine.book("X")[0] == ()
    with pytest.raises(UnknownOrderError):
        engine.decrease("b", "nope", D("1"))


def test_queue_ahead_counts_what_rests_before_an_order_at_its_price(engine):
    engine.submit("a", "a1", "X", BUY, D("0.40"), D("10"), GTC)
    engine.submit("b", "b1", "X", BUY, D("0.40"), D("7"), GTC)
    engine.submit("c", "c1", "X", BUY, D("0.40"), D("5"), GTC)
    engine.submit("d", "d1", "X", BUY, D("0.41"), D("5"), GTC)  # better price: not a queue
    assert engine.queue_ahead("a", "a1") == 0
    assert engine.queue_ahead("c", "c1") == D("17")
    engine.cancel("b", "b1")
    engine.submit("e", "e1", "X", SELL, D("0.40"), D("8"), FAK)  # 5 at 0.41, 3 from a1
    assert engine.queue_ahead("c", "c1") == D("7")
    assert engine.queue_ahead("b", "b1") is None
