"""``xception-trt info``: what this machine can do with xception-trt."""

from __future__ import annotations

import argparse

from ._common import add_command, print_json

ORDER = 0


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "info", run=run, json="the report",
                help="report Python, libraries, TensorRT flavours, driver and GPUs",
                description="""Report the environment: Python, the CPU's INT8 features (VNNI,
                    AMX), torch, ONNX, ONNX Runtime, which
                    TensorRT flavour is importable, CUDA bindings, driver, GPUs and their compute
                    capability.""")


def _line(label: str, value: object) -> None:
    print(f"{label:<20} {value}")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .. import sysinfo
    from ..host import int8_features_text

    if args.json:
        print_json(sysinfo.system_facts())
        return 0
    plat, cpu = sysinfo.platform_facts(), sysinfo.cpu_facts()
    sw = {p.name: p.version for p in sysinfo.packages()}
    _line("xception-trt", sw["xception-trt"])
    _line("python", f"{plat.python} ({plat.python_executable})")
    _line("platform", plat.platform)
    _line("cpu", f"{cpu.model} ({cpu.count} logical cores)")
    _line("cpu int8", int8_features_text(asdict(cpu.int8)))
    for key in ("torch", "numpy", "pillow", "onnx", "onnx-graphsurgeon", "onnxruntime",
                "nvidia-modelopt"):
        _line(key, sw[key] or "not installed")
    ort = sysinfo.ort_facts()
    if ort.version is not None:
        _line("ort providers", ", ".join(ort.providers))
    importable = {f.name: f.version for f in sysinfo.flavours()}
    for dist, module in (("tensorrt", "tensorrt"), ("tensorrt-rtx", "tensorrt_rtx")):
        if module in importable:
            status = f"{importable[module]} (importable as '{module}')"
        elif sw[dist]:
            status = f"{sw[dist]} installed but '{module}' does not import"
        else:
            status = "not installed"
        _line(dist, status)
    _line("cuda-python", sw["cuda-python"] or "not installed")
    _line("pycuda", sw["pycuda"] or "not installed")
    dev = sysinfo.devices()
    _line("nvidia driver", dev.driver or f"none ({dev.reason})")
    if dev.cuda_driver_api:
        _line("cuda driver api", dev.cuda_driver_api)
    if dev.gpus:
        for g in dev.gpus:
            _line(f"gpu {g.index}", f"{g.name}, compute capability {g.compute_capability}"
                  f", {g.total_memory / 2**30:.1f} GiB")
    else:
        _line("gpus", "none")
    return 0
