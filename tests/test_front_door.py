"""The package's front door: ``import xception_trt as xt`` (issue 25)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import xception_trt as xt


def test_every_front_door_name_resolves_to_its_submodule_definition():
    for name, module in xt._EXPORTS.items():
        value = getattr(xt, name)
        defined = getattr(importlib.import_module(f"xception_trt.{module}"), name)
        assert value is defined, name


def test_dir_lists_exactly_the_public_names():
    assert dir(xt) == sorted(xt.__all__)
    assert "__version__" in dir(xt) and "build" in dir(xt) and "_EXPORTS" not in dir(xt)
    assert len(set(xt.__all__)) == len(xt.__all__)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        xt.nope  # noqa: B018


def test_front_door_names_do_not_shadow_submodules():
    # A submodule imported later would replace a front-door name of the same spelling.
    import pkgutil

    submodules = {info.name for info in pkgutil.iter_modules(xt.__path__)}
    assert not submodules & set(xt._EXPORTS)


def test_error_classes_share_the_base():
    for name in xt.__all__:
        if name.endswith("Error"):
            assert issubclass(getattr(xt, name), xt.XceptionTRTError), name


_PROBE = """
import json, sys
import xception_trt as xt
dir(xt)
names = ["torch", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "modelopt", "cuda",
         "pycuda", "PIL", "numpy"]
print(json.dumps(sorted(n for n in names if n in sys.modules)))
"""


def test_importing_the_package_loads_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


def test_runtime_names_load_without_the_toolchain():
    # Classifier and open_runner are the device install's API: no torch, ONNX or TensorRT.
    probe = _PROBE.replace("dir(xt)", "xt.Classifier, xt.open_runner, xt.Precision")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                       text=True, check=True).stdout)
    assert not {"torch", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx"} & set(loaded)


def test_type_stub_lists_the_same_names():
    import ast
    from pathlib import Path

    stub = ast.parse(Path(xt.__file__).with_suffix(".pyi").read_text())
    imported = {(alias.asname, node.module) for node in stub.body
                if isinstance(node, ast.ImportFrom) and node.level == 1 for alias in node.names}
    assert imported == set(xt._EXPORTS.items())
