"""Typed dataclass configs: JSON round trips, and the field types commands share.

Every command takes one dataclass config; its fields' attribute docstrings (the string
literal written just below a field) are the ``--help`` text, read by tyro
(:mod:`world_models.cli`). Named presets are plain instances of the config; flags override
the preset's values. A config nests the configs of its parts (a trainer holds its model's
config); :func:`to_dict` and :func:`from_dict` round-trip them through JSON with a
one-line :class:`ConfigError` naming any field of the wrong type.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import tyro
from tyro.constructors import PrimitiveConstructorSpec

from world_models.core.errors import ConfigError

C = TypeVar("C")


def alias(*flags: str):
    """Other spellings of a flag (``Annotated[bool, alias("-q")]``)."""
    return tyro.conf.arg(aliases=flags)


Target = Annotated[Literal["real", "dream"], alias("--in")]
"""Where a command plays: the real env or M's dream (``--target`` or ``--in``)."""

Flat = tyro.conf.OmitArgPrefixes
"""Marks a nested config whose fields keep their own flag names (``--hidden-size``, not
``--model.hidden-size``): a trainer's model config."""

Positional = tyro.conf.Positional
"""Marks a field given without its flag (``world-models reproduce doom``)."""

Hidden = tyro.conf.Suppress
"""Marks a field the command line does not show (``Annotated[T, Hidden]``): set from
Python only (the fake envs' knobs in tests)."""


def registered(names: Iterable[str], check: Callable[[str], object]) -> Any:
    """The type of a string field that names an entry of a registry (env presets, action
    modes): ``--help`` lists ``names``, the entries known when the config module is
    imported, and the command line takes any name ``check`` accepts when it is parsed, so
    an entry registered later (an env of the caller's) is a valid flag value too.
    ``check`` raises a one-line ConfigError for an unknown name."""

    def parse(args: list[str]) -> str:
        check(args[0])
        return args[0]

    spec = PrimitiveConstructorSpec(
        nargs=1,
        metavar="{" + ",".join(names) + "}",
        instance_from_str=parse,
        is_instance=lambda value: isinstance(value, str),
        str_from_instance=lambda value: [value],
    )
    return Annotated[str, spec]


RESUMABLE = "world_models_resumable"
"""Key of a field's metadata that marks it as one a run's re-run may change."""


def resumable(default: Any) -> Any:
    """A field a re-run of a training run may change without starting a new run (its
    length, hardware, display and speed switches); every other field must match the
    run's stored config. ``x: int = resumable(1)``, read by :func:`resumable_fields`."""
    return dataclasses.field(default=default, metadata={RESUMABLE: True})


def resumable_fields(config: Any) -> frozenset[str]:
    """The names of ``config``'s fields marked :func:`resumable` (a nested config so
    marked may change as a whole)."""
    return frozenset(
        f.name
        for f in dataclasses.fields(config)  # type: ignore[arg-type]
        if f.metadata.get(RESUMABLE)
    )


def check_finite(
    name: str,
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    where: str = "",
) -> None:
    """A :class:`ConfigError` unless ``value`` is a finite number in the range ``lo``..``hi``
    (either end None: unbounded; ``lo_open``/``hi_open``: that end excluded). None passes
    (an optional setting left unset). For a config's float fields in ``__post_init__``:
    tyro reads ``nan`` and ``inf`` as floats, which fail far from the flag otherwise.
    ``where`` (a command name) starts the message."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if ok:
        return
    if lo is not None and hi is not None:
        span = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        span = f" {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        span = f" {'<' if hi_open else '<='} {hi:g}"
    else:
        span = ""
    prefix = f"{where}: " if where else ""
    raise ConfigError(f"{prefix}{name} must be a finite number{span}, got {value!r}")


def override(config: C, **changes: Any) -> C:
    """:func:`dataclasses.replace` that also reaches nested configs: a name that is not a
    field of ``config`` sets the nested config's field of that name (``override(train,
    hidden_size=64)`` sets ``train.model.hidden_size``), as the command line's flat flags do.
    An unknown name is a :class:`ConfigError`."""
    own = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    top = {k: v for k, v in changes.items() if k in own}
    rest = {k: v for k, v in changes.items() if k not in own}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        part = getattr(config, f.name)
        if f.name in top or not rest or not dataclasses.is_dataclass(part):
            continue
        mine = {
            k: rest.pop(k) for k in list(rest) if k in {g.name for g in dataclasses.fields(part)}
        }
        if mine:
            top[f.name] = dataclasses.replace(part, **mine)
    if rest:
        raise ConfigError(f"{type(config).__name__} has no setting {', '.join(sorted(rest))}")
    return dataclasses.replace(config, **top)  # type: ignore[type-var]


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)  # keeps registered() names' checks


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (paths as strings, tuples as lists)."""

    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if dataclasses.is_dataclass(v):
            return to_dict(v)
        return v

    return {f.name: conv(getattr(config, f.name)) for f in dataclasses.fields(config)}


def from_dict(cls: type[C], data: dict[str, Any], *, source: str = "config") -> C:
    """Rebuild ``cls`` from :func:`to_dict` output; unknown keys are a :class:`ConfigError`."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown} for {cls.__name__}")
    hints = _resolved_types(cls)
    values = {key: _typed(hints[key], value, key, source) for key, value in data.items()}
    return cls(**values)


def _describe(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is Annotated:
        base = typing.get_args(base)[0]
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        text = "one of " + ", ".join(json.dumps(c) for c in typing.get_args(base))
    elif origin in (tuple, list):
        text = "a list"
    elif dataclasses.is_dataclass(base):
        text = "an object"
    elif origin is dict or base is dict:
        text = "an object"
    else:
        text = {
            bool: "true or false",
            int: "an integer",
            float: "a number",
            str: "a string",
            Path: "a path (string)",
        }.get(base, getattr(base, "__name__", str(base)))
    return text + (" or null" if optional else "")


def _typed(tp: Any, value: Any, name: str, source: str) -> Any:
    """``value`` (from JSON) as a value of annotated type ``tp``, or a :class:`ConfigError`
    naming the field: a string where a number belongs would fail much later, and far from
    the file that holds it."""
    base, optional = _unwrap_optional(tp)
    origin = typing.get_origin(base)

    def bad() -> ConfigError:
        return ConfigError(f"{source}: field {name!r} must be {_describe(tp)}, got {value!r}")

    if value is None:
        if optional:
            return None
        raise bad()
    if origin is Annotated:  # flags' extras; a registered() name is checked by its registry
        for extra in base.__metadata__:
            check = getattr(extra, "instance_from_str", None)
            if check is not None and isinstance(value, str):
                try:
                    check([value])
                except ConfigError:
                    raise ConfigError(
                        f"{source}: field {name!r} must be one of {extra.metavar}, got {value!r}"
                    ) from None
        return _typed(typing.get_args(base)[0], value, name, source)
    if origin is typing.Literal:
        if not any(value == c and type(value) is type(c) for c in typing.get_args(base)):
            raise bad()
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = typing.get_args(base)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise bad()
            items = [
                _typed(a, v, f"{name}[{i}]", source) for i, (a, v) in enumerate(zip(args, value))
            ]
        else:
            item = args[0] if args else Any
            items = [_typed(item, v, f"{name}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or base is dict:
        if not isinstance(value, dict):
            raise bad()
        return value
    if dataclasses.is_dataclass(base):  # a nested config: the part's own fields
        if not isinstance(value, dict):
            raise bad()
        return from_dict(base, value, source=f"{source}: {name}")
    if base is bool:
        if not isinstance(value, bool):
            raise bad()
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    elif base is str:
        if not isinstance(value, str):
            raise bad()
    elif base is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise bad()
        return Path(value)
    return value


def dumps(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)
