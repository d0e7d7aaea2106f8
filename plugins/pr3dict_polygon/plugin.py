"""pr3dict's Polygon plugin: RPC pool, gas tracker sink and CTF merge settler."""

from __future__ import annotations

from pr3dict_core import hookimpl
from pr3dict_core.components import Registrar

from .gas import GasTrackerSink
from .rpc import RpcPool
from .settlement import CtfMergeSettler


@hookimpl
def pr3dict_register_rpc_providers(registry: Registrar) -> None:
    registry.add(RpcPool)


@hookimpl
def pr3dict_register_settlers(registry: Registrar) -> None:
    registry.add(CtfMergeSettler)


@hookimpl
def pr3dict_register_metrics_sinks(registry: Registrar) -> None:
    registry.add(GasTrackerSink)
