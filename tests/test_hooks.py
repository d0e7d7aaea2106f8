"""Each hook, exercised through a plugin the way a third party would write it.

The meta-tests at the bottom fail when a hook has no section in docs/hooks.md or no
``test_hook_<name>`` test here.
"""

from __future__ import annotations

import inspect
import re
from typing import ClassVar

import attrs
import pytest
from support import MINIMAL, REPO

from pr3dict_core import hookimpl, hookspecs
from pr3dict_core.components import GateDecision
from pr3dict_core.config import SecretRef, ref
from pr3dict_core.model import TradeState


class Recorder:
    """Collects lifecycle hook calls."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    @hookimpl
    def pr3dict_run_start(self, config, run_id):
        self.calls.append(("start", {"name": config.pipeline.name, "run_id": run_id}))

    @hookimpl
    def pr3dict_run_finish(self, summary, exit_code):
        self.calls.append(("finish", {"committed": summary.committed, "code": exit_code}))

    @hookimpl
    def pr3dict_trade_finished(self, trade):
        self.calls.append(("trade", {"state": trade.state}))


def test_hook_pr3dict_run_start_and_pr3dict_run_finish(write_pipeline, run_pr3dict,
                                                       register_plugin):
    rec = register_plugin(Recorder(), name="recorder")
    run_pr3dict("run", str(write_pipeline(MINIMAL)), "--cycles", "50",
                "--run-id", "r1").assert_success()
    kinds = [k for k, _ in rec.calls]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert rec.calls[0][1] == {"name": "t", "run_id": "r1"}
    assert rec.calls[-1][1]["code"] == 0


def test_hook_pr3dict_trade_finished(write_pipeline, run_pr3dict, register_plugin):
    rec = register_plugin(Recorder(), name="recorder")
    outcome = run_pr3dict("run", str(write_pipeline(MINIMAL)), "--cycles", "120")
    trades = [c for k, c in rec.calls if k == "trade"]
    committed = int(re.search(r"trades committed\s+(\d+)", outcome.out).group(1))
    assert trades and sum(t["state"] is TradeState.COMMITTED for t in trades) == committed


# --------------------------------------------------------------------------- registration


class EveryOtherAsk:
    """A detector that proves third-party detectors receive books and can trade."""

    type: ClassVar[str] = "test_null_detector"

    @attrs.frozen(kw_only=True)
    class Config:
        venues: tuple[str, ...]

    def __init__(self, id, config):
        self.id, self.venue_ids, self.seen = id, config.venues, 0

    @classmethod
    def from_config(cls, id, config, ctx):
        return cls(id, config)

    def bind(self, venues):
        self.venues = venues

    def detect(self, changed):
        self.seen += len(changed)
        return []


class RejectAll:
    type: ClassVar[str] = "test_reject_all"

    @attrs.frozen(kw_only=True)
    class Config:
        reason: str = "no"

    def __init__(self, id, config):
        self.id, self.reason = id, config.reason

    @classmethod
    def from_config(cls, id, config, ctx):
        return cls(id, config)

    def evaluate(self, trade):
        return GateDecision.reject(self.reason)

    def on_trade_finished(self, trade):
        raise AssertionError("only gates that approved are told")


class CountingSink:
    type: ClassVar[str] = "test_counting"
    instances: ClassVar[list] = []

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    def __init__(self, id):
        self.id, self.records, self.summary = id, [], None
        CountingSink.instances.append(self)

    @classmethod
    def from_config(cls, id, config, ctx):
        return cls(id)

    def record(self, record):
        self.records.append(record)

    async def close(self, summary):
        self.summary = summary


class SlowMarket:
    """A strategy delegating to the built-in market one, to show strategies are swappable."""

    type: ClassVar[str] = "test_slow_market"

    @attrs.frozen(kw_only=True)
    class Config:
        max_slippage_ticks: int = 0

    @classmethod
    def from_config(cls, name, config, ctx):
        from pr3dict_strategies.market import MarketStrategy

        self = cls()
        self.inner = MarketStrategy(MarketStrategy.Config(
            max_slippage_ticks=config.max_slippage_ticks))
        self.legs = 0
        return self

    async def execute_leg(self, leg, ctx):
        self.legs += 1
        await self.inner.execute_leg(leg, ctx)


class Components:
    @hookimpl
    def pr3dict_register_detectors(self, registry):
        registry.add(EveryOtherAsk)

    @hookimpl
    def pr3dict_register_risk_gates(self, registry):
        registry.add(RejectAll)

    @hookimpl
    def pr3dict_register_metrics_sinks(self, registry):
        registry.add(CountingSink)

    @hookimpl
    def pr3dict_register_execution_strategies(self, registry):
        registry.add(SlowMarket)


def test_hook_pr3dict_register_detectors(write_pipeline, pr3dict_pm, register_plugin):
    from pr3dict_core.pipeline import Engine

    register_plugin(Components(), name="components")
    path = write_pipeline(MINIMAL + '[detectors.null]\ntype = "test_null_detector"\n'
                                    'venues = ["sim"]\n')
    engine = Engine.from_file(path, pm=pr3dict_pm)
    import asyncio

    asyncio.run(engine.run(cycles=3))
    asyncio.run(engine.close())
    (null,) = [d for d in engine.detectors if d.id == "null"]
    assert null.seen > 0


def test_hook_pr3dict_register_risk_gates(write_pipeline, run_pr3dict, register_plugin):
    register_plugin(Components(), name="components")
    path = write_pipeline(MINIMAL + '[gates.no]\ntype = "test_reject_all"\nreason = "closed"\n')
    outcome = run_pr3dict("run", str(path), "--cycles", "100").assert_success()
    assert re.search(r"trades committed\s+0\b", outcome.out)
    rejected = [s for s in outcome.spans_named("evaluate risk_gate")]
    assert rejected and all(s.attributes["pr3dict.gate.reason"] == "closed" for s in rejected)


def test_hook_pr3dict_register_metrics_sinks(write_pipeline, run_pr3dict, register_plugin):
    register_plugin(Components(), name="components")
    CountingSink.instances.clear()
    path = write_pipeline(MINIMAL + '[sinks.count]\ntype = "test_counting"\n')
    run_pr3dict("run", str(path), "--cycles", "100").assert_success()
    (sink,) = CountingSink.instances
    assert sink.records and sink.summary["committed"] == sum(
        r.state == "committed" for r in sink.records)


def test_hook_pr3dict_register_execution_strategies(write_pipeline, pr3dict_pm,
                                                    register_plugin):
    import asyncio

    from pr3dict_core.pipeline import Engine

    register_plugin(Components(), name="components")
    path = write_pipeline(MINIMAL + '[execution]\nstrategy = "test_slow_market"\n'
                                    'max_slippage_ticks = 1\n')
    engine = Engine.from_file(path, pm=pr3dict_pm)
    summary = asyncio.run(engine.run(cycles=100))
    asyncio.run(engine.close())
    assert engine.strategy.legs >= 2 * (summary.committed + summary.rolled_back)
    assert summary.committed > 0


def test_hook_pr3dict_register_venues(write_pipeline, pr3dict_pm, register_plugin):
    """A plugin's venue type is built from its table; the built-in paper venue is one too."""
    from pr3dict_core.plugins import collect_components

    registry = collect_components(pr3dict_pm)
    reg = registry.get("venues", "paper")
    assert reg is not None and reg.plugin == "paper"


class FakeChain:
    """An RPC provider and a settler: the engine starts, hands trades to, and closes them."""

    events: ClassVar[list] = []


class EchoRpc:
    type: ClassVar[str] = "test_echo_rpc"

    @attrs.frozen(kw_only=True)
    class Config:
        chain_id: int = 137

    def __init__(self, id, config):
        self.id, self.config = id, config

    @classmethod
    def from_config(cls, id, config, ctx):
        return cls(id, config)

    async def start(self):
        FakeChain.events.append("rpc start")

    async def request(self, method, params):
        return {"eth_chainId": hex(self.config.chain_id)}[method]

    async def close(self):
        FakeChain.events.append("rpc close")


class RecordingSettler:
    type: ClassVar[str] = "test_settler"

    @attrs.frozen(kw_only=True)
    class Config:
        rpc: str = ref("rpc")

    def __init__(self, id, rpc):
        self.id, self.rpc = id, rpc

    @classmethod
    def from_config(cls, id, config, ctx):
        return cls(id, ctx.lookup("rpc", config.rpc))

    async def start(self):
        FakeChain.events.append(("chain", await self.rpc.request("eth_chainId", [])))

    async def settle(self, trade):
        assert trade.state is TradeState.COMMITTED
        FakeChain.events.append(("settle", trade.hedged_size))

    async def close(self):
        FakeChain.events.append("settler close")


class ChainPlugin:
    @hookimpl
    def pr3dict_register_rpc_providers(self, registry):
        registry.add(EchoRpc)

    @hookimpl
    def pr3dict_register_settlers(self, registry):
        registry.add(RecordingSettler)


def test_hook_pr3dict_register_rpc_providers_and_pr3dict_register_settlers(
        write_pipeline, run_pr3dict, register_plugin):
    register_plugin(ChainPlugin(), name="chain")
    FakeChain.events.clear()
    path = write_pipeline(MINIMAL + '[rpc.polygon]\ntype = "test_echo_rpc"\n'
                                    '[settlers.merge]\ntype = "test_settler"\nrpc = "polygon"\n')
    outcome = run_pr3dict("run", str(path), "--cycles", "120").assert_success()
    events = FakeChain.events
    assert events[0] == "rpc start" and events[1] == ("chain", "0x89")
    settled = [e for e in events if isinstance(e, tuple) and e[0] == "settle"]
    committed = int(re.search(r"trades committed\s+(\d+)", outcome.out).group(1))
    assert len(settled) == committed > 0
    assert events[-2:] == ["settler close", "rpc close"]  # closed in reverse order
    assert outcome.spans_named("settle trade")

    bad = write_pipeline(MINIMAL + '[rpc.polygon]\ntype = "test_echo_rpc"\n'
                                   '[settlers.merge]\ntype = "test_settler"\nrpc = "polgon"\n',
                         "bad.toml")
    run_pr3dict("validate", str(bad)).assert_failed(78)


class VaultSecrets:
    @hookimpl
    def pr3dict_resolve_secret(self, ref):
        return "from-vault" if ref.env == "VAULT_ONLY" else None


def test_hook_pr3dict_resolve_secret(pr3dict_pm, register_plugin, monkeypatch, tmp_path):
    register_plugin(VaultSecrets(), name="vault")
    hook = pr3dict_pm.hook.pr3dict_resolve_secret
    assert hook(ref=SecretRef(env="VAULT_ONLY")) == "from-vault"
    monkeypatch.setenv("POLY_KEY", "0xabc")
    assert hook(ref=SecretRef(env="POLY_KEY")) == "0xabc"  # falls through to the built-in
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    assert hook(ref=SecretRef(file=str(secret))) == "s3cret"
    from pr3dict_core.defaults import SecretNotFound

    with pytest.raises(SecretNotFound, match="MISSING_VAR is not set"):
        hook(ref=SecretRef(env="MISSING_VAR"))


class NeedsADescription:
    @hookimpl
    def pr3dict_check_pipeline(self, config):
        if not config.pipeline.description:
            from pr3dict_core.config import ConfigProblem

            return [ConfigProblem(str(config.file), "pipeline.description", "required here")]
        return []


def test_hook_pr3dict_check_pipeline(write_pipeline, run_pr3dict, register_plugin):
    register_plugin(NeedsADescription(), name="needs-description")
    path = write_pipeline(MINIMAL)
    outcome = run_pr3dict("validate", str(path))
    assert outcome.code == 78
    assert f"{path}: pipeline.description: required here" in outcome.err
    path.write_text(path.read_text().replace('name = "t"', 'name = "t"\ndescription = "x"'))
    run_pr3dict("validate", str(path)).assert_success()


# --------------------------------------------------------------------------- meta-tests

HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("pr3dict_"))


def _signature(name: str) -> str:
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    docs = (REPO / "docs" / "hooks.md").read_text()
    assert f"## `{_signature(hook)}`" in docs, f"docs/hooks.md has no section for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = [name for name in globals() if name.startswith("test_hook_")]
    assert any(hook in name for name in tests), f"no test_hook_* test mentions {hook}"


def _section(docs: str, hook: str) -> str:
    start = docs.index(f"## `{_signature(hook)}`")
    end = docs.find("\n## ", start + 1)
    return docs[start:end if end != -1 else None]


def _normal(text: str) -> str:
    return " ".join(text.replace("``", "`").split())


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docs_quote_the_hookspec_docstring(hook):
    """One source: each section of docs/hooks.md opens with its hook's docstring."""
    section = _section((REPO / "docs" / "hooks.md").read_text(), hook)
    doc = inspect.cleandoc(getattr(hookspecs, hook).__doc__)
    assert _normal(doc) in _normal(section), (
        f"docs/hooks.md's section on {hook} must contain its docstring:\n\n"
        + doc.replace("``", "`"))


def test_hook_pr3dict_run_start_is_not_called_by_validate(write_pipeline, run_pr3dict,
                                                          register_plugin):
    rec = register_plugin(Recorder(), name="recorder")
    run_pr3dict("validate", str(write_pipeline(MINIMAL))).assert_success()
    assert rec.calls == []


def test_every_hookspec_has_a_docstring():
    for hook in HOOKS:
        assert getattr(hookspecs, hook).__doc__, hook




class HelloCommand:
    @hookimpl
    def pr3dict_add_commands(self, subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.add_argument("name")
        p.set_defaults(handler=self.run)

    def run(self, args, ctx):
        print(f"hello {args.name} ({len(ctx.registry.names('venues'))} venue types)",
              file=ctx.stdout)
        return 3


def test_hook_pr3dict_add_commands(run_pr3dict, register_plugin):
    register_plugin(HelloCommand(), name="hello")
    outcome = run_pr3dict("hello", "world")
    assert outcome.code == 3
    assert outcome.out.startswith("hello world (")
