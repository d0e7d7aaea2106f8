"""Local chains for tests, benchmarks and paper pipelines: anvil nodes and the test contracts.

anvil comes from the npm package ``@foundry-rs/anvil`` (``npm ci`` at the repository root).
We start the *real* binary, not ``node_modules/.bin/anvil``: that is a node wrapper, and
killing the wrapper's PID orphans the node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address

from .batch import BatchConfig, BatchTxManager, TxOp
from .rpc import RpcPool
from .settlement import artifacts

REPO = Path(__file__).resolve().parents[2]
ANVIL_RELATIVE = "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
# anvil's documented default development mnemonic: its accounts are public test accounts.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def anvil_binary() -> Path:
    """The anvil executable: ``PR3DICT_ANVIL``, else the checkout's or the current directory's
    ``node_modules`` (an installed pr3dict has no checkout), else ``anvil`` on PATH."""
    if os.environ.get("PR3DICT_ANVIL"):
        candidates = [Path(os.environ["PR3DICT_ANVIL"])]
    else:
        on_path = shutil.which("anvil")
        candidates = [REPO / ANVIL_RELATIVE, Path.cwd() / ANVIL_RELATIVE,
                      *([Path(on_path)] if on_path else [])]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        f"anvil not found at {', '.join(map(str, candidates))}: run `npm ci` in a checkout "
        "(it installs @foundry-rs/anvil), put anvil on PATH or set PR3DICT_ANVIL")


def dev_account(index: int = 0) -> LocalAccount:
    """Account ``index`` of anvil's default mnemonic (pre-funded with 10,000 ETH on anvil)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilNode:
    """One anvil process on a free loopback port; ``kill()`` / ``pause()`` by PID."""

    def __init__(self, chain_id: int = 137, *, port: int | None = None,
                 args: tuple[str, ...] = ()):
        self.chain_id = chain_id
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port),
             "--chain-id", str(chain_id), "--silent", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def rpc(self, method: str, params: list[Any] | None = None, timeout: float = 2.0) -> Any:
        """A blocking JSON-RPC call straight to this node (setup and assertions only)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": params or []}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"anvil exited with {self.proc.returncode}: {err[-500:]}")
            try:
                self.rpc("eth_chainId", timeout=0.5)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"anvil did not answer on {self.url} within {timeout} s") from None
                time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung node)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


@attrs.frozen
class DevChain:
    """Addresses of the deployed test contracts and the prepared binary conditions."""

    collateral: str
    ctf: str
    oracle: str
    question_id: str  # of the first question
    condition_id: str  # of the first question
    conditions: dict[str, str] = attrs.field(factory=dict)  # question text -> condition id


async def deploy(batch: BatchTxManager, name: str, *args: Any) -> ChecksumAddress:
    """Deploy one of the project's compiled test contracts; returns its address."""
    art = artifacts()[name]
    contract = batch.pool.web3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    data = contract.constructor(*args).data_in_transaction
    result = (await batch.execute(TxOp(to=None, data=data, action=f"deploy {name}")))
    result.raise_for_status()
    assert result.contract_address is not None
    return to_checksum_address(result.contract_address)


async def deploy_test_chain(pool: RpcPool, deployer: LocalAccount, *,
                            mint_to: dict[str, int] | None = None,
                            questions: Sequence[str] = ("pr3dict test market",)) -> DevChain:
    """Deploy TestCollateral + MiniConditionalTokens, mint collateral, prepare conditions.

    The deployer acts as the oracle; question ids are keccak256 of the question text. Sent
    through ``pool`` (broadcast), so every node of a multi-node test chain gets the same
    transactions and therefore the same state. On a fresh anvil the addresses are always the
    same (deployer nonce 0 and 1), and so are the condition ids.
    """
    batch = BatchTxManager(pool, deployer, BatchConfig(max_age_ms=0, poll_ms=20))
    await batch.start()
    try:
        collateral = await deploy(batch, "TestCollateral")
        ctf = await deploy(batch, "MiniConditionalTokens")
        w3 = pool.web3
        token = w3.eth.contract(address=collateral, abi=artifacts()["TestCollateral"]["abi"])
        cts = w3.eth.contract(address=ctf, abi=artifacts()["MiniConditionalTokens"]["abi"])
        for owner, units in (mint_to or {}).items():
            data = token.encode_abi("mint", args=[to_checksum_address(owner), units])
            (await batch.execute(TxOp(to=collateral, data=data, action="mint"))) \
                .raise_for_status()
        conditions: dict[str, str] = {}
        for question in questions:
            question_id = keccak(text=question)
            data = cts.encode_abi("prepareCondition", args=[deployer.address, question_id, 2])
            (await batch.execute(TxOp(to=ctf, data=data, action="prepare"))).raise_for_status()
            cid = await cts.functions.getConditionId(deployer.address, question_id, 2).call()
            conditions[question] = "0x" + cid.hex()
    finally:
        await batch.close()
    first = questions[0]
    return DevChain(collateral=collateral, ctf=ctf, oracle=deployer.address,
                    question_id="0x" + keccak(text=first).hex(), condition_id=conditions[first],
                    conditions=conditions)
