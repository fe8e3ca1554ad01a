"""Training: data split, augmentation, the loop, checkpoints, resume, bad input, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xception_trt.checkpoint import load_model, read_checkpoint
from xception_trt.config import AugmentConfig, ModelSpec, TrainConfig
from xception_trt.data import scan_folder
from xception_trt.errors import CheckpointError, ConfigError, DataError
from xception_trt.preprocess import open_image, preprocess_uint8, to_rgb
from xception_trt.train import (
    RESUME_FORMAT,
    TrainCallbacks,
    augment_image,
    evaluate,
    load_resume_state,
    prepare_model,
    resume_path,
    split_dataset,
    train,
)

#: A tiny Xception for training tests (no middle blocks: fastest that still has every block kind).
ARCH = dict(width=0.125, middle_blocks=0, input_size=71)


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    """3 classes told apart by colour (red / green / blue + noise), 4 images each: learnable in a
    few steps, so a decreasing loss is a real signal."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("blue", "green", "red")):
        (root / name).mkdir()
        for i in range(4):
            arr = rng.integers(0, 90, size=(40 + i, 48, 3), dtype=np.int64)
            arr[..., 2 - c] += 160
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _config(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=6, optimizer="adamw", lr=3e-3, warmup_epochs=0.0,
                augment=AugmentConfig.off(), seed=0, device="cpu", workers=2)
    base.update(kw)
    return TrainConfig(**base)


class _Recorder(TrainCallbacks):
    def __init__(self, stop_at: int | None = None) -> None:
        self.epochs: list[int] = []
        self.steps = 0
        self.ends: list[int] = []
        self.stop_at = stop_at

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        if epoch == self.stop_at:
            raise KeyboardInterrupt
        self.epochs.append(epoch)

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        self.steps += 1

    def on_epoch_end(self, stats) -> None:
        self.ends.append(stats.epoch)


# ---------------------------------------------------------------------------------------------
# config


def test_train_config_defaults_and_validation():
    cfg = TrainConfig()
    assert cfg.resolved_lr == 0.05 and cfg.resolved_weight_decay == 1e-4
    adamw = TrainConfig(optimizer="adamw")
    assert adamw.resolved_lr == 1e-3 and adamw.resolved_weight_decay == 0.05
    assert json.loads(json.dumps(cfg.to_dict()))["optimizer"] == "sgd"
    for bad in (dict(epochs=0), dict(batch_size=0), dict(optimizer="lbfgs"), dict(lr=-1.0),
                dict(lr=0.0), dict(momentum=1.0), dict(warmup_epochs=20), dict(device="tpu"),
                dict(label_smoothing=1.0), dict(workers=0)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    with pytest.raises(ConfigError, match="scale"):
        AugmentConfig(scale=(0.9, 0.5))


# ---------------------------------------------------------------------------------------------
# data


def test_split_dataset_is_stratified_deterministic_and_disjoint(image_folder):
    ds = scan_folder(image_folder)
    tr1, va1 = split_dataset(ds, 0.25, seed=3)
    tr2, va2 = split_dataset(ds, 0.25, seed=3)
    assert tr1.records == tr2.records and va1.records == va2.records
    assert {r.path for r in tr1.records}.isdisjoint({r.path for r in va1.records})
    assert len(tr1) + len(va1) == len(ds)
    # every class gives exactly round(4 * 0.25) = 1 image to validation
    assert sorted(r.label for r in va1.records) == [0, 1, 2, 3]
    _, other = split_dataset(ds, 0.25, seed=4)
    assert other.records != va1.records
    with pytest.raises(ConfigError):
        split_dataset(ds, 1.0)


def test_split_needs_labels(flat_image_folder):
    with pytest.raises(DataError, match="labelled"):
        split_dataset(scan_folder(flat_image_folder), 0.5)


def test_augment_image(image_folder, tiny_spec):
    path = next(image_folder.glob("*/*.png"))
    img = to_rgb(open_image(path))
    off = augment_image(img, tiny_spec, AugmentConfig.off(), np.random.default_rng(0))
    np.testing.assert_array_equal(off, preprocess_uint8(path, tiny_spec))
    aug = AugmentConfig(scale=(0.3, 0.6), hflip=True)
    a = augment_image(img, tiny_spec, aug, np.random.default_rng(5))
    b = augment_image(img, tiny_spec, aug, np.random.default_rng(5))
    c = augment_image(img, tiny_spec, aug, np.random.default_rng(6))
    assert a.shape == (71, 71, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # seeded: repeatable
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, off)  # a 30-60 % crop is not the centre crop


def test_augment_flip_is_configurable(tiny_spec):
    # left half black, right half white: a flip swaps them
    arr = np.zeros((80, 80, 3), np.uint8)
    arr[:, 40:] = 255
    img = Image.fromarray(arr)
    full = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=True)
    no_flip = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    flips = {int(augment_image(img, tiny_spec, full, np.random.default_rng(s))[:, 0].mean() > 127)
             for s in range(8)}
    assert flips == {0, 1}
    for s in range(8):
        assert augment_image(img, tiny_spec, no_flip, np.random.default_rng(s))[:, 0].mean() < 128


# ---------------------------------------------------------------------------------------------
# model preparation


def test_prepare_model_from_scratch_and_from_checkpoint(tiny_checkpoint, tiny_model):
    m = prepare_model("scratch", class_names=["a", "b"], **ARCH)
    assert m.spec.num_classes == 2 and m.spec.labels == ("a", "b") and m.fc.out_features == 2
    ft = prepare_model(tiny_checkpoint, class_names=["x", "y", "z"], input_size=96)
    assert ft.spec.labels == ("x", "y", "z") and ft.spec.input_size == 96
    assert ft.spec.width == tiny_model.spec.width
    torch.testing.assert_close(ft.state_dict()["conv1.weight"],
                               tiny_model.state_dict()["conv1.weight"])
    with pytest.raises(ConfigError, match="contradicts"):
        prepare_model(tiny_checkpoint, class_names=["x", "y"], width=0.5)
    with pytest.raises(ConfigError, match="71"):
        prepare_model("scratch", class_names=["a", "b"], width=0.125, input_size=64)
    with pytest.raises(CheckpointError):
        prepare_model("missing.safetensors", class_names=["a", "b"])


# ---------------------------------------------------------------------------------------------
# the loop


@pytest.fixture(scope="module")
def trained(colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "colours.safetensors"
    rec = _Recorder()
    torch.manual_seed(123)
    initial = prepare_model("scratch", class_names=["blue", "green", "red"], seed=0, **ARCH)
    init_loss, _, _ = evaluate(initial, scan_folder(colour_folder), device="cpu")
    result = train(colour_folder, out, config=_config(), val=colour_folder, callbacks=rec, **ARCH)
    return result, rec, init_loss


def test_training_reduces_loss_and_saves_best(trained, colour_folder):
    result, rec, init_loss = trained
    assert [h.epoch for h in result.history] == [1, 2, 3]
    assert rec.epochs == [1, 2, 3] and rec.ends == [1, 2, 3]
    assert rec.steps == 3 * 2  # 12 images / batch 6
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.device == "cpu" and result.resumed_from == 0
    best = max(result.history, key=lambda h: (h.val_top1, -h.val_loss))
    assert result.best_epoch == best.epoch and result.best_val_top1 == best.val_top1
    assert [h.best for h in result.history].count(True) >= 1
    # the saved checkpoint is the best epoch's model, with labels and preprocessing
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt.spec.labels == ("blue", "green", "red")
    assert ckpt.spec.input_size == 71 and ckpt.spec.width == 0.125
    training = json.loads(ckpt.metadata["training"])
    assert training["epoch"] == result.best_epoch
    model = load_model(result.checkpoint)
    loss, top1, n = evaluate(model, scan_folder(colour_folder), device="cpu")
    assert n == 12
    assert top1 == pytest.approx(result.best_val_top1)
    assert loss < init_loss


def test_resume_state_is_tensors_only(trained):
    result, _, _ = trained
    assert result.resume_state == resume_path(result.checkpoint)
    assert result.resume_state.name == "colours.resume.pt"
    raw = torch.load(result.resume_state, weights_only=True)  # no pickled objects
    assert raw["format"] == RESUME_FORMAT and raw["epoch"] == 3
    state = load_resume_state(result.resume_state)
    assert set(state) >= {"model", "optimizer", "scheduler", "epoch", "history", "run_id"}


def test_resume_continues_from_the_right_epoch(colour_folder, tmp_path, trained):
    out = tmp_path / "r.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(colour_folder, out, config=_config(), val=colour_folder,
              callbacks=_Recorder(stop_at=2), **ARCH)
    state = load_resume_state(resume_path(out))
    assert state["epoch"] == 1 and out.is_file()
    rec = _Recorder()
    result = train(colour_folder, out, config=_config(), val=colour_folder, callbacks=rec,
                   resume=True, **ARCH)
    assert result.resumed_from == 1
    assert rec.epochs == [2, 3]
    assert [h.epoch for h in result.history] == [1, 2, 3]
    # same seeds, same data order: the resumed run follows the uninterrupted one
    full, _, _ = trained
    for a, b in zip(result.history, full.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3, abs=1e-4)
    # resuming a finished run trains nothing and returns its result
    again = _Recorder()
    done = train(colour_folder, out, config=_config(), val=colour_folder, callbacks=again,
                 resume=True, **ARCH)
    assert again.epochs == [] and done.best_epoch == result.best_epoch


def test_resume_refuses_another_run(colour_folder, tmp_path, trained):
    import shutil

    out = tmp_path / "x.safetensors"
    with pytest.raises(CheckpointError, match="no resume state"):
        train(colour_folder, out, config=_config(epochs=1), resume=True, **ARCH)
    done, _, _ = trained
    shutil.copy(done.checkpoint, out)
    shutil.copy(done.resume_state, resume_path(out))
    with pytest.raises(CheckpointError, match="another run"):
        train(colour_folder, out, config=_config(lr=1e-2), val=colour_folder, resume=True,
              **ARCH)
    with pytest.raises(CheckpointError, match="another run"):  # other validation data
        train(colour_folder, out, config=_config(), resume=True, **ARCH)
    resume_path(out).write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read resume state"):
        train(colour_folder, out, config=_config(), val=colour_folder, resume=True, **ARCH)


def test_without_validation_the_last_epoch_is_kept(colour_folder, tmp_path):
    r = train(colour_folder, tmp_path / "n.safetensors", config=_config(epochs=2), **ARCH)
    assert r.best_epoch == 2 and r.best_val_top1 is None
    assert [h.val_top1 for h in r.history] == [None, None]


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs(colour_folder, flat_image_folder, image_folder, tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(DataError, match="does not exist"):
        train(tmp_path / "nope", out, config=_config(), **ARCH)
    with pytest.raises(DataError, match="not labelled"):
        train(flat_image_folder, out, config=_config(), **ARCH)
    with pytest.raises(ConfigError, match="at least 71"):
        train(colour_folder, out, config=_config(), width=0.125, input_size=64)
    with pytest.raises(ConfigError, match="not both"):
        train(colour_folder, out, config=_config(), val=colour_folder, val_split=0.2, **ARCH)
    with pytest.raises(DataError, match="differ from training classes"):
        train(colour_folder, out, config=_config(), val=image_folder, **ARCH)
    with pytest.raises(ConfigError, match=".safetensors"):
        train(colour_folder, tmp_path / "m.pt", config=_config(), **ARCH)
    one_class = tmp_path / "one"
    (one_class / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one_class / "only" / "a.png")
    with pytest.raises(DataError, match="at least 2 class"):
        train(one_class, out, config=_config(), **ARCH)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# CLI


def _cli(argv, capsys):
    from xception_trt.cli import main

    code = main(argv)
    return code, capsys.readouterr()


def test_cli_train_bad_inputs(tmp_path, flat_image_folder, colour_folder, capsys):
    out = str(tmp_path / "m.safetensors")
    cases = [
        ([str(tmp_path / "missing"), "-o", out], "does not exist"),
        ([str(flat_image_folder), "-o", out], "not labelled"),
        ([str(colour_folder), "-o", out, "--width", "0.125", "--input-size", "50"],
         "at least 71"),
        ([str(colour_folder), "-o", out, "--init", str(tmp_path / "none.safetensors")],
         "does not exist"),
    ]
    for argv, message in cases:
        code, cap = _cli(["train", *argv], capsys)
        assert code == 2, argv
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
        assert "Traceback" not in cap.err


def test_cli_train_runs_and_resumes(tmp_path, colour_folder, capsys):
    out = tmp_path / "c.safetensors"
    argv = ["train", str(colour_folder), "-o", str(out), "--width", "0.125", "--middle-blocks",
            "0", "--input-size", "71", "--epochs", "1", "--batch-size", "6", "--no-flip",
            "--device", "cpu", "--val-split", "0.34", "--json"]
    code, cap = _cli(argv, capsys)
    assert code == 0, cap.err
    doc = json.loads(cap.out)
    assert doc["checkpoint"] == str(out) and doc["best_epoch"] == 1
    assert ModelSpec.from_dict(doc["spec"]).labels == ("blue", "green", "red")
    code, cap = _cli(argv + ["--resume"], capsys)
    assert code == 0 and json.loads(cap.out)["resumed_from"] == 1
