"""Pipeline files: TOML -> cattrs -> frozen attrs, strict, with every error at once.

Structuring happens in two phases (as Vector does): the envelope of each section is read
by the core, then each component table's options are structured into the ``Config`` class
its plugin registered. Each error is reported as ``file: dotted.path: message``.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
import tomllib
import typing
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
import cattrs
from attrs import field, frozen
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from .components import KINDS, ComponentRegistry
from .model import Pr3dictError
from .stores import sqlite_path

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


class OptionError(Pr3dictError, ValueError):
    """Raised by a component's ``from_config`` for a problem with one of its options (a key
    file that is not a key, a scenario file that is missing); reported at ``kind.id.key``."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def check_input_file(path: Path, key: str, what: str) -> None:
    """An input file an option names must exist as a file: else an OptionError at ``key``."""
    if not path.exists():
        raise OptionError(key, f"no such {what}: {path}")
    if not path.is_file():
        raise OptionError(key, f"{path} is not a file (a {what} is expected)")
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise OptionError(key, f"{path} is not UTF-8 text (a {what} is expected)") from None
    except OSError as exc:
        raise OptionError(key, f"cannot read {path}: {exc.strerror or exc}") from None


def option_holding(options: Any, value: Any) -> str:
    """The key of ``options`` whose value is (or contains) ``value``; "" if none."""
    for a in attrs.fields(type(options)):
        held = getattr(options, a.name)
        if held == value or (isinstance(held, tuple) and value in held) or \
                (isinstance(held, dict) and value in held.values()):
            return a.name
    return ""


# --------------------------------------------------------------------------- references

_REF = "pr3dict_ref"


@frozen
class Ref:
    """What an option refers to: components of ``kind`` (a section), optionally of ``types``."""

    kind: str
    types: tuple[str, ...] = ()


def ref(kind: str, *, types: Iterable[str] = (), **kwargs: Any) -> Any:
    """An attrs field holding the id (or a tuple of ids, or None) of other components.

    The loader checks every such id exists (and has one of ``types``) and builds the
    referenced components first::

        capital_gate: str | None = ref("gates", types=["capital"], default=None)
    """
    metadata = {**kwargs.pop("metadata", {}), _REF: Ref(kind, tuple(types))}
    return field(metadata=metadata, **kwargs)


_OUTPUT = "pr3dict_output"


def output(**kwargs: Any) -> Any:
    """An attrs field naming a file the run writes (relative to the working directory,
    ``{run_id}`` filled in): the loader refuses a path that cannot be created."""
    return field(metadata={**kwargs.pop("metadata", {}), _OUTPUT: True}, **kwargs)


def references(options: Any) -> Iterator[tuple[str, Ref, str]]:
    """(key, Ref, id) for every id a component's options refer to."""
    for a in attrs.fields(type(options)):
        declared = a.metadata.get(_REF)
        if declared is None:
            continue
        value = getattr(options, a.name)
        if isinstance(value, str):
            yield a.name, declared, value
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    yield f"{a.name}[{i}]", declared, item


class Mode(enum.StrEnum):
    PAPER = "paper"
    SHADOW = "shadow"  # live public market data, orders filled locally (pr3dict_replay)
    LIVE = "live"


# Risk gates a live pipeline must have, unless `[pipeline] waive_live_gates` names them.
LIVE_GATES = ("capital", "max_position")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _pipeline_name(instance: object, attribute: Any, value: str) -> None:
    if not _NAME.fullmatch(value) or ".." in value:
        raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                         f"or digit (it names the journal file), got {value!r}")


@frozen(kw_only=True)
class PipelineSection:
    name: str = field(validator=_pipeline_name)
    mode: Mode = Mode.PAPER
    description: str = ""
    cycles: int | None = field(default=None, validator=attrs.validators.optional(
        attrs.validators.ge(1)))
    duration_s: float | None = field(default=None, validator=attrs.validators.optional(
        attrs.validators.gt(0)))
    interval_ms: int = field(default=0, validator=attrs.validators.ge(0))
    # Read the next books while trades are in flight (live). False finishes each cycle's
    # trades first, which keeps a paper run deterministic for its seed.
    concurrent_cycles: bool = False
    kill_switch_file: str | None = None
    # Moved to `[journal] url`; kept only to say so.
    journal: str | None = None
    # Live mode refuses to start without a `capital` and a `max_position` gate; naming a
    # gate type here runs without it anyway (a deliberate, visible choice in the file).
    waive_live_gates: tuple[Literal["capital", "max_position"], ...] = ()


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
    # Resends of a request that did not reach the venue (rate limited, unreachable), with
    # jittered backoff from 50 ms to 500 ms, never past the leg's deadline.
    max_retries: int = field(default=3, validator=[attrs.validators.ge(0),
                                                    attrs.validators.le(20)])
    poll_interval_ms: int = field(default=5, validator=attrs.validators.gt(0))
    # At start, finished trades younger than this are checked with the venue again: a
    # fill can be reversed on chain (Polymarket MATCHED -> FAILED) while no process ran.
    recheck_window_ms: int = field(default=300_000, validator=attrs.validators.ge(0))
    # Several entry legs to one venue go out in one batch request when the venue has a
    # batch endpoint (faster than concurrent single posts: bench/bench_floor.py).
    batch_orders: bool = True


def _journal_url(instance: object, attribute: Any, value: str) -> None:
    if value == "":
        return
    parts = urlsplit(value)
    if parts.scheme in ("postgresql", "postgres"):
        if parts.password is not None or "password=" in parts.query:
            raise ValueError("the password does not belong in the url (it would show in "
                             "logs): use `password = { env = \"NAME\" }` or `{ file = ... }`")
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(f"{value!r} names no host: postgresql://USER@HOST:PORT/DATABASE")
        return
    if parts.scheme == "sqlite" and value.startswith("sqlite:///") and value != "sqlite:///":
        return
    raise ValueError(f"expected \"sqlite:///PATH\" (relative to the working directory; "
                     f"four slashes for an absolute path), \"postgresql://USER@HOST/DATABASE\" "
                     f"or \"\" (no journal), got {value!r}")


@frozen(kw_only=True)
class JournalSection:
    """Where trades, intents, leases and the capital book are kept. "" keeps nothing (no
    recovery). ``{pipeline}`` in the url is the pipeline's name."""

    url: str = field(default="sqlite:///journal/{pipeline}.sqlite", validator=_journal_url)
    password: SecretRef | None = None  # PostgreSQL only
    # An engine renews its lease every third of this; when it stops renewing (it died, or
    # lost the database) other engines adopt its open trades after this long.
    lease_ms: int = field(default=10_000, validator=[attrs.validators.ge(1_000),
                                                     attrs.validators.le(600_000)])

    def resolved_url(self, pipeline: str) -> str:
        return self.url.replace("{pipeline}", pipeline)

    @property
    def shared(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))


@frozen(kw_only=True)
class TelemetrySection:
    exporter: Literal["none", "console", "otlp", "jsonl"] = "none"
    # Unset: OpenTelemetry's environment variables apply (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    # OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...), then http://127.0.0.1:4318 and
    # "pr3dict". The file, when it says, wins.
    endpoint: str | None = None
    path: str = "runs/{run_id}/spans.jsonl"
    service_name: str | None = None
    timeout_s: float = field(default=2.0, validator=attrs.validators.gt(0))
    # The share of trades traced (whole traces: a trade's spans are kept or dropped
    # together). Unset: OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG apply, else all.
    sample_ratio: float | None = field(default=None, validator=attrs.validators.optional(
        [attrs.validators.ge(0), attrs.validators.le(1)]))


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
    # (section, id) with every component after those it refers to (declared with `ref`).
    build_order: tuple[tuple[str, str], ...] = ()
    journal: JournalSection = JournalSection()
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


# Money and prices are far below this; anything bigger is a typo (or "1e999999999").
_DECIMAL_MAX_EXPONENT = 15
_DECIMAL_MIN_EXPONENT = -18


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
    if out and out.adjusted() >= _DECIMAL_MAX_EXPONENT:
        raise ValueError(f"too large: {value!r} (at most 15 digits before the point)")
    if out and out.as_tuple().exponent < _DECIMAL_MIN_EXPONENT:  # type: ignore[operator]
        raise ValueError(f"too precise: {value!r} (at most 18 decimal places)")
    return out


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
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


def _is_array(t: Any) -> bool:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    return origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis)


def _array_hook(t: Any, conv: cattrs.Converter) -> Any:
    """Arrays only from TOML arrays: a string is not split into characters."""
    inner = list_structure_factory(t, conv) if typing.get_origin(t) is list \
        else homogenous_tuple_structure_factory(t, conv)

    def hook(value: Any, cls: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {_describe(value)}")
        return inner(value, cls)
    return hook


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
    conv.register_structure_hook_factory(_is_array, _array_hook)
    return conv


_CONVERTER = make_converter()


def structure(data: Any, cls: type, path: str) -> tuple[Any, list[tuple[str, str]]]:
    """Structure ``data`` into ``cls``; on failure return (None, [(dotted path, message)]).

    Types are checked while structuring with attrs validators off; then every field's
    validator runs on its own, so each failing option is reported at its own key, and all
    of them, not only the first one ``__init__`` would raise.
    """
    try:
        # attrs' switch is process-wide: files are structured while loading and building,
        # before any component starts a thread.
        with attrs.validators.disabled():
            value: Any = _CONVERTER.structure(data, cls)
    except Exception as exc:  # cattrs raises groups
        errors = list(_flatten(exc, path))
        return None, errors + _validate_rest(data, cls, path, errors)
    errors = list(validate(value, path))
    return (None, errors) if errors else (value, [])


def _validate_rest(data: Any, cls: type, path: str, errors: list[tuple[str, str]]
                   ) -> list[tuple[str, str]]:
    """Validator errors of the keys that did structure, so one wrong type hides nothing."""
    if not isinstance(data, dict):
        return []
    prefix = f"{path}." if path else ""
    bad = {re.split(r"[.\[]", p[len(prefix):], maxsplit=1)[0] for p, _ in errors
           if p.startswith(prefix)}
    try:
        with attrs.validators.disabled():
            partial: Any = _CONVERTER.structure(
                {k: v for k, v in data.items() if k not in bad}, cls)
    except Exception:  # a key with a problem was required: nothing more to say
        return []
    seen = {p for p, _ in errors}
    return [(p, m) for p, m in validate(partial, path) if p not in seen]


# Durations by name: an option ending in _ms or _s is at most a day / a year.
_DURATION_LIMITS = {"_ms": 86_400_000, "_s": 366 * 86_400}


def validate(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """(dotted path, message) for every option of an attrs instance that its validator refuses."""
    for a in attrs.fields(type(obj)):
        value = getattr(obj, a.name)
        where = _join(path, a.name)
        if a.validator is not None:
            try:
                a.validator(obj, a, value)
            except Exception as exc:
                yield where, _validator_message(exc, a.name)
                continue
        yield from _check_duration(a.name, value, where)
        if attrs.has(type(value)):
            yield from validate(value, where)
        elif isinstance(value, tuple | list):
            for i, item in enumerate(value):
                if attrs.has(type(item)):
                    yield from validate(item, f"{where}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                if attrs.has(type(item)):
                    yield from validate(item, _join(where, key))


def _check_duration(name: str, value: Any, where: str) -> Iterator[tuple[str, str]]:
    for suffix, limit in _DURATION_LIMITS.items():
        if not name.endswith(suffix):
            continue
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, int | float) and not isinstance(item, bool) \
                    and not 0 <= item <= limit:
                unit = "ms" if suffix == "_ms" else "s"
                yield where, f"must be a duration between 0 and {limit:_} {unit} (got {item})"
                return
        return


_ATTRS_MESSAGE = re.compile(r"^(?:Length of )?'(\w+)' (.*)$", re.S)


def _validator_message(exc: BaseException, name: str) -> str:
    """A validator's message without the option's own name (the path already says it)."""
    # attrs' in_ validator raises ValueError(message, attribute, options, value).
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    length = text.startswith("Length of ")
    named = _ATTRS_MESSAGE.match(text)
    if named and named.group(1) == name:  # attrs' own: "'x' must be > 0: -5"
        text = named.group(2)
        must = re.match(r"^must (.+?):\s+(.+)$", text, re.S)
        if must:
            text = f"must {must.group(1)} (got {must.group(2)})"
    elif text.startswith(f"{name} "):
        text = text[len(name) + 1:]
    if length:  # min_len / max_len
        bound = re.match(r"^must be ([<>]=) (\d+) \(got (\d+)\)$", text)
        text = f"needs {'at least' if bound.group(1) == '>=' else 'at most'} " \
            f"{bound.group(2)} item(s), got {bound.group(3)}" if bound else f"length {text}"
    return text


def _flatten(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield _join(path, key), f"unknown key{hint}"
        return
    if isinstance(exc, BaseExceptionGroup):
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
            yield from _flatten(sub, subpath)
        return
    if isinstance(exc, KeyError):
        yield path, "required key is missing"
        return
    if isinstance(exc, OptionError):
        yield _join(path, exc.key), exc.message
        return
    yield path, _message(exc)


_LITERAL_MESSAGE = re.compile(r"^(.*) not in literal typing\.Literal\[(.*)\]$", re.S)


def _message(exc: BaseException) -> str:
    # An exception with several arguments prints as a tuple: its message is the first.
    text = exc.args[0] if len(exc.args) > 1 and isinstance(exc.args[0], str) else str(exc)
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
_KNOWN_SECTIONS = {"pipeline", "execution", "telemetry", "journal", "tests", *KINDS}


def _read(path: Path) -> dict[str, Any]:
    """The TOML document, or a ConfigError saying why the file cannot be read."""
    def fail(message: str) -> ConfigError:
        return ConfigError([ConfigProblem(str(path), "", message)])

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise fail("no such file") from None
    except IsADirectoryError:
        raise fail("is a directory, not a pipeline file") from None
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start}): a pipeline file is TOML") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"invalid TOML: {exc}") from None


# Without references between them, components are built in this order (what has side
# effects, sinks writing files or opening ports, last).
KIND_ORDER = ("rpc", "venues", "detectors", "gates", "settlers", "sinks")


def load_pipeline(path: str | Path, registry: ComponentRegistry) -> PipelineConfig:
    """Read, check and build a pipeline file; raises ConfigError listing every problem."""
    path = Path(path)
    problems: list[ConfigProblem] = []

    def problem(p: str, message: str) -> None:
        problems.append(ConfigProblem(str(path), p, message))

    raw = _read(path)

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
    journal = section("journal", JournalSection, raw.get("journal", {}))

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

    for kind, label in (("venues", "venue"), ("detectors", "detector")):
        tables = raw.get(kind)
        if tables is None:
            problem(kind, f"required section is missing (at least one {label})")
        elif isinstance(tables, dict) and not tables:
            problem(kind, f"is empty: at least one {label} is required")

    edges = _check_references(raw, components, problem)
    build_order = _build_order(components, edges, problem)
    if pipeline is not None:
        _check_mode(pipeline, components, problem)
        if pipeline.journal is not None:
            url = f"sqlite:///{pipeline.journal}" if pipeline.journal else ""
            problem("pipeline.journal", f"moved: write [journal] url = \"{url}\" instead")
        if journal is not None and journal.url and not journal.shared:
            _check_output(sqlite_path(journal.resolved_url(pipeline.name)), "journal.url",
                          problem)
    if telemetry is not None and telemetry.exporter == "jsonl":
        _check_output(telemetry.path, "telemetry.path", problem)
    for kind, specs in components.items():
        for cid, spec in specs.items():
            for a in attrs.fields(type(spec.options)):
                value = getattr(spec.options, a.name)
                if a.metadata.get(_OUTPUT) and isinstance(value, str):
                    _check_output(value, f"{kind}.{cid}.{a.name}", problem)

    if pipeline is not None and pipeline.mode is Mode.SHADOW and raw.get("settlers"):
        problem("settlers", "a shadow run (pipeline.mode = \"shadow\") trades nothing real "
                "and settles nothing: remove the settlers")

    if problems:
        raise ConfigError(problems)
    assert pipeline is not None and execution is not None and telemetry is not None
    return PipelineConfig(
        file=path.resolve(), pipeline=pipeline, execution=execution,
        strategy_options=strategy_options, telemetry=telemetry, journal=journal,
        components=components,
        build_order=build_order,
        tests=raw.get("tests", []),
    )


Node = tuple[str, str]  # (section, id)


def _check_references(raw: dict[str, Any], components: dict[str, dict[str, ComponentSpec]],
                      problem: typing.Callable[[str, str], None]) -> dict[Node, set[Node]]:
    """Check every declared reference; returns each component's dependencies."""
    # Checked against every id the file defines, valid or not, so a table with a problem
    # of its own does not also make every reference to it an error.
    def defined(kind: str) -> list[str]:
        tables = raw.get(kind, {})
        return list(tables) if isinstance(tables, dict) else []

    edges: dict[Node, set[Node]] = {}
    for kind, specs in components.items():
        for cid, spec in specs.items():
            deps = edges.setdefault((kind, cid), set())
            for key, target, rid in references(spec.options):
                where = f"{kind}.{cid}.{key}"
                label = KINDS.get(target.kind, target.kind)
                ids = defined(target.kind)
                if rid not in ids:
                    close = difflib.get_close_matches(rid, ids, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else \
                        f" (defined in [{target.kind}]: {', '.join(ids) or 'none'})"
                    problem(where, f"no {label} with id {rid!r}{hint}")
                    continue
                other = components.get(target.kind, {}).get(rid)
                if other is not None and target.types and other.type not in target.types:
                    problem(where, f"{label} {rid!r} is of type {other.type!r}; expected "
                            f"{' or '.join(map(repr, target.types))}")
                    continue
                if (target.kind, rid) == (kind, cid):
                    problem(where, "a component cannot refer to itself")
                    continue
                deps.add((target.kind, rid))
    return edges


def _build_order(components: dict[str, dict[str, ComponentSpec]],
                 edges: dict[Node, set[Node]],
                 problem: typing.Callable[[str, str], None]) -> tuple[Node, ...]:
    """Every component after what it refers to; otherwise KIND_ORDER, then file order."""
    rank: dict[Node, int] = {}
    for kind in [*KIND_ORDER, *(k for k in components if k not in KIND_ORDER)]:
        for cid in components.get(kind, {}):
            rank[(kind, cid)] = len(rank)
    waiting = {n: {d for d in edges.get(n, set()) if d in rank} for n in rank}
    order: list[Node] = []
    while waiting:
        ready = sorted((n for n, deps in waiting.items() if not deps), key=rank.__getitem__)
        if not ready:
            cycle = sorted(waiting, key=rank.__getitem__)
            problem(f"{cycle[0][0]}.{cycle[0][1]}", "reference cycle between " +
                    ", ".join(f"{k}.{i}" for k, i in cycle))
            break
        node = ready[0]
        order.append(node)
        del waiting[node]
        for deps in waiting.values():
            deps.discard(node)
    return tuple(order)


def _check_mode(pipeline: PipelineSection, components: dict[str, dict[str, ComponentSpec]],
                problem: typing.Callable[[str, str], None]) -> None:
    """Checks that depend on paper or live mode: endpoints, live venues, live risk gates.

    A component's ``Config`` may define ``check_mode(mode) -> [(key, message)]``; a venue's
    may define ``simulated`` (True when it never reaches a real venue).
    """
    mode = str(pipeline.mode)
    for kind, specs in components.items():
        for cid, spec in specs.items():
            check = getattr(spec.options, "check_mode", None)
            for key, message in (check(mode) if callable(check) else ()):
                problem(f"{kind}.{cid}.{key}", message)
    if pipeline.mode is not Mode.LIVE:
        return
    venues = components.get("venues", {})
    if venues and all(getattr(v.options, "simulated", False) for v in venues.values()):
        problem("pipeline.mode", "mode is \"live\" but every venue is simulated ("
                + ", ".join(f"venues.{v.id} [{v.type}]" for v in venues.values())
                + "); use mode = \"paper\"")
    have = {spec.type for spec in components.get("gates", {}).values()}
    for gate in LIVE_GATES:
        if gate not in have and gate not in pipeline.waive_live_gates:
            problem("pipeline.mode", f"live trading needs a {gate!r} risk gate: add "
                    f"[gates.<id>] with type = {gate!r}, or waive it deliberately with "
                    f"[pipeline] waive_live_gates = [{gate!r}]")


def _check_output(value: str, where: str, problem: typing.Callable[[str, str], None]) -> None:
    """A file the run will write: no existing part of its path may be a file."""
    if not value:
        return
    target = Path(value.replace("{run_id}", "run")).absolute()
    if target.is_dir():
        problem(where, f"{value} is a directory, not a file")
        return
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                problem(where, f"{parent} is a file, so {value} cannot be created")
            elif not os.access(parent, os.W_OK | os.X_OK):
                problem(where, f"{parent} is not writable, so {value} cannot be created")
            return


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
