"""Image data sets on the CPU: labelled class folders, flat (unlabelled) folders, file lists;
deterministic selection; batching with a partial last batch and an honest failure report.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import InputFormat, ModelSpec
from .errors import DataError
from .fsio import path_problem
from .preprocess import normalize, preprocess_uint8

__all__ = ["IMAGE_SUFFIXES", "ImageRecord", "Dataset", "Batch", "BatchLoader", "open_dataset",
           "scan_folder", "read_file_list", "write_file_list", "fingerprint_records"]

log = logging.getLogger(__name__)

#: File suffixes treated as images (case-insensitive). Other files are reported as ignored.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm", ".pbm", ".jfif"})


@dataclass(frozen=True)
class ImageRecord:
    """One image: its path and, for labelled data, its class index."""

    path: Path
    label: int | None = None


@dataclass(frozen=True)
class Dataset:
    """An ordered list of images, optionally labelled.

    Attributes:
        records: The images, in a deterministic order.
        class_names: Names of the label indices (empty for unlabelled data).
        root: Where the data set was read from.
        ignored: Files found that are not images (reported, not used).
    """

    records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...] = ()
    root: Path | None = None
    ignored: tuple[Path, ...] = field(default=(), repr=False)

    @property
    def labelled(self) -> bool:
        """True when every record has a label."""
        return bool(self.records) and all(r.label is not None for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def select(self, count: int | None, *, seed: int = 0) -> "Dataset":
        """A deterministic subset of at most ``count`` images (seeded shuffle, then sorted back
        into data-set order so batches are reproducible). ``None`` keeps everything."""
        if count is None or count >= len(self.records):
            return self
        if count < 1:
            raise DataError(f"cannot select {count} images; ask for at least 1")
        rng = random.Random(seed)
        keep = sorted(rng.sample(range(len(self.records)), count))
        return Dataset(tuple(self.records[i] for i in keep), self.class_names, self.root,
                       self.ignored)

    def fingerprint(self) -> str:
        """Content-independent identity of the set: names, sizes and mtimes (see
        :func:`fingerprint_records`)."""
        return fingerprint_records(self.records)


def fingerprint_records(records: Sequence[ImageRecord]) -> str:
    """SHA-256 over each file's path, size, mtime (ns) and label: changes when any file does."""
    import hashlib

    digest = hashlib.sha256()
    for rec in records:
        try:
            st = rec.path.stat()
        except OSError as exc:
            raise DataError(f"cannot stat {rec.path}: {exc.strerror}") from None
        # os.fsencode: a file name that is not valid UTF-8 (surrogate-escaped by Python)
        # hashes as its raw bytes instead of failing to encode.
        digest.update(os.fsencode(rec.path.resolve())
                      + f"\0{st.st_size}\0{st.st_mtime_ns}\0{rec.label}\n".encode())
    return digest.hexdigest()


#: Non-image files that are expected beside images (documentation, caches, file lists).
_DOC_SUFFIXES = frozenset({".md", ".txt", ".json", ".rst", ".csv", ".tsv"})


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def scan_folder(root: str | os.PathLike[str]) -> Dataset:
    """Read a folder of images.

    A folder whose sub-folders hold images is labelled: one class per sub-folder, class index
    by sorted folder name (the torchvision ImageFolder convention). A folder holding images
    directly is unlabelled (calibration data). Hidden files and folders are skipped.

    Raises:
        DataError: Missing folder, no images, or images both at top level and in sub-folders.
    """
    root = Path(root)
    problem = path_problem(root, want="any")
    if problem is not None:
        raise DataError(f"data folder {root} {problem}")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a folder of images or a file list "
                        "(.txt/.csv)")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    class_dirs = [p for p in entries if p.is_dir()]
    top_files = [p for p in entries if p.is_file()]
    top_images = [p for p in top_files if _is_image(p)]
    ignored = [p for p in top_files if not _is_image(p)]
    labelled_dirs = []
    records: list[ImageRecord] = []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(d).parts))
        images = [p for p in files if _is_image(p)]
        ignored.extend(p for p in files if not _is_image(p))
        if images:
            labelled_dirs.append((d.name, images))
    if top_images and labelled_dirs:
        raise DataError(
            f"{root} mixes images at the top level ({len(top_images)}) with class sub-folders "
            f"({len(labelled_dirs)}); put every image in a class folder (labelled) or all at the "
            "top level (unlabelled)")
    # Every non-image file is reported; notes and caches (README.md, *.json) only at INFO so
    # that e.g. `--calib calibration/` (README + cache/ beside images/) is not noisy.
    for level, files in ((logging.INFO, [p for p in ignored if p.suffix.lower() in _DOC_SUFFIXES]),
                         (logging.WARNING,
                          [p for p in ignored if p.suffix.lower() not in _DOC_SUFFIXES])):
        if files:
            log.log(level, "%s: ignoring %d non-image file(s): %s", root, len(files),
                    ", ".join(str(p.relative_to(root)) for p in files[:5])
                    + (" ..." if len(files) > 5 else ""))
    if labelled_dirs:
        class_names = tuple(name for name, _ in labelled_dirs)
        for idx, (_, images) in enumerate(labelled_dirs):
            records.extend(ImageRecord(p, idx) for p in images)
        return Dataset(tuple(records), class_names, root, tuple(ignored))
    if not top_images:
        raise DataError(f"no images found in {root} (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return Dataset(tuple(ImageRecord(p) for p in top_images), (), root, tuple(ignored))


def read_file_list(path: str | os.PathLike[str], *,
                   class_names: Sequence[str] | None = None) -> Dataset:
    """Read a file list: one image per line, ``PATH`` or ``PATH<tab|comma|space>LABEL``.

    Relative paths are relative to the list file. A label is a class index or, when
    ``class_names`` is given, a class name. Lines starting with ``#`` are comments.

    Raises:
        DataError: Missing file, unreadable line, unknown label, missing image.
    """
    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        raise DataError(f"file list {path} {problem}")
    names = tuple(class_names) if class_names is not None else ()
    records: list[ImageRecord] = []
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "," if path.suffix.lower() == ".csv" else None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = (list(csv.reader(lines)) if delimiter
            else [ln.rsplit("\t", 1) if "\t" in ln else ln.rsplit(None, 1) for ln in lines])
    for lineno, row in enumerate(rows, start=1):
        row = [c.strip() for c in row if c.strip()]
        if not row:
            continue
        img = Path(row[0]) if Path(row[0]).is_absolute() else path.parent / row[0]
        if not img.exists() and len(row) == 2 and (path.parent / f"{row[0]} {row[1]}").exists():
            row = [f"{row[0]} {row[1]}"]  # a path with a space and no label
            img = path.parent / row[0]
        label = None
        if len(row) >= 2:
            raw = row[1]
            if names and raw in names:
                label = names.index(raw)
            else:
                try:
                    label = int(raw)
                except ValueError:
                    raise DataError(f"{path}:{lineno}: label {raw!r} is neither a class index "
                                    "nor a known class name") from None
                if label < 0 or (names and label >= len(names)):
                    raise DataError(f"{path}:{lineno}: label {label} is out of range")
        records.append(ImageRecord(img, label))
    if not records:
        raise DataError(f"file list {path} names no images")
    missing = [r.path for r in records if not r.path.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} listed image(s) do not exist: "
                        + ", ".join(str(p) for p in missing[:5])
                        + (" ..." if len(missing) > 5 else ""))
    labelled = [r.label is not None for r in records]
    if any(labelled) and not all(labelled):
        raise DataError(f"{path}: some lines have labels and some do not; label every line or none")
    if all(labelled) and not names:
        names = tuple(f"class_{i}" for i in range(max(r.label for r in records) + 1))  # type: ignore[type-var]
    return Dataset(tuple(records), names if all(labelled) else (), path)


def write_file_list(dataset: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` as a tab-separated file list readable by :func:`read_file_list`."""
    from .fsio import atomic_write_text

    lines = [f"{r.path}\t{r.label}" if r.label is not None else str(r.path)
             for r in dataset.records]
    return atomic_write_text(path, "\n".join(lines) + "\n", error=DataError)


def open_dataset(source: str | os.PathLike[str] | Dataset, *,
                 class_names: Sequence[str] | None = None) -> Dataset:
    """A folder (labelled or flat) or a file list (``.txt``/``.csv``/``.tsv``) as a Dataset."""
    if isinstance(source, Dataset):
        return source
    path = Path(source)
    if path.is_file() and path.suffix.lower() in (".txt", ".csv", ".tsv", ".lst"):
        return read_file_list(path, class_names=class_names)
    return scan_folder(path)


@dataclass(frozen=True)
class Batch:
    """A preprocessed batch: ``data`` is NCHW float32 or NHWC uint8; ``labels`` is ``None`` for
    unlabelled data; ``paths`` name each row."""

    data: np.ndarray
    labels: np.ndarray | None
    paths: tuple[Path, ...]


class BatchLoader:
    """Iterate a :class:`Dataset` as preprocessed batches (the last one may be partial).

    Images are decoded on a small thread pool (PIL releases the GIL while decoding and
    resizing). A bad image is never silently dropped: with ``on_error="skip"`` it is left out,
    recorded in :attr:`failures` (path, reason) and logged; with ``"raise"`` the first one
    stops the run with a :class:`DataError` naming the file.

    Args:
        dataset: What to read.
        spec: Preprocessing.
        batch_size: Images per batch (>= 1).
        input_format: ``float-nchw`` (normalised) or ``uint8-nhwc`` (raw pixels).
        on_error: ``"skip"`` or ``"raise"``.
        workers: Decode threads (default: up to 4, bounded by the CPU count).
    """

    def __init__(self, dataset: Dataset, spec: ModelSpec, *, batch_size: int = 32,
                 input_format: InputFormat | str = InputFormat.FLOAT_NCHW,
                 on_error: str = "skip", workers: int | None = None) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if on_error not in ("skip", "raise"):
            raise DataError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if not len(dataset):
            raise DataError("the data set is empty")
        self.dataset = dataset
        self.spec = spec
        self.batch_size = batch_size
        self.input_format = InputFormat.parse(input_format)
        self.on_error = on_error
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.failures: list[tuple[Path, str]] = []

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def _load(self, rec: ImageRecord) -> np.ndarray | DataError:
        try:
            return preprocess_uint8(rec.path, self.spec)
        except DataError as exc:
            return exc

    def __iter__(self) -> Iterator[Batch]:
        self.failures = []
        records = self.dataset.records
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for start in range(0, len(records), self.batch_size):
                chunk = records[start:start + self.batch_size]
                results = list(pool.map(self._load, chunk))
                pixels, labels, paths = [], [], []
                for rec, res in zip(chunk, results):
                    if isinstance(res, DataError):
                        if self.on_error == "raise":
                            raise res
                        self.failures.append((rec.path, str(res)))
                        log.warning("skipping bad image: %s", res)
                        continue
                    pixels.append(res)
                    labels.append(-1 if rec.label is None else rec.label)
                    paths.append(rec.path)
                if not pixels:
                    continue
                data = np.stack(pixels)
                if self.input_format is InputFormat.FLOAT_NCHW:
                    data = normalize(data, self.spec)
                yield Batch(data, np.asarray(labels, dtype=np.int64)
                            if self.dataset.labelled else None, tuple(paths))
        if self.failures:
            log.warning("%d of %d image(s) could not be read and were left out: %s",
                        len(self.failures), len(records),
                        ", ".join(str(p) for p, _ in self.failures[:5])
                        + (" ..." if len(self.failures) > 5 else ""))

    def failure_report(self) -> str:
        """One line per unreadable image, ``path: reason`` (empty string when none failed)."""
        return "\n".join(f"{p}: {reason}" for p, reason in self.failures)
