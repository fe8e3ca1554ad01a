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


_RSS_CHILD = """
import io, resource, sys
from PIL import Image
from xception_trt.config import ModelSpec
from xception_trt.preprocess import preprocess
w, h = int(sys.argv[1]), int(sys.argv[2])
buf = io.BytesIO()
Image.new("L", (w, h)).save(buf, "PNG", optimize=True)
data = buf.getvalue()
# A regression must fail here, not take the machine's memory: cap the address space.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
x = preprocess(data, ModelSpec())
print(len(data), *x.shape, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _child_peak_rss_kib(w: int, h: int) -> tuple[int, tuple[int, ...], int]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(w), str(h)], check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    return int(out[0]), tuple(int(v) for v in out[1:4]), int(out[4])


@pytest.mark.parametrize("w,h", [(1, 60000), (60000, 1)])
def test_aspect_ratio_bomb_is_bounded_by_the_output_size(w, h):
    """A ~200-byte 1x60000 PNG resized whole would take ~20 GB (333 x 20M x 3) before the crop;
    now its peak memory is that of an ordinary photo's preprocessing, plus little."""
    size, shape, bomb_kib = _child_peak_rss_kib(w, h)
    assert size < 1000 and shape == (3, 299, 299)
    _, _, photo_kib = _child_peak_rss_kib(640, 480)
    assert bomb_kib - photo_kib < 100 * 1024, (bomb_kib, photo_kib)


def test_extreme_aspect_ratio_crops_the_centre():
    spec = ModelSpec(input_size=71, crop_pct=71 / 80)
    rng = np.random.default_rng(0)
    # Tall stripe: the centre rows carry a marker; the crop must come from there.
    arr = np.zeros((4000, 20, 3), dtype=np.uint8)
    arr[1900:2100] = 240
    arr += rng.integers(0, 8, arr.shape, dtype=np.uint8)
    out = resize_crop(Image.fromarray(arr), spec)
    assert out.size == (71, 71)
    assert np.asarray(out).mean() > 200  # the bright centre band, not the dark ends
    # Ordinary proportions still take the full resize (bit for bit with resize + crop).
    img = Image.fromarray(rng.integers(0, 256, (120, 300, 3), dtype=np.uint8))
    w, h = img.size
    new_w, new_h = int(round(w * spec.resize_size / h)), spec.resize_size
    ref = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = int(round((new_w - 71) / 2.0)), int(round((new_h - 71) / 2.0))
    np.testing.assert_array_equal(np.asarray(resize_crop(img, spec)),
                                  np.asarray(ref.crop((left, top, left + 71, top + 71))))


def test_server_preprocessing_takes_the_bomb_too():
    from xception_trt.serve.python_preprocess import decode_request

    buf = io.BytesIO()
    Image.new("L", (1, 60000)).save(buf, "PNG", optimize=True)
    spec = ModelSpec(input_size=71, crop_pct=71 / 80)
    batch = decode_request(np.array([[buf.getvalue()]], dtype=object), spec,
                           InputFormat.UINT8_NHWC)
    assert batch.shape == (1, 71, 71, 3)
