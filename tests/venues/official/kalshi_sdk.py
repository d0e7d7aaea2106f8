"""Drive ``pr3dict sim`` with Kalshi's official Python SDK (kalshi_python_sync), unmodified.

Usage: python kalshi_sdk.py API_URL KEY_ID PRIVATE_KEY_PEM_FILE TICKER
"""

from __future__ import annotations

import sys
import uuid

from common import Run, main
from kalshi_python_sync import Configuration, KalshiClient

URL, KEY_ID, PEM, TICKER = sys.argv[1:5]


def body(run: Run) -> None:
    v = run.values
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
                       "yes_ask_dollars": market.market.yes_ask_dollars}
    book = run.call("get_market_orderbook", lambda: client.get_market_orderbook(TICKER))
    if book:
        v["book"] = {"yes": book.orderbook.yes_dollars, "no": book.orderbook.no_dollars}
    bal = run.call("get_balance", client.get_balance)
    v["balance_start"] = bal.balance if bal else None

    def order(**kw):
        kw.setdefault("client_order_id", str(uuid.uuid4()))
        return client.create_order(ticker=TICKER, **kw)

    # a resting limit order (YES bid below the ask), then one that takes the ask (IOC)
    rest = run.call("create_order limit", lambda: order(side="yes", action="buy", count=3,
                                                        type="limit", yes_price=30))
    v["rest"] = rest.order.status if rest else None
    take = run.call("create_order IOC", lambda: order(
        side="yes", action="buy", count=4, type="limit", yes_price_dollars="0.4200",
        time_in_force="immediate_or_cancel"))
    if take:
        v["take"] = {"status": take.order.status, "fill_count": take.order.fill_count,
                     "taker_fill_cost": take.order.taker_fill_cost,
                     "taker_fees": take.order.taker_fees}
    fok = run.call("create_order FOK NO", lambda: order(
        side="no", action="buy", count=2, type="limit", no_price=62,
        time_in_force="fill_or_kill"))
    v["fok"] = fok.order.status if fok else None
    v["market_order"] = run.call("create_order market", lambda: order(
        side="yes", action="buy", count=1, type="market", buy_max_cost=50)).order.status
    sell = run.call("create_order sell", lambda: order(
        side="yes", action="sell", count=1, type="limit", yes_price=38,
        time_in_force="immediate_or_cancel"))
    v["sell"] = sell.order.status if sell else None
    batch = run.call("batch_create_orders", lambda: client.batch_create_orders(orders=[
        {"ticker": TICKER, "side": "yes", "action": "buy", "count": 1, "type": "limit",
         "yes_price": 20, "client_order_id": str(uuid.uuid4())},
        {"ticker": TICKER, "side": "no", "action": "buy", "count": 1, "type": "limit",
         "no_price": 20, "client_order_id": str(uuid.uuid4())}]))
    batch_ids = [o.order.order_id for o in batch.orders if o.order] if batch else []
    v["batch_ids"] = batch_ids
    if rest:
        dec = run.call("decrease_order", lambda: client.decrease_order(rest.order.order_id,
                                                                       reduce_by=1))
        v["decreased"] = dec.order.remaining_count if dec else None
        amended = run.call("amend_order", lambda: client.amend_order(
            rest.order.order_id, ticker=TICKER, side="yes", action="buy",
            client_order_id=rest.order.client_order_id,
            updated_client_order_id=str(uuid.uuid4()), yes_price=31, count=2))
        if amended:
            v["amended"] = {"old": amended.old_order.yes_price, "new": amended.order.yes_price,
                            "remaining": amended.order.remaining_count}
        got = run.call("get_order", lambda: client.get_order(rest.order.order_id))
        v["get_order"] = got.order.status if got else None
    if rest:
        queue = run.call("get_order_queue_position", lambda: client.get_order_queue_position(
            rest.order.order_id))
        v["queue"] = queue.queue_position if queue else None
    queues = run.call("get_order_queue_positions", lambda: client.get_order_queue_positions(
        market_tickers=TICKER))
    v["queues"] = len(queues.queue_positions) if queues else None
    orders = run.call("get_orders", lambda: client.get_orders(ticker=TICKER, status="resting"))
    v["resting"] = len(orders.orders) if orders else None
    fills = run.call("get_fills", lambda: client.get_fills(ticker=TICKER))
    if fills:
        v["fills"] = [{"count": f.count, "yes_price": f.yes_price, "side": f.side,
                       "action": f.action, "is_taker": f.is_taker} for f in fills.fills]
    positions = run.call("get_positions", lambda: client.get_positions(ticker=TICKER))
    if positions:
        v["positions"] = [{"ticker": p.ticker, "position": p.position,
                           "fees_paid": p.fees_paid} for p in positions.market_positions]
    trades = run.call("get_trades", lambda: client.get_trades(ticker=TICKER))
    v["public_trades"] = len(trades.trades) if trades else None
    run.call("get_settlements", client.get_settlements)
    resting_value = run.call("get_portfolio_resting_order_total_value",
                             client.get_portfolio_resting_order_total_value)
    v["resting_value"] = resting_value.total_resting_order_value if resting_value else None
    run.call("get_user_data_timestamp", client.get_user_data_timestamp)
    bal = run.call("get_balance after", client.get_balance)
    v["balance_end"] = bal.balance if bal else None
    if rest:
        cancel = run.call("cancel_order", lambda: client.cancel_order(rest.order.order_id))
        v["cancel"] = cancel.order.status if cancel else None
    if batch_ids:
        run.call("batch_cancel_orders", lambda: client.batch_cancel_orders(ids=batch_ids))
    orders = client.get_orders(ticker=TICKER, status="resting")
    v["resting_after_cancels"] = len(orders.orders)


main(body)
