"""The `debug` presets of every command chain: each stage finds the last one's output."""

from __future__ import annotations

import json

import pytest

from world_models.cli import main


@pytest.mark.slow
def test_debug_presets_hand_over_from_collect_to_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    steps = [
        ["collect", "--preset", "debug", "--no-progress"],
        ["train-vae", "--preset", "debug"],
        ["encode", "--preset", "debug", "--no-progress"],
        ["train-mdrnn", "--preset", "debug", "--no-progress"],
        ["train-controller", "--preset", "debug"],
        ["evaluate", "--preset", "debug"],
    ]
    for argv in steps:
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    results = json.loads((tmp_path / "runs/evaluation-debug/results.json").read_text())
    assert len(results["returns"]) == 8
    assert (tmp_path / "runs/evaluation-debug/histogram.png").stat().st_size > 1000
