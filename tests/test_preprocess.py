from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from xception_trt.config import InputFormat, ModelSpec
from xception_trt.errors import DataError
from xception_trt.preprocess import (
    normalize,
    open_image,
    preprocess,
    preprocess_batch,
    preprocess_uint8,
    resize_crop,
    to_rgb,
)

SPEC = ModelSpec(input_size=71, crop_pct=0.875, num_classes=2)


def _rgb(h=60, w=90, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_every_pil_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray(_rgb())
    if mode == "I;16":
        arr = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(arr)
    elif mode == "I":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.int32) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32) / 255.0)
    else:
        img = base.convert(mode)
    ext = {"CMYK": "jpg", "I;16": "png", "I": "tif", "F": "tif", "YCbCr": "jpg"}.get(mode, "png")
    path = tmp_path / f"img.{ext}"
    img.save(path)
    out = preprocess_uint8(path, SPEC)
    assert out.shape == (71, 71, 3) and out.dtype == np.uint8
    if mode in ("I;16", "I", "F"):
        # 16-bit/float data are scaled, not clipped: a mid-grey stays mid-grey, not white.
        gray = preprocess_uint8(Image.fromarray(_rgb()).convert("L").convert("RGB"), SPEC)
        assert np.abs(out.astype(int) - gray.astype(int)).max() <= 2


def test_p_mode_with_transparency(tmp_path):
    img = Image.fromarray(_rgb()).convert("P")
    img.info["transparency"] = 0
    path = tmp_path / "t.png"
    img.save(path, transparency=0)
    assert preprocess_uint8(path, SPEC).shape == (71, 71, 3)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half blue
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    shown = open_image(path)
    assert shown.size == (20, 40)
    top = np.asarray(shown)[2, 10]
    assert top[0] > 200 and top[2] < 60  # the red half is now on top


def test_truncated_empty_and_non_image_files_name_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(200, 200)).save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[:600])
    with pytest.raises(DataError, match="trunc.jpg is corrupt or truncated"):
        preprocess(tmp_path / "trunc.jpg", SPEC)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png is an empty file"):
        preprocess(tmp_path / "empty.png", SPEC)
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(DataError, match="notes.png is not an image file"):
        preprocess(tmp_path / "notes.png", SPEC)
    with pytest.raises(DataError, match="does not exist"):
        preprocess(tmp_path / "missing.png", SPEC)


def test_resize_and_centre_crop_geometry():
    # A landscape image: shorter side -> floor(71 / 0.875) = 81, then centre crop 71.
    img = Image.fromarray(_rgb(100, 200))
    assert SPEC.resize_size == 81
    out = resize_crop(img, SPEC)
    assert out.size == (71, 71)
    expected = img.resize((162, 81), Image.Resampling.BICUBIC).crop((46, 5, 117, 76))
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_normalisation_formula_and_layout():
    pixels = _rgb(71, 71)
    x = normalize(pixels, SPEC)
    assert x.shape == (3, 71, 71) and x.dtype == np.float32 and x.flags.c_contiguous
    ref = (pixels.astype(np.float64) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(x, ref.transpose(2, 0, 1), atol=1e-6)
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_sources_agree_path_bytes_pil_array(tmp_path):
    arr = _rgb(80, 80, seed=3)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    ref = preprocess(path, SPEC)
    np.testing.assert_array_equal(preprocess(path.read_bytes(), SPEC), ref)
    np.testing.assert_array_equal(preprocess(Image.open(path), SPEC), ref)
    np.testing.assert_array_equal(preprocess(arr, SPEC), ref)


def test_batch_formats(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(_rgb(seed=i)).save(paths[-1])
    u8 = preprocess_batch(paths, SPEC, InputFormat.UINT8_NHWC)
    f32 = preprocess_batch(paths, SPEC)
    assert u8.shape == (3, 71, 71, 3) and u8.dtype == np.uint8
    assert f32.shape == (3, 3, 71, 71) and f32.dtype == np.float32
    np.testing.assert_array_equal(normalize(u8, SPEC), f32)
    with pytest.raises(DataError, match="no images"):
        preprocess_batch([], SPEC)


def test_grayscale_model_input():
    spec = ModelSpec(input_size=71, in_chans=1, mean=(0.5,), std=(0.5,), num_classes=2)
    assert preprocess(_rgb(), spec).shape == (1, 71, 71)
    assert to_rgb(Image.fromarray(_rgb()), 1).mode == "L"


def test_bad_array_input():
    with pytest.raises(DataError, match="uint8"):
        open_image(np.zeros((4, 4), np.float32))
