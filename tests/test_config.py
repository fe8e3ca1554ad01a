from __future__ import annotations

import pytest

from xception_trt.config import InputFormat, Interpolation, ModelSpec, PoolPadding, Precision
from xception_trt.errors import ConfigError
from xception_trt.labels import imagenet_class_names, imagenet_wnids


def test_modelspec_json_round_trip():
    spec = ModelSpec.keras(num_classes=3, labels=("a", "b", "c"), input_size=96)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.pool_padding is PoolPadding.TF_SAME and again.bn_eps == 1e-3


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_size=64), "at least 71"),
    (dict(num_classes=0), "num_classes"),
    (dict(std=(0.5, 0.0, 0.5)), "std must be > 0"),
    (dict(mean=(0.5, 0.5)), "3 values"),
    (dict(crop_pct=1.5), "crop_pct"),
    (dict(num_classes=2, labels=("a",)), "1 class labels given for num_classes=2"),
    (dict(interpolation="cubic"), "unknown Interpolation 'cubic'"),
    (dict(pool_padding="same"), "unknown PoolPadding"),
    (dict(width=0), "width"),
    (dict(input_size=299.0), "must be an integer"),
])
def test_modelspec_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelSpec(**kwargs)


def test_unknown_fields_signal_a_newer_format():
    data = ModelSpec().to_dict()
    data["future"] = 1
    with pytest.raises(ConfigError, match="newer xception-trt"):
        ModelSpec.from_dict(data)


def test_presets_and_resize_size():
    assert ModelSpec.timm().resize_size == 333  # floor(299 / 0.8975)
    assert ModelSpec.keras().resize_size == 299
    assert ModelSpec.timm().interpolation is Interpolation.BICUBIC


def test_imagenet_names_in_logit_order():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish"
    assert imagenet_wnids()[0] == "n01440764"
    assert ModelSpec().class_names() == names
    assert ModelSpec(num_classes=2).class_names() == ("class_0", "class_1")


def test_enum_parse():
    assert Precision.parse("FP16") is Precision.FP16
    assert InputFormat.parse("uint8-nhwc") is InputFormat.UINT8_NHWC
    with pytest.raises(ConfigError, match="fp32, fp16, int8"):
        Precision.parse("bf16")


@pytest.mark.parametrize("value, kw, message", [
    (True, {}, r"n must be a positive integer \(>= 1\), got True"),
    (1.0, {}, r"n must be a positive integer \(>= 1\), got 1.0"),
    (0, {}, r"n must be a positive integer \(>= 1\), got 0"),
    (-1, {"minimum": 0}, "n must be an integer >= 0, got -1"),
    (9, {"minimum": 1, "maximum": 8}, r"n must be an integer in \[1, 8\], got 9"),
    ("3", {"minimum": None}, "n must be an integer, got '3'"),
])
def test_check_int_refuses_with_the_bounds_in_the_message(value, kw, message):
    from xception_trt.config import check_int
    with pytest.raises(ConfigError, match=message):
        check_int(value, "n", **kw)


def test_check_int_accepts_numpy_integers_and_raises_the_callers_error():
    import numpy as np

    from xception_trt.config import check_int
    from xception_trt.errors import DataError
    assert check_int(np.int64(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    with pytest.raises(DataError):
        check_int(0, "n", error=DataError)


def test_str_enum_choices_come_from_the_members():
    from xception_trt.config import Precision
    assert Precision.choices() == [m.value for m in Precision]
    assert str(Precision.FP16) == "fp16"
