"""A user's first hour, from a built distribution rather than a checkout.

Builds the sdist from a copy of the project's sources, builds the wheel from that sdist (as
pip does), installs it into a fresh virtual environment and, in a temporary directory that
is not a checkout: ``pr3dict --version``, ``pr3dict init``, ``pr3dict run``, ``pr3dict
report latest``, a settlement pipeline on anvil, and the Python API examples of
docs/python-api.md.

The fresh environment gets its *dependencies* (not pr3dict) from the test interpreter's
site-packages through a directory of links, so nothing is downloaded and the check takes
seconds; pr3dict itself comes only from the wheel.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from support import REPO

from pr3dict_polygon.devchain import AnvilNode, anvil_binary, deploy_test_chain, dev_account
from pr3dict_polygon.rpc import RpcPool

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "pr3dict_core", "plugins")
BUILD = ("import sys; from setuptools import build_meta as b; "
         "print(getattr(b, 'build_' + sys.argv[1])(sys.argv[2]))")
# Files a plugin reads at run time: each must be inside the wheel.
DATA_FILES = ("pr3dict_polygon/contracts/compiled.json", "pr3dict_init/starter/paper.toml",
              "pr3dict_init/starter/shadow.toml", "pr3dict_init/starter/scenarios/demo.toml",
              "pr3dict_init/starter/scenarios/sim.toml", "pr3dict_init/starter/README.md",
              "pr3dict_init/starter/keys/TEST-ONLY-sim-polymarket.key")


def _build(kind: str, source: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", BUILD, kind, str(out)], cwd=source,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n for n in zf.namelist() if ".dist-info/" not in n or n.endswith("LICENSE")}


def _dependencies_dir(target: Path) -> Path:
    """Links to everything installed next to the test interpreter, except pr3dict itself."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir()
    for entry in site.iterdir():
        name = entry.name
        if name.startswith(("pr3dict", "__editable__", "_pr3dict")) or name.endswith(".pth"):
            continue
        (target / name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel built from the sdist, the fresh environment's bin directory, a clean env)."""
    root = tmp_path_factory.mktemp("first-hour")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    sdist = _build("sdist", src, root / "dist")
    direct_wheel = _build("wheel", src, root / "direct")
    with tarfile.open(sdist) as tf:
        tf.extractall(root / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                            else {}))
    (unpacked,) = (root / "unpacked").iterdir()
    wheel = _build("wheel", unpacked, root / "dist")
    # The sdist is complete: the wheel pip would build from it has every file of the other.
    assert _wheel_names(wheel) == _wheel_names(direct_wheel)

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    env_site = Path(subprocess.check_output(
        [env_dir / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
         "['purelib'])"], text=True).strip())
    deps = _dependencies_dir(root / "deps")
    (env_site / "_first_hour_deps.pth").write_text(f"{deps}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"),
                    "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PR3DICT_ANVIL"] = str(anvil_binary())  # a user without a checkout sets this
    return wheel, sdist, env_dir / "bin", env


def _run(bindir: Path, env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(bindir / argv[0]), *argv[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_wheel_and_sdist_carry_data_license_and_ranges(installed):
    wheel, sdist, _, _ = installed
    names = _wheel_names(wheel)
    for data in DATA_FILES:
        assert data in names, f"{data} missing from the wheel"
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
        assert "Apache License" in zf.read(meta_name.replace("METADATA", "licenses/LICENSE"))\
            .decode()
    assert meta["License-Expression"] == "Apache-2.0"
    requires = meta.get_all("Requires-Dist")
    runtime = [r for r in requires if "extra ==" not in r]
    assert not any(r.startswith("tomli") for r in requires)
    assert not any("==" in r for r in runtime), runtime  # ranges, never exact pins
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert "LICENSE" in members
    assert "plugins/pr3dict_polygon/contracts/compiled.json" in members


def test_first_hour_from_the_wheel(installed, tmp_path):
    wheel, _, bindir, env = installed
    version = _run(bindir, env, tmp_path, "pr3dict", "--version").stdout.strip()
    assert version == f"pr3dict {wheel.name.split('-')[1]}"
    _run(bindir, env, tmp_path, "pr3dict", "init", "first")
    project = tmp_path / "first"
    _run(bindir, env, project, "pr3dict", "validate", "paper.toml", "shadow.toml")
    run = _run(bindir, env, project, "pr3dict", "run", "paper.toml", "--cycles", "60")
    committed = int(re.search(r"trades committed\s+(\d+)", run.stdout).group(1))
    assert committed > 0
    report = _run(bindir, env, project, "pr3dict", "report", "latest")
    assert re.search(rf"committed / rolled back / unresolved\s+{committed} /", report.stdout), \
        report.stdout
    assert list(project.glob("runs/*/report.html"))
    # Every module and data file came from the wheel, not from a checkout.
    where = _run(bindir, env, tmp_path, "python", "-c",
                 "import pr3dict_core, pr3dict_init, pr3dict_polygon.settlement as s; "
                 "print(pr3dict_core.__file__, pr3dict_init.__file__, s.__file__); "
                 "print(sorted(s.artifacts()))").stdout.splitlines()
    assert all(str(bindir.parent) in path and str(REPO) not in path
               for path in where[0].split())
    assert where[1] == "['MiniConditionalTokens', 'TestCollateral']"


SETTLE = """
[pipeline]
name = "settle"
mode = "paper"
cycles = 80

[venues.sim]
type = "paper"
scenario = "scenarios/demo.toml"

[detectors.complement]
type = "binary_complement"
venues = ["sim"]
min_edge = "0.005"
max_size = "25"

[gates.capital]
type = "capital"
bankroll = "1000"

[gates.position]
type = "max_position"
max_leg_size = "50"

[execution]
strategy = "market"
deadline_ms = 30

[rpc.polygon]
type = "polygon_pool"
endpoints = ["{url}"]
chain_id = 137

[settlers.merge]
type = "ctf_merge"
rpc = "polygon"
private_key = {{ env = "SETTLER_KEY" }}
conditional_tokens = "{ctf}"
collateral = "{collateral}"
mint_positions = true
markets = [
{markets}
]

[sinks.gas]
type = "gas_tracker"
rpc = "polygon"
path = "runs/{{run_id}}/gas.json"
"""


def test_settlement_pipeline_from_the_wheel(installed, tmp_path):
    """The installed settler finds its contract ABIs (package data) and merges on anvil."""
    _, _, bindir, env = installed
    _run(bindir, env, tmp_path, "pr3dict", "init")
    markets = [line.split('"')[1] for line in
               (tmp_path / "scenarios" / "demo.toml").read_text().splitlines()
               if line.startswith("id = ")]
    node = AnvilNode(137)
    try:
        trader = dev_account(1)

        async def deploy():
            pool = RpcPool.for_urls("setup", [node.url])
            await pool.start()
            try:
                return await deploy_test_chain(pool, dev_account(0), questions=markets,
                                               mint_to={trader.address: 1_000 * 10**6})
            finally:
                await pool.close()

        chain = asyncio.run(deploy())
        (tmp_path / "settle.toml").write_text(SETTLE.format(
            url=node.url, ctf=chain.ctf, collateral=chain.collateral,
            markets=",\n".join(f'  {{ yes = "{m}:yes", no = "{m}:no", '
                               f'condition_id = "{chain.conditions[m]}" }}' for m in markets)))
        run = _run(bindir, {**env, "SETTLER_KEY": trader.key.hex()}, tmp_path,
                   "pr3dict", "run", "settle.toml", "--run-id", "settle")
    finally:
        node.kill()
    committed = int(re.search(r"trades committed\s+(\d+)", run.stdout).group(1))
    gas = json.loads((tmp_path / "runs" / "settle" / "gas.json").read_text())
    merges = gas["gas"]["by_action"]["merge"]["transactions"]
    assert committed > 0 and 0 < merges <= committed


def test_python_api_examples_from_the_wheel(installed, tmp_path):
    """docs/python-api.md's examples, run by the installed interpreter in a starter project."""
    _, _, bindir, env = installed
    _run(bindir, env, tmp_path, "pr3dict", "init")
    text = (REPO / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)
    assert len(blocks) >= 6
    names = []
    for index, code in enumerate(blocks):
        names.append(f"example_{index}.py")
        (tmp_path / names[-1]).write_text(code)
    # One interpreter runs them all (imports once), each as its own __main__ script.
    out = _run(bindir, env, tmp_path, "python", "-c",
               "import runpy, sys\nfor n in sys.argv[1:]:\n"
               "    print('==', n, flush=True); runpy.run_path(n, run_name='__main__')",
               *names).stdout
    assert [line for line in out.splitlines() if line.startswith("== ")] == \
        [f"== {n}" for n in names]
