"""Polygon layer for pr3dict: an RPC endpoint pool with health scores and failover, EIP-1559
gas with a hard cap, batched transactions with receipt tracking, and settlement of binary
complement trades by merging YES+NO positions on a conditional-tokens contract.

Operator and pipeline reference: docs/polygon.md.
"""

from __future__ import annotations

from .batch import BatchConfig, BatchTxManager, TransactionFailed, TxOp, TxResult, TxStatus
from .gas import CostEstimate, Fees, GasCapExceeded, GasConfig, GasManager, GasTrackerSink
from .rpc import JsonRpcError, RpcAmbiguous, RpcError, RpcPool, RpcUnavailable, WrongChain
from .settlement import CtfMergeSettler, MarketCondition, SettlementError

__all__ = [
    "BatchConfig", "BatchTxManager", "CostEstimate", "CtfMergeSettler", "Fees",
    "GasCapExceeded", "GasConfig", "GasManager", "GasTrackerSink", "JsonRpcError",
    "MarketCondition", "RpcAmbiguous", "RpcError", "RpcPool", "RpcUnavailable",
    "SettlementError", "TransactionFailed", "TxOp", "TxResult", "TxStatus", "WrongChain",
]
