"""Export + cleanup wall time, node counts before/after and parity figures for the full 299x299
Xception on this machine.

For each torch exporter it times (median of ``--repeat`` runs; wall and process CPU seconds, the
latter less sensitive to other load on a shared machine, whose 1-minute load average is
recorded) the torch export alone, the onnx-graphsurgeon cleanup alone, and ``export_onnx`` end to
end (export, cleanup, checker, metadata, atomic write; parity off), and records node counts by
op before/after.
Parity (ONNX Runtime CPU vs PyTorch) is measured for the float-NCHW and uint8-NHWC graphs on
random pixels and on decoded images (``--images DIR``, else synthetic smooth images written as
JPEG/PNG and decoded through the normal preprocessing).

Without ``--checkpoint`` the weights are random; an untrained network's logits are tiny
(~1e-2) and nearly equal across images, so the parity figures are also reported for a
"standardised head": the classifier rescaled so that logits on the images spread over several
units and differ between images (backbone unchanged), the scale trained weights have.

    python benchmarks/bench_export.py                      # random weights, 3 repeats
    python benchmarks/bench_export.py --checkpoint xception.safetensors --images val/ \\
        --json benchmarks/results/export.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _synthetic_images(folder: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, size=(12 + i, 16 + i, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((320 + 17 * i, 300 + 11 * i),
                                            Image.Resampling.BILINEAR)
        path = folder / f"img_{i:02d}.{'jpg' if i % 2 else 'png'}"
        img.save(path)
        paths.append(path)
    return paths


def _standardised_head(model, floats, *, logit_std: float = 4.0, seed: int = 7):
    """A copy of ``model`` whose classifier standardises the pooled features over ``floats``
    (``W = W0 / sd``, ``b = -W mu``) so logits have a spread of about ``logit_std``."""
    import numpy as np
    import torch

    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        feats = out.global_pool(out.forward_features(torch.from_numpy(floats))).flatten(1)
        feats = feats.double()
        mu, sd = feats.mean(0), feats.std(0)
        w0 = torch.from_numpy(np.random.default_rng(seed).normal(
            0, 1, (out.spec.num_classes, feats.shape[1])))
        weight = w0 * (logit_std / feats.shape[1] ** 0.5) / (sd + 0.5 * sd.mean())
        out.fc.weight.copy_(weight.float())
        out.fc.bias.copy_((-(weight @ mu)).float())
    return out


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to export (default: random-weight 299x299 Xception)")
    parser.add_argument("--images", default=None,
                        help="folder of images for the decoded-image parity (default: synthetic)")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per exporter")
    parser.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime
    import torch

    from xception_trt import __version__
    from xception_trt.checkpoint import load_model
    from xception_trt.export import _torch_export, export_onnx, parity_inputs, verify_parity
    from xception_trt.graph import clean_graph, graph_report
    from xception_trt.model import build_xception
    from xception_trt.preprocess import preprocess_batch

    if args.checkpoint:
        model = load_model(args.checkpoint)
        weights = args.checkpoint
    else:
        torch.manual_seed(0)
        model = build_xception()
        weights = "random (torch.manual_seed(0))"
    spec = model.spec
    results: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0]},
        "versions": {"xception-trt": __version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "model": {"weights": weights, "input_size": spec.input_size,
                  "num_classes": spec.num_classes},
        "repeat": args.repeat, "exporters": {}, "parity": {},
        "load_average_1min": {"start": round(os.getloadavg()[0], 2)},
    }

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for exporter in args.exporters:
            opset = 17 if exporter == "torchscript" else 18
            wall: dict[str, list[float]] = {"export": [], "cleanup": [], "total": []}
            cpu: dict[str, list[float]] = {"export": [], "cleanup": [], "total": []}
            report = None
            for i in range(args.repeat):
                w0, c0 = time.perf_counter(), time.process_time()
                raw = _torch_export(model, opset=opset, batch="dynamic", exporter=exporter)
                w1, c1 = time.perf_counter(), time.process_time()
                cleaned = clean_graph(raw)
                w2, c2 = time.perf_counter(), time.process_time()
                res = export_onnx(model, tmp_path / f"{exporter}_{i}.onnx", opset=opset,
                                  exporter=exporter, check_parity=False)
                w3, c3 = time.perf_counter(), time.process_time()
                for key, (wa, wb, ca, cb) in {"export": (w0, w1, c0, c1),
                                              "cleanup": (w1, w2, c1, c2),
                                              "total": (w2, w3, c2, c3)}.items():
                    wall[key].append(wb - wa)
                    cpu[key].append(cb - ca)
                report = res.report
                assert graph_report(raw, cleaned).after.ops == report.after.ops
                print(f"{exporter} run {i + 1}/{args.repeat}: torch export {wall['export'][-1]:.2f}"
                      f" s, cleanup {wall['cleanup'][-1]:.2f} s, export_onnx "
                      f"{wall['total'][-1]:.2f} s (wall); load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr)
            results["exporters"][exporter] = {
                "opset": opset,
                "wall_s": {k: _median(v) for k, v in wall.items()},
                "cpu_s": {k: _median(v) for k, v in cpu.items()},
                "runs_total_wall_s": [round(t, 3) for t in wall["total"]],
                "report": report.to_dict(),
            }

        images = (sorted(p for p in Path(args.images).rglob("*") if p.is_file())
                  [:args.num_images] if args.images
                  else _synthetic_images(tmp_path / "images", args.num_images))
        floats = preprocess_batch(images, spec, "float-nchw")
        pixels = preprocess_batch(images, spec, "uint8-nhwc")
        models = {"as_given": model}
        if not args.checkpoint:
            models["standardised_head"] = _standardised_head(model, floats)
        for label, m in models.items():
            for fmt, decoded in (("float-nchw", floats), ("uint8-nhwc", pixels)):
                res = export_onnx(m, tmp_path / f"parity_{label}_{fmt}.onnx", input_format=fmt,
                                  check_parity=False)
                rnd = verify_parity(m, res.path, parity_inputs(spec, fmt, n=args.num_images,
                                                               seed=1))
                img = verify_parity(m, res.path, decoded)
                results["parity"][f"{label}/{fmt}"] = {"random": rnd.to_dict(),
                                                       "decoded_images": img.to_dict()}
                print(f"{label} {fmt} random: {rnd.summary()}", file=sys.stderr)
                print(f"{label} {fmt} images: {img.summary()}", file=sys.stderr)
        results["images"] = args.images or f"{args.num_images} synthetic PNG/JPEG (decoded)"

    results["load_average_1min"]["end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(results, indent=2, sort_keys=True)
    print(text)
    if args.json:
        from xception_trt.fsio import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
