"""`world-models validate` and the CLI's error handling."""

from __future__ import annotations

import subprocess
import sys

from torch import nn

import world_models.validate as validate
from world_models.cli import main
from world_models.models.vae import ConvVAE


def test_validate_passes_on_the_spec_model(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    n = len(validate.run_checks())
    assert f"{n}/{n} checks passed" in out and "FAIL" not in out
    assert n >= 30


def test_validate_fails_when_the_spec_is_not_met(monkeypatch, capsys):
    monkeypatch.setattr(validate, "SPEC_PARAMETERS_Z32", 1_000_000)
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    n = len(validate.run_checks())
    assert f"{n - 1}/{n} checks passed" in out
    assert "FAIL  parameter count" in out


def test_tampered_architecture_is_caught():
    vae = ConvVAE()
    vae.decoder[-1] = nn.Tanh()
    failed = [r.name for r in validate.run_checks(vae) if not r.passed]
    assert failed == ["decoder ends with Sigmoid"]


def test_validate_a_saved_checkpoint(tmp_path, capsys):
    ConvVAE().save_pretrained(tmp_path / "vae")
    assert main(["validate", "--checkpoint", str(tmp_path / "vae"), "-q"]) == 0
    assert "checks passed" in capsys.readouterr().out


def test_bad_checkpoint_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "world_models.cli",
            "validate",
            "--checkpoint",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no such folder" in proc.stderr and "Traceback" not in proc.stderr


def test_vae_self_check_module_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "world_models.models.vae"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1,778,819" in proc.stdout and "self-check passed" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr
