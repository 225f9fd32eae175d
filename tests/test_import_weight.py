"""What stays light: the CLI's help and the modules spawned workers import load no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["world_models.envs.pool", "world_models.data.collect", "world_models.cli"]
    + [f"world_models.{p}.configs" for p in ("models", "data", "envs", "training", "evaluation")],
)
def test_module_imports_no_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"{module} imports torch: {out.stderr[-300:]}"
