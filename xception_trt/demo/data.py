"""The demo's data set: scikit-learn's handwritten digits as labelled image folders.

The UCI "Optical Recognition of Handwritten Digits" test set as shipped inside the
scikit-learn wheel (``sklearn/datasets/data/digits.csv.gz``: 1,797 8x8 grey images, 10 classes,
pixel values 0-16). Nothing is downloaded. It is materialised as ordinary labelled image folders
(``train/``, ``calibration/``, ``validation/``, one PNG per image in class sub-folders), so the
demo reads it with exactly the data code a user's own folders go through.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import Dataset, scan_folder
from ..errors import ConfigError, DataError, DependencyError
from ..fsio import atomic_write_json

__all__ = ["DIGITS_SPLITS", "DemoData", "load_digits_arrays", "materialise_digits"]

log = logging.getLogger(__name__)

#: The folders the digits are split into, in this order.
DIGITS_SPLITS = ("train", "calibration", "validation")
_MANIFEST = "manifest.json"
_DATA_VERSION = 1


@dataclass(frozen=True)
class DemoData:
    """The materialised demo data set.

    Attributes:
        root: Folder holding ``train/``, ``calibration/``, ``validation/`` and the manifest.
        train, calibration, validation: The three labelled splits (disjoint).
        class_names: ``"0"`` ... ``"9"``.
        fingerprint: SHA-256 of every image's bytes and label, in split order (content key for
            caches: the same data on any machine gives the same fingerprint).
        created: True when this call wrote the folders, False when it reused them.
    """

    root: Path
    train: Path
    calibration: Path
    validation: Path
    class_names: tuple[str, ...]
    fingerprint: str
    created: bool

    def dataset(self, split: str) -> Dataset:
        """One split as a :class:`~xception_trt.data.Dataset`."""
        if split not in DIGITS_SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(DIGITS_SPLITS)}")
        return scan_folder(self.root / split)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as uint8 images ``(N, 8, 8)`` (ink bright, 0-255) and int labels.

    Raises:
        DependencyError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DependencyError("scikit-learn", "demo", "the built-in demo data set") from None
    bunch = load_digits()
    # 0..16 counts of set pixels in 4x4 cells -> 0..255 grey levels, exactly reversible.
    images = np.round(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    return images.astype(np.uint8), np.asarray(bunch.target, dtype=np.int64)


def _split_indices(labels: np.ndarray, *, val_fraction: float, calib_fraction: float,
                   seed: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {name: [] for name in DIGITS_SPLITS}
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        n_cal = int(round(len(idx) * calib_fraction))
        out["validation"].extend(int(i) for i in idx[:n_val])
        out["calibration"].extend(int(i) for i in idx[n_val:n_val + n_cal])
        out["train"].extend(int(i) for i in idx[n_val + n_cal:])
    return {k: sorted(v) for k, v in out.items()}


def materialise_digits(root: str | os.PathLike[str], *, val_fraction: float = 0.3,
                       calib_fraction: float = 0.1, seed: int = 0,
                       force: bool = False) -> DemoData:
    """Write the digits as labelled PNG folders ``train/``, ``calibration/``, ``validation/``.

    The split is stratified by class and seeded, so every machine gets the same folders (and
    byte-identical PNGs). The folders are written into a temporary directory and renamed into
    place, then a manifest is written; a complete folder with a matching manifest is reused.

    Args:
        root: Destination folder (created).
        val_fraction: Share of each class held out for validation.
        calib_fraction: Share of each class for INT8 calibration (disjoint from validation).
        seed: Seeds the split.
        force: Rewrite even when a matching copy exists.

    Returns:
        The :class:`DemoData`.

    Raises:
        ConfigError: Fractions outside (0, 1) or adding up to >= 1.
        DataError: ``root`` exists and is not a folder.
        DependencyError: scikit-learn is missing.
    """
    if not (0 < val_fraction < 1 and 0 < calib_fraction < 1 and val_fraction + calib_fraction < 1):
        raise ConfigError(f"val_fraction ({val_fraction}) and calib_fraction ({calib_fraction}) "
                          "must be in (0, 1) and add up to less than 1")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"demo data location {root} exists and is not a folder")
    settings = {"data_version": _DATA_VERSION, "source": "sklearn.datasets.load_digits",
                "val_fraction": val_fraction, "calib_fraction": calib_fraction, "seed": seed}
    manifest_path = root / _MANIFEST
    if not force and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if manifest.get("settings") == settings and all(
                (root / s).is_dir() for s in DIGITS_SPLITS):
            log.info("reusing demo data in %s", root)
            return _demo_data(root, manifest, created=False)

    images, labels = load_digits_arrays()
    splits = _split_indices(labels, val_fraction=val_fraction, calib_fraction=calib_fraction,
                            seed=seed)
    class_names = tuple(str(c) for c in range(int(labels.max()) + 1))
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # from here on the copy is incomplete
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    for split in DIGITS_SPLITS:
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=root))
        try:
            for name in class_names:
                (tmp / name).mkdir()
            for i in splits[split]:
                rel = f"{labels[i]}/digit_{i:04d}.png"
                Image.fromarray(images[i]).save(tmp / rel, optimize=False)
                digest.update(f"{split}/{rel}\0".encode() + images[i].tobytes())
            final = root / split
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        counts[split] = len(splits[split])
    manifest = {"settings": settings, "class_names": list(class_names), "counts": counts,
                "fingerprint": digest.hexdigest(),
                "description": "UCI optical recognition of handwritten digits (test set, 1,797 "
                               "8x8 images) as shipped by scikit-learn; 0-16 pixel counts scaled "
                               "to 0-255 grey PNG"}
    atomic_write_json(manifest_path, manifest, error=DataError)
    log.info("wrote demo data to %s: %s", root, counts)
    return _demo_data(root, manifest, created=True)


def _demo_data(root: Path, manifest: dict, *, created: bool) -> DemoData:
    return DemoData(root=root, train=root / "train", calibration=root / "calibration",
                    validation=root / "validation",
                    class_names=tuple(manifest["class_names"]),
                    fingerprint=str(manifest["fingerprint"]), created=created)
