"""The README's Python API example runs as written.

The fenced ``python`` block under "### Python API" is executed unchanged in a temporary folder
that holds the files it names: ``xception.safetensors`` (the tiny test model, not the 88 MB
ImageNet one) and ``cat.jpg`` (a generated image). Only the model's size differs from a user's run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_api_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no ```python block"
    return match.group(1)


def test_readme_python_api_example_runs(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorrt_rtx", reason="the example builds an engine (TensorRT-RTX "
                                               "builds on the CPU)")
    code = _python_api_block()
    shutil.copy(tiny_checkpoint, tmp_path / "xception.safetensors")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert (tmp_path / "engines" / "x.engine").is_file()
    assert (tmp_path / "engines" / "x.engine.json").is_file()
    assert namespace["logits"].shape == (2, 4) and namespace["logits"].dtype == np.float32
    assert "engines/x.engine" in out and "Prediction(" in out


def test_readme_python_api_example_has_no_unused_imports():
    code = _python_api_block()
    for name in re.findall(r"^(?:from \S+ )?import (\w+)(?: as (\w+))?", code, re.M):
        used = name[1] or name[0]
        assert len(re.findall(rf"\b{used}\b", code)) > 1, f"{used} is imported but not used"
