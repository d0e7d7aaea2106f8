"""Signatures cross-checked against Polymarket's own packages (test-only dependencies),
the official HMAC test vector, and Kalshi's RSA-PSS verified with the public key."""

from __future__ import annotations

import random
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from venue_fixtures import KALSHI_PEM, KALSHI_PUB, POLY_KEY

from pr3dict_kalshi import protocol as kp
from pr3dict_polymarket import protocol as pm
from pr3dict_polymarket.signing import (
    EXCHANGES,
    OrderDomain,
    Signer,
    clob_auth_digest,
    hmac_signature,
    recover,
)

ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def _random_order(rng: random.Random, version: int, signer: str) -> dict:
    order = {"salt": rng.randrange(1, 2**48), "maker": signer, "signer": signer,
             "tokenId": str(rng.randrange(2**255)), "makerAmount": str(rng.randrange(1, 10**9)),
             "takerAmount": str(rng.randrange(1, 10**9)), "side": rng.choice(["BUY", "SELL"]),
             "signatureType": 0}
    if version == 1:
        order.update(taker="0x0000000000000000000000000000000000000000",
                     expiration=str(rng.choice([0, 1900000000])), nonce=str(rng.randrange(5)),
                     feeRateBps=str(rng.randrange(0, 200)))
    else:
        order.update(timestamp=str(rng.randrange(10**12, 2 * 10**12)),
                     metadata="0x" + rng.randbytes(32).hex(), builder="0x" + "00" * 32)
    return order


@pytest.mark.parametrize("neg_risk", [False, True])
def test_v1_orders_byte_identical_to_py_order_utils(neg_risk):
    pytest.importorskip("py_order_utils")
    from py_order_utils.builders import OrderBuilder
    from py_order_utils.model import OrderData
    from py_order_utils.signer import Signer as PouSigner

    signer = Signer(POLY_KEY)
    rng = random.Random(1)
    contract = EXCHANGES[(137, 1, neg_risk)]
    domain = OrderDomain(137, contract, version=1)
    for _ in range(20):
        order = _random_order(rng, 1, signer.address)
        ours = signer.sign_digest(domain.digest(order))
        builder = OrderBuilder(contract, 137, PouSigner(POLY_KEY),
                               salt_generator=lambda o=order: o["salt"])
        theirs = builder.build_signed_order(OrderData(
            maker=order["maker"], taker=order["taker"], tokenId=order["tokenId"],
            makerAmount=order["makerAmount"], takerAmount=order["takerAmount"],
            side=0 if order["side"] == "BUY" else 1, feeRateBps=order["feeRateBps"],
            nonce=order["nonce"], signer=order["signer"], expiration=order["expiration"],
            signatureType=0))
        assert ours == theirs.signature
        assert recover(domain.digest(order), ours) == signer.address


def test_v2_orders_byte_identical_to_the_official_v2_builder_and_eth_account():
    pytest.importorskip("py_clob_client_v2")
    from py_clob_client_v2.order_utils.exchange_order_builder_v2 import ExchangeOrderBuilderV2
    from py_clob_client_v2.order_utils.model.order_data_v2 import OrderDataV2
    from py_clob_client_v2.order_utils.model.side import Side as V2Side
    from py_clob_client_v2.signer import Signer as V2Signer

    signer = Signer(POLY_KEY)
    rng = random.Random(2)
    for neg_risk in (False, True):
        contract = EXCHANGES[(137, 2, neg_risk)]
        domain = OrderDomain(137, contract, version=2)
        for _ in range(10):
            order = _random_order(rng, 2, signer.address)
            ours = signer.sign_digest(domain.digest(order))
            builder = ExchangeOrderBuilderV2(contract, 137, V2Signer(POLY_KEY, 137),
                                             generate_salt=lambda o=order: o["salt"])
            theirs = builder.build_signed_order(OrderDataV2(
                maker=order["maker"], tokenId=order["tokenId"],
                makerAmount=order["makerAmount"], takerAmount=order["takerAmount"],
                side=V2Side.BUY if order["side"] == "BUY" else V2Side.SELL,
                signer=order["signer"], signatureType=0, timestamp=order["timestamp"],
                metadata=order["metadata"], builder=order["builder"]))
            assert ours == theirs.signature
            typed = builder.build_order_typed_data(builder.build_order(OrderDataV2(
                maker=order["maker"], tokenId=order["tokenId"],
                makerAmount=order["makerAmount"], takerAmount=order["takerAmount"],
                side=V2Side.BUY if order["side"] == "BUY" else V2Side.SELL,
                signer=order["signer"], signatureType=0, timestamp=order["timestamp"],
                metadata=order["metadata"], builder=order["builder"])))
            assert domain.order_id(order) == builder.build_order_hash(typed)
            # and the plain eth-account path signs the same bytes
            signed = Account.sign_message(encode_typed_data(full_message=typed), POLY_KEY)
            assert ours == "0x" + bytes(signed.signature).hex()


def test_l1_clob_auth_matches_the_official_vector_and_client():
    signer = Signer(ANVIL_KEY)
    sig = signer.clob_auth("10000000", 23, 80002)
    assert sig.startswith("0xf62319a9") and sig.endswith("a1aedc1b")  # venues.md A4.1
    pytest.importorskip("py_clob_client_v2")
    from py_clob_client_v2.signer import Signer as V2Signer
    from py_clob_client_v2.signing.eip712 import sign_clob_auth_message

    for ts, nonce in ((10000000, 23), (1732000000, 0), (1, 7)):
        assert signer.clob_auth(str(ts), nonce, 137) == sign_clob_auth_message(
            V2Signer(ANVIL_KEY, 137), ts, nonce)
    assert recover(clob_auth_digest(signer.address, "1", 7, 137),
                   signer.clob_auth("1", 7, 137)) == signer.address


def test_hmac_matches_the_official_vector_and_client():
    secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    assert hmac_signature(secret, "1000000", "test-sign", "/orders", '{"hash": "0x123"}') == \
        "ZwAdJKvoYRlEKDkNMwd5BuwNNtg93kNaR_oU2HrfVvc="
    pytest.importorskip("py_clob_client_v2")
    from py_clob_client_v2.signing.hmac import build_hmac_signature

    rng = random.Random(3)
    import base64
    for _ in range(20):
        key = base64.urlsafe_b64encode(rng.randbytes(32)).decode()
        ts = str(rng.randrange(10**9, 2 * 10**9))
        body = rng.choice([None, '{"orderID":"0xabc"}', '[{"a":1}]'])
        assert hmac_signature(key, ts, "DELETE", "/order", body) == build_hmac_signature(
            key, ts, "DELETE", "/order", body)


def test_recover_rejects_garbage():
    from pr3dict_polymarket.signing import SignatureError

    digest = b"\x01" * 32
    for bad in ("0x1234", "zz", "0x" + "00" * 64 + "05"):
        with pytest.raises(SignatureError):
            recover(digest, bad)


def test_kalshi_signature_verifies_with_the_public_key_only():
    key, pub = kp.load_private_key(KALSHI_PEM), kp.load_public_key(KALSHI_PUB)
    ts = str(int(time.time() * 1000))
    sig = kp.sign(key, ts, "GET", "/trade-api/v2/portfolio/balance")
    assert kp.verify(pub, sig, ts, "GET", "/trade-api/v2/portfolio/balance")
    assert not kp.verify(pub, sig, ts, "POST", "/trade-api/v2/portfolio/balance")
    assert not kp.verify(pub, sig, ts, "GET", "/trade-api/v2/portfolio/balance?limit=5")
    assert not kp.verify(pub, "bm90IGEgc2ln", ts, "GET", "/trade-api/v2/portfolio/balance")
    # comment lines before the armour (our TEST-ONLY key files) are fine
    assert kp.load_private_key("# TEST-ONLY\n" + KALSHI_PEM).key_size == 2048


def test_amounts_round_trip_and_fee_model():
    from decimal import Decimal as D

    for side in ("BUY", "SELL"):
        maker, taker = pm.amounts(side, D("0.37"), D("12.34"))
        assert pm.implied(side, maker, taker) == (D("0.37"), D("12.34"))
    assert pm.amounts("BUY", D("0.5"), D("10")) == (5_000_000, 10_000_000)
    assert pm.fee(D("0.02"), D("100"), D("0.5")) == D("0.50000")
    assert pm.fee(D("0.02"), D("0.01"), D("0.01")) == D("0.00001")  # the minimum
    assert kp.fee(D(1), D("0.5")) == D("0.02")  # 0.0175 rounded up to the cent
    assert kp.fee(D(100), D("0.5")) == D("1.75")


def test_the_signer_address_is_eth_accounts_without_importing_it():
    """The address comes from coincurve and keccak (no eth-account on the order path), and
    it is the address eth-account derives, checksum included, for random keys."""
    import subprocess
    import sys

    from pr3dict_polymarket.signing import to_checksum_address

    rng = random.Random(15)
    for _ in range(100):
        key = rng.randbytes(32).hex()
        assert Signer(key).address == Account.from_key(key).address
        assert Signer("0x" + key).address == Account.from_key(key).address
    from eth_utils import to_checksum_address as eth_utils_checksum

    for _ in range(100):
        raw = rng.randbytes(20)
        assert to_checksum_address(raw) == to_checksum_address(raw.hex()) == \
            eth_utils_checksum(raw)
    code = ("import sys; from pr3dict_polymarket.signing import Signer; "
            f"print(Signer({ANVIL_KEY!r}).address, 'eth_account' in sys.modules, "
            "'eth_utils' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == [Account.from_key(ANVIL_KEY).address, "False", "False"]


@pytest.mark.parametrize("key", ["", "0x12", "zz" * 32, "00" * 32, "ff" * 32])
def test_an_invalid_private_key_is_a_value_error(key):
    with pytest.raises(ValueError):
        Signer(key)
