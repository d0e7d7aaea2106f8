from __future__ import annotations

from pathlib import Path

import pytest
from support import DEMO_SCENARIO


@pytest.fixture
def write_pipeline(tmp_path: Path):
    """Write a pipeline file into tmp_path; ``{demo}`` expands to the demo scenario path."""

    def write(text: str, name: str = "pipeline.toml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("{demo}", str(DEMO_SCENARIO)))
        return path

    return write


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory: what a run writes relative to the working
    directory (journals, runs/) never lands in the checkout or meets another test's."""
    monkeypatch.chdir(tmp_path)
