from __future__ import annotations

import numpy as np
import pytest
import torch
from keras_reference import keras_xception_logits, random_keras_layers, write_keras_h5

from xception_trt.checkpoint import (
    convert_timm_state_dict,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from xception_trt.config import ModelSpec, PoolPadding
from xception_trt.errors import CheckpointError
from xception_trt.model import build_xception, scaled_channels


def _logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_own_format_round_trip_keeps_logits_and_spec(tiny_model, tiny_checkpoint):
    loaded = load_model(tiny_checkpoint)
    assert loaded.spec == tiny_model.spec
    assert loaded.spec.class_names() == ("cat", "dog", "fox", "owl")
    x = np.random.default_rng(0).normal(size=(2, 3, 71, 71)).astype(np.float32)
    np.testing.assert_array_equal(_logits(loaded, x), _logits(tiny_model, x))
    assert len(loaded.checkpoint_sha256) == 64


def test_save_requires_safetensors_suffix(tiny_model, tmp_path):
    with pytest.raises(CheckpointError, match="must end in .safetensors"):
        save_checkpoint(tiny_model, tmp_path / "x.pth")


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".safetensors"])
def test_timm_and_cadene_state_dicts_load(tiny_model, tmp_path, suffix):
    sd = tiny_model.state_dict()
    # Cadene: last_linear + 2-D pointwise weights + DataParallel prefix; timm: plain names.
    cadene = {}
    for k, v in sd.items():
        if k.endswith("pointwise.weight"):
            v = v[:, :, 0, 0]
        cadene["module." + k.replace("fc.", "last_linear.")] = v.clone()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": cadene}, path)
    model = load_model(path, input_size=71)
    assert model.spec.source == "timm"
    assert (model.spec.width, model.spec.middle_blocks, model.spec.num_classes) == (0.125, 2, 4)
    x = np.random.default_rng(1).normal(size=(1, 3, 71, 71)).astype(np.float32)
    np.testing.assert_allclose(_logits(model, x), _logits(tiny_model, x), rtol=0, atol=0)


def test_convert_timm_is_pure():
    sd = {"module.last_linear.weight": torch.zeros(3, 2)}
    out = convert_timm_state_dict(sd)
    assert list(out) == ["fc.weight"] and list(sd) == ["module.last_linear.weight"]


_CALLED: list[str] = []


def _side_effect() -> str:
    _CALLED.append("unpickled")
    return "boom"


class _Evil:
    def __reduce__(self):
        return (_side_effect, ())


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="no pickled objects"):
        read_checkpoint(path)
    assert _CALLED == []


def test_missing_unexpected_and_shape_errors_are_listed(tiny_model, tmp_path):
    sd = dict(tiny_model.state_dict())
    sd.pop("block1.skip.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["bn1.weight"] = torch.zeros(5)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, input_size=71)
    msg = str(err.value)
    assert "missing keys (1): block1.skip.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "bn1.weight: checkpoint (5,) vs model (8,)" in msg


def test_not_an_xception_and_bad_files(tmp_path):
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an Xception state dict"):
        load_model(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "model.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        load_model(tmp_path / "model.ckpt")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_model(tmp_path / "trunc.safetensors")
    (tmp_path / "garbage.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "garbage.pth")


def test_classifier_mismatch_rejected_or_reinitialised(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="4-class classifier but 10 classes"):
        load_model(tiny_checkpoint, num_classes=10)
    model = load_model(tiny_checkpoint, num_classes=10, reset_classifier=True)
    assert model.fc.out_features == 10 and model.spec.num_classes == 10
    assert model.spec.labels is None  # the old 4 labels no longer apply
    named = load_model(tiny_checkpoint, labels=[f"d{i}" for i in range(3)], reset_classifier=True)
    assert named.spec.class_names() == ("d0", "d1", "d2")


def _tiny_keras(include_top=True, seed=0):
    rng = np.random.default_rng(seed)
    return random_keras_layers(rng, width_ch=lambda ch: scaled_channels(ch, 0.125),
                               middle_blocks=2, num_classes=5, include_top=include_top)


# Pool inputs at 71: 33, 17, 9, 5 (all odd: TF 'same' == symmetric); at 80: 37, 19, 10, 5.
@pytest.mark.parametrize("size,full_model,pools_differ", [(71, False, False), (80, True, True)])
def test_keras_h5_reproduces_keras_logits(tmp_path, size, full_model, pools_differ):
    layers = _tiny_keras()
    path = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels.h5"
    write_keras_h5(path, layers, full_model=full_model)
    model = load_model(path, input_size=size)
    assert model.spec.source == "keras"
    assert model.spec.pool_padding is PoolPadding.TF_SAME and model.spec.bn_eps == 1e-3
    x = np.random.default_rng(2).uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)
    ref = keras_xception_logits(layers, x, middle_blocks=2)
    ours = _logits(model, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    scale = np.abs(ref).max()
    assert scale > 0.1  # the reference is not degenerate
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5 * scale)
    # The symmetric-padding model with the same weights is Keras exactly when every pool
    # input is odd, and is not Keras when one is even.
    sym = build_xception(spec=model.spec.replace(pool_padding=PoolPadding.SYMMETRIC))
    sym.load_state_dict(model.state_dict())
    diff = np.abs(_logits(sym, np.ascontiguousarray(x.transpose(0, 3, 1, 2))) - ref).max()
    if pools_differ:
        assert diff > 1e-3 * scale
    else:
        assert diff <= 2e-5 * scale


def test_keras_notop_needs_a_new_head(tmp_path):
    path = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(path, _tiny_keras(include_top=False))
    with pytest.raises(CheckpointError, match="has no classifier"):
        load_model(path, input_size=71)
    model = load_model(path, input_size=71, num_classes=3, reset_classifier=True)
    assert model.fc.out_features == 3


def test_keras_file_missing_layers_is_clear(tmp_path):
    layers = _tiny_keras()
    layers.pop("block3_sepconv2_bn")
    path = tmp_path / "bad.h5"
    write_keras_h5(path, layers)
    with pytest.raises(CheckpointError, match="no layer 'block3_sepconv2_bn'"):
        load_model(path, input_size=71)
    (tmp_path / "not.h5").write_bytes(b"plain text")
    with pytest.raises(CheckpointError, match="not a readable HDF5"):
        load_model(tmp_path / "not.h5")


def test_full_keras_layout_maps_to_the_paper_model():
    """The full-width Keras layer set converts to exactly the 22,855,952-parameter model."""
    from xception_trt.checkpoint import convert_keras_weights

    rng = np.random.default_rng(0)
    layers = random_keras_layers(rng, width_ch=lambda ch: ch, middle_blocks=8, num_classes=1000)
    sd, fields = convert_keras_weights(layers)
    assert fields == {"width": 1.0, "in_chans": 3, "middle_blocks": 8, "num_classes": 1000}
    model = build_xception(spec=ModelSpec.keras(**fields))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and not [k for k in missing if not k.endswith("num_batches_tracked")]
    # Keras' residual conv of the exit block (conv2d_4) lands on block12.skip.
    np.testing.assert_array_equal(sd["block12.skip.weight"].numpy(),
                                  layers["conv2d_4"]["kernel"].transpose(3, 2, 0, 1))
