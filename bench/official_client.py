"""What a user would write instead of pr3dict: a sequential py-clob-client script.

Runs in the official client's own virtual environment (see bench_floor.py), not pr3dict's.
Each trade buys both outcomes of one market, one order after the other (create_market_order
signs, post_order sends), and the time from the decision to the second reply is recorded.

    python official_client.py HOST PRIVATE_KEY YES_TOKEN NO_TOKEN PRICE_YES PRICE_NO SIZE N
Prints one JSON object: {"ms": [...], "build_ms": [...], "errors": N, "coincurve": bool}
(``build_ms``: per order, the client's own work before its request, create_market_order).
"""

from __future__ import annotations

import json
import sys
import time

from py_clob_client.client import ClobClient
from py_clob_client.clob_types import MarketOrderArgs, OrderType

HOST, KEY, YES, NO = sys.argv[1:5]
PRICE_YES, PRICE_NO, SIZE = (float(x) for x in sys.argv[5:8])
N = int(sys.argv[8])


def main() -> None:
    client = ClobClient(HOST, key=KEY, chain_id=137)
    client.set_api_creds(client.create_or_derive_api_creds())
    legs = [(YES, PRICE_YES), (NO, PRICE_NO)]
    for token, _ in legs:  # what a long-running script has cached before it trades
        client.get_tick_size(token)
        client.get_neg_risk(token)
        client.get_fee_rate_bps(token)
    samples, build, errors = [], [], 0
    for i in range(N + 5):
        start = time.perf_counter()
        for token, price in legs:
            t0 = time.perf_counter()
            order = client.create_market_order(MarketOrderArgs(
                token_id=token, amount=round(price * SIZE, 2), side="BUY", price=price))
            if i >= 5:
                build.append((time.perf_counter() - t0) * 1000)
            reply = client.post_order(order, OrderType.FAK)
            errors += not reply.get("success")
        if i >= 5:  # warm-up
            samples.append((time.perf_counter() - start) * 1000)
    try:
        import coincurve  # noqa: F401
        fast = True
    except ImportError:
        fast = False
    print(json.dumps({"ms": samples, "build_ms": build, "errors": errors, "coincurve": fast}))


if __name__ == "__main__":
    main()
