"""Complementary matching in the paper engine (used by the simulated Polymarket)."""

from __future__ import annotations

from decimal import Decimal

from pr3dict_core.model import OrderStatus, Side, TimeInForce
from pr3dict_paper.matching import MatchingEngine

D = Decimal


def engine(paired=True):
    matches = []
    e = MatchingEngine(on_match=matches.append)
    for inst in ("y", "n"):
        e.add_instrument(inst, tick_size=D("0.01"), min_size=D(1))
    if paired:
        e.pair("y", "n")
    return e, matches


def test_mint_a_yes_buy_with_a_no_bid_best_price_first():
    e, matches = engine()
    e.submit("a", "nb", "n", Side.BUY, D("0.55"), D(5), TimeInForce.GTC)  # YES ask at 0.45
    e.submit("b", "ya", "y", Side.SELL, D("0.47"), D(5), TimeInForce.GTC)
    ack = e.submit("c", "t", "y", Side.BUY, D("0.50"), D(8), TimeInForce.FAK)
    assert [(f.price, f.size) for f in ack.fills] == [(D("0.45"), D(5)), (D("0.47"), D(3))]
    assert e.positions("a") == {"n": D(5)} and e.positions("c") == {"y": D(8)}
    assert e.cash("a") + e.cash("c") + e.cash("b") == -D(5)  # 5 pairs minted for $1 each
    assert matches[0].maker_instrument == "n" and matches[0].maker_price == D("0.55")
    assert e.book("n")[0] == ()  # the NO bid is gone


def test_merge_a_yes_sell_with_a_no_ask_and_fok_counts_both_books():
    e, _ = engine()
    e.submit("mm", "y-bid", "y", Side.BUY, D("0.40"), D(3), TimeInForce.GTC)
    e.submit("mm", "n-ask", "n", Side.SELL, D("0.55"), D(4), TimeInForce.GTC)  # YES bid 0.45
    ack = e.submit("u", "s", "y", Side.SELL, D("0.40"), D(7), TimeInForce.FOK)
    assert ack.status is OrderStatus.FILLED
    assert [(f.price, f.size) for f in ack.fills] == [(D("0.45"), D(4)), (D("0.40"), D(3))]


def test_post_only_is_rejected_when_it_crosses_the_complement():
    e, _ = engine()
    e.submit("a", "nb", "n", Side.BUY, D("0.55"), D(5), TimeInForce.GTC)
    ack = e.submit("b", "p", "y", Side.BUY, D("0.46"), D(5), TimeInForce.GTC, post_only=True)
    assert ack.status is OrderStatus.REJECTED


def test_no_self_trade_across_books_and_unpaired_books_never_cross():
    e, _ = engine()
    e.submit("a", "nb", "n", Side.BUY, D("0.55"), D(5), TimeInForce.GTC)
    ack = e.submit("a", "yb", "y", Side.BUY, D("0.50"), D(5), TimeInForce.FAK)
    assert not ack.fills
    u, _ = engine(paired=False)
    u.submit("a", "nb", "n", Side.BUY, D("0.55"), D(5), TimeInForce.GTC)
    assert not u.submit("b", "yb", "y", Side.BUY, D("0.50"), D(5), TimeInForce.FAK).fills
