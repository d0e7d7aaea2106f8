"""Every ```python block of docs/python-api.md runs, as written, in a fresh starter project.

tests/test_packaging.py runs the same blocks again against an installed wheel.
"""

from __future__ import annotations

import re

import pytest
from support import REPO

import pr3dict_core.api as api

DOC = REPO / "docs" / "python-api.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block."""
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```$", text, re.M | re.S)]


BLOCKS = python_blocks(DOC.read_text())


def test_the_doc_has_examples_for_every_part():
    code = "\n".join(c for _, c in BLOCKS)
    for call in ("Engine(", "Engine.from_file", "make_tracer_provider", "scan_and_execute",
                 "execute_opportunity", "execute_trade", "statistics()", "get_summary()",
                 "strategy_performance()", "recent_trades(", ".export("):
        assert call in code, call


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_python_api_example(line, code, run_pr3dict, tmp_path, monkeypatch, capsys):
    run_pr3dict("init").assert_success()  # paper.toml and scenarios/ in tmp_path, the cwd
    exec(compile(code, f"{DOC}:{line}", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out  # every example shows its result


def test_api_module_names_only_what_it_has():
    assert sorted(api.__all__) == sorted(set(api.__all__))
    for name in api.__all__:
        assert getattr(api, name) is not None, name
