"""Registration through the plugin manager, pipeline-table structuring of every Config,
and the committed contract artifact matching its Solidity sources."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from pr3dict_core.config import SecretRef, structure
from pr3dict_core.plugins import collect_components, make_plugin_manager
from pr3dict_polygon.gas import GasTrackerSink
from pr3dict_polygon.rpc import RpcPool
from pr3dict_polygon.settlement import CtfMergeSettler

REPO = Path(__file__).resolve().parents[2]
CTF = "0x" + "11" * 20
USDC = "0x" + "22" * 20
CONDITION = "0x" + "ab" * 32
URL = "http://127.0.0.1:8545"


def test_plugin_registers_its_three_components():
    pm = make_plugin_manager(load=["pr3dict_polygon.plugin"], autoload=False)
    registry = collect_components(pm)
    assert registry.get("rpc", "polygon_pool").cls is RpcPool
    assert registry.get("settlers", "ctf_merge").cls is CtfMergeSettler
    assert registry.get("sinks", "gas_tracker").cls is GasTrackerSink


def test_pipeline_tables_structure_into_configs():
    rpc, errors = structure({
        "endpoints": ["http://127.0.0.1:8545", "https://polygon-rpc.com"],
        "secret_endpoints": [{"env": "ALCHEMY_URL"}], "chain_id": 137,
        "request_timeout_ms": 1500, "min_health": 0.6, "max_block_lag": 3,
        "gas": {"cap_gwei": "300", "min_priority_fee_gwei": "30",
                "urgency": {"low": "1", "normal": "1.2", "high": "1.6", "urgent": "2.5"}},
    }, RpcPool.Config, "rpc.polygon")
    assert errors == []
    assert rpc.gas.cap_gwei == Decimal("300") and rpc.gas.urgency["urgent"] == Decimal("2.5")
    assert rpc.secret_endpoints == (SecretRef(env="ALCHEMY_URL"),)

    settler, errors = structure({
        "rpc": "polygon", "private_key": {"env": "POLY_KEY"}, "conditional_tokens": CTF,
        "collateral": USDC, "mint_positions": True,
        "markets": [{"yes": "m:yes", "no": "m:no", "condition_id": CONDITION}],
        "batch": {"max_size": 4, "max_age_ms": 100, "urgency": "high"},
    }, CtfMergeSettler.Config, "settlers.merge")
    assert errors == []
    assert settler.markets[0].condition_id == CONDITION and settler.batch.urgency == "high"

    sink, errors = structure({"rpc": "polygon"}, GasTrackerSink.Config, "sinks.gas")
    assert errors == [] and sink.path == "runs/{run_id}/gas.json"


@pytest.mark.parametrize(("cls", "data", "where", "message"), [
    (RpcPool.Config, {"endpoints": ["ws://x"]}, "rpc.p.endpoints", "http"),
    (RpcPool.Config, {"endpoints": [URL], "gas": {"cap_gwei": 500.0}}, "rpc.p.gas.cap_gwei",
     "decimal string"),
    (RpcPool.Config, {"endpoints": [URL], "gas": {"urgency": {"low": "1"}}}, "rpc.p.gas.urgency",
     "missing"),
    (RpcPool.Config, {"endpoints": [URL], "max_retries": 50}, "rpc.p.max_retries",
     "must be between 0 and 10"),
    (RpcPool.Config, {"endpont": []}, "rpc.p.endpont", "did you mean 'endpoints'"),
    (CtfMergeSettler.Config, {"rpc": "p", "private_key": "0xabc", "conditional_tokens": CTF,
                              "collateral": USDC}, "s.private_key", "never inline"),
    (CtfMergeSettler.Config, {"rpc": "p", "private_key": {"env": "K"},
                              "conditional_tokens": "0x12", "collateral": USDC},
     "s.conditional_tokens", "not an address"),
    (CtfMergeSettler.Config, {"rpc": "p", "private_key": {"env": "K"}, "conditional_tokens": CTF,
                              "collateral": USDC, "markets": [
                                  {"yes": "a", "no": "b", "condition_id": "0x12"}]},
     "s.markets", "64 hex digits"),
    (CtfMergeSettler.Config, {"rpc": "p", "private_key": {"env": "K"}, "conditional_tokens": CTF,
                              "collateral": USDC, "batch": {"urgency": "asap"}},
     "s.batch.urgency", "must be one of low, normal, high, urgent"),
])
def test_bad_options_are_reported_with_their_path(cls, data, where, message):
    value, errors = structure(data, cls, where.rsplit(".", 1)[0])
    assert value is None and errors
    assert any(p.startswith(where.rsplit(".", 1)[0]) and message in m for p, m in errors), errors


def test_no_endpoints_is_an_error():
    value, errors = structure({"chain_id": 137}, RpcPool.Config, "rpc.p")
    assert value is None and errors == [("rpc.p.endpoints", "no endpoints: set `endpoints` "
                                                            "and/or `secret_endpoints`")]
    only_secret = RpcPool.Config(secret_endpoints=(SecretRef(env="X"),))
    with pytest.raises(Exception, match="no endpoints configured"):
        RpcPool("p", only_secret, secret_urls=[])


def test_committed_artifact_matches_the_solidity_sources():
    node = shutil.which("node")
    assert node, "node is required to check the compiled contracts"
    compile_js = REPO / "plugins" / "pr3dict_polygon" / "contracts" / "compile.js"
    done = subprocess.run([node, str(compile_js), "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
