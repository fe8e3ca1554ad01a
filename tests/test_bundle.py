"""Bundles end to end on the CPU: written from a checkpoint (ONNX variants, calibration scales,
accuracy, TensorRT-RTX engines), opened through ONNX Runtime with the FP32 ONNX's logits, the
rebuild path with TensorRT-RTX into the engine cache (built, cached, reused, two processes at
once), and every kind of bad bundle refused with one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xception_trt.bundle.cache import resolve
from xception_trt.bundle.choice import ChoiceKind
from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
from xception_trt.bundle.format import MANIFEST, Bundle
from xception_trt.config import Precision
from xception_trt.errors import BuildError, BundleError, ConfigError
from xception_trt.sidecar import read_sidecar

rtx = pytest.importorskip("tensorrt_rtx", reason="the bundle's engines are built with "
                                                 "TensorRT-RTX (pip install tensorrt-rtx)")

#: This CPU machine: no GPU, ONNX Runtime present.
CPU = DeviceFacts(ort_version="1.x", ort_providers=("CPUExecutionProvider",), onnx=True,
                  gpu_reason="no NVIDIA driver found")


def _rtx_machine(cc: str) -> DeviceFacts:
    """An RTX machine whose TensorRT-RTX is the one installed here (it builds on the CPU)."""
    return DeviceFacts(flavours=(FlavourFact("tensorrt_rtx", rtx.__version__),),
                       gpus=(GpuFact(0, f"RTX sm{cc.replace('.', '')}", cc),), onnx=True,
                       ort_version="1.x", ort_providers=("CPUExecutionProvider",))


@pytest.fixture(scope="module")
def made(tiny_checkpoint, flat_image_folder, image_folder, tmp_path_factory):
    from xception_trt.bundler import write_bundle

    root = tmp_path_factory.mktemp("bundle")
    result = write_bundle(source=tiny_checkpoint, output=root / "tiny.xtrt",
                          precisions=["fp16", "fp32", "int8"], calibration=flat_image_folder,
                          validation=image_folder, cc=["sm86"], max_batch=4,
                          local_engines=False, work_dir=root / "work", threads=1)
    return result, root


def test_bundle_holds_variants_scales_labels_accuracy_and_engines(made, tiny_spec):
    result, root = made
    with Bundle(result.path) as b:
        m = b.manifest
        assert sorted(b.verify()) == sorted(m.members)
        assert m.precisions[0] is Precision.FP16  # the first asked is the default
        assert set(m.variants) == {Precision.FP32, Precision.FP16, Precision.INT8}
        assert m.model_spec == tiny_spec and m.batch_profile == (1, 4, 4)
        assert b.read("labels.txt").decode().split() == list(tiny_spec.class_names())
        scales = json.loads(b.read(m.calibration["member"]))["scales"]
        assert scales and all(v > 0 for v in scales.values())
        fp32 = m.variants[Precision.FP32].accuracy
        assert fp32["agreement"] == 100.0 and fp32["images"] == 16
        for prec in (Precision.FP16, Precision.INT8):
            acc = m.variants[prec].accuracy
            assert 0.0 <= acc["agreement"] <= 100.0 and acc["max_abs_diff"] >= 0.0
        assert sorted(e.precision.value for e in m.engines) == ["fp16", "fp32", "int8"]
        for e in m.engines:
            assert e.sidecar.flavour == "tensorrt_rtx" and e.sidecar.targets == ("SM86",)
            assert e.sidecar.max_batch == 4
        with zipfile.ZipFile(result.path) as zf:  # graphs stored, for fast reads
            assert zf.namelist()[0] == MANIFEST
            infos = {i.filename: i for i in zf.infolist()}
        assert all(infos[n].compress_type == zipfile.ZIP_STORED for n in m.members
                   if n.endswith(".onnx"))
        # the INT8 TensorRT-RTX plan carries the source of its generated kernels: deflated,
        # to well under half its size
        int8 = next(infos[e.member] for e in m.engines if e.precision is Precision.INT8)
        assert int8.compress_type == zipfile.ZIP_DEFLATED
        assert int8.compress_size < 0.5 * int8.file_size
    assert result.parts_bytes == sum(x.bytes for x in m.members.values())


def test_bundle_runs_through_onnx_runtime_with_the_fp32_onnx_logits(made, tmp_path):
    from xception_trt.classifier import Classifier
    from xception_trt.runners import OnnxRuntimeRunner, open_runner

    result, root = made
    x = np.random.default_rng(0).standard_normal((3, 3, 71, 71)).astype(np.float32)
    with OnnxRuntimeRunner(root / "work" / "onnx" / "model.onnx", threads=1) as ref:
        want = ref(x)
    with open_runner(result.path, precision="fp32", cache_dir=tmp_path, facts=CPU,
                     threads=1) as runner:
        assert runner.bundle.kind is ChoiceKind.ONNXRUNTIME
        assert runner.precision is Precision.FP32
        np.testing.assert_array_equal(runner(x), want)
    for prec in ("fp16", "int8"):  # every variant runs; its agreement is in the manifest
        with open_runner(result.path, precision=prec, cache_dir=tmp_path, facts=CPU) as r:
            assert r.precision.value == prec and r(x).shape == want.shape
    # engine options are dropped when ONNX Runtime runs it; an unknown one is still refused
    with open_runner(result.path, cache_dir=tmp_path, facts=CPU, device=0,
                     cuda_graphs=True) as r:
        assert r.bundle.kind is ChoiceKind.ONNXRUNTIME
    with pytest.raises(ConfigError, match="cuda_grahps"):
        open_runner(result.path, cache_dir=tmp_path, facts=CPU, cuda_grahps=True)
    with Classifier(result.path, cache_dir=tmp_path, facts=CPU) as clf:
        assert clf.runner.precision is Precision.FP16  # the bundle's default
        assert clf.class_names == result.manifest.model_spec.class_names()


def test_int8_on_onnx_runtime_runs_the_graph_placed_for_it(made, tmp_path):
    # issue 18: where ONNX Runtime runs a bundle's INT8, it runs the graph whose every
    # Conv/Gemm ONNX Runtime fuses into quantized kernels, not the TensorRT-placed one
    from xception_trt.bundler import write_bundle
    from xception_trt.config import Placement
    from xception_trt.onnx_meta import read_metadata
    from xception_trt.precision import fused_kernel_counts

    result, root = made
    int8 = result.manifest.variants[Precision.INT8]
    assert int8.member == "onnx/int8.onnx" and int8.onnxruntime_member == "onnx/int8-ort.onnx"
    acc = int8.onnxruntime_accuracy
    assert acc["images"] == 16 and 0.0 <= acc["agreement"] <= 100.0
    r = resolve(result.path, precision="int8", cache_dir=tmp_path / "cache", facts=CPU)
    assert r.choice.kind is ChoiceKind.ONNXRUNTIME
    assert r.choice.variant.member == "onnx/int8-ort.onnx"
    assert read_metadata(r.path).placement is Placement.ONNXRUNTIME
    counts = fused_kernel_counts(r.path)
    assert counts.float_conv == 0 and counts.float_gemm == 0 and counts.quantized_conv > 0
    # engines are still built from the TensorRT-placed graph
    assert read_metadata(root / "work" / "onnx" / "model.int8.onnx").placement \
        is Placement.TENSORRT
    # rebundling carries it unchanged
    again = write_bundle(source=result.path, output=tmp_path / "again.xtrt",
                         work_dir=tmp_path / "work", local_engines=False)
    with Bundle(result.path) as a, Bundle(again.path) as b:
        assert b.manifest.variants[Precision.INT8].onnxruntime_member == "onnx/int8-ort.onnx"
        assert b.member("onnx/int8-ort.onnx").sha256 == a.member("onnx/int8-ort.onnx").sha256
        assert b.manifest.variants[Precision.INT8].onnxruntime_accuracy == acc


def test_onnx_runtime_fallback_is_said_once(made, tmp_path, caplog):
    result, _ = made
    copy = tmp_path / "copy.xtrt"  # a path of its own: announced once per bundle and process
    copy.write_bytes(result.path.read_bytes())
    with caplog.at_level("WARNING", logger="xception_trt.bundle.cache"):
        for _ in range(2):
            resolve(copy, cache_dir=tmp_path / "cache", facts=CPU)
    said = [r for r in caplog.records if "with ONNX Runtime" in r.getMessage()]
    assert len(said) == 1 and "no NVIDIA GPU 0" in said[0].getMessage()


def test_rtx_rebuild_for_a_compute_capability_the_bundle_lacks(made, tmp_path, caplog):
    result, _ = made
    facts = _rtx_machine("8.9")
    with caplog.at_level("WARNING", logger="xception_trt.bundle.cache"):
        first = resolve(result.path, precision="fp16", cache_dir=tmp_path, facts=facts)
    assert first.kind is ChoiceKind.BUILD and first.built and not first.cache_hit
    assert any("building a fp16 engine from tiny.xtrt: no prebuilt engine fits here" in
               r.getMessage() and "SM89" in r.getMessage() for r in caplog.records)
    side = read_sidecar(first.path, verify=True)
    assert side.targets == ("SM89",) and side.precision is Precision.FP16
    assert side.flavour == "tensorrt_rtx" and side.max_batch == 4
    again = resolve(result.path, precision="fp16", cache_dir=tmp_path, facts=facts)
    assert again.path == first.path and again.cache_hit and not again.built
    # the prebuilt SM86 engine is used as is on an SM86 machine: copied out, not built
    pre = resolve(result.path, precision="fp16", cache_dir=tmp_path, facts=_rtx_machine("8.6"))
    assert pre.kind is ChoiceKind.PREBUILT and not pre.built
    assert read_sidecar(pre.path, verify=True).targets == ("SM86",)



def test_a_cached_graph_changed_after_its_check_is_not_built(made, tmp_path, monkeypatch):
    """The cache's ONNX copy is verified under its own lock, released before the build: the
    build hashes what it reads again, so an engine is never built (and cached under the
    bundle graph's key) from other bytes."""
    from xception_trt.bundle import cache

    result, _ = made
    real = cache._onnx_file

    def swapped(*args, **kw):  # another process rewrote the copy between check and build
        import onnx

        path, hit = real(*args, **kw)
        model = onnx.load(path)
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            "changed": "yes"})
        onnx.save(model, path)  # still a graph with our metadata: only its digest tells
        return path, hit

    monkeypatch.setattr(cache, "_onnx_file", swapped)
    with pytest.raises(BundleError, match="changed while it was used"):
        resolve(result.path, precision="fp16", cache_dir=tmp_path, facts=_rtx_machine("8.9"))
    assert not list(tmp_path.rglob("model.engine"))

_OPEN = """
import json, sys
from xception_trt.bundle.cache import resolve
from xception_trt.bundle.facts import DeviceFacts
facts = DeviceFacts.from_dict(json.loads(sys.argv[3]))
r = resolve(sys.argv[1], precision="int8", cache_dir=sys.argv[2], facts=facts)
print(json.dumps({"path": str(r.path), "built": r.built, "hit": r.cache_hit}))
"""


def test_two_processes_opening_together_build_once_and_share_the_engine(made, tmp_path):
    result, _ = made
    facts = json.dumps(_rtx_machine("12.0").to_dict())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(result.path), str(tmp_path),
                               facts], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["path"] == outs[1]["path"]
    assert sorted(o["built"] for o in outs) == [False, True]  # one built, the other waited
    engine = Path(outs[0]["path"])
    assert read_sidecar(engine, verify=True).targets == ("SM120",)
    leftovers = [p.name for p in engine.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------
# bad bundles


def _rewrite(src: Path, dst: Path, *, manifest=None, drop=(), replace=None) -> Path:
    """A copy of a bundle with its manifest edited, members dropped or replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info.filename)
            if info.filename == MANIFEST and manifest is not None:
                data = json.dumps(manifest(json.loads(data))).encode()
            if replace and info.filename in replace:
                data = replace[info.filename](data)
            zout.writestr(info, data)
    return dst


def _newer(m):
    m["format_version"] = 99
    return m


def _no_int8(m):
    del m["variants"]["int8"]
    return m


def _flip(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


@pytest.mark.parametrize("how,precision,message", [
    ("truncated", "fp32", "not a readable bundle"),
    ("tampered", "fp32", "does not match the SHA-256"),
    ("newer", "fp32", "format version 99, newer than"),
    ("newer, other members", "fp32", "format version 99, newer than"),
    ("no manifest", "fp32", "has no manifest.json"),
    ("missing", "fp32", "lacks member(s) onnx/fp32.onnx"),
    ("no int8", "int8", "no int8 variant"),
])
def test_bad_bundles_are_refused_and_nothing_is_left(made, tmp_path, how, precision, message):
    result, _ = made
    src, bad = result.path, tmp_path / "bad.xtrt"
    if how == "truncated":
        bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif how == "tampered":
        _rewrite(src, bad, replace={"onnx/fp32.onnx": _flip})
    elif how == "newer":
        _rewrite(src, bad, manifest=_newer)
    elif how == "newer, other members":
        _rewrite(src, bad, manifest=_newer, drop=("onnx/fp32.onnx",))
    elif how == "no manifest":
        _rewrite(src, bad, drop=(MANIFEST,))
    elif how == "missing":
        _rewrite(src, bad, drop=("onnx/fp32.onnx",))
    else:
        _rewrite(src, bad, manifest=_no_int8)
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(bad, precision=precision, cache_dir=cache, facts=CPU)
    leftovers = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] \
        if cache.exists() else []
    assert leftovers == []


def test_unwritable_engine_cache_is_one_clear_error(made, tmp_path):
    result, _ = made
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BundleError, match="engine cache .*XDG_CACHE_HOME"):
        resolve(result.path, precision="fp32", cache_dir=blocker / "cache", facts=CPU)


def test_cli_bad_bundle_exit_2(made, tmp_path, capsys, monkeypatch):
    from xception_trt.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result, _ = made
    bad = _rewrite(result.path, tmp_path / "bad.xtrt", replace={"onnx/fp16.onnx": _flip})
    img = next(Path(result.path).parent.glob("*.xtrt"))  # any file: the bundle fails first
    for argv, text in (
            (["infer", str(bad), str(img)], "does not match the SHA-256"),
            (["doctor", str(bad)], "does not match the SHA-256")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and text in err[0], err


def test_cli_commands_accept_a_bundle(made, image_folder, tmp_path, capsys, monkeypatch):
    from xception_trt.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result, root = made
    bundle = str(result.path)
    assert main(["infer", bundle, str(image_folder), "--precision", "int8", "--json",
                 "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runner"] == "tiny:onnxruntime-int8" and len(doc["results"]) == 16
    assert (tmp_path / "xdg" / "xception-trt" / "bundles" / "onnx").is_dir()
    assert main(["eval", bundle, str(root / "work" / "onnx" / "model.onnx"), "--data",
                 str(image_folder), "-o", str(tmp_path / "eval"), "--threads", "1"]) == 0
    assert main(["bench", bundle, "--batch", "1", "--iterations", "2", "--warmup", "1",
                 "-o", str(tmp_path / "bench")]) == 0
    bench = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert "onnxruntime-fp16" in json.dumps(bench)
    assert main(["triton-repo", bundle, "--precision", "fp32", "-o",
                 str(tmp_path / "repo")]) == 0
    assert (tmp_path / "repo" / "xception" / "1" / "model.onnx").is_file()
    capsys.readouterr()
    assert main(["infer", str(root / "work" / "onnx" / "model.onnx"), str(image_folder),
                 "--precision", "fp16"]) == 2
    assert "--precision only applies with a bundle MODEL" in capsys.readouterr().err


def test_cli_bundle_writes_one_file_and_refuses_to_replace_it(tiny_checkpoint, tmp_path,
                                                              capsys):
    from xception_trt.cli import main

    out = tmp_path / "m.xtrt"
    assert main(["bundle", str(tiny_checkpoint), "-o", str(out), "--no-progress"]) == 0
    assert "wrote " in capsys.readouterr().out
    with Bundle(out) as b:
        assert b.manifest.precisions == (Precision.FP32,) and b.manifest.engines == ()
    assert main(["bundle", str(tiny_checkpoint), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["bundle", str(tiny_checkpoint), "--calib-method", "max", "-o",
                 str(tmp_path / "n.xtrt")]) == 2
    assert "--calib-method only applies with --precision int8" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["m.xtrt"]  # no temporary left behind


def test_a_failed_bundle_leaves_nothing(tiny_checkpoint, tmp_path):
    from xception_trt.bundler import write_bundle

    out = tmp_path / "out" / "m.xtrt"
    out.parent.mkdir()
    before = set(Path(tempfile.gettempdir()).glob("xtrt-bundle-*"))
    with pytest.raises(BuildError):  # TensorRT-RTX refuses a Pascal target: the build fails
        write_bundle(source=tiny_checkpoint, output=out, cc=["sm60"], local_engines=False)
    assert list(out.parent.iterdir()) == []
    assert set(Path(tempfile.gettempdir()).glob("xtrt-bundle-*")) == before


def test_rebundling_engines_that_share_a_file_name_keeps_each(made, tmp_path):
    """Issue 27 item 14: engines/a/e.engine and engines/b/e.engine were copied out to one file,
    so one engine was lost and the other stored under the first one's name."""
    from xception_trt.bundler import write_bundle

    result, _ = made
    src, crafted = result.path, tmp_path / "folders.xtrt"
    with zipfile.ZipFile(src) as zin:
        data = json.loads(zin.read(MANIFEST))
        rename = {}
        for k, e in enumerate(data["engines"]):
            rename[e["member"]] = f"engines/{k}/e.engine"
            rename[e["sidecar"]] = f"engines/{k}/e.engine.json"
            e["member"], e["sidecar"] = rename[e["member"]], rename[e["sidecar"]]
        data["members"] = {rename.get(n, n): m for n, m in data["members"].items()}
        with zipfile.ZipFile(crafted, "w") as zout:
            for info in zin.infolist():
                body = json.dumps(data).encode() if info.filename == MANIFEST \
                    else zin.read(info.filename)
                zout.writestr(rename.get(info.filename, info.filename), body)
    want = {e.precision: e.sidecar.engine.sha256 for e in result.manifest.engines}
    again = write_bundle(source=crafted, output=tmp_path / "again.xtrt",
                         work_dir=tmp_path / "work", local_engines=False)
    with Bundle(again.path) as b:
        got = {}
        for e in b.manifest.engines:
            assert e.sidecar.engine.sha256 == b.member(e.member).sha256  # plan matches sidecar
            got[e.precision] = b.member(e.member).sha256
    assert got == want


@pytest.mark.parametrize("name, content, kind", [
    ("engines/a.engine", os.urandom(300_000), zipfile.ZIP_STORED),  # weights: no gain
    ("engines/a.engine", b"#include <climits>\nusing T = int;\n" * 9_000,
     zipfile.ZIP_DEFLATED),  # kernel source: deflates
    # a 12 % gain deflates, a 5 % one does not (the threshold is 10 %)
    ("engines/a.engine", os.urandom(88_000) + bytes(12_000), zipfile.ZIP_DEFLATED),
    ("engines/a.engine", os.urandom(95_000) + bytes(5_000), zipfile.ZIP_STORED),
    ("onnx/int8.onnx", bytes(100_000), zipfile.ZIP_STORED),  # graphs: always stored
    ("labels.txt", os.urandom(1_000), zipfile.ZIP_DEFLATED),
])
def test_member_compression(name, content, kind, tmp_path):
    from xception_trt.bundler import _compression

    path = tmp_path / "member"
    path.write_bytes(content)
    assert _compression(name, content) == kind == _compression(name, path)
