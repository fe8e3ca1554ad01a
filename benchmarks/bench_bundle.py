"""Bundle size against the sum of its parts, time to open a bundle (engine cache hit, prebuilt
engine copied out, ONNX Runtime fallback) and time to rebuild an engine from the bundle with
TensorRT-RTX on this machine's CPU.

Models (random weights: sizes and times are representative, accuracy is not):

- ``full``: the 299x299 Xception (22.9 M parameters) with FP32, FP16 and INT8;
- ``small``: the demo-sized model (width 0.25, 71x71, 10 classes) with FP32, FP16 and INT8.

INT8 is calibrated on 32 synthetic images. Sizes: each member's bytes and the bytes it takes
in the bundle (``stored_bytes``: engines whose plan deflates are deflated); the INT8 graph's
share of the FP32 graph, and the size its FP32-weight Q/DQ form would have (what TensorRT 8.6
is given at build time); per engine, its layer tally (``trt/layers.py``, from the sidecar) and
the generated-kernel CUDA source the TensorRT-RTX plan carries (found by its preamble,
``#undef __HAS_FP8``, up to the terminating NUL: an observation of this TensorRT-RTX's plan
layout, not a documented format).

Each bundle carries TensorRT-RTX SM86 engines. "Rebuild" opens it as an SM89 RTX machine
would (recorded facts: the engine cache builds an SM89 engine with the local TensorRT-RTX);
"cache hit" opens it that way again; "prebuilt" opens it as an SM86 machine (the bundled
engine is copied out, then found). The engines cannot run here (no GPU): open times are the
bundle's part of opening (manifest, hashes, cache, lock), not TensorRT deserialisation.

    python benchmarks/bench_bundle.py                          # both models
    python benchmarks/bench_bundle.py --models small --repeat 7 --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_build import _synthetic_images  # noqa: E402  (one generator of calibration images)

MODELS = {
    "full": {"spec": {}, "precisions": ["fp32", "fp16", "int8"]},
    "small": {"spec": {"num_classes": 10, "width": 0.25, "middle_blocks": 8, "input_size": 71},
              "precisions": ["fp32", "fp16", "int8"]},
}


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name: str, work: Path, repeat: int) -> dict:
    import tensorrt_rtx
    import torch

    from xception_trt.bundle.cache import resolve
    from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
    from xception_trt.bundler import write_bundle
    from xception_trt.checkpoint import save_checkpoint
    from xception_trt.config import ModelSpec
    from xception_trt.model import build_xception
    from xception_trt.runners import OnnxRuntimeRunner, open_runner

    cfg = MODELS[name]
    spec = ModelSpec(**cfg["spec"])
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_xception(spec=spec).eval(), work / f"{name}.safetensors")
    calib = (_synthetic_images(work / "calib", 32, size=(320, 240))
             if "int8" in cfg["precisions"] else None)
    out = work / f"{name}.xtrt"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = write_bundle(source=ckpt, output=out, precisions=cfg["precisions"],
                          calibration=calib, cc=["sm86"], local_engines=False,
                          max_batch=8, work_dir=work / "work", force=True)
    make_s = time.perf_counter() - t0

    def machine(cc: str) -> DeviceFacts:
        return DeviceFacts(flavours=(FlavourFact("tensorrt_rtx", tensorrt_rtx.__version__),),
                           gpus=(GpuFact(0, f"RTX sm{cc.replace('.', '')}", cc),), onnx=True)

    cpu = DeviceFacts(ort_version="x", ort_providers=("CPUExecutionProvider",), onnx=True)
    rows = []
    for prec in cfg["precisions"]:
        cache = work / f"cache-{prec}"
        first = resolve(out, precision=prec, cache_dir=cache, facts=machine("8.9"))
        assert first.built, first  # noqa: S101 - a benchmark script: stop on a wrong path
        hit = _median(lambda p=prec, c=cache: resolve(out, precision=p, cache_dir=c,
                                                       facts=machine("8.9")), repeat)
        pre_cache = work / f"pre-{prec}"
        pre_first = resolve(out, precision=prec, cache_dir=pre_cache, facts=machine("8.6"))
        pre_hit = _median(lambda p=prec, c=pre_cache: resolve(
            out, precision=p, cache_dir=c, facts=machine("8.6")), repeat)
        ort_cache = work / f"ort-{prec}"
        open_runner(out, precision=prec, cache_dir=ort_cache, facts=cpu).close()  # copy out
        ort_open = _median(lambda p=prec, c=ort_cache: open_runner(
            out, precision=p, cache_dir=c, facts=cpu).close(), repeat)
        onnx = work / "work" / "onnx" / ("model.onnx" if prec == "fp32" else f"model.{prec}.onnx")
        plain_open = _median(lambda o=onnx: OnnxRuntimeRunner(o).close(), repeat)
        rows.append({
            "precision": prec,
            "rebuild_sm89_s": round(first.seconds, 3),
            "engine_build_s": _build_seconds(first.path),
            "cache_hit_open_s": round(hit, 4),
            "prebuilt_first_open_s": round(pre_first.seconds, 3),
            "prebuilt_cache_hit_open_s": round(pre_hit, 4),
            "onnxruntime_open_via_bundle_s": round(ort_open, 4),
            "onnxruntime_open_plain_onnx_s": round(plain_open, 4),
        })
    members = result.manifest.members
    import zipfile

    import onnx

    from xception_trt.graph import to_float_weights
    from xception_trt.trt.layers import generated_kernels, tally_layers

    with zipfile.ZipFile(out) as zf:
        stored = {i.filename: i.compress_size for i in zf.infolist()}
    sizes: dict = {}
    if "int8" in cfg["precisions"]:
        int8 = work / "work" / "onnx" / "model.int8.onnx"
        sizes = {"int8_onnx_share_of_fp32": round(
                     members["onnx/int8.onnx"].bytes / members["onnx/fp32.onnx"].bytes, 3),
                 "int8_onnx_float_weight_form_bytes": to_float_weights(
                     onnx.load(str(int8))).ByteSize()}
    engines = {}
    for entry in result.manifest.engines:
        side = entry.sidecar  # the bundled sidecar, with its layer records
        plan = _plan_kernel_sources(work / "work" / "engines" / entry.sidecar.engine.file)
        engines[entry.member] = {"bytes": members[entry.member].bytes,
                                 "stored_bytes": stored[entry.member],
                                 "layers": tally_layers(side).to_dict(),
                                 "generated_kernel_layers": generated_kernels(side), **plan}
    return {
        "model": name, "spec": spec.to_dict() | {"labels": None},
        "precisions": cfg["precisions"], "engines": [e.member for e in result.manifest.engines],
        "bundle_bytes": result.bytes, "parts_bytes": result.parts_bytes,
        "overhead_bytes": result.bytes - result.parts_bytes,
        "overhead_percent": round(100 * (result.bytes - result.parts_bytes)
                                  / result.parts_bytes, 3),
        "members": {n: m.bytes for n, m in members.items()},
        "stored_bytes": {n: stored[n] for n in members}, **sizes, "engine_details": engines,
        "make_bundle_s": round(make_s, 2), "open": rows,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _plan_kernel_sources(engine: Path) -> dict:
    """The generated-kernel CUDA sources a TensorRT-RTX plan carries: how many, their bytes."""
    if not engine.is_file():
        return {}
    data = engine.read_bytes()
    marker = b"#undef __HAS_FP8\n"
    count, total, at = 0, 0, data.find(marker)
    while at >= 0:
        end = data.find(b"\x00", at)
        end = len(data) if end < 0 else end
        count, total = count + 1, total + end - at
        at = data.find(marker, end)
    return {"kernel_sources": count, "kernel_source_bytes": total}


def _build_seconds(engine: Path) -> float:
    from xception_trt.sidecar import read_sidecar

    return read_sidecar(engine).build_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["small", "full"])
    parser.add_argument("--repeat", type=int, default=5, help="opens per median (default: 5)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bundle.json"),
                        help="results file (default: benchmarks/results/bundle.json)")
    args = parser.parse_args(argv)

    import tensorrt_rtx

    from xception_trt import __version__
    from xception_trt.host import cpu_model

    results = []
    with tempfile.TemporaryDirectory(prefix="xtrt-bench-bundle-") as tmp:
        for name in args.models:
            work = Path(tmp) / name
            work.mkdir()
            print(f"{name} ...", file=sys.stderr, flush=True)
            results.append(bench_model(name, work, args.repeat))
    doc = {"xception_trt": __version__, "tensorrt_rtx": tensorrt_rtx.__version__,
           "cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "repeat": args.repeat,
           "note": "shared machine: other processes ran at the same time (load average)",
           "results": results}
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
