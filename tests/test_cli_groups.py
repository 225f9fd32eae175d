"""Command groups (``data``): alone or with --help they list their subcommands."""

from __future__ import annotations

import pytest

from world_models.cli import main


@pytest.mark.parametrize(
    "argv, code", [(["data", "--help"], 0), (["data", "-h"], 0), (["data"], 2)]
)
def test_a_command_group_lists_its_subcommands(argv, code, capsys):
    assert main(argv) == code  # alone: like `world-models` alone, help and exit 2
    out = capsys.readouterr()
    assert "unknown command" not in out.err
    assert "usage: world-models data <command>" in out.out
    assert "  info " in out.out and "  import " in out.out
    assert "summarise and verify an episode store" in out.out


def test_an_unknown_subcommand_of_a_group_names_the_group_s_commands(capsys):
    assert main(["data", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown command 'data bogus'" in err and "info, import" in err


def test_a_subcommand_still_parses(capsys):
    assert main(["data", "info", "--help"]) == 0
    assert "world-models data info" in capsys.readouterr().out
