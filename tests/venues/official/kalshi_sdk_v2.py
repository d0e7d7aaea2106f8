"""Drive ``pr3dict sim`` with Kalshi's newest official SDK (kalshi_python_sync 3.34),
unmodified: V2 event orders (``/portfolio/events/orders``), fixed-point strings.

Usage: python kalshi_sdk_v2.py API_URL KEY_ID PRIVATE_KEY_PEM_FILE TICKER
"""

from __future__ import annotations

import sys
import uuid

from common import Run, main
from kalshi_python_sync import Configuration, KalshiClient

URL, KEY_ID, PEM, TICKER = sys.argv[1:5]


def body(run: Run) -> None:
    import kalshi_python_sync

    v = run.values
    v["sdk"] = kalshi_python_sync.__version__
    config = Configuration(host=URL)
    config.api_key_id = KEY_ID
    with open(PEM) as f:
        config.private_key_pem = f.read()
    client = KalshiClient(config)
    status = run.call("get_exchange_status", client.get_exchange_status)
    v["trading_active"] = status.trading_active if status else None
    markets = run.call("get_markets", lambda: client.get_markets(limit=100))
    v["tickers"] = [m.ticker for m in markets.markets] if markets else []
    market = run.call("get_market", lambda: client.get_market(TICKER))
    if market:
        v["market"] = {"yes_bid_dollars": market.market.yes_bid_dollars,
                       "yes_ask_dollars": market.market.yes_ask_dollars,
                       "yes_ask_size_fp": market.market.yes_ask_size_fp}
    book = run.call("get_market_orderbook", lambda: client.get_market_orderbook(TICKER))
    if book:
        v["book"] = {"yes": book.orderbook_fp.yes_dollars, "no": book.orderbook_fp.no_dollars}
    books = run.call("get_market_orderbooks", lambda: client.get_market_orderbooks(
        tickers=[TICKER]))
    v["books"] = [b.ticker for b in books.orderbooks] if books else None
    bal = run.call("get_balance", client.get_balance)
    v["balance_start"] = bal.balance_dollars if bal else None

    def order(**kw):
        kw.setdefault("client_order_id", str(uuid.uuid4()))
        kw.setdefault("self_trade_prevention_type", "taker_at_cross")
        return client.create_order_v2(ticker=TICKER, **kw)

    rest = run.call("create_order_v2 GTC bid", lambda: order(
        side="bid", count="3.00", price="0.3000", time_in_force="good_till_canceled"))
    v["rest"] = rest.remaining_count if rest else None
    take = run.call("create_order_v2 IOC bid", lambda: order(
        side="bid", count="4.00", price="0.4200", time_in_force="immediate_or_cancel"))
    if take:
        v["take"] = {"fill_count": take.fill_count, "average_fill_price": take.average_fill_price,
                     "average_fee_paid": take.average_fee_paid}
    fok = run.call("create_order_v2 FOK ask", lambda: order(
        side="ask", count="2.00", price="0.3800", time_in_force="fill_or_kill"))
    v["fok"] = fok.fill_count if fok else None
    post = run.call("create_order_v2 post_only", lambda: order(
        side="ask", count="1.00", price="0.6000", time_in_force="good_till_canceled",
        post_only=True))
    v["post_only"] = post.remaining_count if post else None
    batch = run.call("batch_create_orders_v2", lambda: client.batch_create_orders_v2(orders=[
        {"ticker": TICKER, "side": "bid", "count": "1.00", "price": "0.2000",
         "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross",
         "client_order_id": str(uuid.uuid4())},
        {"ticker": TICKER, "side": "ask", "count": "1.00", "price": "0.8000",
         "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross",
         "client_order_id": str(uuid.uuid4())}]))
    batch_ids = [o.order_id for o in batch.orders if o.order_id] if batch else []
    v["batch_ids"] = batch_ids
    if rest:
        dec = run.call("decrease_order_v2", lambda: client.decrease_order_v2(
            rest.order_id, reduce_to="2.00"))
        v["decreased"] = dec.remaining_count if dec else None
        amended = run.call("amend_order_v2", lambda: client.amend_order_v2(
            rest.order_id, ticker=TICKER, side="bid", price="0.3100", count="2.00"))
        v["amended"] = amended.remaining_count if amended else None
        got = run.call("get_order", lambda: client.get_order(rest.order_id))
        v["amended_price"] = got.order.yes_price_dollars if got else None
        v["get_order"] = got.order.status if got else None
    if rest:
        queue = run.call("get_order_queue_position", lambda: client.get_order_queue_position(
            rest.order_id))
        v["queue"] = queue.queue_position_fp if queue else None
    queues = run.call("get_order_queue_positions", lambda: client.get_order_queue_positions(
        market_tickers=TICKER))
    v["queues"] = len(queues.queue_positions) if queues else None
    orders = run.call("get_orders", lambda: client.get_orders(ticker=TICKER, status="resting"))
    v["resting"] = len(orders.orders) if orders else None
    fills = run.call("get_fills", lambda: client.get_fills(ticker=TICKER))
    if fills:
        v["fills"] = [{"count_fp": f.count_fp, "yes_price_dollars": f.yes_price_dollars,
                       "book_side": f.book_side, "outcome_side": f.outcome_side,
                       "fee_cost": f.fee_cost, "is_taker": f.is_taker} for f in fills.fills]
    positions = run.call("get_positions", lambda: client.get_positions(ticker=TICKER))
    if positions:
        v["positions"] = [{"ticker": p.ticker, "position_fp": p.position_fp,
                           "fees_paid_dollars": p.fees_paid_dollars}
                          for p in positions.market_positions]
    trades = run.call("get_trades", lambda: client.get_trades(ticker=TICKER))
    v["public_trades"] = len(trades.trades) if trades else None
    run.call("get_settlements", client.get_settlements)
    run.call("get_portfolio_resting_order_total_value",
             client.get_portfolio_resting_order_total_value)
    run.call("get_user_data_timestamp", client.get_user_data_timestamp)
    bal = run.call("get_balance after", client.get_balance)
    v["balance_end"] = bal.balance_dollars if bal else None
    if rest:
        cancel = run.call("cancel_order_v2", lambda: client.cancel_order_v2(rest.order_id))
        v["cancel"] = cancel.reduced_by if cancel else None
    if batch_ids:
        out = run.call("batch_cancel_orders_v2", lambda: client.batch_cancel_orders_v2(
            orders=[{"order_id": i} for i in batch_ids]))
        v["batch_cancel"] = [o.reduced_by for o in out.orders] if out else None
    run.call("cancel_all_orders", client.cancel_all_orders)
    orders = client.get_orders(ticker=TICKER, status="resting")
    v["resting_after_cancels"] = len(orders.orders)


main(body)
