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
    from ..host import int8_features_text
    from ..sysinfo import system_facts

    facts = system_facts()
    if args.json:
        print_json(facts)
        return 0
    sw = facts["software"]
    _line("xception-trt", sw["xception-trt"])
    _line("python", f"{sw['python']} ({facts['python_executable']})")
    _line("platform", facts["platform"])
    _line("cpu", f"{facts['cpu']} ({facts['cpu_count']} logical cores)")
    _line("cpu int8", int8_features_text(facts["cpu_int8"]))
    for key in ("torch", "numpy", "pillow", "onnx", "onnx-graphsurgeon", "onnxruntime",
                "nvidia-modelopt"):
        _line(key, sw[key] or "not installed")
    try:
        import onnxruntime

        _line("ort providers", ", ".join(onnxruntime.get_available_providers()))
    except ImportError:
        pass
    importable = facts["trt_importable"]
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
    dev = facts["devices"]
    _line("nvidia driver", dev["driver"] or f"none ({dev['reason']})")
    if dev["cuda_driver_api"]:
        _line("cuda driver api", dev["cuda_driver_api"])
    if dev["gpus"]:
        for g in dev["gpus"]:
            _line(f"gpu {g['index']}", f"{g['name']}, compute capability {g['compute_capability']}"
                  f", {g['total_memory'] / 2**30:.1f} GiB")
    else:
        _line("gpus", "none")
    return 0
