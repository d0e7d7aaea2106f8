"""The leg table in docs/architecture.md is the one in the code."""

from __future__ import annotations

from support import REPO

from pr3dict_core.model import LEG_TABLE, LegState, Trigger


def render() -> list[str]:
    lines = ["| state | " + " | ".join(t.value for t in Trigger) + " |",
             "|---" * (len(Trigger) + 1) + "|"]
    for state in LegState:
        cells = [LEG_TABLE[(state, t)].__name__.strip("_") if (state, t) in LEG_TABLE else "—"
                 for t in Trigger]
        lines.append(f"| `{state.value}` | " + " | ".join(cells) + " |")
    return lines


def test_the_documented_leg_table_is_the_code():
    text = (REPO / "docs/architecture.md").read_text()
    start = text.index("<!-- leg-table")
    block = text[start:text.index("<!-- /leg-table -->")].splitlines()[1:]
    assert [line for line in block if line.strip()] == render()
