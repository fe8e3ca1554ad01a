"""``xception-trt selftest``: check this machine's GPU stack end to end after installing."""

from __future__ import annotations

import argparse

from ._common import add_command, positive_int, print_json
from ._options import deprecated_alias

ORDER = 90

#: Exit codes (documented in --help).
EXIT_OK, EXIT_FAILED, EXIT_INCOMPLETE = 0, 1, 3


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "selftest", run=run, json="the report",
        help="check the CUDA layer and TensorRT runtime on this machine's GPU",
        description="""Run the post-install self-test. With an NVIDIA GPU and cuda-python (or
            pycuda): device/pinned buffers, stream ordering, events, CUDA graphs, threads and
            leaks, through a stand-in kernel. With a TensorRT flavour that runs on the GPU as
            well: build a small engine, run it with TensorRTRunner (plain and CUDA graphs, NumPy
            and device inputs), compare with ONNX Runtime and print latency. Elsewhere it lists
            precisely what is missing.""",
        epilog="exit codes: 0 every check ran and passed; 1 a check failed; 3 nothing failed "
               "but some checks could not run here (the missing pieces are listed); 2 usage "
               "error.")
    p.add_argument("--device", type=int, default=0, help="CUDA device ordinal (default: 0)")
    binding = p.add_argument("--cuda-binding", choices=("cuda-python", "pycuda"),
                             action="append",
                             help="CUDA binding(s) to test (repeatable; default: every installed "
                                  "one)")
    deprecated_alias(p, "--backend", binding, choices=("cuda-python", "pycuda"),
                     action="append")
    p.add_argument("--no-engine", action="store_true",
                   help="skip building and running a TensorRT engine")
    p.add_argument("--calls", type=positive_int, default=2000,
                   help="calls in the leak check (default: 2000)")


def run(args: argparse.Namespace) -> int:
    from ..selftest import CheckResult, run_selftest

    def show(r: CheckResult) -> None:
        if not args.json:
            print(f"{r.status.upper():<5} {r.name}: {r.detail} ({r.seconds:.2f} s)", flush=True)

    report = run_selftest(device=args.device,
                          cuda_bindings=tuple(args.cuda_binding) if args.cuda_binding else None,
                          engine=not args.no_engine, calls=args.calls, progress=show)
    req = report.requirements
    missing = list(req.missing_engine if not args.no_engine else req.missing_cuda)
    if args.json:
        print_json(report.to_dict())
    else:
        print(f"GPUs: {', '.join(req.gpus) or 'none'}; CUDA backends: "
              f"{', '.join(req.cuda_backends) or 'none'}; TensorRT able to run engines here: "
              f"{req.flavour or 'none'}")
        if "pycuda" not in req.cuda_backends:
            print("note: the pycuda backend was not tested (pycuda is not installed)")
        for line in dict.fromkeys(missing):
            print(f"missing: {line}")
        passed = sum(r.status == "pass" for r in report.results)
        print(f"{passed} passed, {len(report.failed)} failed"
              + (", self-test incomplete (see 'missing')" if missing else ""))
    if report.failed:
        return EXIT_FAILED
    return EXIT_INCOMPLETE if missing else EXIT_OK
