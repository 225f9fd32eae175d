"""NaN, Inf and values outside a setting's range are refused at once, in one line naming the
flag, before anything is written (issue 20, #8); so are a non-string pretrained name and
Ctrl-C's message where a command does not resume."""

from __future__ import annotations

import math

import pytest

from world_models import cli
from world_models.cli import main
from world_models.core.config import check_finite
from world_models.core.errors import ConfigError


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    "command, flags, match",
    [
        (["collect", "--env", "fake"], ["--dt", "nan"], "dt must be a finite number"),
        (["collect", "--env", "fake"], ["--dt", "inf"], "dt must be a finite number"),
        (["collect", "--env", "fake"], ["--dt", "0"], "dt must be a finite number > 0"),
        (["train-controller", "--preset", "debug"], ["--sigma0", "0"], "sigma0"),
        (["train-controller", "--preset", "debug"], ["--sigma0", "nan"], "sigma0"),
        (["train-controller", "--preset", "debug"], ["--tau", "inf"], "tau"),
        (["train-controller", "--preset", "debug"], ["--tau", "-1"], "tau"),
        (["evaluate", "--preset", "debug"], ["--max-steps", "0"], "max_steps must be"),
        (["train-vae", "--preset", "debug"], ["--lr", "nan"], "lr=nan"),
        (["train-mdrnn", "--preset", "debug"], ["--lr=-inf"], "lr must be"),
        (["train-mdrnn", "--preset", "debug"], ["--lr=inf"], "lr must be a finite number"),
    ],
)
def test_impossible_values_are_one_line_before_anything_is_written(
    tmp_path, capsys, monkeypatch, command, flags, match
):
    monkeypatch.chdir(tmp_path)
    assert main([*command, *flags]) == 2
    assert match in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # no run folder, dataset or results


def test_check_finite_ranges():
    check_finite("x", 0.5, 0, 1)
    check_finite("x", None, 0, 1)  # unset optional settings pass
    check_finite("x", 1, 0, 1)
    for bad, kw in [(math.nan, {}), (math.inf, {}), (0, {"lo_open": True}), (1, {"hi_open": True})]:
        with pytest.raises(ConfigError, match="x must be a finite number"):
            check_finite("x", bad, 0, 1, **kw)
    with pytest.raises(ConfigError, match=r"^evaluate: x must be a finite number >= 2, got 1"):
        check_finite("x", 1, 2, where="evaluate")
    with pytest.raises(ConfigError):
        check_finite("x", True)  # a bool is not a number here


@pytest.mark.parametrize("name", [None, "", 3])
def test_pretrained_needs_a_name(name):
    from world_models import pretrained

    with pytest.raises(ConfigError, match="named by a string"):
        pretrained(name)


def _interrupt(config):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command, resumes", [("evaluate", False), ("train-vae", True)])
def test_ctrl_c_says_resume_only_where_a_rerun_resumes(capsys, monkeypatch, command, resumes):
    monkeypatch.setattr(cli, "_load", lambda path: _interrupt)
    monkeypatch.setattr(cli, "_parse", lambda name, command, args: None)
    assert main([command]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted")
    assert ("re-run the same command to resume" in err) == resumes
