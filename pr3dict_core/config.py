"""Pipeline files: TOML -> cattrs -> frozen attrs, strict, with every error at once.

Structuring happens in two phases (as Vector does): the envelope of each section is read
by the core, then each component table's options are structured into the ``Config`` class
its plugin registered. Each error is reported as ``file: dotted.path: message``.
"""

from __future__ import annotations

import difflib
import enum
import re
import tomllib
import typing
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from attrs import field, frozen
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from .components import KINDS, ComponentRegistry
from .model import Pr3dictError

EX_CONFIG = 78


# --------------------------------------------------------------------------- errors


@frozen
class ConfigProblem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else \
            f"{self.file}: {self.message}"


class ConfigError(Pr3dictError):
    """Every problem found in one or more pipeline files."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------- shared option types


@frozen
class SecretRef:
    """A pointer to a secret: ``{ env = "NAME" }`` or ``{ file = "path" }``. Never the secret."""

    env: str | None = None
    file: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference needs exactly one of `env` or `file`")

    def __repr__(self) -> str:
        return f"SecretRef(env={self.env!r})" if self.env else "SecretRef(file=...)"


class Mode(enum.StrEnum):
    PAPER = "paper"
    SHADOW = "shadow"  # live public market data, orders filled locally (pr3dict_replay)
    LIVE = "live"


@frozen(kw_only=True)
class PipelineSection:
    name: str
    mode: Mode = Mode.PAPER
    description: str = ""
    cycles: int | None = field(default=None, validator=attrs.validators.optional(
        attrs.validators.ge(1)))
    duration_s: float | None = None
    interval_ms: int = field(default=0, validator=attrs.validators.ge(0))
    # Read the next books while trades are in flight (live). False finishes each cycle's
    # trades first, which keeps a paper run deterministic for its seed.
    concurrent_cycles: bool = False
    kill_switch_file: str | None = None
    # The journal; recovery at start reads it back. "" keeps it in memory (no recovery).
    journal: str = "journal/{pipeline}.sqlite"


@frozen(kw_only=True)
class ExecutionSection:
    """Engine-level execution options; other keys of ``[execution]`` go to the strategy."""

    strategy: str = "market"
    deadline_ms: int = field(default=30, validator=attrs.validators.gt(0))
    max_concurrent_trades: int = field(default=4, validator=attrs.validators.ge(1))
    rollback: Literal["unwind", "complete_or_unwind"] = "unwind"
    unwind_slippage_ticks: int = field(default=5, validator=attrs.validators.ge(0))
    unwind_deadline_ms: int = field(default=1000, validator=attrs.validators.gt(0))
    # Loss cap: never sell an unwind below entry average minus this (USDC per share).
    max_unwind_loss: Decimal = field(default=Decimal("0.10"),
                                     validator=attrs.validators.ge(Decimal(0)))
    reconcile_timeout_ms: int = field(default=5000, validator=attrs.validators.gt(0))
    order_timeout_ms: int = field(default=2000, validator=attrs.validators.gt(0))
    poll_interval_ms: int = field(default=5, validator=attrs.validators.gt(0))


@frozen(kw_only=True)
class TelemetrySection:
    exporter: Literal["none", "console", "otlp", "jsonl"] = "none"
    endpoint: str = "http://127.0.0.1:4318"
    path: str = "runs/{run_id}/spans.jsonl"
    service_name: str = "pr3dict"
    timeout_s: float = field(default=2.0, validator=attrs.validators.gt(0))


@frozen
class ComponentSpec:
    """One ``[section.id]`` table: its type, the built options, and where it came from."""

    section: str
    id: str
    type: str
    options: Any  # an instance of the component's Config class


@frozen
class PipelineConfig:
    file: Path
    pipeline: PipelineSection
    execution: ExecutionSection
    strategy_options: Any
    telemetry: TelemetrySection
    components: dict[str, dict[str, ComponentSpec]]  # section -> id -> spec
    tests: Any = ()  # the raw ``[[tests]]`` tables (``pr3dict test`` checks and runs them)

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    def section(self, name: str) -> dict[str, ComponentSpec]:
        return self.components.get(name, {})


# --------------------------------------------------------------------------- converter


def _strict(expected: type, label: str) -> Any:
    def hook(value: Any, _: Any) -> Any:
        if type(value) is not expected:
            raise TypeError(f"expected {label}, got {_describe(value)}")
        return value
    return hook


def _describe(value: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a float", bool: "a boolean",
             dict: "a table", list: "an array"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


def _structure_decimal(value: Any, _: Any) -> Decimal:
    # Money comes as a string ("0.005") or an integer; a TOML float is refused because
    # 0.1 as a binary float is not 0.1.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        hint = f'; write it as a string, e.g. "{value}"' if isinstance(value, float) else ""
        raise TypeError(f"expected a decimal string, got {_describe(value)}{hint}")
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return out


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_describe(value)}")
    return float(value)


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    choices = [str(m.value) for m in cls]  # type: ignore[attr-defined]
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return cls(value)


def _structure_secret(value: Any, _: Any) -> SecretRef:
    if isinstance(value, str):
        raise TypeError('secrets are never inline: use { env = "NAME" } or { file = "path" }')
    if not isinstance(value, dict):
        raise TypeError(f"expected a secret reference table, got {_describe(value)}")
    extra = set(value) - {"env", "file"}
    if extra:
        raise ValueError(f"unknown key(s) in secret reference: {', '.join(sorted(extra))}")
    return SecretRef(env=value.get("env"), file=value.get("file"))


def make_converter() -> cattrs.Converter:
    """A private, strict converter: unknown keys and wrong types are errors, nothing coerces."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    # Class hooks dispatch on the MRO: StrEnum is registered so str's hook skips enums.
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(Decimal, _structure_decimal)
    conv.register_structure_hook(SecretRef, _structure_secret)
    conv.register_structure_hook(enum.StrEnum, _structure_enum)
    conv.register_structure_hook(enum.Enum, _structure_enum)
    return conv


_CONVERTER = make_converter()


def structure(data: Any, cls: type, path: str) -> tuple[Any, list[tuple[str, str]]]:
    """Structure ``data`` into ``cls``; on failure return (None, [(dotted path, message)])."""
    try:
        return _CONVERTER.structure(data, cls), []
    except Exception as exc:  # cattrs raises groups; attrs validators raise plain errors
        return None, list(_flatten(exc, path, cls))


def _flatten(exc: BaseException, path: str, cls: Any = None) -> typing.Iterator[tuple[str, str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield _join(path, key), f"unknown key{hint}"
        return
    if isinstance(exc, BaseExceptionGroup):
        owner = getattr(exc, "cl", None)
        fields = {a.name for a in attrs.fields(owner)} \
            if isinstance(owner, type) and attrs.has(owner) else set()
        for sub in exc.exceptions:
            subpath = path
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, AttributeValidationNote):
                    subpath = _join(path, note.name)
                elif isinstance(note, IterableValidationNote):
                    subpath = f"{path}[{note.index}]"
            if isinstance(sub, KeyError) and subpath != path:
                yield subpath, "required key is missing"
                continue
            # attrs validators run in __init__, so cattrs reports them at the table; their
            # message names the field ("'bankroll' must be > 0: -5"): move it to the key.
            named = _VALIDATOR_MESSAGE.match(str(sub)) if subpath == path else None
            if named and named.group(1) in fields:
                got = f" (got {named.group(3)})" if named.group(3) else ""
                yield _join(path, named.group(1)), f"must {named.group(2)}{got}"
                continue
            yield from _flatten(sub, subpath)
        return
    if isinstance(exc, KeyError):
        yield path, "required key is missing"
        return
    yield path, _message(exc)


_VALIDATOR_MESSAGE = re.compile(r"^'(\w+)' must (.+?)(?::\s+(.+))?$", re.S)
_LITERAL_MESSAGE = re.compile(r"^(.*) not in literal typing\.Literal\[(.*)\]$", re.S)


def _message(exc: BaseException) -> str:
    text = str(exc)
    literal = _LITERAL_MESSAGE.match(text)
    if literal:
        return f"expected one of {literal.group(2)}, got {literal.group(1)!r}"
    if isinstance(exc, ValueError) and " is not a valid " in text:  # enum / literal
        return text.replace("ValueError: ", "")
    return text or type(exc).__name__


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


# --------------------------------------------------------------------------- loading

# ``[[tests]]`` belongs to ``pr3dict test`` (checked by its plugin's pr3dict_check_pipeline).
_KNOWN_SECTIONS = {"pipeline", "execution", "telemetry", "tests", *KINDS}


def load_pipeline(path: str | Path, registry: ComponentRegistry) -> PipelineConfig:
    """Read, check and build a pipeline file; raises ConfigError listing every problem."""
    path = Path(path)
    problems: list[ConfigProblem] = []

    def problem(p: str, message: str) -> None:
        problems.append(ConfigProblem(str(path), p, message))

    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(str(path), "", "no such file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(str(path), "", f"invalid TOML: {exc}")]) from None

    for key in raw:
        if key not in _KNOWN_SECTIONS:
            close = difflib.get_close_matches(key, sorted(_KNOWN_SECTIONS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problem(key, f"unknown section{hint}")

    def section(name: str, cls: type, data: Any) -> Any:
        if not isinstance(data, dict):
            problem(name, f"expected a table, got {_describe(data)}")
            return None
        value, errors = structure(data, cls, name)
        for p, m in errors:
            problem(p, m)
        return value

    if "pipeline" not in raw:
        problem("pipeline", "required section is missing (needs at least `name`)")
        pipeline = None
    else:
        pipeline = section("pipeline", PipelineSection, raw["pipeline"])

    execution_raw = dict(raw.get("execution", {})) if isinstance(raw.get("execution", {}), dict) \
        else raw["execution"]
    execution, strategy_options = None, None
    if isinstance(execution_raw, dict):
        core_keys = {a.name for a in attrs.fields(ExecutionSection)}
        core = {k: v for k, v in execution_raw.items() if k in core_keys}
        rest = {k: v for k, v in execution_raw.items() if k not in core_keys}
        execution = section("execution", ExecutionSection, core)
        # Check the strategy's own options even when an engine-level key is wrong.
        name = core.get("strategy", ExecutionSection().strategy)
        reg = registry.get("strategies", name) if isinstance(name, str) else None
        if reg is None and isinstance(name, str):
            problem("execution.strategy", f"unknown execution strategy {name!r}; "
                    f"{registry.suggest('strategies', name)}")
        elif reg is not None:
            strategy_options = section("execution", reg.cls.Config, rest)
    else:
        problem("execution", f"expected a table, got {_describe(execution_raw)}")

    telemetry = section("telemetry", TelemetrySection, raw.get("telemetry", {}))

    components: dict[str, dict[str, ComponentSpec]] = {}
    for kind in KINDS:
        if kind == "strategies":
            continue
        tables = raw.get(kind, {})
        if not isinstance(tables, dict):
            problem(kind, f"expected a table of components, got {_describe(tables)}")
            continue
        for cid, table in tables.items():
            where = f"{kind}.{cid}"
            if not isinstance(table, dict):
                problem(where, f"expected a table, got {_describe(table)}")
                continue
            ctype = table.get("type")
            if ctype is None:
                problem(f"{where}.type", "required key is missing")
                continue
            if not isinstance(ctype, str):
                problem(f"{where}.type", f"expected a string, got {_describe(ctype)}")
                continue
            reg = registry.get(kind, ctype)
            if reg is None:
                problem(f"{where}.type", f"unknown {KINDS[kind]} type {ctype!r}; "
                        f"{registry.suggest(kind, ctype)}")
                continue
            options = {k: v for k, v in table.items() if k != "type"}
            built = section(where, reg.cls.Config, options)
            if built is not None:
                components.setdefault(kind, {})[cid] = ComponentSpec(kind, cid, ctype, built)

    # Topology: ids referenced must exist.
    # References are checked against every id the file defines, valid or not, so a table
    # with a problem of its own does not also make every reference to it an error.
    def defined(section: str) -> set[str]:
        tables = raw.get(section, {})
        return set(tables) if isinstance(tables, dict) else set()

    venue_ids, rpc_ids = defined("venues"), defined("rpc")
    if "venues" in raw and not venue_ids and not problems:
        problem("venues", "at least one venue is required")
    if "venues" not in raw:
        problem("venues", "required section is missing (at least one venue)")
    if "detectors" not in raw:
        problem("detectors", "required section is missing (at least one detector)")
    for kind, specs in components.items():
        for cid, spec in specs.items():
            for attr_name, ids, label in (("venues", venue_ids, "venue"), ("venue", venue_ids,
                                          "venue"), ("rpc", rpc_ids, "rpc")):
                ref = getattr(spec.options, attr_name, None)
                refs = [ref] if isinstance(ref, str) else list(ref or ())
                for i, r in enumerate(refs):
                    if isinstance(r, str) and r not in ids:
                        suffix = f"[{i}]" if not isinstance(ref, str) else ""
                        close = difflib.get_close_matches(r, sorted(ids), n=1)
                        hint = f" (did you mean {close[0]!r}?)" if close else \
                            f" (defined: {', '.join(sorted(ids)) or 'none'})"
                        problem(f"{kind}.{cid}.{attr_name}{suffix}",
                                f"no {label} with id {r!r}{hint}")

    if pipeline is not None and pipeline.mode is Mode.SHADOW and raw.get("settlers"):
        problem("settlers", "a shadow run (pipeline.mode = \"shadow\") trades nothing real "
                "and settles nothing: remove the settlers")

    if problems:
        raise ConfigError(problems)
    assert pipeline is not None and execution is not None and telemetry is not None
    return PipelineConfig(
        file=path.resolve(), pipeline=pipeline, execution=execution,
        strategy_options=strategy_options, telemetry=telemetry, components=components,
        tests=raw.get("tests", []),
    )


def load_pipelines(paths: list[str | Path], registry: ComponentRegistry) -> list[PipelineConfig]:
    """Load several files, collecting every file's problems before raising."""
    configs, problems = [], []
    for p in paths:
        try:
            configs.append(load_pipeline(p, registry))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return configs
