"""Typed dataclass configs that document themselves.

Every command takes one dataclass config. A field's documentation is the string literal
written just below it (an "attribute docstring"); :func:`field_docs` reads those from the
source so ``--help`` and the README never drift from the code. Named presets are plain
instances of the config; command-line flags override the preset's values.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import os
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from world_models.core.errors import ConfigError

C = TypeVar("C")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` (and its bases) to its attribute docstring."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_value(tp: Any, text: str) -> Any:
    """Parse a command-line string into a value of annotated type ``tp``."""
    tp, optional = _unwrap_optional(tp)
    if optional and text.lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if text not in [str(c) for c in choices]:
            raise argparse.ArgumentTypeError(f"expected one of {choices}, got {text!r}")
        return next(c for c in choices if str(c) == text)
    if origin in (tuple, list):
        (item,) = set(typing.get_args(tp)) - {Ellipsis} or {str}
        items = [_parse_value(item, t) for t in text.replace(" ", "").split(",") if t]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
    if tp in (int, float, str, Path):
        try:
            return tp(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected {tp.__name__}, got {text!r}") from exc
    raise TypeError(f"unsupported config field type {tp!r}")


def add_config_args(
    parser: argparse.ArgumentParser, cls: type, presets: dict[str, Any] | None = None
) -> None:
    """Add ``--preset`` (when presets exist) and one ``--flag`` per field of ``cls``.

    Flags default to ``None`` so :func:`config_from_args` can tell "not given" (take the
    preset's value) from an explicit value.
    """
    docs = field_docs(cls)
    hints = _resolved_types(cls)
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help="named set of defaults; flags below override it (default: %(default)s)",
        )
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        base, _ = _unwrap_optional(tp)
        help_text = docs.get(f.name, "")
        help_text = f"{help_text} (default: {default})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if base is bool:
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            metavar = base.__name__.upper() if isinstance(base, type) else "VALUE"
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar=metavar,
                help=help_text,
                type=functools.partial(_parse_value, tp),
            )


def config_from_args(
    cls: type[C],
    args: argparse.Namespace,
    presets: dict[str, C] | None = None,
    default_preset: str | None = None,
) -> C:
    """Build a ``cls`` from parsed args: the preset's values, overridden by given flags."""
    name = getattr(args, "preset", None) or default_preset
    base = presets[name] if (presets and name) else cls()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.init and getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(base, **overrides)


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
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        text = "one of " + ", ".join(json.dumps(c) for c in typing.get_args(base))
    elif origin in (tuple, list):
        text = "a list"
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
