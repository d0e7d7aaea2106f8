"""LocalBook (the books every connector, recording and replay build) against a plain
model: whatever the snapshots, level changes, deltas and trims, its ``Book`` shows exactly
the model's levels, best first."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pr3dict_venuekit.books import LocalBook

prices = st.integers(1, 99).map(lambda c: D(c) / 100)
sizes = st.integers(0, 50).map(D)
levels = st.lists(st.tuples(prices, sizes), max_size=6)
ops = st.one_of(
    st.tuples(st.just("snapshot"), levels, levels),
    st.tuples(st.just("set"), st.booleans(), prices, sizes),
    st.tuples(st.just("add"), st.booleans(), prices, st.integers(-30, 30).map(D)),
    st.tuples(st.just("trim"), st.none() | prices, st.none() | prices),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ops, max_size=30))
def test_the_book_shows_exactly_the_levels_of_the_model(operations):
    book = LocalBook("v", "i")
    model: dict[bool, dict[D, D]] = {True: {}, False: {}}
    for op in operations:
        if op[0] == "snapshot":
            book.snapshot(op[1], op[2])
            model = {True: {p: s for p, s in op[1] if s > 0},
                     False: {p: s for p, s in op[2] if s > 0}}
        elif op[0] in ("set", "add"):
            _, bid, price, size = op
            if op[0] == "add":
                book.add_level(bid, price, size)
                size = model[bid].get(price, D(0)) + size
            else:
                book.set_level(bid, price, size)
            if size > 0:
                model[bid][price] = size
            else:
                model[bid].pop(price, None)
        else:
            _, best_bid, best_ask = op
            gone = book.trim(best_bid, best_ask)
            stale = ([p for p in model[True] if best_bid is not None and p > best_bid],
                     [p for p in model[False] if best_ask is not None and p < best_ask])
            assert gone == bool(stale[0] or stale[1])
            for side, drop in zip((True, False), stale, strict=True):
                for p in drop:
                    del model[side][p]
        shown = book.book()
        assert [(lv.price, lv.size) for lv in shown.bids] == sorted(model[True].items(),
                                                                    reverse=True)
        assert [(lv.price, lv.size) for lv in shown.asks] == sorted(model[False].items())
        assert (book.bids, book.asks) == (model[True], model[False])


def test_a_trimmed_level_leaves_the_shown_book_at_once():
    book = LocalBook("v", "i")
    book.snapshot([(D("0.40"), D("5")), (D("0.45"), D("5"))], [(D("0.50"), D("5"))])
    assert book.book().best_bid.price == D("0.45")
    assert book.trim(D("0.40"), D("0.50"))
    assert [lv.price for lv in book.book().bids] == [D("0.40")]


def test_a_price_outside_zero_one_is_refused_before_the_book_changes():
    book = LocalBook("v", "i")
    book.set_level(True, D("0.40"), D("5"))
    with pytest.raises(ValueError):
        book.set_level(True, D("1.40"), D("5"))
    assert book.bids == {D("0.40"): D("5")} and len(book.book().bids) == 1


def test_a_side_that_did_not_change_keeps_its_tuple():
    book = LocalBook("v", "i")
    book.snapshot([(D("0.40"), D("5"))], [(D("0.50"), D("5"))])
    before = book.book()
    book.set_level(True, D("0.41"), D("3"))
    after = book.book()
    assert after.asks is before.asks and after.bids is not before.bids
