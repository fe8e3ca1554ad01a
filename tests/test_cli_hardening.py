"""Issue 13 (hardening), items 1-6, 12, 14-16: every bad path, full disk, closed pipe, impossible
batch, existing output or missing driver ends a command with one ``error:`` line and exit 2 (or
a quiet exit for a closed pipe) and leaves nothing half-written. In-process CLI calls, except the
closed pipe, which needs a real process."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xception_trt.cli import EXIT_BROKEN_PIPE, build_parser, main


def _one_error(capsys, *needles: str) -> str:
    """The single ``error:`` line of a failed command (no traceback), checked for ``needles``."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _files(root: Path) -> list[str]:
    """Every file and folder under ``root`` (hidden temp files included), relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------------------------------
# item 1: a symlink loop (or other unusable path) in any command's path argument


@pytest.fixture()
def loop(tmp_path) -> str:
    path = tmp_path / "loop.onnx"
    path.symlink_to(path)
    return str(path)


def _dummies(tmp_path: Path) -> dict[str, str]:
    names = {"onnx": "m.onnx", "ckpt": "m.safetensors", "img": "a.png"}
    out = {}
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x")
        out[key] = str(tmp_path / name)
    (tmp_path / "data").mkdir()
    out["data"] = str(tmp_path / "data")
    return out


#: (command line with LOOP where the symlink loop goes, what the message names). Every command
#: with a path argument is here (checked by test_every_path_argument_is_declared).
LOOP_CASES = [
    (["export", "LOOP", "-o", "{tmp}/x.onnx"], "checkpoint"),
    (["export", "{ckpt}", "-o", "LOOP"], "-o"),
    (["convert", "LOOP", "-o", "{tmp}/x.safetensors"], "checkpoint"),
    (["convert", "{ckpt}", "--labels", "LOOP", "-o", "{tmp}/x.safetensors"], "--labels"),
    (["train", "LOOP", "-o", "{tmp}/x.safetensors"], "training data"),
    (["train", "{data}", "--init", "LOOP", "-o", "{tmp}/x.safetensors"], "--init"),
    (["quantize", "LOOP", "--precision", "fp16", "-o", "{tmp}/x.onnx"], "model"),
    (["quantize", "{onnx}", "--precision", "int8", "--calib", "LOOP", "-o", "{tmp}/x.onnx"],
     "--calib"),
    (["quantize", "{onnx}", "--precision", "fp16", "--report", "LOOP", "-o", "{tmp}/x.onnx"],
     "--report"),
    (["build", "LOOP", "-o", "{tmp}/engines"], "source"),
    (["build", "{onnx}", "-o", "LOOP"], "-o"),
    (["infer", "LOOP", "{img}"], "model"),
    (["infer", "{onnx}", "{img}", "LOOP"], "image"),
    (["bench", "{onnx}", "LOOP"], "model"),
    (["bench", "{onnx}", "--data", "LOOP"], "--data"),
    (["eval", "{onnx}", "--data", "LOOP"], "--data"),
    (["eval", "{onnx}", "--data", "{data}", "-o", "LOOP"], "-o"),
    (["triton-repo", "LOOP", "-o", "{tmp}/repo"], "model"),
    (["serve", "LOOP"], "model"),
    (["demo", "--workdir", "LOOP"], "demo workdir"),
    (["stream", "LOOP", "0"], "model"),
    (["stream", "{onnx}", "0", "-o", "LOOP"], "-o"),
    (["deepstream", "LOOP", "-o", "{tmp}/ds"], "model"),
    (["deepstream", "{onnx}", "-o", "LOOP"], "-o"),
    (["sensitivity", "LOOP", "--calib", "{data}", "--val", "{data}"], "model"),
    (["sensitivity", "{onnx}", "--calib", "{data}", "--val", "LOOP"], "--val"),
    (["bundle", "LOOP", "-o", "{tmp}/m.xtrt"], "source"),
    (["bundle", "{ckpt}", "-o", "LOOP"], "-o"),
    (["bundle", "{ckpt}", "--val", "LOOP", "-o", "{tmp}/m.xtrt"], "--val"),
    (["bundle", "{ckpt}", "--work-dir", "LOOP", "-o", "{tmp}/m.xtrt"], "--work-dir"),
    (["doctor", "LOOP"], "model"),
    (["doctor", "--facts", "LOOP"], "--facts"),
    (["tune", "LOOP", "--val", "{data}"], "model"),
    (["tune", "{onnx}", "--val", "LOOP"], "--val"),
    (["tune", "{onnx}", "--val", "{data}", "-o", "LOOP"], "-o"),
]


@pytest.mark.parametrize("argv, what", LOOP_CASES, ids=[" ".join(c[0][:2]) + f" {c[1]}"
                                                         for c in LOOP_CASES])
def test_symlink_loop_is_one_error_line(argv, what, tmp_path, loop, capsys):
    subs = {**_dummies(tmp_path), "tmp": str(tmp_path)}
    args = [loop if a == "LOOP" else a.format(**subs) for a in argv]
    assert main(args) == 2
    _one_error(capsys, f"{what} {loop} is a symbolic link loop", "fix or remove the link")


def test_every_path_argument_is_declared():
    """Each command's path-like arguments go through the shared check, and each command with
    one has a symlink-loop case above."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    pathlike = {"model", "models", "checkpoint", "source", "data", "images", "output", "calib",
                "val", "init", "labels", "reference", "import_cache", "export_trt_cache",
                "report", "out_dir", "workdir", "repository", "log_file", "timing_cache"}
    with_paths = set()
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest in pathlike:
                assert getattr(action, "path_kind", None), f"{name} {action.dest}"
                with_paths.add(name)
    assert with_paths == {argv[0] for argv, _ in LOOP_CASES}


# ---------------------------------------------------------------------------------------------
# items 14 and 12: a directory or FIFO where a file goes, checked before any work


def test_directory_and_fifo_are_named_as_such(tmp_path, capsys):
    (tmp_path / "d.onnx").mkdir()
    img = _dummies(tmp_path)["img"]
    assert main(["infer", str(tmp_path / "d.onnx"), img]) == 2
    _one_error(capsys, "is a directory, not a file")
    os.mkfifo(tmp_path / "f.onnx")
    assert main(["infer", str(tmp_path / "f.onnx"), img]) == 2
    _one_error(capsys, "is a FIFO (named pipe), not a regular file")
    assert main(["infer", str(tmp_path / "missing.onnx"), img]) == 2
    _one_error(capsys, "does not exist")


def test_library_names_a_directory_and_a_fifo(tmp_path):
    from xception_trt.errors import DataError, EngineError
    from xception_trt.preprocess import open_image
    from xception_trt.runners import open_runner

    os.mkfifo(tmp_path / "p.png")
    with pytest.raises(DataError, match="is a FIFO"):
        open_image(tmp_path / "p.png")
    with pytest.raises(DataError, match="is a directory"):
        open_image(tmp_path)
    (tmp_path / "m.onnx").mkdir()
    with pytest.raises(EngineError, match="is a directory"):
        open_runner(tmp_path / "m.onnx")


def test_decompression_bomb_is_named(tmp_path, tiny_onnx_files, monkeypatch, capsys):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    # 1,600 pixels against a limit of 100: PIL raises DecompressionBombError above twice it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    # an image that cannot be read: its error line, the others go on, exit 1 (issue 28 item 7g)
    assert main(["infer", str(tiny_onnx_files["float"]), str(tmp_path / "big.png")]) == 1
    line = _one_error(capsys, "decompression bomb")
    assert "corrupt" not in line


def test_infer_classifies_a_folder(tiny_onnx_files, image_folder, capsys):
    assert main(["infer", str(tiny_onnx_files["float"]), str(image_folder), "--json",
                 "--top-k", "1"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    expected = sorted(str(p) for p in image_folder.rglob("*") if p.is_file())
    assert sorted(r["image"] for r in results) == expected and len(expected) == 16


def test_infer_empty_folder_says_so(tiny_onnx_files, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["infer", str(tiny_onnx_files["float"]), str(tmp_path / "empty")]) == 2
    _one_error(capsys, "no images found in")


def test_quantize_a_checkpoint_says_export_first(tiny_checkpoint, tmp_path, capsys):
    assert main(["quantize", str(tiny_checkpoint), "--precision", "fp16",
                 "-o", str(tmp_path / "m.onnx")]) == 2
    _one_error(capsys, "is a checkpoint", "xception-trt export")
    assert not (tmp_path / "m.onnx").exists()


def test_build_to_an_existing_file_fails_before_building(tiny_onnx_files, tmp_path,
                                                          monkeypatch, capsys):
    import xception_trt.pipeline as pipeline

    def no_build(**kw):
        raise AssertionError("build started")

    monkeypatch.setattr(pipeline, "build", no_build)
    (tmp_path / "engines").write_text("a file")
    assert main(["build", str(tiny_onnx_files["float"]), "-o", str(tmp_path / "engines")]) == 2
    _one_error(capsys, "exists and is not a directory")


def test_unwritable_output_folder_fails_before_work(tiny_checkpoint, tmp_path, monkeypatch,
                                                   capsys):
    import xception_trt.cli._common as common

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    # root may write anywhere: the folder's permission is what os.access reports for it
    monkeypatch.setattr(common.os, "access",
                        lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    assert main(["export", str(tiny_checkpoint), "-o", str(ro / "sub" / "m.onnx")]) == 2
    _one_error(capsys, f"directory {ro} is not writable")
    assert _files(ro) == []


# ---------------------------------------------------------------------------------------------
# item 16: one output rule (existing output needs --force); -o for bench/eval reports


def test_export_refuses_existing_output_without_force(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    argv = ["export", str(tiny_checkpoint), "-o", str(out), "--no-parity"]
    assert main(argv) == 2
    _one_error(capsys, "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    assert main(argv + ["--force"]) == 0
    assert out.stat().st_size > 1000


def test_quantize_and_train_refuse_existing_output(tiny_onnx_files, image_folder, tmp_path,
                                                   capsys):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"keep")
    assert main(["quantize", str(tiny_onnx_files["float"]), "--precision", "fp16",
                 "-o", str(out)]) == 2
    _one_error(capsys, "already exists", "--force")
    ckpt = tmp_path / "x.safetensors"
    ckpt.write_bytes(b"keep")
    assert main(["train", str(image_folder), "-o", str(ckpt)]) == 2
    _one_error(capsys, "already exists", "--force")
    assert out.read_bytes() == ckpt.read_bytes() == b"keep"


@pytest.mark.parametrize("command", ["bench", "eval"])
def test_report_output_flag(command, tiny_onnx_files, image_folder, tmp_path, capsys):
    target = tmp_path / "reports" / "mine"
    extra = (["--batch", "1", "--iterations", "1", "--warmup", "0"] if command == "bench"
             else ["--data", str(image_folder), "--limit", "4"])
    argv = [command, str(tiny_onnx_files["float"]), *extra, "--no-progress", "-o", str(target)]
    assert main(argv) == 0
    assert json.loads((target / "report.json").read_text())["name"] == "mine"
    capsys.readouterr()
    assert main(argv) == 2
    _one_error(capsys, "already exists", "--force")
    assert main(argv + ["--force"]) == 0
    capsys.readouterr()
    assert main(argv + ["--name", "other"]) == 2
    _one_error(capsys, "-o/--output is the report folder itself")


# ---------------------------------------------------------------------------------------------
# item 4: disk full while writing; nothing half-written stays


def _disk_full_in(monkeypatch, folder: Path) -> None:
    """Writes under ``folder`` write half their bytes, then fail with ENOSPC (through
    ``Path.write_bytes`` and ``onnx.save``, the writers every artifact goes through)."""
    import onnx

    real_write_bytes, real_save = Path.write_bytes, onnx.save

    def full(path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def write_bytes(self, data):
        if Path(self).absolute().is_relative_to(folder):
            return full(self, memoryview(data).cast("B"))
        return real_write_bytes(self, data)

    def save(model, f, *args, **kw):
        if isinstance(f, (str, os.PathLike)) and Path(f).absolute().is_relative_to(folder):
            return full(f, model.SerializeToString())
        return real_save(model, f, *args, **kw)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(onnx, "save", save)


def _check_disk_full(capsys, out: Path) -> None:
    _one_error(capsys, "No space left on device", "free disk space")
    assert _files(out) == []  # no output, no hidden temp file


def test_disk_full_during_export(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    _disk_full_in(monkeypatch, out)
    assert main(["export", str(tiny_checkpoint), "-o", str(out / "m.onnx"), "--no-parity"]) == 2
    _check_disk_full(capsys, out)


def test_disk_full_during_train(image_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    _disk_full_in(monkeypatch, out)
    rc = main(["-q", "train", str(image_folder), "--val-split", "0.25", "--epochs", "1",
               "--width", "0.0625", "--middle-blocks", "1", "--input-size", "71",
               "--batch-size", "8", "--workers", "1", "--device", "cpu",
               "-o", str(out / "m.safetensors")])
    assert rc == 2
    _check_disk_full(capsys, out)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_disk_full_during_quantize(precision, tiny_onnx_files, flat_image_folder, tmp_path,
                                   monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    _disk_full_in(monkeypatch, out)
    extra = (["--calib", str(flat_image_folder), "--num-images", "4", "--batch-size", "4",
              "--no-cache"] if precision == "int8" else [])
    assert main(["quantize", str(tiny_onnx_files["float"]), "--precision", precision, *extra,
                 "-o", str(out / "m.onnx")]) == 2
    _check_disk_full(capsys, out)


def test_environment_os_error_anywhere_is_one_line(monkeypatch, capsys):
    import xception_trt.cli.info as info

    def boom(args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/file")

    monkeypatch.setattr(info, "run", boom)
    assert main(["info"]) == 2
    _one_error(capsys, "cannot use /ro/file: Read-only file system", "writable location")


# ---------------------------------------------------------------------------------------------
# items 2 and 3: an unwritable cache entry keeps the result; non-UTF-8 file names


def _bad_name_copy(src: Path, dst: Path) -> Path:
    """``src``'s images in ``dst`` plus one whose file name is not valid UTF-8."""
    shutil.copytree(src, dst)
    first = next(p for p in sorted(dst.rglob("*.png")))
    bad = os.path.join(os.fsencode(first.parent), b"bad-\xff.png")
    try:
        shutil.copyfile(os.fsencode(first), bad)
    except OSError as exc:
        pytest.skip(f"the file system refuses a non-UTF-8 file name: {exc}")
    return Path(os.fsdecode(bad))


def test_fingerprint_handles_non_utf8_names(flat_image_folder, tmp_path):
    from xception_trt.data import open_dataset

    bad = _bad_name_copy(flat_image_folder, tmp_path / "calib")
    ds = open_dataset(tmp_path / "calib")
    assert bad in [r.path for r in ds.records]
    before = ds.fingerprint()
    os.utime(bad, ns=(1, 1))
    assert open_dataset(tmp_path / "calib").fingerprint() != before


def test_eval_data_with_non_utf8_name(tiny_onnx_files, image_folder, tmp_path, capsys):
    _bad_name_copy(image_folder, tmp_path / "val")
    assert main(["eval", str(tiny_onnx_files["float"]), "--data", str(tmp_path / "val"),
                 "--no-progress", "-o", str(tmp_path / "report")]) == 0
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["runners"][0]["accuracy"]["images"] == 17


def test_int8_cache_entry_is_a_directory_keeps_result(tiny_onnx_files, flat_image_folder,
                                                      tmp_path, monkeypatch, capsys):
    """Also item 3: the calibration folder holds a non-UTF-8 file name."""
    import xception_trt.precision.int8 as int8

    _bad_name_copy(flat_image_folder, tmp_path / "calib")
    cache = tmp_path / "cache"
    blocker = cache / "entry.json"
    blocker.mkdir(parents=True)
    monkeypatch.setattr(int8, "entry_path", lambda *a, **k: blocker)
    out = tmp_path / "m.int8.onnx"
    rc = main(["quantize", str(tiny_onnx_files["float"]), "--precision", "int8",
               "--calib", str(tmp_path / "calib"), "--num-images", "13", "--batch-size", "1",
               "--cache-dir", str(cache), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "13 calibration image(s)" in captured.out  # the non-UTF-8 one included
    assert out.stat().st_size > 1000 and blocker.is_dir()
    assert "is not a file (a directory?)" in captured.err  # on reading the cache
    assert "could not be written" in captured.err and "the result is kept" in captured.err
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp file left


# ---------------------------------------------------------------------------------------------
# item 5: a batch that cannot fit is refused before allocating


def test_bench_refuses_a_batch_that_cannot_fit(tiny_onnx_files, tmp_path, capsys):
    from xception_trt.host import available_memory_bytes

    avail = available_memory_bytes()
    if avail is None:
        pytest.skip("this platform does not say how much memory is available")
    batch = 10_000_000  # 71x71x3 pixels: about 750 GB of uint8 + float32 input
    assert batch * 71 * 71 * 3 * 5 > avail
    assert main(["bench", str(tiny_onnx_files["float"]), "--batch", str(batch),
                 "--iterations", "1", "--warmup", "0", "--no-progress",
                 "-o", str(tmp_path / "r")]) == 2
    _one_error(capsys, f"batch {batch} needs at least", "use a smaller batch")
    assert not (tmp_path / "r").exists()


def test_check_batch_fits_uses_the_runner_layout(tiny_onnx_files):
    from xception_trt.bench import batch_bytes, check_batch_fits
    from xception_trt.errors import BenchError
    from xception_trt.runners import open_runner

    with open_runner(tiny_onnx_files["float"]) as f32, \
            open_runner(tiny_onnx_files["uint8"]) as u8:
        px = 71 * 71 * 3
        logits = 4 * f32.spec.num_classes
        assert batch_bytes(f32, 2) == 2 * (5 * px + logits)
        assert batch_bytes(u8, 2) == 2 * (px + logits)
        check_batch_fits(f32, 2, available=batch_bytes(f32, 2))
        with pytest.raises(BenchError, match="more than the"):
            check_batch_fits(f32, 2, available=batch_bytes(f32, 2) - 1)


# ---------------------------------------------------------------------------------------------
# item 6: a reader that stops early


# argparse itself ignores a failed write of --help (exit 0); a command's output gives 141
@pytest.mark.parametrize("argv, codes", [(["info", "--json"], {EXIT_BROKEN_PIPE}),
                                         (["--help"], {0, EXIT_BROKEN_PIPE})])
def test_closed_pipe_exits_quietly(argv, codes):
    proc = subprocess.Popen([sys.executable, "-m", "xception_trt", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    proc.stdout.close()  # the reader is gone before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in codes
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception" not in err
