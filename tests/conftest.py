"""Shared fixtures. Most tests use a narrow Xception at 71x71 (fast on 2 CPU cores); the full
299x299 model is used only where it matters (marked ``slow``, still run in CI)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xception_trt.config import ModelSpec

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
