"""Polygon layer for pr3dict: an RPC endpoint pool with health scores and failover, EIP-1559
gas with a hard cap, batched transactions with receipt tracking, and settlement of binary
complement trades by merging YES+NO positions on a conditional-tokens contract.

Operator and pipeline reference: docs/polygon.md.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "batch": ("BatchConfig", "BatchTxManager", "TransactionFailed", "TxOp", "TxResult",
              "TxStatus"),
    "gas": ("CostEstimate", "Fees", "GasCapExceeded", "GasConfig", "GasManager",
            "GasTrackerSink"),
    "rpc": ("JsonRpcError", "RpcAmbiguous", "RpcError", "RpcPool", "RpcUnavailable",
            "WrongChain"),
    "settlement": ("CtfMergeSettler", "MarketCondition", "SettlementError"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """Names are imported from their module on first use: importing the package (the plugin
    module ``pr3dict_polygon.plugin`` does) costs nothing until a component is used."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BatchConfig", "BatchTxManager", "CostEstimate", "CtfMergeSettler", "Fees",
    "GasCapExceeded", "GasConfig", "GasManager", "GasTrackerSink", "JsonRpcError",
    "MarketCondition", "RpcAmbiguous", "RpcError", "RpcPool", "RpcUnavailable",
    "SettlementError", "TransactionFailed", "TxOp", "TxResult", "TxStatus", "WrongChain",
]
