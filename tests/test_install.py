"""The device install: the core (no extras) runs the runtime without the toolchain.

A fresh core-only virtual environment (the wheel of this checkout, no extras) runs ``info``,
``doctor`` (on the machine and on a bundle), ``selftest`` and an ``infer`` that reaches the
engine-loading step, and imports the runtime
API; the core install resolves for JetPack 6 (Python 3.10, aarch64) without torch or a CUDA
wheel (benchmarks/install_footprint.py). Both need the package registry and skip with the
reason without it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xception_trt.config import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "install_footprint.py"
TOOLCHAIN = ("torch", "onnx", "onnxruntime", "onnx_graphsurgeon", "modelopt", "matplotlib",
             "safetensors", "sklearn")


def _script():
    spec = importlib.util.spec_from_file_location("install_footprint", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@functools.lru_cache(maxsize=1)
def _registry_problem() -> str | None:
    return _script().registry_problem()


def _needs_registry() -> None:
    problem = _registry_problem()
    if problem:
        pytest.skip(problem)


def test_forbidden_on_device_flags_torch_and_cuda_wheels():
    bad = _script().forbidden_on_device([{"name": n} for n in (
        "numpy", "torch", "triton", "nvidia-cublas-cu12", "nvidia_cudnn_cu13",
        "nvidia-cuda-runtime", "nvidia-modelopt", "nvidia-ml-py", "pillow")])
    assert bad == ["nvidia-cublas-cu12", "nvidia-cuda-runtime", "nvidia_cudnn_cu13", "torch",
                   "triton"]


def test_core_install_resolves_for_jetpack6_without_torch_or_cuda_wheels():
    _needs_registry()
    proc = subprocess.run([sys.executable, str(SCRIPT), "resolve", "--check", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    names = {p["name"].lower() for p in doc["packages"]}
    assert doc["forbidden"] == [] and "torch" not in names
    assert {"xception-trt", "numpy", "pillow"} <= names
    assert not names & {"onnx", "onnxruntime", "nvidia-modelopt", "matplotlib", "scipy"}


def _fake_engine(folder: Path) -> Path:
    """An engine file with a sidecar that says NVIDIA TensorRT built it: loading it gets as
    far as asking for TensorRT."""
    path = folder / "model.engine"
    data = b"\x00ENGINE" * 64
    path.write_bytes(data)
    side = {"schema": 1, "engine": {"file": path.name, "bytes": len(data),
                                    "sha256": hashlib.sha256(data).hexdigest()},
            "tensorrt": {"flavour": "tensorrt", "version": "10.3.0"}, "device": None,
            "targets": None, "precision": "fp16", "input_format": "float-nchw",
            "model_spec": ModelSpec(num_classes=4, width=0.125, middle_blocks=1,
                                    input_size=71).to_dict(),
            "build_options": {}, "rebuild_command": "xception-trt build model.onnx -o ."}
    (folder / "model.engine.json").write_text(json.dumps(side))
    return path


def _fp16_stand_in(spec: ModelSpec) -> bytes:
    """A one-node ONNX graph (Identity) carrying our metadata as an FP16 float-nchw variant:
    doctor checks a member's own metadata against the manifest, not its layers."""
    from onnx import TensorProto, helper

    from xception_trt.config import InputFormat, Precision
    from xception_trt.onnx_meta import write_metadata

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["N", 3, 71, 71])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["N", 3, 71, 71])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph)
    write_metadata(model, {"model_spec": spec, "precision": Precision.FP16,
                           "input_format": InputFormat.FLOAT_NCHW})
    return model.SerializeToString()


def _fake_bundle(folder: Path, engine: Path) -> Path:
    """A bundle holding a stand-in FP16 ONNX (our metadata on a one-node graph) and the fake
    engine: enough for doctor, which verifies hashes and metadata and judges engines without
    running either."""
    from xception_trt.bundle.format import EngineEntry, Manifest, Member, VariantEntry
    from xception_trt.bundler import _write_zip
    from xception_trt.config import InputFormat, Precision
    from xception_trt.sidecar import read_sidecar

    side = read_sidecar(engine)
    files = {"onnx/fp16.onnx": _fp16_stand_in(side.model_spec),
             "engines/e.engine": engine.read_bytes(),
             "engines/e.engine.json": (engine.parent / "model.engine.json").read_bytes()}
    members = {n: Member(n, hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items()}
    manifest = Manifest(side.model_spec, InputFormat.FLOAT_NCHW,
                        {Precision.FP16: VariantEntry(Precision.FP16, "onnx/fp16.onnx")},
                        (EngineEntry("engines/e.engine", "engines/e.engine.json", side),),
                        members)
    _write_zip(folder / "fake.xtrt", manifest, files)
    return folder / "fake.xtrt"


def test_core_only_environment_runs_the_runtime(tmp_path):
    _needs_registry()
    mod = _script()
    wheel = mod.build_wheel(tmp_path / "dist")
    python, _ = mod.make_venv(tmp_path / "venv", wheel)
    cli = python.parent / "xception-trt"

    def run(*args: str, cwd: Path = tmp_path, env_extra: dict | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              cwd=cwd, timeout=300, env={**mod.clean_env(), **(env_extra or {})})

    # No toolchain in there: the test means nothing if torch leaked in.
    probe = run(python, "-c", "import importlib.util as u, json; print(json.dumps("
                f"[m for m in {TOOLCHAIN!r} if u.find_spec(m)]))")
    assert json.loads(probe.stdout) == [], probe.stderr

    # The runtime API imports and opens an engine up to asking for TensorRT.
    engine = _fake_engine(tmp_path)
    api = run(python, "-c", (
        "import sys\nfrom xception_trt.classifier import Classifier\n"
        "from xception_trt.runners import open_runner\nimport xception_trt\n"
        f"try:\n    open_runner({str(engine)!r})\nexcept Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        f"print(sorted(m for m in {TOOLCHAIN!r} if m in sys.modules))"))
    assert api.returncode == 0, api.stderr
    assert "'tensorrt' is not installed" in api.stdout and api.stdout.strip().endswith("[]")

    # Every command module imports for --help: none pulls the toolchain at import time.
    helped = run(cli, "--help")
    assert helped.returncode == 0 and "infer" in helped.stdout, helped.stderr

    info = run(cli, "info")
    assert info.returncode == 0, info.stderr
    assert any(ln.split()[:3] == ["torch", "not", "installed"] for ln in info.stdout.splitlines())

    # selftest: incomplete (exit 3), naming TensorRT and the CUDA binding, not torch
    st = run(cli, "selftest")
    out = st.stdout + st.stderr
    assert st.returncode == 3, out
    assert "TensorRT" in out and "cuda-python" in out and "Traceback" not in out
    assert "torch" not in out

    # doctor: the machine, and a bundle judged here (nothing to run it with in a core install)
    doc = run(cli, "doctor", "--json")
    assert doc.returncode == 0, doc.stderr
    facts = json.loads(doc.stdout)["machine"]
    assert facts["ort_version"] is None and facts["onnx"] is False
    bundle = _fake_bundle(tmp_path, engine)
    doc = run(cli, "doctor", bundle)
    assert doc.returncode == 0, doc.stderr
    assert "not installed (pip install 'xception-trt[ort]')" in doc.stdout
    assert "fp16: cannot run" in doc.stdout and "Traceback" not in doc.stderr

    img = tmp_path / "cat.png"
    run(python, "-c", f"from PIL import Image; Image.new('RGB', (80, 80)).save({str(img)!r})")
    nothing = run(cli, "infer", bundle, img, env_extra={"XDG_CACHE_HOME": str(tmp_path)})
    lines = nothing.stderr.strip().splitlines()
    assert nothing.returncode == 2 and len(lines) == 1, nothing.stderr
    assert "nothing here can run the bundle" in lines[0] and "xception-trt[ort]" in lines[0]

    inf = run(cli, "infer", engine, img)
    assert inf.returncode == 2, inf.stdout + inf.stderr
    lines = inf.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "tensorrt" in lines[0]
    assert "torch" not in inf.stderr

    # A toolchain command names the extra to install, in one line.
    (tmp_path / "m.safetensors").write_bytes(b"x")
    exp = run(cli, "export", tmp_path / "m.safetensors", "-o", tmp_path / "m.onnx")
    assert exp.returncode == 2
    lines = exp.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: exporting to ONNX needs the Python "
                                                   "package")
    assert lines[0].endswith("install it with: pip install 'xception-trt[build]'")


def test_cuda_wheels_names_cuda_libraries_and_triton_not_nvidia_python_packages():
    """The check of `install_footprint.py downloads` (a CPU install must resolve none): every
    NVIDIA CUDA library wheel, any cuda-* wheel and triton; not ModelOpt, the NVML binding or
    PyTriton, which are no CUDA libraries."""
    names = ["numpy", "torch", "triton", "nvidia-cublas", "nvidia_cudnn_cu13",
             "nvidia-cuda-nvrtc", "cuda-toolkit", "cuda_bindings", "nvidia-modelopt",
             "nvidia_ml_py", "nvidia-pytriton", "tensorrt_rtx_cu13_libs", "onnxruntime"]
    assert _script().cuda_wheels(names) == ["cuda-toolkit", "cuda_bindings", "nvidia-cublas",
                                            "nvidia-cuda-nvrtc", "nvidia_cudnn_cu13", "triton"]


def test_user_pip_env_drops_this_machines_pip_settings(monkeypatch):
    """A user's pip: no configuration file, no PIP_* variable of this machine (find-links to
    the local CPU torch, mirrors) leaks into the resolution."""
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///mirror")
    env = _script().user_pip_env()
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert not {k for k in env if k.startswith("PIP_")} - {"PIP_CONFIG_FILE",
                                                          "PIP_DISABLE_PIP_VERSION_CHECK"}
