"""pr3dict's Polygon plugin: RPC pool, gas tracker sink and CTF merge settler.

Each hook imports only its own module: a pipeline with the gas tracker sink alone never
imports the settler (eth-utils), and web3 comes in only when an RPC pool starts.
"""

from __future__ import annotations

from pr3dict_core import hookimpl
from pr3dict_core.components import Registrar


@hookimpl
def pr3dict_register_rpc_providers(registry: Registrar) -> None:
    from .rpc import RpcPool

    registry.add(RpcPool)


@hookimpl
def pr3dict_register_settlers(registry: Registrar) -> None:
    from .settlement import CtfMergeSettler

    registry.add(CtfMergeSettler)


@hookimpl
def pr3dict_register_metrics_sinks(registry: Registrar) -> None:
    from .gas import GasTrackerSink

    registry.add(GasTrackerSink)
