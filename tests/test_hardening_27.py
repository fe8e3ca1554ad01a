"""Issue 27: bad inputs that gave a traceback, a hang or a wrong result; each is now one clear
`error:` line and exit 2 (or the documented behaviour). Bundles are crafted by
``tests/bundle_forge.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_forge import forge

from xception_trt.bundle.facts import DeviceFacts
from xception_trt.bundle.format import Bundle
from xception_trt.cli import main
from xception_trt.config import BuildConfig
from xception_trt.errors import BundleError, ConfigError

CPU = DeviceFacts(ort_version="1.x", ort_providers=("CPUExecutionProvider",), onnx=True,
                  gpu_reason="no NVIDIA driver found")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def facts_file(tmp_path) -> Path:
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(CPU.to_dict()))
    return path


def _one_error(capsys, code, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err
    return lines[0]


# -- item 4: deeply nested JSON ---------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_manifest_is_one_error(tmp_path, capsys, facts_file):
    """Issue 27 item 4: json.loads raises RecursionError (not JSONDecodeError) past the
    interpreter's recursion limit."""
    bad = forge(tmp_path / "deep.xtrt", manifest_bytes=DEEP)
    with pytest.raises(BundleError, match="nested too deeply"):
        Bundle(bad)
    code = main(["doctor", str(bad), "--facts", str(facts_file)])
    _one_error(capsys, code, "nested too deeply")


def test_deeply_nested_facts_file_is_one_error(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_bytes(DEEP)
    code = main(["doctor", "--facts", str(deep)])
    _one_error(capsys, code, "nested too deeply")


# -- items 5 and 25: manifest values -----------------------------------------------------------

def _set(key, value):
    def edit(m):
        m[key] = value
    return edit


@pytest.mark.parametrize("key,value,message", [
    ("variants", {}, "has no ONNX variant"),                          # item 5
    ("format_version", 0, "no valid format_version"),                 # item 25
    ("format_version", -1, "no valid format_version"),                # item 25
    ("batch_profile", [1, 1, 1e30], "invalid batch_profile"),          # item 8
    ("batch_profile", [1, 8, 2**31], "invalid batch_profile"),        # item 8
    ("batch_profile", [True, True, True], "invalid batch_profile"),   # item 8
])
def test_manifest_values_are_refused_when_parsed(tmp_path, capsys, facts_file, key, value,
                                                 message):
    """Issue 27 items 5, 8, 25: an empty variant map (IndexError in infer/stream/triton-repo,
    doctor exit 0), format_version 0/-1 (accepted), a batch profile of 1e30 (reached
    TensorRT)."""
    bad = forge(tmp_path / "bad.xtrt", edit=_set(key, value))
    with pytest.raises(BundleError, match=message):
        Bundle(bad)
    _one_error(capsys, main(["doctor", str(bad), "--facts", str(facts_file)]), message)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    _one_error(capsys, main(["infer", str(bad), str(image)]), message)


# -- item 7: compute capabilities --------------------------------------------------------------

@pytest.mark.parametrize("cc", ["sm5", "sm0", "5", "0.5", "sm_00"])
def test_doctor_refuses_a_compute_capability_it_cannot_read(cc, capsys, facts_file):
    """Issue 27 item 7: `doctor --cc sm5` raised ValueError (int('') in
    compute_capability_tuple)."""
    code = main(["doctor", "--cc", cc, "--facts", str(facts_file)])
    _one_error(capsys, code, "is not a compute capability")


# -- item 8: batch bounds ----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["build", "bundle"])
def test_max_batch_has_an_upper_bound(command, tmp_path, capsys):
    """Issue 27 item 8: 2**31 reached TensorRT as TypeError/RuntimeError."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(SystemExit) as exc:
        main([command, str(model), "--max-batch", str(2**31), "-o", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "is outside 1..65536" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="BuildConfig.max_batch"):
        BuildConfig(max_batch=2**31)


# -- item 9: an engine member named engines/x/.. -------------------------------------------------

def test_rebundling_an_engine_member_named_dotdot_is_refused(tmp_path):
    """Issue 27 item 9: rebundling copied `engines/x/..` to a folder (OSError EBUSY)."""
    from xception_trt.bundler import write_bundle

    members = {"onnx/fp32.onnx": b"x", "engines/x/..": b"plan", "engines/x/...json": b"{}"}

    def edit(m):
        m["engines"] = [{"member": "engines/x/..", "sidecar": "engines/x/...json"}]

    bad = forge(tmp_path / "bad.xtrt", members, edit=edit)
    with pytest.raises(BundleError, match="invalid member 'engines/x/..'"):
        write_bundle(source=bad, output=tmp_path / "again.xtrt")
    assert not (tmp_path / "again.xtrt").exists()


# -- item 10: closed stdout ----------------------------------------------------------------------

def test_closed_stdout_is_not_a_traceback(tmp_path, facts_file):
    """Issue 27 item 10: with stdout closed (`>&-`) sys.stdout is None and flush() raised
    AttributeError."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "xception_trt", "doctor", "--facts",
                           str(facts_file)], stderr=subprocess.PIPE, text=True, env=env,
                          timeout=300, preexec_fn=lambda: os.close(1))  # the shell's >&-
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


# -- item 25: doctor --device -1 -------------------------------------------------------------

def test_doctor_refuses_a_negative_device(capsys, facts_file):
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--device", "-1", "--facts", str(facts_file)])
    assert exc.value.code == 2
    assert "--device" in capsys.readouterr().err


# -- item 13: what a label may hold, decided once in ModelSpec ---------------------------------

@pytest.mark.parametrize("label", ["two\nlines", "cr\r", "tab\there", "", " padded",
                                   "x" * 257, "nul\x00"])
def test_a_label_that_breaks_a_label_file_is_refused_by_the_spec(label, tmp_path):
    """Issue 27 item 13: a newline made DeepStream's nvinfer read 3 labels for 4 classes and
    broke the bundle's labels.txt (one label per line). The rule lives in ModelSpec
    (config.check_label), so every writer (bundle, deepstream, triton-repo) and every reader
    of a manifest applies it."""
    from xception_trt.config import ModelSpec

    with pytest.raises(ConfigError, match="is not usable"):
        ModelSpec(num_classes=2, labels=("ok", label))

    def edit(m):
        m["model_spec"]["labels"] = ["cat", "dog", label]

    bad = forge(tmp_path / "bad.xtrt", edit=edit)
    with pytest.raises(BundleError, match="is not usable"):
        Bundle(bad)


def test_ordinary_labels_still_pass():
    from xception_trt.config import ModelSpec
    from xception_trt.labels import imagenet_class_names

    assert ModelSpec(num_classes=3, labels=("tench, Tinca tinca", "café", "a;b")).labels[1] == \
        "café"
    assert len(ModelSpec(labels=imagenet_class_names()).labels) == 1000


# -- item 18: deepstream values that reach its config files -------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--uri", "file:///a.mp4\n[sink1]\nenable=1"], "holds a line break"),
    (["--uri", "rtsp://cam\rtype=1"], "holds a line break"),
    (["--uri", "file:///a.mp4", "--camera", "0"], "not both"),
])
def test_deepstream_values_cannot_reach_the_config_files_unchecked(argv, message, tiny_onnx_files,
                                                                   tmp_path, capsys):
    """Issue 27 item 18: newlines in --uri injected keys and sections into
    deepstream_app_config.txt; --uri with --camera was silently ignored. Nothing is written."""
    out = tmp_path / "ds"
    code = main(["deepstream", str(tiny_onnx_files["float"]), "-o", str(out), *argv])
    _one_error(capsys, code, message)
    assert not out.exists() or list(out.iterdir()) == []


def test_deepstream_batch_size_fits_its_32_bit_fields(tiny_onnx_files, tmp_path, capsys):
    from xception_trt.deepstream import export_deepstream

    with pytest.raises(SystemExit):
        main(["deepstream", str(tiny_onnx_files["float"]), "-o", str(tmp_path / "ds"),
              "--batch-size", str(10**12)])
    assert "is outside 1..65536" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="batch_size"):
        export_deepstream(tiny_onnx_files["float"], tmp_path / "ds2", batch_size=10**12)
    assert not (tmp_path / "ds2").exists()


# -- item 24: byte order --------------------------------------------------------------------

def test_a_big_endian_float32_batch_names_the_byte_order(tiny_onnx_files):
    """Issue 27 item 24: it was refused with "input dtype must be float32, got float32"."""
    import numpy as np

    from xception_trt.errors import EngineError
    from xception_trt.runners import open_runner

    with open_runner(tiny_onnx_files["float"]) as runner:
        s = runner.input_spec.shape
        batch = np.zeros((1, *s[1:]), dtype=">f4")
        with pytest.raises(EngineError, match=r"big-endian byte order \(>f4\).*astype"):
            runner(batch)
        assert runner(batch.astype(np.float32)).shape[0] == 1


# -- item 25: an empty --val is said before any long work --------------------------------------

class _LongWorkStarted(Exception):
    """Raised by the stand-in for the first long step: the refusal came too late."""


def _refuse_long_work(*args, **kwargs):
    raise _LongWorkStarted


def test_bundle_with_an_empty_val_folder_fails_before_export(tiny_checkpoint, tmp_path, capsys,
                                                             monkeypatch):
    """Issue 27 item 25: an empty --val folder was found only after export and calibration."""
    import xception_trt.bundler

    monkeypatch.setattr(xception_trt.bundler, "Steps", _refuse_long_work)
    empty = tmp_path / "val"
    empty.mkdir()
    code = main(["bundle", str(tiny_checkpoint), "--val", str(empty), "-o",
                 str(tmp_path / "m.xtrt")])
    _one_error(capsys, code, str(empty))
    assert not (tmp_path / "m.xtrt").exists()


def test_quantize_with_an_empty_val_folder_fails_before_calibration(tiny_onnx_files,
                                                                    flat_image_folder, tmp_path,
                                                                    capsys, monkeypatch):
    import xception_trt.precision

    monkeypatch.setattr(xception_trt.precision, "quantize_int8", _refuse_long_work)
    empty = tmp_path / "val"
    empty.mkdir()
    code = main(["quantize", str(tiny_onnx_files["float"]), "--calib", str(flat_image_folder),
                 "--precision", "int8", "--val", str(empty), "-o", str(tmp_path / "q.onnx")])
    _one_error(capsys, code, str(empty))


# -- item 23: a model at a path that is not UTF-8 ----------------------------------------------

def test_a_model_at_a_non_utf8_path_loads(tiny_onnx_files, tmp_path, image_folder, capsys):
    """Issue 27 item 23: `export` writes such paths, but ONNX Runtime's binding takes only
    UTF-8 text, and the message blamed the model ("re-export the model or check the
    onnxruntime version")."""
    import shutil

    folder = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))  # Latin-1, not UTF-8
    folder.mkdir()
    model = folder / "m.onnx"
    shutil.copyfile(tiny_onnx_files["float"], model)
    image = next(p for p in Path(image_folder).rglob("*") if p.is_file())
    assert main(["infer", str(model), str(image), "--json"]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 1
