from __future__ import annotations

import pytest

from xception_trt.config import (
    InputFormat,
    Interpolation,
    ModelSpec,
    Placement,
    PoolPadding,
    Precision,
)
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


# ---------------------------------------------------------------------------------------------
# one name per concept (issue 25): old Python keywords still work, with a DeprecationWarning
# that points at the caller; old and new together are refused

#: BuildConfig.to_dict() of main before the rename (0bf49c4): engine sidecars and engine-cache
#: keys are computed from it and must not change.
_OLD_BUILD_OPTIONS = (
    '{"precision": "fp16", "backend": "tensorrt_rtx", "batch": null, "min_batch": null, '
    '"opt_batch": null, "max_batch": 4, "workspace_mib": null, "optimization_level": null, '
    '"timing_cache_dir": null, "dla_core": null, "gpu_fallback": true, "version_compatible": '
    'false, "hardware_compatible": false, "compute_capabilities": ["SM86", "SM89"], '
    '"layer_info": true, "profile": [1, 4, 4]}')
_OLD_CACHE_KEY = "fa46c7ad9116230972b5223150b8ac1848d0f5b7c5318242a0571a242832486f"


def test_build_config_new_names_keep_json_keys_and_cache_keys():
    import json

    from xception_trt.config import BuildConfig
    from xception_trt.trt.compat import engine_cache_key

    cfg = BuildConfig(flavour="tensorrt_rtx", max_batch=4, cc=("sm86", "8.9"), precision="fp16")
    assert cfg.flavour == "tensorrt_rtx" and cfg.cc == ("SM86", "SM89")
    assert json.dumps(cfg.to_dict()) == _OLD_BUILD_OPTIONS
    assert engine_cache_key(onnx_sha256="0" * 64, options=cfg.to_dict(),
                            flavour_name="tensorrt_rtx", version="1.2.0", device=None,
                            targets=["SM86", "SM89"]) == _OLD_CACHE_KEY
    assert cfg.replace(max_batch=2).cc == cfg.cc  # replace() keeps the renamed fields


def test_build_config_old_keywords_warn_and_work():
    from xception_trt.config import BuildConfig

    with pytest.warns(DeprecationWarning, match="backend= is deprecated; use flavour=") as rec:
        old = BuildConfig(backend="tensorrt_rtx", max_batch=4)
    assert rec[0].filename == __file__  # points at the caller
    assert old == BuildConfig(flavour="tensorrt_rtx", max_batch=4)
    with pytest.warns(DeprecationWarning, match="compute_capabilities= is deprecated; use cc="):
        old = BuildConfig(compute_capabilities=("sm86",))
    assert old.cc == ("SM86",)
    with pytest.warns(DeprecationWarning, match="BuildConfig.backend is deprecated"):
        assert BuildConfig(flavour="tensorrt_rtx").backend == "tensorrt_rtx"  # the new field
    with pytest.warns(DeprecationWarning, match="compute_capabilities is deprecated; use .cc"):
        assert BuildConfig(cc=("sm86",)).compute_capabilities == ("SM86",)
    with pytest.raises(ConfigError, match="backend= and flavour= are the same option"):
        BuildConfig(backend="tensorrt", flavour="tensorrt_rtx")
    with pytest.raises(ConfigError, match="give only cc="):
        BuildConfig(compute_capabilities=("sm86",), cc=("sm89",))


def test_placement_enum_keeps_its_old_name():
    from xception_trt.config import Placement, QuantTarget
    from xception_trt.onnx_meta import OnnxMeta

    assert QuantTarget is Placement and Placement.parse("onnxruntime") is Placement.ONNXRUNTIME
    meta = OnnxMeta(ModelSpec(), InputFormat.FLOAT_NCHW, Precision.INT8,
                    {"quant_target": "onnxruntime"})
    assert meta.placement is Placement.ONNXRUNTIME  # the metadata key is unchanged
    with pytest.warns(DeprecationWarning, match="quant_target is deprecated; use .placement"):
        assert meta.quant_target is Placement.ONNXRUNTIME


def test_calibration_options():
    from xception_trt.config import CalibrationOptions

    assert CalibrationOptions().keywords() == {"calibration": None, "calibration_method": None}
    assert CalibrationOptions(images="calib", method="auto").keywords() == {
        "calibration": "calib", "calibration_method": "auto"}


def _warns_then(exc, match, call):
    with pytest.warns(DeprecationWarning, match=match), pytest.raises(exc):
        call()


def test_old_keywords_of_library_calls(tmp_path):
    """Each renamed keyword: the old one warns (then the call goes on: here into the error the
    bad input gives), both together are refused before any work."""
    from xception_trt.bundle.choice import Request
    from xception_trt.bundler import write_bundle
    from xception_trt.errors import BundleError, EngineError, GraphError, XceptionTRTError
    from xception_trt.precision import quantize_int8
    from xception_trt.runners import ort_int8_note
    from xception_trt.serve.options import RepositoryOptions, ServeBackend
    from xception_trt.trt.builder import build_engine
    from xception_trt.trt.runtime import TensorRTRunner

    with pytest.warns(DeprecationWarning, match="Request: backend= is deprecated"):
        assert Request(Precision.FP16, backend="tensorrt").flavour == "tensorrt"
    with pytest.raises(ConfigError, match="give only flavour="):
        Request(Precision.FP16, backend="tensorrt", flavour="tensorrt")
    with pytest.warns(DeprecationWarning, match="backend= is deprecated; use triton_backend="):
        assert RepositoryOptions(backend="python").triton_backend is ServeBackend.PYTHON
    with pytest.warns(DeprecationWarning, match="RepositoryOptions.backend is deprecated"):
        assert RepositoryOptions(triton_backend="python").backend is ServeBackend.PYTHON
    with pytest.raises(ConfigError, match="give only triton_backend="):
        RepositoryOptions(backend="python", triton_backend="python")
    with pytest.raises(ConfigError, match="give only triton_backend="):  # the default, given
        RepositoryOptions(backend="python", triton_backend="native")
    missing = tmp_path / "missing.onnx"
    _warns_then(GraphError, "engine_path= is deprecated; use output=",
                lambda: build_engine(missing, engine_path=tmp_path / "e.engine"))
    with pytest.raises(ConfigError, match="give only output="):
        build_engine(missing, engine_path=tmp_path / "e", output=tmp_path / "e")
    _warns_then(EngineError, "cuda_backend= is deprecated; use cuda_binding=",
                lambda: TensorRTRunner(tmp_path / "none.engine", cuda_backend="pycuda"))
    with pytest.raises(ConfigError, match="give only cuda_binding="):
        TensorRTRunner(tmp_path / "none.engine", cuda_backend="pycuda", cuda_binding="pycuda")
    _warns_then(XceptionTRTError, "target= is deprecated; use placement=",
                lambda: quantize_int8(missing, None, target="onnxruntime"))
    with pytest.raises(ConfigError, match="give only placement="):
        quantize_int8(missing, None, target="onnxruntime", placement="onnxruntime")
    with pytest.warns(DeprecationWarning, match="target= is deprecated; use placement="):
        assert ort_int8_note(missing, target=Placement.ONNXRUNTIME) is None
    _warns_then(BundleError, "engines= is deprecated; use cc=",
                lambda: write_bundle(source=missing, output=tmp_path / "b.zip",
                                     engines=["sm86"]))
    with pytest.raises(ConfigError, match="give only cc="):
        write_bundle(source=missing, output=tmp_path / "b.xtrt", engines=["sm86"], cc=["sm89"])


def test_old_output_keywords(tmp_path):
    """``path=`` of the calls that write a file is now ``output=``."""
    import onnx

    from xception_trt.errors import ExportError
    from xception_trt.export import export_onnx
    from xception_trt.precision import write_trt_calibration_cache
    from xception_trt.precision.source import save_model

    _warns_then(ExportError, "export_onnx: path= is deprecated; use output=",
                lambda: export_onnx("missing.safetensors", path=tmp_path / "x.txt"))
    with pytest.raises(ConfigError, match="give only output="):
        export_onnx("m.safetensors", tmp_path / "x.onnx", path=tmp_path / "x.onnx")
    with pytest.warns(DeprecationWarning, match="path= is deprecated; use output="):
        out = write_trt_calibration_cache({"x": 0.5}, path=tmp_path / "c.cache")
    assert out.read_text() == write_trt_calibration_cache({"x": 0.5}, tmp_path / "d.cache") \
        .read_text()
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    with pytest.warns(DeprecationWarning, match="save_model: path= is deprecated"):
        assert save_model(model, path=tmp_path / "m.onnx").is_file()


def test_old_keywords_of_machine_checks(tmp_path):
    from xception_trt.bundle.doctor import diagnose
    from xception_trt.bundle.facts import probe_facts
    from xception_trt.errors import BundleError
    from xception_trt.runners import open_runner
    from xception_trt.selftest import run_selftest

    facts = probe_facts()
    with pytest.warns(DeprecationWarning, match="targets= is deprecated; use cc="):
        old = diagnose(None, facts=facts, targets=["sm89"])
    assert old.to_dict() == diagnose(None, facts=facts, cc=["sm89"]).to_dict()
    with pytest.warns(DeprecationWarning, match="backends= is deprecated; use cuda_bindings="):
        report = run_selftest(backends=("pycuda",), engine=False, calls=1)
    assert report.requirements is not None
    (tmp_path / "b.xtrt").write_bytes(b"")  # opening it fails after the option is mapped
    with pytest.raises(ConfigError, match="give only flavour="):
        open_runner(tmp_path / "b.xtrt", backend="tensorrt", flavour="tensorrt")
    with pytest.warns(DeprecationWarning, match="open_runner: backend= is deprecated"), \
            pytest.raises(BundleError):
        open_runner(tmp_path / "b.xtrt", backend="tensorrt")


def test_build_config_replace_takes_the_old_keywords_with_a_warning():
    """``BuildConfig.replace(backend=...)`` worked before the rename (0.1.0's own pipeline called
    it): it still does, on a config whose new field is set, warning at the caller."""
    from xception_trt.config import BuildConfig

    cfg = BuildConfig(flavour="tensorrt_rtx", cc=("sm86",), max_batch=4)
    with pytest.warns(DeprecationWarning, match="compute_capabilities= is deprecated") as rec:
        assert cfg.replace(compute_capabilities=("sm89",)).cc == ("SM89",)
    assert rec[0].filename == __file__
    with pytest.warns(DeprecationWarning, match="backend= is deprecated; use flavour="):
        changed = cfg.replace(backend="tensorrt")
    assert changed.flavour == "tensorrt" and changed.cc == ("SM86",) and changed.max_batch == 4
    with pytest.raises(ConfigError, match="give only flavour="):
        cfg.replace(backend="tensorrt", flavour="tensorrt_rtx")
