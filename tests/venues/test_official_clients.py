"""Conformance: the venues' own official clients, unmodified, against ``pr3dict sim``.

py-clob-client (V1 orders), py-clob-client-v2 and Kalshi's SDK (kalshi_python_sync) run in
their own virtual environment (``.venv-conformance/`` in the repository root, made once and
reused while tests/venues/official/requirements.txt is unchanged). Each driver in
tests/venues/official/ calls every venue endpoint its client maps that the simulator serves
and prints JSON; the tests check that every call succeeded and the values a live venue
would give (fills matched with their trades, balances moved by price and fee).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import venv
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from venue_fixtures import REPO

OFFICIAL = Path(__file__).parent / "official"
VENV = REPO / ".venv-conformance"
KALSHI_LATEST = VENV / "kalshi-latest"  # the newest Kalshi SDK, ahead of 3.2.0 on its path
PR3DICT = Path(sys.executable).parent / "pr3dict"
KALSHI_KEY_ID = "00000000-0000-4000-8000-00000000517e"
KALSHI_LATEST_KEY_ID = "00000000-0000-4000-8000-0000000051e2"  # same TEST-ONLY key pair
KALSHI_PEM = REPO / "pipelines" / "keys" / "TEST-ONLY-sim-kalshi.pem"
# TEST-ONLY wallets: the sim registers any wallet that passes L1 auth (default balance 1000)
V1_KEY = "0x" + "21" * 32
V2_KEY = "0x" + "32" * 32
D = Decimal


@pytest.fixture(scope="session")
def conformance_python() -> Path:
    """The official clients' interpreter; (re)made only when the requirements change."""
    latest = OFFICIAL / "requirements-kalshi-latest.txt"
    requirements = (OFFICIAL / "requirements.txt").read_text() + latest.read_text()
    python = VENV / "bin" / "python"
    marker = VENV / "pr3dict-requirements.txt"
    with open(REPO / ".venv-conformance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not build it at once
        if python.exists() and marker.exists() and marker.read_text() == requirements:
            return python
        venv.EnvBuilder(clear=True, with_pip=True).create(VENV)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(OFFICIAL / "requirements.txt")], check=True,
                       timeout=900)
        subprocess.run([*pip, "--no-deps", "--ignore-requires-python", "--target",
                        str(KALSHI_LATEST), "-r", str(latest)], check=True, timeout=900)
        marker.write_text(requirements)  # only after a complete install
    return python


@pytest.fixture(scope="module")
def sim_url():
    """``pr3dict sim`` in its own process on a free loopback port."""
    proc = subprocess.Popen([str(PR3DICT), "sim", str(OFFICIAL / "scenario.toml"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("pr3dict sim: listening on http://127.0.0.1:"), \
            first + proc.stderr.read()
        yield first.split()[-1]
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


@pytest.fixture(scope="module")
def driven(conformance_python, sim_url):
    """Run the three drivers at once (each on its own market and account)."""
    commands = {
        "v1": ["pm_v1.py", sim_url, V1_KEY, "v1-market"],
        "v2": ["pm_v2.py", sim_url, V2_KEY, "v2-market"],
        "kalshi": ["kalshi_sdk.py", f"{sim_url}/trade-api/v2", KALSHI_KEY_ID, str(KALSHI_PEM),
                   "KALSHI-MARKET"],
    }
    commands["kalshi_v2"] = ["kalshi_sdk_v2.py", f"{sim_url}/trade-api/v2", KALSHI_LATEST_KEY_ID,
                             str(KALSHI_PEM), "KALSHI-V2-MARKET"]
    env = dict(os.environ, PYTHONPATH=str(KALSHI_LATEST))
    procs = {name: subprocess.Popen([str(conformance_python), *args], cwd=OFFICIAL,
                                    env=env if name == "kalshi_v2" else None,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in commands.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0 and stdout.strip(), f"{name} driver failed:\n{stderr}"
        out[name] = json.loads(stdout.strip().splitlines()[-1])
        assert "crash" not in out[name]["values"], out[name]["values"]["crash"]
    return out


def failed(result) -> dict[str, str]:
    return {name: why for name, why in result["calls"].items() if why != "ok"}


def pm_fee(size: Decimal, price: Decimal, bps: int) -> Decimal:
    """Polymarket's taker fee (docs: fees): size x rate x p x (1 - p), to 5 decimals."""
    raw = size * D(bps) / 10000 * price * (1 - price)
    return raw.quantize(D("0.00001"), rounding=ROUND_HALF_UP)


def check_polymarket(result) -> None:
    assert failed(result) == {}
    v = result["values"]
    # the scenario's static YES book: bids 0.60/0.59/0.58, asks 0.64/0.65/0.66, 100 each
    assert v["tick"] == "0.01" and v["neg_risk"] is False and v["fee_rate_bps"] == 200
    assert v["mid"] == {"mid": "0.62"} and v["spread"] == {"spread": "0.04"}
    assert v["price_buy"] == {"price": "0.6"}  # BUY answers the best bid (clob-client PR #78)
    assert list(v["prices"].values()) == [{"BUY": "0.6", "SELL": "0.64"}]
    assert list(v["mids"].values()) == ["0.62"] and list(v["spreads"].values()) == ["0.04"]
    assert v["market_price_buy_10"] == 0.64
    assert v["derive_is_stable"] and v["heartbeat_chained"]
    assert v["closed_only"] == {"closed_only": False} and len(v["api_keys"]["apiKeys"]) == 1
    assert v["balance_start"] == "1000000000"
    for key in ("gtc", "gtd", "post_only"):
        assert v[key]["success"] and v[key]["status"] == "live", v[key]
    assert [r["status"] for r in v["batch"]] == ["live", "live"]
    assert v["gtc_order"]["status"] == "LIVE" and v["gtc_order"]["original_size"] == "10"
    assert len(v["open_orders"]) == 5
    assert v["scoring"] == {"scoring": False}  # no rewards program in the simulator
    assert v["scorings"] == {v["gtc"]["orderID"]: False}

    # a $10 market BUY: 15.625 shares at 0.64 (amounts the official builder rounded)
    buy = v["market_buy"]
    assert buy["status"] == "matched" and buy["makingAmount"] == "10"
    assert buy["takingAmount"] == "15.625" and len(buy["tradeIDs"]) == 1
    (trade,) = v["market_buy_trades"]
    assert trade["id"] == buy["tradeIDs"][0] and trade["taker_order_id"] == buy["orderID"]
    assert trade["status"] in ("MINED", "CONFIRMED") and trade["transaction_hash"]
    assert (trade["size"], trade["price"], trade["trader_side"]) == ("15.625", "0.64", "TAKER")
    fee = pm_fee(D("15.625"), D("0.64"), 200)
    spent = (D(v["balance_start"]) - D(v["balance_after_buy"])) / 10**6
    assert spent == D(10) + fee
    assert v["yes_after_buy"] == "15625000"
    sell = v["market_sell"]  # 5 shares sold into the 0.60 bid
    assert sell["status"] == "matched" and (sell["makingAmount"], sell["takingAmount"]) == \
        ("5", "3")
    fok = v["limit_fok"]
    assert fok["status"] == "matched" and (fok["takingAmount"], fok["makingAmount"]) == \
        ("5", "3.2")
    end = D(v["balance_start"]) / 10**6 - 10 - fee + 3 - pm_fee(D(5), D("0.6"), 200) \
        - D("3.2") - pm_fee(D(5), D("0.64"), 200)
    if "market_buy_1" in v:  # V2 also buys $1 of NO at 0.40
        end -= 1 + pm_fee(D("2.5"), D("0.4"), 200)
    assert D(v["balance_end"]) / 10**6 == end

    assert v["cancel"]["canceled"] == [v["gtc"]["orderID"]]
    assert v["cancel_orders"]["canceled"] == [v["gtd"]["orderID"]]
    assert len(v["cancel_market"]["canceled"]) == 1  # the NO bid of the batch
    assert len(v["cancel_all"]["canceled"]) == 2
    assert v["open_after_cancels"] == []


def test_py_clob_client_v1_against_the_sim(driven):
    check_polymarket(driven["v1"])
    assert len(driven["v1"]["calls"]) >= 45


def test_py_clob_client_v2_against_the_sim(driven):
    result = driven["v2"]
    check_polymarket(result)
    assert len(result["calls"]) >= 48
    v = result["values"]
    assert v["version"] == 2 and v["book_hash_matches"]
    # the trade's settlement hash comes back in the reply (the client polls for it)
    assert v["market_buy"]["transactionsHashes"] == [v["market_buy_trades"][0]["transaction_hash"]]
    # a $1 market BUY of NO (best ask 0.40): 2.5 shares, under the 5-share limit minimum
    small = v["market_buy_1"]
    assert (small["status"], small["makingAmount"], small["takingAmount"]) == \
        ("matched", "1", "2.5")
    prices = {t["outcome"]: t["price"] for t in v["market_tokens"]}
    assert prices == {"Yes": 0.62, "No": 0.38}  # /markets shows the books' midpoints


def test_kalshi_sdk_against_the_sim(driven):
    result = driven["kalshi"]
    assert failed(result) == {}
    v = result["values"]
    assert v["trading_active"] and "KALSHI-MARKET" in v["tickers"]
    # the scenario's static YES book: bids 0.36-0.38, asks 0.42-0.44 (NO bids 0.56-0.58)
    assert v["market"] == {"yes_bid_dollars": "0.3800", "yes_ask_dollars": "0.4200"}
    assert v["book"]["yes"][-1] == ["0.3800", "200"] and v["book"]["no"][-1] == ["0.5800", "200"]
    assert v["rest"] == "resting" and v["get_order"] == "resting"
    assert v["take"] == {"status": "executed", "fill_count": 4, "taker_fill_cost": 168,
                         "taker_fees": 7}
    assert v["fok"] == "executed" and v["sell"] == "executed" and len(v["batch_ids"]) == 2
    assert v["market_order"] == "executed"
    assert v["resting"] == 3
    assert v["fills"] == [
        {"count": 1, "yes_price": 38, "side": "yes", "action": "sell", "is_taker": True},
        {"count": 1, "yes_price": 42, "side": "yes", "action": "buy", "is_taker": True},
        {"count": 2, "yes_price": 38, "side": "no", "action": "buy", "is_taker": True},
        {"count": 4, "yes_price": 42, "side": "yes", "action": "buy", "is_taker": True}]
    assert v["public_trades"] == 4
    # 5 YES bought, 1 sold, 2 NO bought: +2 YES, and 2 YES/NO pairs paid out $1 each
    assert v["positions"] == [{"ticker": "KALSHI-MARKET", "position": 2, "fees_paid": 15}]
    cents = -4 * 42 - 2 * 62 - 42 + 38 + 2 * 100 - 15  # fees 7 + 4 + 2 + 2, up per fill
    assert v["balance_end"] - v["balance_start"] == cents
    # resting: 2 YES at 0.31 (3 at 0.30, decreased by 1, amended to 0.31) and 1 at 0.20;
    # the NO bid would only close YES held (no cost)
    assert v["decreased"] == 2
    assert v["amended"] == {"old": 30, "new": 31, "remaining": 2}
    assert v["resting_value"] == 2 * 31 + 20
    assert v["queue"] == 0 and v["queues"] == 3  # alone at 0.31; 3 orders rest
    assert v["cancel"] == "canceled" and v["resting_after_cancels"] == 0


def test_newest_kalshi_sdk_with_v2_event_orders_against_the_sim(driven):
    result = driven["kalshi_v2"]
    assert failed(result) == {}
    v = result["values"]
    assert v["sdk"] == "3.34.0"
    assert v["market"] == {"yes_bid_dollars": "0.3800", "yes_ask_dollars": "0.4200",
                           "yes_ask_size_fp": "200.00"}
    assert v["book"]["yes"][-1] == ["0.3800", "200.00"] and v["books"] == ["KALSHI-V2-MARKET"]
    assert v["rest"] == "3.00" and v["post_only"] == "1.00" and v["get_order"] == "resting"
    # 4 bought at the 0.42 ask; fee ceil_cent(0.07 x 4 x 0.42 x 0.58) = 0.07
    assert v["take"] == {"fill_count": "4.00", "average_fill_price": "0.4200",
                         "average_fee_paid": "0.0175"}
    assert v["fok"] == "2.00" and len(v["batch_ids"]) == 2 and v["resting"] == 4
    assert v["fills"] == [
        {"count_fp": "2.00", "yes_price_dollars": "0.3800", "book_side": "ask",
         "outcome_side": "no", "fee_cost": "0.0400", "is_taker": True},
        {"count_fp": "4.00", "yes_price_dollars": "0.4200", "book_side": "bid",
         "outcome_side": "yes", "fee_cost": "0.0700", "is_taker": True}]
    assert v["positions"] == [{"ticker": "KALSHI-V2-MARKET", "position_fp": "2.00",
                               "fees_paid_dollars": "0.1100"}]
    assert v["public_trades"] == 2
    # the ask sold 2 of the 4 YES into the 0.38 bid
    spent = Decimal(v["balance_start"]) - Decimal(v["balance_end"])
    assert spent == 4 * D("0.42") + D("0.07") - 2 * D("0.38") + D("0.04")
    assert v["decreased"] == "2.00"  # 3 resting, decreased to 2, amended, then cancelled
    assert v["amended"] == "2.00" and v["amended_price"] == "0.3100"
    assert v["queue"] == "0.00" and v["queues"] == 4
    assert v["cancel"] == "2.00" and v["batch_cancel"] == ["1.00", "1.00"]
    assert v["resting_after_cancels"] == 0
