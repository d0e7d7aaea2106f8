"""The example third-party plugin in docs/examples works the way docs/plugin-authoring.md says.

The package is installed (editable) into the running interpreter's environment when it is
not importable yet, and then exercised through the real ``pr3dict`` script in subprocesses:
entry-point discovery, ``pr3dict plugins``, a paper run, and blocking with ``-p no:NAME``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "examples" / "pr3dict-example-detector"
PIPELINE = EXAMPLE / "pipeline.toml"
PR3DICT = Path(sys.executable).parent / "pr3dict"


def _can_build_without_isolation() -> bool:
    """--no-build-isolation needs an editable-capable setuptools (>= 64) and bdist_wheel,
    which setuptools has had built in since 70.1 and older ones get from `wheel`."""
    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if version < (64, 0):
        return False
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="session")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install docs/examples/pr3dict-example-detector into a directory of its own.

    Not into the running environment: a process that started before the install would see
    the new entry point but not its module. The subprocesses below get the directory on
    PYTHONPATH, where importlib.metadata finds the entry point as an installed plugin.
    """
    target = tmp_path_factory.mktemp("example-site")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
               str(EXAMPLE)]
    if _can_build_without_isolation():
        command.insert(5, "--no-build-isolation")  # no index needed
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return target


def pr3dict(*args: str, cwd: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pr3dict`` script with the example on its path, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PR3DICT_")}
    env["PYTHONPATH"] = str(site_dir)
    return subprocess.run([str(PR3DICT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_plugins_lists_the_example(example_installed, tmp_path):
    result = pr3dict("plugins", cwd=tmp_path, site_dir=example_installed)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    (row,) = [r for r in rows if r and r[0] == "example_detector"]
    assert row[1] == "pr3dict-example-detector"
    assert row[3:] == ["detector:top_of_book_complement"]


def test_example_pipeline_commits_trades(example_installed, tmp_path):
    result = pr3dict("run", str(PIPELINE), "--cycles", "200", cwd=tmp_path,
                     site_dir=example_installed)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    match = re.search(r"^trades committed\s+(\d+)\s*$", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    assert int(match.group(1)) > 0


def test_blocked_plugin_makes_its_type_unknown(example_installed, tmp_path):
    result = pr3dict("-p", "no:example_detector", "validate", "--no-environment",
                     str(PIPELINE), cwd=tmp_path, site_dir=example_installed)
    assert result.returncode == 78
    assert "detectors.tob.type: unknown detector type 'top_of_book_complement'" \
        in result.stderr


def test_example_package_own_tests_pass(example_installed):
    """The tests docs/plugin-authoring.md walks through, run the way a plugin author would."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=EXAMPLE,
        env={**os.environ, "PYTHONPATH": str(example_installed)},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
