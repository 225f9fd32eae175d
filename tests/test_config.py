"""Dataclass configs: JSON round trips with typed errors; the tyro CLI over them."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from world_models.cli import COMMANDS, main
from world_models.core.config import from_dict, to_dict
from world_models.core.errors import ConfigError


@dataclass(frozen=True)
class Part:
    width: int = 4
    """Units."""


@dataclass(frozen=True)
class Toy:
    lr: float = 1e-3
    """Learning rate of Adam."""
    sizes: tuple[int, ...] = (1, 2)
    """Layer sizes."""
    out: Path = Path("runs/x")
    """Where to write."""
    device: str | None = None
    """Device; None picks one."""
    part: Part = field(default_factory=Part)
    """A nested part."""


def test_dict_round_trip_nested_and_unknown_keys():
    cfg = Toy(out=Path("/tmp/a"), sizes=(7,), part=Part(9))
    assert from_dict(Toy, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(Toy, {"lr": 1.0, "nope": 2})
    with pytest.raises(ConfigError, match="'width' must be an integer"):
        from_dict(Toy, {"part": {"width": "wide"}})


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "from world_models.cli import main\n"
        "for argv in (['--help'], ['train-vae', '--help'], ['evaluate', '--help']):\n"
        "    main(argv)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "train-controller" in out.stdout  # the overview lists the commands


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_from_its_field_docs(name, capsys):
    assert main([*name.split(), "--help"]) == 0
    text = capsys.readouterr().out
    assert f"world-models {name}" in text
    assert "(default:" in text or "(required)" in text


def test_preset_then_flags_and_bad_values(capsys, monkeypatch):
    seen = []
    monkeypatch.setattr("world_models.data.collect.collect", seen.append)
    monkeypatch.setattr("world_models.data.store.describe", lambda out: "described")
    assert (
        main(["collect", "--preset", "debug", "--episodes", "3", "--crop", "0", "84", "0", "96"])
        == 0
    )
    c = seen[-1]
    assert (c.env, c.episodes, c.max_steps, c.crop) == ("fake", 3, 50, (0, 84, 0, 96))
    assert main(["collect", "--env", "doom"]) == 0  # --env names a preset: its defaults
    assert (seen[-1].max_steps, str(seen[-1].out_dir)) == (2100, "data/doom")
    assert main(["collect", "--env", "fake-discrete"]) == 0  # not a preset: data/ENV
    assert (seen[-1].env, str(seen[-1].out_dir)) == ("fake-discrete", "data/fake-discrete")
    assert main(["collect", "--episodes", "many"]) == 2
    assert main(["collect", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
