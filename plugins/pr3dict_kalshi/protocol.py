"""Kalshi Trade API v2 wire facts shared by the connector and the simulator.

Kalshi quotes one YES book per market: a bid buys YES, an ask sells YES (or buys NO at
1 - price). Prices are fixed-point dollar strings ("0.5600", legacy integer cents);
counts are fixed-point strings ("10.00", legacy integers).
"""

from __future__ import annotations

import base64
from decimal import ROUND_CEILING, Decimal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# GET /markets/orderbooks takes 1-100 tickers (docs.kalshi.com, "Get Multiple Market
# Orderbooks"; shared/research/venues.md B2).
ORDERBOOKS_PER_REQUEST = 100
MARKETS_PER_PAGE = 1000  # GET /markets: `limit` up to 1000 (100 by default)

API_PREFIX = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"
CENT = Decimal("0.01")
PRICE_Q = Decimal("0.0001")
COUNT_Q = Decimal("0.01")
TAKER_COEFFICIENT = Decimal("0.07")
MAKER_COEFFICIENT = Decimal("0.0175")
TIME_IN_FORCE = ("good_till_canceled", "immediate_or_cancel", "fill_or_kill")

# error codes (the body is {"error": {"code", "message", "details", "service"}})
INSUFFICIENT_BALANCE = "insufficient_balance"
INVALID_PRICE = "invalid_price"
INVALID_ORDER = "invalid_order"
FOK_NOT_FILLED = "fill_or_kill_insufficient_resting_volume"
DUPLICATE = "order_already_exists"
NOT_FOUND = "not_found"
MARKET_NOT_FOUND = "market_not_found"
AUTH = "authentication_error"
RATE = "too_many_requests"
INTERNAL = "internal_server_error"
MISSING = "missing_parameters"
POST_ONLY = "post_only_rejected"


def dollars(value: Decimal) -> str:
    """A price or amount as a 4-decimal dollar string ("0.5600")."""
    return str(value.quantize(PRICE_Q))


def count_fp(value: Decimal) -> str:
    return str(value.quantize(COUNT_Q))


def fee(size: Decimal, price: Decimal, multiplier: Decimal = Decimal(1),
        coefficient: Decimal = TAKER_COEFFICIENT) -> Decimal:
    """ceil to the cent of coefficient x C x P x (1 - P) (symmetric in YES/NO prices)."""
    raw = coefficient * multiplier * size * price * (1 - price)
    if raw <= 0:
        return Decimal(0)
    return (raw / CENT).to_integral_value(rounding=ROUND_CEILING) * CENT


def ticker_for(market_id: str) -> str:
    """The simulator's ticker for a scenario market id."""
    return market_id.upper()


# --------------------------------------------------------------------------- signing


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    start = pem.find("-----BEGIN")
    key = serialization.load_pem_private_key((pem[start:] if start >= 0 else pem).encode(),
                                             password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the Kalshi key must be an RSA private key")
    return key


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    start = pem.find("-----BEGIN")
    key = serialization.load_pem_public_key((pem[start:] if start >= 0 else pem).encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Kalshi key must be an RSA public key")
    return key


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign(key: rsa.RSAPrivateKey, timestamp_ms: str, method: str, path: str) -> str:
    """``KALSHI-ACCESS-SIGNATURE``: base64 RSA-PSS(SHA-256, MGF1-SHA-256, salt 32) over
    ``timestamp_ms + METHOD + path`` (path with the /trade-api/v2 prefix, no query)."""
    message = f"{timestamp_ms}{method}{path}".encode()
    return base64.b64encode(key.sign(message, _PSS, hashes.SHA256())).decode()


def verify(key: rsa.RSAPublicKey, signature: str, timestamp_ms: str, method: str,
           path: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, f"{timestamp_ms}{method}{path}".encode(), _PSS, hashes.SHA256())
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def headers(key_id: str, key: rsa.RSAPrivateKey, timestamp_ms: str, method: str,
            path: str) -> dict[str, str]:
    return {
        "KALSHI-ACCESS-KEY": key_id,
        "KALSHI-ACCESS-TIMESTAMP": timestamp_ms,
        "KALSHI-ACCESS-SIGNATURE": sign(key, timestamp_ms, method, path),
    }
