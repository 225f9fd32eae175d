"""Dataclass configs: docs from attribute docstrings, flags over presets, JSON round trip."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from world_models.core.config import (
    add_config_args,
    config_from_args,
    field_docs,
    from_dict,
    to_dict,
)
from world_models.core.errors import ConfigError


@dataclass(frozen=True)
class Toy:
    lr: float = 1e-3
    """Learning rate of Adam."""
    steps: int = 10
    """How many steps."""
    compile: bool = False
    """Use torch.compile."""
    out: Path = Path("runs/x")
    """Where to write."""
    sizes: tuple[int, ...] = (1, 2)
    """Layer sizes."""
    device: str | None = None
    """Device; None picks one."""


PRESETS = {"fast": Toy(steps=2), "slow": Toy(steps=1000, lr=1e-4)}


def parse(argv):
    p = argparse.ArgumentParser()
    add_config_args(p, Toy, PRESETS)
    return p, p.parse_args(argv)


def test_field_docs_are_read_from_the_source():
    assert field_docs(Toy) == {
        "lr": "Learning rate of Adam.",
        "steps": "How many steps.",
        "compile": "Use torch.compile.",
        "out": "Where to write.",
        "sizes": "Layer sizes.",
        "device": "Device; None picks one.",
    }


def test_help_shows_docs_and_defaults():
    p, _ = parse([])
    text = p.format_help()
    assert "Learning rate of Adam. (default: 0.001)" in text and "--preset" in text


def test_flags_override_the_preset():
    _, args = parse(
        ["--preset", "slow", "--steps", "5", "--compile", "--sizes", "3,4,5", "--device", "cpu"]
    )
    cfg = config_from_args(Toy, args, PRESETS)
    assert cfg == Toy(lr=1e-4, steps=5, compile=True, sizes=(3, 4, 5), device="cpu")


def test_bad_flag_value_is_an_argparse_error():
    with pytest.raises(SystemExit):
        parse(["--steps", "many"])


def test_dict_round_trip_and_unknown_keys():
    cfg = Toy(out=Path("/tmp/a"), sizes=(7,))
    assert from_dict(Toy, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(Toy, {"lr": 1.0, "nope": 2})
