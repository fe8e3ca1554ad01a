"""``xception-trt doctor``: will this bundle (or engine) run here, and how?"""

from __future__ import annotations

import argparse

from ._common import add_command, batch_size, non_negative_int, path_argument, print_json
from ._options import add_cc_flag

ORDER = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "doctor", run=run, json="the report",
        help="what this machine has, which engines of a bundle or engine would load here, "
             "and what would be built",
        description="""Report this machine's TensorRT flavour and version, driver, GPUs and
            compute capabilities, DLA cores and ONNX Runtime providers; for a bundle (.xtrt):
            verify every member, say which of its engines would load here and why not, what
            opening it would do for each precision (prebuilt engine, build into the engine
            cache, or ONNX Runtime); for an engine: whether it loads here. Ends with the
            command that prebuilds for a named target (--cc). Works with the core install.
            Exit code 0 whatever the answer; 2 for an unreadable or tampered file.""",
        epilog="example: xception-trt doctor model.xtrt --cc sm89")
    path_argument(p, "model", kind="file", what="model", metavar="MODEL", nargs="?",
                  default=None, help="a bundle (.xtrt) or an engine (.engine/.plan with its "
                                     "sidecar); none: the machine only")
    add_cc_flag(p, old="--target", help="compute capabilities to give the prebuild command "
                                        "for (default: this machine's GPUs)")
    p.add_argument("--device", type=non_negative_int, default=0,
                   help="GPU ordinal to consider (default: 0)")
    p.add_argument("--max-batch", type=batch_size, default=None,
                   help="largest batch that must fit (default: the engines' own profile)")
    path_argument(p, "--facts", kind="file", metavar="FILE", default=None,
                  help="answer for another machine: its facts as `doctor --json` printed "
                       "them there (the 'machine' object)")


def run(args: argparse.Namespace) -> int:
    from ..bundle.doctor import diagnose, format_report, recorded_facts
    from ..bundle.facts import probe_facts

    facts = recorded_facts(args.facts) if args.facts else probe_facts()
    report = diagnose(args.model, facts=facts, cc=args.cc, device=args.device,
                      max_batch=args.max_batch)
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_report(report))
    return 0
