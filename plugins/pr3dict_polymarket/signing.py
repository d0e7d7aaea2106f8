"""Polymarket signing: EIP-712 orders (CTF Exchange V1 and V2), L1 ``ClobAuth``, L2 HMAC.

The EIP-712 digests are built by hand (type hashes and the domain separator are computed
once per exchange), then signed with secp256k1 through coincurve, which is what eth-account
uses when coincurve is installed. Signatures are deterministic (RFC 6979), so they are
byte-identical to eth-account's ``sign_message(encode_typed_data(...))`` and to Polymarket's
order-signing package (the tests check both). The wallet address is derived here too
(keccak of the public key, EIP-55 checksum): eth-account and eth-utils cost about half a
second of imports, and the order path needs neither (the tests check the address equals
eth-account's). The simulator uses ``recover`` here to check who signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import coincurve
from eth_hash.auto import keccak

BUY, SELL = 0, 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_BYTES32 = "0x" + "00" * 32

# Exchange contracts on Polygon (chain 137) and Amoy (80002): V2 is current, V1 is legacy.
EXCHANGES: dict[tuple[int, int, bool], str] = {
    # (chain id, version, neg_risk) -> verifying contract
    (137, 2, False): "0xE111180000d2663C0091e4f400237545B87B996B",
    (137, 2, True): "0xe2222d279d744050d28e00520010520000310F59",
    (137, 1, False): "0x4bFb41d5B3570DeFd03C39a9A4D8dE6Bd8B8982E",
    (137, 1, True): "0xC5d563A36AE78145C45a50134d48A1215220f80a",
    (80002, 2, False): "0xE111180000d2663C0091e4f400237545B87B996B",
    (80002, 2, True): "0xe2222d279d744050d28e00520010520000310F59",
    (80002, 1, False): "0xdFE02Eb6733538f8Ea35D585af8DE5958AD99E40",
    (80002, 1, True): "0xC5d563A36AE78145C45a50134d48A1215220f80a",
}

EXCHANGE_NAME = "Polymarket CTF Exchange"
ORDER_V2_TYPE = (
    "Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,"
    "uint256 takerAmount,uint8 side,uint8 signatureType,uint256 timestamp,bytes32 metadata,"
    "bytes32 builder)")
ORDER_V1_TYPE = (
    "Order(uint256 salt,address maker,address signer,address taker,uint256 tokenId,"
    "uint256 makerAmount,uint256 takerAmount,uint256 expiration,uint256 nonce,"
    "uint256 feeRateBps,uint8 side,uint8 signatureType)")
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
CLOB_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId)"
CLOB_AUTH_TYPE = "ClobAuth(address address,string timestamp,uint256 nonce,string message)"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"

_ORDER_V2_HASH = keccak(ORDER_V2_TYPE.encode())
_ORDER_V1_HASH = keccak(ORDER_V1_TYPE.encode())
_DOMAIN_HASH = keccak(DOMAIN_TYPE.encode())
_CLOB_DOMAIN_HASH = keccak(CLOB_DOMAIN_TYPE.encode())
_CLOB_AUTH_HASH = keccak(CLOB_AUTH_TYPE.encode())


class SignatureError(ValueError):
    """A signature that cannot be parsed or recovered."""


def to_checksum_address(value: str | bytes) -> str:
    """EIP-55: ``0x`` + hex, a letter upper-cased where the keccak of the lower-case hex has a
    nibble >= 8. Raises ValueError for anything but 20 bytes (TypeError if not text or bytes)."""
    if not isinstance(value, str | bytes):
        raise TypeError(f"not an address: {value!r}")
    raw = value if isinstance(value, bytes) else bytes.fromhex(
        value[2:] if value.startswith(("0x", "0X")) else value)
    if len(raw) != 20:
        raise ValueError(f"not a 20-byte address: {value!r}")
    lower = raw.hex()
    nibbles = keccak(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c
                          for c, h in zip(lower, nibbles, strict=False))


def address_of(public_key: coincurve.PublicKey) -> str:
    """The checksummed address of a secp256k1 public key."""
    return to_checksum_address(keccak(public_key.format(compressed=False)[1:])[-20:])


def _u256(value: int) -> bytes:
    return int(value).to_bytes(32, "big")


def _addr(value: str) -> bytes:
    raw = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    if len(raw) != 20:
        raise ValueError(f"not a 20-byte address: {value!r}")
    return b"\x00" * 12 + raw


def _b32(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        raw = value
    else:
        raw = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    if len(raw) != 32:
        raise ValueError(f"not 32 bytes: {value!r}")
    return raw


def domain_separator(chain_id: int, contract: str, version: str) -> bytes:
    return keccak(_DOMAIN_HASH + keccak(EXCHANGE_NAME.encode()) + keccak(version.encode())
                  + _u256(chain_id) + _addr(contract))


def order_struct_hash(order: dict[str, Any], version: int) -> bytes:
    """The EIP-712 struct hash of a JSON order (``side`` as "BUY"/"SELL" or 0/1)."""
    side = order["side"]
    side = (BUY if side == "BUY" else SELL) if isinstance(side, str) else int(side)
    if version == 2:
        return keccak(
            _ORDER_V2_HASH + _u256(int(order["salt"])) + _addr(order["maker"])
            + _addr(order["signer"]) + _u256(int(order["tokenId"]))
            + _u256(int(order["makerAmount"])) + _u256(int(order["takerAmount"]))
            + _u256(side) + _u256(int(order["signatureType"]))
            + _u256(int(order["timestamp"])) + _b32(order.get("metadata") or ZERO_BYTES32)
            + _b32(order.get("builder") or ZERO_BYTES32))
    return keccak(
        _ORDER_V1_HASH + _u256(int(order["salt"])) + _addr(order["maker"])
        + _addr(order["signer"]) + _addr(order.get("taker") or ZERO_ADDRESS)
        + _u256(int(order["tokenId"])) + _u256(int(order["makerAmount"]))
        + _u256(int(order["takerAmount"])) + _u256(int(order.get("expiration") or 0))
        + _u256(int(order.get("nonce") or 0)) + _u256(int(order.get("feeRateBps") or 0))
        + _u256(side) + _u256(int(order["signatureType"])))


class OrderDomain:
    """One exchange's EIP-712 domain, with its separator computed once."""

    def __init__(self, chain_id: int, contract: str, version: int = 2):
        self.chain_id = chain_id
        self.contract = to_checksum_address(contract)
        self.version = version
        self.separator = domain_separator(chain_id, self.contract, str(version))

    def digest(self, order: dict[str, Any]) -> bytes:
        """The 32 bytes that are signed; ``0x`` + its hex is the order's id (its hash)."""
        return keccak(b"\x19\x01" + self.separator + order_struct_hash(order, self.version))

    def order_id(self, order: dict[str, Any]) -> str:
        return "0x" + self.digest(order).hex()

    @classmethod
    def for_market(cls, chain_id: int, neg_risk: bool, version: int = 2) -> OrderDomain:
        return cls(chain_id, EXCHANGES[(chain_id, version, neg_risk)], version)


def clob_auth_digest(address: str, timestamp: str, nonce: int, chain_id: int) -> bytes:
    """The L1 ``ClobAuth`` digest (domain ``ClobAuthDomain`` v1, no verifying contract)."""
    separator = keccak(_CLOB_DOMAIN_HASH + keccak(b"ClobAuthDomain") + keccak(b"1")
                       + _u256(chain_id))
    struct = keccak(_CLOB_AUTH_HASH + _addr(address) + keccak(str(timestamp).encode())
                    + _u256(nonce) + keccak(CLOB_AUTH_MESSAGE.encode()))
    return keccak(b"\x19\x01" + separator + struct)


class Signer:
    """A wallet key. The key stays in here: ``repr`` shows the address only."""

    def __init__(self, private_key: str):
        """``private_key``: 32 bytes in hex, with or without ``0x``; ValueError otherwise."""
        key = private_key.strip()
        raw = bytes.fromhex(key[2:] if key.startswith(("0x", "0X")) else key)
        if len(raw) != 32:
            raise ValueError("a private key is 32 bytes")
        self._key = coincurve.PrivateKey(raw)  # ValueError outside 1..n-1
        self.address: str = address_of(self._key.public_key)

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    def sign_digest(self, digest: bytes) -> str:
        """A 65-byte r||s||v (v = 27/28) hex signature of a 32-byte digest."""
        sig = self._key.sign_recoverable(digest, hasher=None)
        return "0x" + sig[:64].hex() + format(sig[64] + 27, "02x")

    def clob_auth(self, timestamp: str, nonce: int, chain_id: int) -> str:
        return self.sign_digest(clob_auth_digest(self.address, timestamp, nonce, chain_id))


def recover(digest: bytes, signature: str) -> str:
    """The checksummed address that signed ``digest``; raises ``SignatureError``."""
    try:
        raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    except (ValueError, AttributeError):
        raise SignatureError("signature is not hex") from None
    if len(raw) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(raw)}")
    v = raw[64]
    v = v - 27 if v >= 27 else v
    if v not in (0, 1):
        raise SignatureError(f"bad recovery id {raw[64]}")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(raw[:64] + bytes([v]), digest,
                                                             hasher=None)
    except Exception as exc:
        raise SignatureError(f"cannot recover signer: {exc}") from None
    return address_of(pub)


# --------------------------------------------------------------------------- L2 (HMAC)


def hmac_signature(secret: str, timestamp: str, method: str, path: str, body: str | None) -> str:
    """``POLY_SIGNATURE``: urlsafe base64 of HMAC-SHA256(b64decode(secret), ts+METHOD+path+body).

    ``path`` excludes the query string; ``body`` is the exact string sent (omitted if empty).
    """
    message = f"{timestamp}{method}{path}{body or ''}"
    key = base64.urlsafe_b64decode(secret)
    return base64.urlsafe_b64encode(hmac.new(key, message.encode(), hashlib.sha256).digest()
                                    ).decode()


def l2_headers(address: str, api_key: str, secret: str, passphrase: str, timestamp: str,
               method: str, path: str, body: str | None) -> dict[str, str]:
    return {
        "POLY_ADDRESS": address,
        "POLY_SIGNATURE": hmac_signature(secret, timestamp, method, path, body),
        "POLY_TIMESTAMP": timestamp,
        "POLY_API_KEY": api_key,
        "POLY_PASSPHRASE": passphrase,
    }


def l1_headers(signer: Signer, timestamp: str, nonce: int, chain_id: int) -> dict[str, str]:
    return {
        "POLY_ADDRESS": signer.address,
        "POLY_SIGNATURE": signer.clob_auth(timestamp, nonce, chain_id),
        "POLY_TIMESTAMP": timestamp,
        "POLY_NONCE": str(nonce),
    }
