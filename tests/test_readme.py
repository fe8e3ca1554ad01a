"""The README's Python API examples run as written.

The fenced ``python`` blocks under "### Python API" (the three-line main job, then one stage at a
time) are executed unchanged in a temporary folder that holds the files they name:
``xception.safetensors`` (the tiny test model, not the 88 MB ImageNet one), ``cat.jpg`` (a
generated image) and ``calib/`` (calibration images). Only the model's size differs from a user's
run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_api_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Python API"):]
    section = section[:section.index("\n### ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "README's Python API section should have two ```python blocks"
    return blocks


def _python_api_block() -> str:
    return _python_api_blocks()[1]


def test_readme_main_job_runs_as_shown(tiny_checkpoint, calib_folder, tmp_path, monkeypatch,
                                       capsys, caplog):
    """The three lines that open the Python section: build FP16 and INT8 engines from a
    checkpoint with calibration images, classify with the FP16 one (issue 25)."""
    pytest.importorskip("tensorrt_rtx", reason="the example builds engines (TensorRT-RTX "
                                               "builds on the CPU)")
    code = _python_api_blocks()[0]
    assert code.count("\n") == 3 and code.startswith("import xception_trt as xt\n")
    shutil.copy(tiny_checkpoint, tmp_path / "xception.safetensors")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
                    ).save(tmp_path / "cat.jpg")
    shutil.copytree(calib_folder, tmp_path / "calib")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_main_job"}
    with caplog.at_level("WARNING", logger="xception_trt"):
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    result = namespace["result"]
    assert [e.precision.value for e in result.engines] == ["fp16", "int8"]
    for precision in ("fp16", "int8"):
        engine = Path("engines") / f"xception.{precision}.engine"  # relative, as asked
        assert engine.is_file() and (engine.parent / (engine.name + ".json")).is_file()
        assert result.engine(precision).engine == engine
    assert result.onnx("int8").is_file()  # the calibrated Q/DQ variant
    out = capsys.readouterr().out
    assert out.startswith("[[Prediction(") and out.count("Prediction(") == 4  # tiny: 4 classes
    clf = namespace["clf"]
    if type(clf.runner).__name__ == "OnnxRuntimeRunner":  # no GPU: the FP16 graph ran, logged
        assert any("cannot run here" in r.getMessage() and "xception.fp16.onnx" in r.getMessage()
                   for r in caplog.records)


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


@pytest.mark.parametrize("block", [0, 1])
def test_readme_python_api_example_has_no_unused_imports(block):
    code = _python_api_blocks()[block]
    for name in re.findall(r"^(?:from \S+ )?import (\w+)(?: as (\w+))?", code, re.M):
        used = name[1] or name[0]
        assert len(re.findall(rf"\b{used}\b", code)) > 1, f"{used} is imported but not used"
