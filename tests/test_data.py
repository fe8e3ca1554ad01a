from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xception_trt.config import InputFormat, ModelSpec
from xception_trt.data import (
    BatchLoader,
    open_dataset,
    read_file_list,
    scan_folder,
    write_file_list,
)
from xception_trt.errors import DataError

SPEC = ModelSpec(input_size=71, num_classes=4)


def test_labelled_folder(image_folder):
    ds = scan_folder(image_folder)
    assert ds.labelled and ds.class_names == ("cat", "dog", "fox", "owl") and len(ds) == 16
    assert [r.label for r in ds.records[:4]] == [0, 0, 0, 0]


def test_flat_folder_is_unlabelled(flat_image_folder):
    ds = open_dataset(flat_image_folder)
    assert not ds.labelled and len(ds) == 12 and ds.class_names == ()


def test_batches_with_partial_last_batch(image_folder):
    loader = BatchLoader(scan_folder(image_folder), SPEC, batch_size=5)
    batches = list(loader)
    assert [b.data.shape[0] for b in batches] == [5, 5, 5, 1]
    assert batches[0].data.shape[1:] == (3, 71, 71)
    assert batches[-1].labels.tolist() == [3]
    u8 = next(iter(BatchLoader(scan_folder(image_folder), SPEC, batch_size=2,
                               input_format=InputFormat.UINT8_NHWC)))
    assert u8.data.dtype == np.uint8 and u8.data.shape == (2, 71, 71, 3)


def test_bad_files_are_reported_not_dropped_silently(tmp_path, caplog):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), i * 50, np.uint8)).save(root / "a" / f"{i}.png")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "README.txt").write_text("not an image")
    (root / "a" / "model.ckpt").write_bytes(b"x")
    ds = scan_folder(root)
    assert sorted(p.name for p in ds.ignored) == ["README.txt", "model.ckpt"]
    assert "ignoring 1 non-image file(s): a/model.ckpt" in caplog.text
    loader = BatchLoader(ds, SPEC, batch_size=8)
    batches = list(loader)
    assert sum(b.data.shape[0] for b in batches) == 3
    assert sorted(p.name for p, _ in loader.failures) == ["broken.jpg", "empty.png"]
    assert "broken.jpg" in loader.failure_report()
    assert "2 of 5 image(s) could not be read" in caplog.text
    strict = BatchLoader(ds, SPEC, batch_size=8, on_error="raise")
    with pytest.raises(DataError, match="broken.jpg"):
        list(strict)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        scan_folder(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    (mixed / "cls").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(mixed / "top.png")
    Image.new("RGB", (8, 8)).save(mixed / "cls" / "x.png")
    with pytest.raises(DataError, match="mixes images at the top level"):
        scan_folder(mixed)


def test_file_list_round_trip_and_names(image_folder, tmp_path):
    ds = scan_folder(image_folder)
    listing = write_file_list(ds, tmp_path / "val.txt")
    again = read_file_list(listing, class_names=ds.class_names)
    assert [(r.path, r.label) for r in again.records] == [(r.path, r.label) for r in ds.records]
    csv = tmp_path / "val.csv"
    first = ds.records[0].path
    csv.write_text(f"{first},dog\n# comment\n{ds.records[1].path},owl\n")
    named = read_file_list(csv, class_names=ds.class_names)
    assert [r.label for r in named.records] == [1, 3]


def test_file_list_errors(tmp_path, image_folder):
    img = next(image_folder.rglob("*.png"))
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{img}\tzebra\n")
    with pytest.raises(DataError, match="bad.txt:1: label 'zebra'"):
        read_file_list(bad, class_names=("cat",))
    missing = tmp_path / "missing.txt"
    missing.write_text("nope.png\t0\n")
    with pytest.raises(DataError, match="do not exist: .*nope.png"):
        read_file_list(missing)
    half = tmp_path / "half.txt"
    half.write_text(f"{img}\t0\n{img}\n")
    with pytest.raises(DataError, match="some lines have labels"):
        read_file_list(half)


def test_selection_is_deterministic_and_fingerprint_tracks_files(flat_image_folder, tmp_path):
    ds = open_dataset(flat_image_folder)
    a, b = ds.select(5, seed=3), ds.select(5, seed=3)
    assert a.records == b.records and len(a) == 5
    assert ds.select(5, seed=4).records != a.records
    assert [r.path for r in a.records] == sorted(r.path for r in a.records)
    assert ds.select(None) is ds
    # fingerprint changes when a file changes
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(flat_image_folder, copy)
    before = open_dataset(copy).fingerprint()
    Image.new("RGB", (9, 9)).save(copy / "img_00.png")
    assert open_dataset(copy).fingerprint() != before


def test_loader_argument_errors(image_folder):
    ds = scan_folder(image_folder)
    with pytest.raises(DataError, match="batch size"):
        BatchLoader(ds, SPEC, batch_size=0)
    with pytest.raises(DataError, match="on_error"):
        BatchLoader(ds, SPEC, on_error="ignore")
