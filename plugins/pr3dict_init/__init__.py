"""``pr3dict init [DIR]``: write a runnable starter project from data shipped in this package.

The files live in ``starter/`` next to this module and are read with ``importlib.resources``,
so the command works from an installed wheel exactly as from a checkout.
"""

from __future__ import annotations

import argparse
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pr3dict_core import hookimpl

EX_OK, EX_FAILED = 0, 1


@hookimpl
def pr3dict_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "init", help="write a runnable starter project (paper pipeline, scenario, README)",
        description="Write a starter project into DIR: a paper pipeline and its scenario, a "
                    "shadow pipeline for later, and a README. Existing files are not "
                    "overwritten unless --force is given.")
    p.add_argument("dir", nargs="?", type=Path, default=Path("."),
                   help="where to write the project (default: the current directory)")
    p.add_argument("--force", action="store_true", help="overwrite files that already exist")
    p.set_defaults(handler=run_init)


def starter_files() -> dict[str, Traversable]:
    """Relative path (POSIX) -> packaged file, for every file of the starter project."""
    out: dict[str, Traversable] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.name == "__pycache__":
                continue
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            else:
                out[prefix + child.name] = child

    walk(resources.files(__package__) / "starter", "")
    return dict(sorted(out.items()))


def run_init(args: argparse.Namespace, ctx: Any) -> int:
    target: Path = args.dir
    files = starter_files()
    existing = [rel for rel in files if (target / rel).exists()]
    if existing and not args.force:
        for rel in existing:
            print(f"pr3dict: {target / rel} exists", file=ctx.stderr)
        print(f"pr3dict: {len(existing)} file(s) exist; nothing was written "
              "(--force overwrites them)", file=ctx.stderr)
        return EX_FAILED
    for rel, source in files.items():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(source.read_bytes())
    print(f"pr3dict: wrote {len(files)} files to {target}", file=ctx.stdout)
    shown = "" if target == Path(".") else f"cd {target} && "
    print(f"next: {shown}pr3dict run paper.toml && pr3dict report latest", file=ctx.stdout)
    return EX_OK
