"""Shared fixtures. Most tests use a narrow Xception at 71x71 (fast on 2 CPU cores); the full
299x299 model is used only where it matters (marked ``slow``, still run in CI)."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xception_trt.config import ModelSpec

# Sleeping (not spinning) OpenMP waits: on 2 cores shared with ModelOpt/Triton subprocesses,
# spinning torch threads slowed training steps 20x. Must be set before torch is imported
# (nothing above imports it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: A narrow Xception: 1/8 of the paper's widths, 2 middle blocks, 71x71 input, 4 classes.
TINY = dict(num_classes=4, width=0.125, middle_blocks=2, input_size=71)


@functools.lru_cache(maxsize=1)
def _gpu_reason() -> str | None:
    from xception_trt.trt.devices import query_devices

    rep = query_devices()
    return None if rep.gpus else f"needs an NVIDIA GPU: {rep.reason or 'none found'}"


@functools.lru_cache(maxsize=1)
def _trt_reason() -> str | None:
    from xception_trt.trt import available_flavours

    gpu = _gpu_reason()
    if gpu:
        return f"needs TensorRT on a GPU; {gpu}"
    if not any(f.name == "tensorrt" for f in available_flavours()):
        return "needs NVIDIA TensorRT ('tensorrt' does not import here)"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and (reason := _gpu_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
        if "trt" in item.keywords and (reason := _trt_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def _session_xdg_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def _private_user_cache(_session_xdg_cache, monkeypatch):
    """The per-user caches (calibration scales, bundle engines) default to
    $XDG_CACHE_HOME/xception-trt: tests never write the real ~/.cache (a test may set its own)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(_session_xdg_cache))


@pytest.fixture(autouse=True)
def _fresh_machine_facts():
    """Each test probes this machine afresh: machine facts are probed once per process
    (xception_trt.sysinfo), and tests replace probes (a Jetson's device tree, a TensorRT
    double, a recorded CPU) that must not leak into the next test."""
    from xception_trt import sysinfo

    sysinfo.refresh()
    yield
    sysinfo.refresh()


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    return ModelSpec(**TINY, labels=("cat", "dog", "fox", "owl"))


@pytest.fixture(scope="session")
def tiny_model(tiny_spec):
    import torch

    from xception_trt.model import build_xception

    torch.manual_seed(0)
    model = build_xception(spec=tiny_spec)
    # Non-trivial BatchNorm statistics so folding and parity tests can fail.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    from xception_trt.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(tiny_model, path)


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image (blurred noise, like a photo, unlike white noise)."""
    small = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, tiny_spec) -> Path:
    """A labelled folder: one sub-folder per class of ``tiny_spec``, 4 real images each
    (PNG and JPEG, varied sizes)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(tiny_spec.class_names()):
        (root / name).mkdir()
        for i in range(4):
            arr = _smooth_image(rng, 60 + 13 * i, 90 + 7 * c)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(arr).save(root / name / f"{name}_{i}.{ext}")
    return root


@pytest.fixture(scope="session")
def flat_image_folder(tmp_path_factory) -> Path:
    """An unlabelled folder of 12 images (calibration-style)."""
    root = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(_smooth_image(rng, 80 + i, 100)).save(root / f"img_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def fp32_path(tiny_onnx_files) -> Path:
    """The tiny FP32 ONNX (float-nchw, dynamic batch) that the precision tests quantize."""
    return tiny_onnx_files["float"]


@pytest.fixture(scope="module")
def calib_folder(flat_image_folder, tmp_path_factory) -> Path:
    """A private copy of :func:`flat_image_folder` per test module (INT8 tests may write a
    calibration cache around it)."""
    dst = tmp_path_factory.mktemp("calib") / "images"
    shutil.copytree(flat_image_folder, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_onnx_files(tiny_model, tmp_path_factory) -> dict:
    """The tiny model as ONNX with xception-trt metadata: ``float`` (float-nchw, dynamic batch),
    ``uint8`` (uint8-nhwc, dynamic batch) and ``static2`` (float-nchw, fixed batch 2)."""
    root = tmp_path_factory.mktemp("onnx")
    try:
        from xception_trt.export import export_onnx
    except ImportError:
        export_onnx = None
    out = {}
    for key, fmt, batch in (("float", "float-nchw", "dynamic"), ("uint8", "uint8-nhwc", "dynamic"),
                            ("static2", "float-nchw", 2)):
        path = root / f"tiny_{key}.onnx"
        if export_onnx is not None:
            # parity is what the runner tests check themselves; skip the exporter's own check
            export_onnx(tiny_model, path, batch=batch, input_format=fmt, check_parity=False)
        else:
            _export_tiny_onnx(tiny_model, path, fmt, batch)
        out[key] = path
    return out


def _export_tiny_onnx(model, path: Path, input_format: str, batch) -> None:
    """Fallback exporter (plain torch.onnx.export + onnx_meta) used until xception_trt.export
    exists."""
    import onnx
    import torch

    from xception_trt.onnx_meta import write_metadata

    spec = model.spec
    s = spec.input_size

    class _Uint8(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1))

        def forward(self, x):
            x = x.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
            return self.inner((x - self.mean) / self.std)

    n = 2 if batch == "dynamic" else int(batch)
    if input_format == "uint8-nhwc":
        net, dummy = _Uint8().eval(), torch.zeros(n, s, s, spec.in_chans, dtype=torch.uint8)
    else:
        net, dummy = model, torch.zeros(n, spec.in_chans, s, s)
    dyn = {"input": {0: "N"}, "logits": {0: "N"}} if batch == "dynamic" else None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(net, dummy, str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes=dyn, opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    write_metadata(proto, {"model_spec": spec, "input_format": input_format, "precision": "fp32"})
    onnx.save(proto, str(path))
