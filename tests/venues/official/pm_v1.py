"""Drive ``pr3dict sim`` with Polymarket's py-clob-client (V1 orders), unmodified.

Usage: python pm_v1.py HOST PRIVATE_KEY MARKET_SLUG   (prints one JSON object, see common.py)
"""

from __future__ import annotations

import sys
import time

from common import Run, main
from py_clob_client.client import ClobClient
from py_clob_client.clob_types import (
    AssetType,
    BalanceAllowanceParams,
    BookParams,
    DropNotificationParams,
    MarketOrderArgs,
    OpenOrderParams,
    OrderArgs,
    OrderScoringParams,
    OrdersScoringParams,
    OrderType,
    PostOrdersArgs,
    TradeParams,
)

HOST, KEY, SLUG = sys.argv[1:4]
CHAIN = 137


def body(run: Run) -> None:
    v = run.values
    public = ClobClient(HOST, CHAIN)
    run.call("get_ok", public.get_ok)
    v["time"] = run.call("get_server_time", public.get_server_time)
    markets = run.call("get_markets", public.get_markets) or {}
    run.call("get_simplified_markets", public.get_simplified_markets)
    run.call("get_sampling_markets", public.get_sampling_markets)
    run.call("get_sampling_simplified_markets", public.get_sampling_simplified_markets)
    market = next(m for m in markets["data"] if m["market_slug"] == SLUG)
    cid = market["condition_id"]
    yes, no = (t["token_id"] for t in market["tokens"])
    run.call("get_market", lambda: public.get_market(cid))
    book = run.call("get_order_book", lambda: public.get_order_book(yes))
    run.call("get_order_books", lambda: public.get_order_books(
        [BookParams(token_id=yes), BookParams(token_id=no)]))
    if book:
        v["book_hash"] = run.call("get_order_book_hash", lambda: public.get_order_book_hash(book))
    v["tick"] = run.call("get_tick_size", lambda: public.get_tick_size(yes))
    v["neg_risk"] = run.call("get_neg_risk", lambda: public.get_neg_risk(yes))
    v["fee_rate_bps"] = run.call("get_fee_rate_bps", lambda: public.get_fee_rate_bps(yes))
    v["mid"] = run.call("get_midpoint", lambda: public.get_midpoint(yes))
    v["mids"] = run.call("get_midpoints", lambda: public.get_midpoints([BookParams(yes)]))
    v["price_buy"] = run.call("get_price", lambda: public.get_price(yes, "BUY"))
    v["prices"] = run.call("get_prices", lambda: public.get_prices(
        [BookParams(yes, "BUY"), BookParams(yes, "SELL")]))
    v["spread"] = run.call("get_spread", lambda: public.get_spread(yes))
    v["spreads"] = run.call("get_spreads", lambda: public.get_spreads([BookParams(yes)]))
    run.call("get_last_trade_price", lambda: public.get_last_trade_price(yes))
    run.call("get_last_trades_prices", lambda: public.get_last_trades_prices([BookParams(yes)]))

    l1 = ClobClient(HOST, CHAIN, key=KEY)  # V1's calculate_market_price needs a signer
    v["market_price_buy_10"] = run.call("calculate_market_price", lambda: (
        l1.calculate_market_price(yes, "BUY", 10, OrderType.FOK)))
    creds = run.call("create_or_derive_api_creds", l1.create_or_derive_api_creds)
    derived = run.call("derive_api_key", l1.derive_api_key)
    v["derive_is_stable"] = bool(creds and derived and creds.api_key == derived.api_key)
    client = ClobClient(HOST, CHAIN, key=KEY, creds=creds)
    v["api_keys"] = run.call("get_api_keys", client.get_api_keys)
    v["closed_only"] = run.call("get_closed_only_mode", client.get_closed_only_mode)
    collateral = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
    v["balance_start"] = (run.call("get_balance_allowance",
                                   lambda: client.get_balance_allowance(collateral)) or {}
                          ).get("balance")
    run.call("update_balance_allowance", lambda: client.update_balance_allowance(collateral))
    hb = run.call("post_heartbeat", lambda: client.post_heartbeat(None)) or {}
    v["heartbeat_chained"] = bool(
        client.post_heartbeat(hb.get("heartbeat_id")).get("heartbeat_id"))
    run.call("get_notifications", client.get_notifications)
    run.call("drop_notifications", lambda: client.drop_notifications(
        DropNotificationParams(ids=["1"])))

    gtc = run.call("create_and_post_order GTC", lambda: client.create_and_post_order(
        OrderArgs(token_id=yes, price=0.55, size=10, side="BUY")))
    v["gtc"] = gtc
    expiry = int(time.time()) + 3600
    v["gtd"] = run.call("post_order GTD", lambda: client.post_order(client.create_order(
        OrderArgs(token_id=yes, price=0.54, size=10, side="BUY", expiration=expiry)),
        OrderType.GTD))
    v["post_only"] = run.call("post_order post_only", lambda: client.post_order(
        client.create_order(OrderArgs(token_id=yes, price=0.56, size=10, side="BUY")),
        OrderType.GTC, post_only=True))
    v["batch"] = run.call("post_orders", lambda: client.post_orders([
        PostOrdersArgs(client.create_order(OrderArgs(token_id=yes, price=0.50, size=5,
                                                     side="BUY")), OrderType.GTC),
        PostOrdersArgs(client.create_order(OrderArgs(token_id=no, price=0.30, size=5,
                                                     side="BUY")), OrderType.GTC)]))
    if gtc:
        v["gtc_order"] = run.call("get_order", lambda: client.get_order(gtc["orderID"]))
        v["scoring"] = run.call("is_order_scoring", lambda: client.is_order_scoring(
            OrderScoringParams(gtc["orderID"])))
        v["scorings"] = run.call("are_orders_scoring", lambda: client.are_orders_scoring(
            OrdersScoringParams([gtc["orderID"]])))
    v["open_orders"] = run.call("get_orders", lambda: client.get_orders(
        OpenOrderParams(market=cid)))

    v["market_buy"] = run.call("post_order market BUY FOK", lambda: client.post_order(
        client.create_market_order(MarketOrderArgs(token_id=yes, amount=10, side="BUY")),
        OrderType.FOK))
    deadline = time.monotonic() + 20  # readiness: the trade settled (MATCHED -> MINED)
    while time.monotonic() < deadline and not any(
            t.get("status") in ("MINED", "CONFIRMED") for t in client.get_trades()):
        time.sleep(0.02)
    v["balance_after_buy"] = client.get_balance_allowance(collateral).get("balance")
    v["yes_after_buy"] = client.get_balance_allowance(BalanceAllowanceParams(
        asset_type=AssetType.CONDITIONAL, token_id=yes)).get("balance")
    v["market_sell"] = run.call("post_order market SELL FAK", lambda: client.post_order(
        client.create_market_order(MarketOrderArgs(token_id=yes, amount=5, side="SELL",
                                                   order_type=OrderType.FAK)), OrderType.FAK))
    v["limit_fok"] = run.call("post_order FOK", lambda: client.post_order(client.create_order(
        OrderArgs(token_id=yes, price=0.64, size=5, side="BUY")), OrderType.FOK))
    v["balance_end"] = client.get_balance_allowance(collateral).get("balance")
    if v["market_buy"]:
        v["market_buy_trades"] = run.call("get_trades", lambda: [
            t for tid in v["market_buy"]["tradeIDs"]
            for t in client.get_trades(TradeParams(id=tid))])

    if gtc:
        v["cancel"] = run.call("cancel", lambda: client.cancel(gtc["orderID"]))
    if v["gtd"]:
        v["cancel_orders"] = run.call("cancel_orders", lambda: client.cancel_orders(
            [v["gtd"]["orderID"]]))
    v["cancel_market"] = run.call("cancel_market_orders", lambda: client.cancel_market_orders(
        market=cid, asset_id=no))
    v["cancel_all"] = run.call("cancel_all", client.cancel_all)
    v["open_after_cancels"] = client.get_orders(OpenOrderParams(market=cid))
    run.call("delete_api_key", client.delete_api_key)


main(body)
