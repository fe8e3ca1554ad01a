"""ONNX export: graph contract, metadata, parity against PyTorch (random inputs and real decoded
images, float and uint8 inputs), both torch exporters, bad inputs, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from xception_trt import graph as G
from xception_trt.cli import main
from xception_trt.config import InputFormat, ModelSpec, Precision
from xception_trt.errors import CheckpointError, ExportError, GraphError
from xception_trt.export import (
    PARITY_RTOL,
    ExportResult,
    export_onnx,
    parity_inputs,
    read_export_settings,
    state_dict_sha256,
    verify_parity,
)
from xception_trt.fsio import sha256_file
from xception_trt.onnx_meta import read_metadata
from xception_trt.preprocess import preprocess_batch


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def sharp_model(tiny_model, image_folder):
    """``tiny_model`` with a discriminative classifier: an untrained Xception's pooled features
    differ by only ~1% between images, so its logits (~0.05) pick the same class for every
    image and parity would be nearly vacuous. The head here standardises the features over the
    test images (``W = W0 / (sd + 0.5 mean(sd))``, ``b = -W mu``) so logits span about +-0.7
    and all 4 classes occur; it amplifies feature differences (and float error) ~100x, which
    makes the 1e-4 bound a real test."""
    import copy

    import torch

    model = copy.deepcopy(tiny_model).eval()
    x = torch.from_numpy(preprocess_batch(_images(image_folder), model.spec))
    with torch.no_grad():
        feats = model.global_pool(model.forward_features(x)).flatten(1).double()
        mu, sd = feats.mean(0), feats.std(0)
        w0 = torch.from_numpy(np.random.default_rng(7).normal(0, 1, (4, feats.shape[1])))
        weight = w0 * (0.5 / feats.shape[1] ** 0.5) / (sd + 0.5 * sd.mean())
        model.fc.weight.copy_(weight.float())
        model.fc.bias.copy_((-(weight @ mu)).float())
    return model


@pytest.fixture(scope="module")
def sharp_checkpoint(sharp_model, tmp_path_factory) -> Path:
    from xception_trt.checkpoint import save_checkpoint

    return save_checkpoint(sharp_model, tmp_path_factory.mktemp("sharp") / "sharp.safetensors")


@pytest.fixture(scope="module")
def float_export(sharp_checkpoint, tmp_path_factory) -> ExportResult:
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return export_onnx(sharp_checkpoint, out, parity_samples=2)


@pytest.fixture(scope="module")
def uint8_export(sharp_model, tmp_path_factory) -> ExportResult:
    out = tmp_path_factory.mktemp("export_u8") / "tiny_u8.onnx"
    return export_onnx(sharp_model, out, input_format="uint8-nhwc", parity_samples=2)


# ---------------------------------------------------------------------------------------------
# the graph contract


def test_float_export_contract(float_export):
    res = float_export
    assert res.path.is_file() and res.opset == 17 and res.batch == "dynamic"
    assert res.exporter == "torchscript" and res.input_format is InputFormat.FLOAT_NCHW
    model = onnx.load(str(res.path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(inp) == ["batch", 3, 71, 71] and _dims(out) == ["batch", 4]
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    ops = {n.op_type for n in model.graph.node}
    assert ops <= G.XCEPTION_OPS and not ops & {"Identity", "BatchNormalization", "Dropout"}
    assert ops >= {"GlobalAveragePool", "Flatten", "Gemm"}
    G.check_onnx(res.path)


def test_metadata(float_export, sharp_checkpoint, tiny_spec):
    meta = read_metadata(float_export.path)
    assert meta.spec == tiny_spec
    assert meta.input_format is InputFormat.FLOAT_NCHW and meta.precision is Precision.FP32
    assert meta.raw["source_sha256"] == sha256_file(sharp_checkpoint)
    assert float_export.source_sha256 == sha256_file(sharp_checkpoint)
    settings = meta.json_field("export")
    assert settings["opset"] == 17 and settings["batch"] == "dynamic"
    assert settings["exporter"] == "torchscript" and settings["clean"] is True
    assert meta.json_field("labels") == list(tiny_spec.class_names())
    assert read_export_settings(float_export.path) == settings
    assert meta.raw["version"]


def test_report_before_after(float_export):
    from collections import Counter

    rep = float_export.report
    written = onnx.load(str(float_export.path))
    assert rep.after.ops == Counter(n.op_type for n in written.graph.node)
    assert rep.after.num_nodes == len(written.graph.node) <= rep.before.num_nodes
    assert rep.after.num_initializers == len(written.graph.initializer)
    assert [n.name for n in written.graph.node][:2] == ["Conv_0", "Relu_0"]
    assert rep.file_size == float_export.path.stat().st_size
    assert rep.after.initializer_bytes <= rep.before.initializer_bytes
    json.dumps(float_export.to_dict())  # serialisable


def test_uint8_export_contract(uint8_export, sharp_model):
    model = onnx.load(str(uint8_export.path))
    (inp,) = model.graph.input
    assert inp.name == "input" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert _dims(inp) == ["batch", 71, 71, 3]
    assert [n.op_type for n in model.graph.node][:3] == ["Cast", "Transpose", "Conv"]
    assert read_metadata(model).input_format is InputFormat.UINT8_NHWC
    assert uint8_export.source_sha256 == state_dict_sha256(sharp_model)


def test_fixed_batch(tiny_model, tmp_path):
    res = export_onnx(tiny_model, tmp_path / "b3.onnx", batch=3, check_parity=False)
    model = onnx.load(str(res.path))
    assert _dims(model.graph.input[0])[0] == 3 and _dims(model.graph.output[0]) == [3, 4]
    assert res.batch == 3 and res.parity is None
    # more samples than the fixed batch: verify_parity runs them in chunks
    parity = verify_parity(tiny_model, res.path, parity_inputs(tiny_model.spec, "float-nchw", n=5))
    assert parity.passed and parity.num_samples == 5


def test_no_clean_keeps_the_raw_graph(tiny_model, tmp_path):
    res = export_onnx(tiny_model, tmp_path / "raw.onnx", clean=False, parity_samples=1)
    names = [n.name for n in onnx.load(str(res.path)).graph.node]
    assert names[0].startswith("/")  # TorchScript's scope names, not our canonical Conv_0
    assert res.report.before.ops == res.report.after.ops and res.parity.passed


def test_dynamo_exporter_gives_the_same_canonical_graph(tiny_model, float_export, tmp_path):
    res = export_onnx(tiny_model, tmp_path / "dyn.onnx", opset=18, exporter="dynamo")
    assert res.exporter == "dynamo" and res.parity.passed
    assert "ReduceMean" in res.report.before.ops  # the dynamo head, canonicalised:
    assert res.report.after.ops == float_export.report.after.ops
    assert _dims(onnx.load(str(res.path)).graph.input[0]) == ["batch", 3, 71, 71]


# ---------------------------------------------------------------------------------------------
# parity: random inputs and real decoded images, float and uint8


def test_parity_random_inputs(sharp_model, float_export, uint8_export):
    for res in (float_export, uint8_export):
        parity = verify_parity(sharp_model, res.path,
                               parity_inputs(sharp_model.spec, res.input_format, n=8, seed=3))
        assert parity.num_samples == 8 and parity.input_format is res.input_format
        assert parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0, parity.summary()


def test_parity_real_images(sharp_model, float_export, uint8_export, image_folder):
    """16 decoded PNG/JPEG images: the float graph vs torch, and the uint8 graph fed the same
    pixels vs torch through the float preprocessing path."""
    import torch

    images = _images(image_folder)
    assert len(images) == 16
    floats = preprocess_batch(images, sharp_model.spec, "float-nchw")
    pixels = preprocess_batch(images, sharp_model.spec, "uint8-nhwc")
    p_float = verify_parity(sharp_model, float_export.path, floats)
    p_uint8 = verify_parity(sharp_model, uint8_export.path, pixels)
    for p in (p_float, p_uint8):
        assert p.num_samples == 16
        assert p.max_abs_diff <= 1e-4 and p.top1_agreement == 1.0, p.summary()
    # The check has teeth: the predicted class varies by image.
    with torch.no_grad():
        ref = sharp_model(torch.from_numpy(floats)).numpy()
    assert np.abs(ref).max() > 0.3 and len(set(ref.argmax(axis=1))) >= 3


def test_parity_detects_a_changed_function(tiny_model, tmp_path, monkeypatch):
    """A cleanup that changes the function (here: scaling the classifier) fails the export and
    leaves nothing behind."""
    import xception_trt.export as export_mod

    real_clean = export_mod.clean_graph

    def broken_clean(model, **kwargs):
        out = real_clean(model, **kwargs)
        for init in out.graph.initializer:
            if list(init.dims) == [4]:  # the fc bias
                arr = onnx.numpy_helper.to_array(init) + 1.0
                init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
        return out

    monkeypatch.setattr(export_mod, "clean_graph", broken_clean)
    with pytest.raises(ExportError, match="does not match the PyTorch model.*FAILED"):
        export_onnx(tiny_model, tmp_path / "bad.onnx")
    assert _leftovers(tmp_path) == []


def test_parity_is_relative_to_the_logit_scale(tiny_model, tmp_path, monkeypatch):
    """Logits of ~2e-4 (random weights): a graph whose logits are off by 5e-5 (a quarter of
    the scale, top-1 unchanged) passed an absolute 1e-4 bound; the relative bound catches it,
    and the correct graph still passes."""
    import copy

    import torch

    import xception_trt.export as export_mod

    small = copy.deepcopy(tiny_model)
    with torch.no_grad():
        x = torch.from_numpy(parity_inputs(small.spec, "float-nchw", n=2))
        scale = 2e-4 / float(small(x).abs().max())
        small.fc.weight.mul_(scale)
        small.fc.bias.mul_(scale)
    good = export_onnx(small, tmp_path / "good.onnx", parity_samples=2)
    assert 1e-4 < good.parity.max_abs_logit < 4e-4, good.parity.summary()
    assert good.parity.passed and good.parity.max_rel_diff < 1e-5
    assert good.parity.to_dict()["rtol"] == PARITY_RTOL

    real_clean = export_mod.clean_graph

    def shifted_clean(model, **kwargs):
        out = real_clean(model, **kwargs)
        for init in out.graph.initializer:
            if list(init.dims) == [4]:  # the fc bias: every logit + 5e-5, the argmax unchanged
                arr = onnx.numpy_helper.to_array(init) + np.float32(5e-5)
                init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
        return out

    monkeypatch.setattr(export_mod, "clean_graph", shifted_clean)
    with pytest.raises(ExportError, match="does not match the PyTorch model") as exc:
        export_onnx(small, tmp_path / "bad.onnx", parity_samples=2)
    assert "top-1 agreement 100.0%" in str(exc.value)  # only the relative bound caught it
    assert "max |diff| 5e-05" in str(exc.value) and "FAILED" in str(exc.value)
    assert not (tmp_path / "bad.onnx").exists()


def test_relative_logit_diff():
    from xception_trt.contract import relative_logit_diff

    ref = np.array([[1.0, -4.0], [2.0, 0.0]], np.float32)
    assert relative_logit_diff(ref + 0.02, ref) == pytest.approx(0.005)
    assert relative_logit_diff(ref * 1e-4 + 1e-5, ref * 1e-4) == pytest.approx(0.025)
    assert relative_logit_diff(np.zeros((1, 3)), np.zeros((1, 3))) == 0.0
    assert relative_logit_diff(np.ones((1, 3)), np.zeros((1, 3))) == np.inf
    assert np.isnan(relative_logit_diff(np.full((1, 2), np.nan), ref[:1]))


def test_verify_parity_rejects_wrong_inputs(tiny_model, uint8_export):
    floats = parity_inputs(tiny_model.spec, "float-nchw", n=2)
    with pytest.raises(ExportError, match="uint8-nhwc input uint8"):
        verify_parity(tiny_model, uint8_export.path, floats)


def test_verify_parity_bad_onnx_files(tiny_model, float_export, tmp_path):
    x = parity_inputs(tiny_model.spec, "float-nchw", n=1)
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(GraphError, match="not a valid ONNX|no nodes"):
        verify_parity(tiny_model, not_onnx, x)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(float_export.path.read_bytes()[:5000])
    with pytest.raises(GraphError, match="truncated"):
        verify_parity(tiny_model, truncated, x)
    with pytest.raises(GraphError, match="does not exist"):
        verify_parity(tiny_model, tmp_path / "missing.onnx", x)


# ---------------------------------------------------------------------------------------------
# bad input: clear errors, nothing half-written


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        export_onnx(tmp_path / "nope.safetensors", tmp_path / "out.onnx")
    assert _leftovers(tmp_path) == []


def test_wrong_architecture_checkpoint(tmp_path):
    import torch
    from safetensors.torch import save_file

    ckpt = tmp_path / "resnet.safetensors"
    save_file({"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3),
               "fc.weight": torch.zeros(10, 512)}, str(ckpt))
    with pytest.raises(CheckpointError):
        export_onnx(ckpt, tmp_path / "out.onnx")
    assert _leftovers(tmp_path) == ["resnet.safetensors"]


def test_not_a_model(tmp_path):
    import torch

    with pytest.raises(ExportError, match="cannot export a Linear"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "out.onnx")


def test_unwritable_output_path(tiny_model, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory")
    with pytest.raises(ExportError, match="cannot create output directory"):
        export_onnx(tiny_model, blocker / "model.onnx")
    with pytest.raises(ExportError, match="is a directory"):
        (tmp_path / "dir.onnx").mkdir()
        export_onnx(tiny_model, tmp_path / "dir.onnx")
    with pytest.raises(ExportError, match="must end in .onnx"):
        export_onnx(tiny_model, tmp_path / "model.engine")
    assert _leftovers(tmp_path) == ["dir.onnx", "file.txt"]


@pytest.mark.parametrize("opset", [11, 12, 99])
def test_opsets_tensorrt_cannot_read(tiny_model, tmp_path, opset):
    with pytest.raises(ExportError, match=f"opset {opset} cannot be read.*--opset 17"):
        export_onnx(tiny_model, tmp_path / "m.onnx", opset=opset)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=0), "batch must be"), (dict(batch="auto"), "batch must be"),
    (dict(input_format="rgb"), "unknown InputFormat"), (dict(exporter="tf"), "unknown exporter"),
    (dict(exporter="dynamo", opset=17), "dynamo exporter writes opset >= 18"),
])
def test_bad_arguments(tiny_model, tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_onnx(tiny_model, tmp_path / "m.onnx", **kwargs)
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_export(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    rc = main(["export", str(tiny_checkpoint), "-o", str(out), "--batch", "2",
               "--input-format", "uint8-nhwc", "--parity-samples", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"wrote {out}" in captured.out and "uint8-nhwc" in captured.out
    assert "Transpose" in captured.out and "before" in captured.out  # the report
    assert "top-1 agreement 100.0%" in captured.out and "OK" in captured.out
    assert _dims(onnx.load(str(out)).graph.input[0]) == [2, 71, 71, 3]


def test_cli_export_json(tiny_checkpoint, tmp_path, capsys):
    rc = main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "j.onnx"), "--json",
               "--no-clean", "--no-parity"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["clean"] is False and data["parity"] is None
    assert data["spec"]["num_classes"] == 4


@pytest.mark.parametrize("make_args, match", [
    (lambda t, c: [str(t / "missing.safetensors"), "-o", str(t / "m.onnx")], "does not exist"),
    (lambda t, c: [str(c), "-o", str(t / "m.onnx"), "--opset", "11"], "opset 11"),
    (lambda t, c: [str(c), "-o", str(t / "blocker" / "m.onnx")], "cannot create output"),
])
def test_cli_errors_are_one_line(tiny_checkpoint, tmp_path, capsys, make_args, match):
    (tmp_path / "blocker").write_text("x")
    rc = main(["export", *make_args(tmp_path, tiny_checkpoint)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and match in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_cli_rejects_bad_batch(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "m.onnx"), "--batch", "0"])
    assert exc.value.code == 2 and "must be >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the full model


@pytest.mark.slow
def test_full_xception_299_export(tmp_path):
    import torch

    from xception_trt.model import build_xception

    torch.manual_seed(0)
    model = build_xception()
    res = export_onnx(model, tmp_path / "xception.onnx", parity_samples=1)
    assert res.parity.passed, res.parity.summary()
    ops = res.report.after.ops
    assert ops == {"Conv": 74, "Relu": 35, "Add": 12, "MaxPool": 4, "GlobalAveragePool": 1,
                   "Flatten": 1, "Gemm": 1}
    assert res.report.before.ops["Identity"] > 0
    # conv/fc weights of the 22,855,952 parameters (BN folded into conv biases, some shared)
    assert 0.99 < res.report.after.initializer_bytes / (22_855_952 * 4) < 1.0
    assert read_metadata(res.path).spec == ModelSpec()


def test_metadata_that_is_not_utf8_text_is_a_graph_error():
    # protobuf returns bytes for a metadata key or value that is not valid UTF-8
    from xception_trt.errors import GraphError
    from xception_trt.onnx_meta import _meta_from_props

    with pytest.raises(GraphError, match="not UTF-8 text"):
        _meta_from_props({b"xception_trt.\xff": "x", "xception_trt.model_spec": "{}"})
