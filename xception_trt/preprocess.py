"""The single preprocessing implementation (PIL + NumPy, no torch), driven by :class:`ModelSpec`.

Used by calibration, evaluation, inference, benchmarks and the Triton preprocessing model:
decode -> EXIF orientation -> RGB -> resize shorter side to ``spec.resize_size`` -> centre crop
``spec.input_size`` -> uint8 HWC -> (optionally) scale to [0, 1], normalise, float32 CHW.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import InputFormat, Interpolation, ModelSpec
from .errors import DataError
from .fsio import path_problem

__all__ = ["ImageSource", "open_image", "to_rgb", "resize_crop", "preprocess_uint8",
           "preprocess", "normalize", "preprocess_batch", "PIL_FILTERS"]

log = logging.getLogger(__name__)

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray

PIL_FILTERS = {
    Interpolation.NEAREST: Image.Resampling.NEAREST,
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
    Interpolation.LANCZOS: Image.Resampling.LANCZOS,
}


#: Aspect ratio beyond which :func:`resize_crop` resamples only the cropped region.
_MAX_RESIZED_RATIO = 16


def _name(src: ImageSource) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, bytes):
        return f"<{len(src)} bytes>"
    return f"<{type(src).__name__}>"


def open_image(src: ImageSource) -> Image.Image:
    """Decode an image fully and apply its EXIF orientation.

    Args:
        src: A path, encoded bytes (JPEG/PNG/...), a PIL image or a uint8 HWC/HW array.

    Returns:
        The decoded PIL image in its original mode (see :func:`to_rgb`).

    Raises:
        DataError: Missing, empty, truncated or non-image input; the message names it.
    """
    if isinstance(src, Image.Image):
        img = src
    elif isinstance(src, np.ndarray):
        if src.dtype != np.uint8 or src.ndim not in (2, 3):
            raise DataError(f"image arrays must be uint8 HxW or HxWxC, got {src.dtype} "
                            f"with shape {src.shape}")
        return Image.fromarray(src)
    else:
        name = _name(src)
        if isinstance(src, (str, os.PathLike)):
            path = Path(src)
            problem = path_problem(path)
            if problem is not None:
                raise DataError(f"image {path} {problem}")
            if path.stat().st_size == 0:
                raise DataError(f"image {path} is an empty file")
            fh: io.BufferedIOBase | io.BytesIO = open(path, "rb")  # noqa: SIM115
        else:
            if not src:
                raise DataError("image bytes are empty")
            fh = io.BytesIO(src)
        try:
            with fh, warnings.catch_warnings():
                # A decompression-bomb warning is an error for a deployment pipeline.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fh)
                img.load()  # decode now, inside the try, so truncation is reported here
        except UnidentifiedImageError:
            raise DataError(f"{name} is not an image file PIL can decode") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{name} is refused as a possible decompression bomb (too many "
                            f"pixels to decode safely): {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{name} is corrupt or truncated: {exc}") from None
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF must not abort a whole data set
        log.warning("ignoring unreadable EXIF orientation of %s: %s", _name(src), exc)
        return img


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(arr) * scale, 0, 255)
    else:  # I;16*, I: integer images; 16-bit data scaled to 8 bits by /257 (65535 -> 255)
        arr = arr.astype(np.int64)
        top = int(arr.max(initial=0))
        out = np.clip(arr, 0, None) / 257.0 if top > 255 else np.clip(arr, 0, 255)
    return Image.fromarray(np.round(out).astype(np.uint8))


def to_rgb(img: Image.Image, channels: int = 3) -> Image.Image:
    """Convert any PIL mode (1, L, LA, P, RGBA, CMYK, YCbCr, I;16, I, F ...) to RGB (or L).

    Transparency is dropped (as timm/torchvision do); 16-bit and float images are scaled
    to 8 bits instead of being clipped.
    """
    if img.mode.startswith("I") or img.mode == "F":
        img = _sixteen_bit_to_l(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    target = "RGB" if channels == 3 else "L"
    if channels not in (1, 3):
        raise DataError(f"preprocessing supports 1 or 3 input channels, not {channels}")
    return img if img.mode == target else img.convert(target)


def resize_crop(img: Image.Image, spec: ModelSpec) -> Image.Image:
    """Resize the shorter side to ``spec.resize_size`` (aspect kept), centre-crop to
    ``spec.input_size`` x ``spec.input_size``.

    Beyond a 16:1 aspect ratio only the region under the crop is resampled, straight to the
    output size (the same region; pixels within a few levels of the full resize), so work and
    memory are bounded by the output size, not by the input's length.
    """
    w, h = img.size
    if w < 1 or h < 1:
        raise DataError(f"image has no pixels ({w}x{h})")
    short = spec.resize_size
    if w <= h:
        new_w, new_h = short, max(short, int(round(h * short / w)))
    else:
        new_w, new_h = max(short, int(round(w * short / h))), short
    size = spec.input_size
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    if new_w * new_h > _MAX_RESIZED_RATIO * short * short:
        # An extreme aspect ratio (a 1x60000 PNG of 200 bytes) would resize to gigabytes
        # before the crop: resample only the source region under the crop, straight to the
        # output size (PIL's filter still reads the source pixels around the box, as the full
        # resize would). Ordinary images keep the full resize below, bit for bit.
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return img.resize((size, size), PIL_FILTERS[spec.interpolation], box=box)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), PIL_FILTERS[spec.interpolation])
    return img.crop((left, top, left + size, top + size))


def preprocess_uint8(src: ImageSource, spec: ModelSpec) -> np.ndarray:
    """Decode, resize and crop one image to uint8 HWC (``input_size, input_size, in_chans``).

    This is what a ``uint8-nhwc`` engine takes. Raises :class:`DataError` for bad images.
    """
    img = resize_crop(to_rgb(open_image(src), spec.in_chans), spec)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def normalize(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 NHWC (or HWC) pixels -> float32 NCHW (or CHW): ``(p / 255 - mean) / std``."""
    if pixels.dtype != np.uint8:
        raise DataError(f"normalize expects uint8 pixels, got {pixels.dtype}")
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)
    x = (pixels.astype(np.float32) * np.float32(1.0 / 255.0) - mean) * inv_std
    axes = (0, 3, 1, 2) if x.ndim == 4 else (2, 0, 1)
    return np.ascontiguousarray(x.transpose(axes))


def preprocess(src: ImageSource, spec: ModelSpec) -> np.ndarray:
    """Decode and preprocess one image to float32 CHW, ready for a ``float-nchw`` model."""
    return normalize(preprocess_uint8(src, spec), spec)


def preprocess_batch(sources: Iterable[ImageSource], spec: ModelSpec,
                     input_format: InputFormat | str = InputFormat.FLOAT_NCHW) -> np.ndarray:
    """Preprocess several images into one contiguous batch (NCHW float32 or NHWC uint8).

    Raises:
        DataError: No images, or one of them is bad (the message names it).
    """
    fmt = InputFormat.parse(input_format)
    pixels = [preprocess_uint8(s, spec) for s in sources]
    if not pixels:
        raise DataError("no images to preprocess")
    batch = np.stack(pixels)
    return batch if fmt is InputFormat.UINT8_NHWC else normalize(batch, spec)
