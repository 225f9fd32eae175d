"""The README's Python quickstart runs as written, and CI's commands come from the README."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "no python block in the README"
    monkeypatch.chdir(tmp_path)  # it saves "my-vae"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    vae = namespace["vae"]
    assert vae.kl_tolerance == 0.5 and vae.uint8_input  # the options block ran last
    assert namespace["latent_codes"].shape == (4, 32)
    assert (tmp_path / "my-vae" / "model.safetensors").exists()


def test_readme_names_the_two_setup_commands():
    text = README.read_text()
    for marker in ("main-command", "test-command"):
        body = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```\n<!-- /{marker} -->", text)
        assert body and "pip install" in body.group(1)
    assert "world-models demo" in text and "python -m pytest" in text
