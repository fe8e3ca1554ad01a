"""``xception-trt triton-repo``: write a validated Triton Inference Server model repository."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..bundle.format import is_bundle
from ..config import Precision
from ..serve.options import InstanceKind, ServeBackend
from ._common import (
    add_command,
    arg_type,
    batch_size,
    non_negative_int,
    path_argument,
    positive_int,
    print_json,
)
from ._options import RunnerArgs, add_tuned_flag, check_rules, deprecated_alias

log = logging.getLogger(__name__)

ORDER = 80


def add_batching_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``triton-repo`` and ``serve`` (model name, batching, instances)."""
    p.add_argument("--name", default="xception",
                   help="Triton model name (default: xception); the ensemble adds "
                        "<name>_preprocess and <name>_image")
    p.add_argument("--max-batch", type=batch_size, default=None, dest="max_batch",
                   help="max_batch_size (default: the engine profile's max batch; 32 for "
                        "dynamic-batch ONNX files and checkpoints)")
    p.add_argument("--no-dynamic-batching", action="store_false", dest="dynamic_batching",
                   help="do not let Triton merge concurrent requests into batches")
    p.add_argument("--preferred-batch", type=positive_int, nargs="+", default=(),
                   metavar="N", help="preferred batch sizes of the dynamic batcher (default: "
                                     "the batch size of a bundle's throughput or energy "
                                     "tune, else the engine's opt batch; none otherwise)")
    p.add_argument("--max-queue-delay-us", type=non_negative_int, default=100,
                   help="longest a request waits for a batch to fill, in microseconds "
                        "(default: 100)")
    p.add_argument("--instances", type=positive_int, default=None,
                   help="model instances per device (default: 1; `tune` does not search "
                        "instance counts)")
    add_tuned_flag(p)
    RunnerArgs.add(p, threads="Python backend: CPU threads of each ONNX Runtime / torch "
                              "runner (default: the runner's choice)")
    path_argument(p, "--int8-calib", kind="any", metavar="DIR",
                  help="serve INT8 on ONNX Runtime: MODEL is the FP32 ONNX; make its INT8 "
                       "variant placed for ONNX Runtime (as `quantize --precision int8 --placement "
                       "onnxruntime`: entropy, 512 images, scales cached in the per-user "
                       "calibration cache) from these calibration images and serve that")


def _onnx_runs_on_cpu(args: argparse.Namespace) -> bool:
    """Whether the ONNX model may run on ONNX Runtime's CPU provider here."""
    if getattr(args, "instance_kind", None) == "gpu" or getattr(args, "gpus", ()):
        return False
    return args.providers is None or args.providers[0] == "CPUExecutionProvider"


@contextlib.contextmanager
def served_model(args: argparse.Namespace) -> Iterator[Path]:
    """The model file to put in the repository: ``args.model``, or with ``--int8-calib`` its
    INT8 variant placed for ONNX Runtime (made in a private temp folder, removed on exit).

    An INT8 ONNX placed for TensorRT that ONNX Runtime may run on the CPU gets a one-line note
    on stderr (a variant placed for ONNX Runtime is much faster there).

    Raises:
        ConfigError: ``--int8-calib`` with a MODEL that is not an ONNX file.
        GraphError / CalibrationError: From the quantizer (not an FP32 graph, bad images).
    """
    from ..errors import GraphError
    from ..fsio import owned_temp_dir
    from ..runners import ort_int8_note

    model = Path(args.model)
    is_onnx = model.suffix.lower() == ".onnx"
    if args.int8_calib is None:
        if is_onnx and _onnx_runs_on_cpu(args):
            with contextlib.suppress(GraphError):  # not ours: the repository writer says so
                note = ort_int8_note(model, providers=["CPUExecutionProvider"])
                if note:
                    print(note + "; or give the FP32 ONNX with --int8-calib DIR",
                          file=sys.stderr)
        yield model
        return
    check_rules(args, "triton-repo:int8-calib")
    from ..precision import ort_int8

    tmp = owned_temp_dir("xtrt-int8-ort-")
    try:
        out = tmp / f"{model.stem}.int8-ort.onnx"
        res = ort_int8(model, args.int8_calib, output=out)
        print(f"made {out.name}: INT8 placed for ONNX Runtime ({res.method.value}, "
              f"{len(res.quantized_nodes)} compute node(s) quantized, cache {res.cache})",
              file=sys.stderr)
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_options(args: argparse.Namespace, *, triton_backend: ServeBackend | str,
                  ensemble: bool, execution_env: str | None,
                  instance_kind: InstanceKind | str = InstanceKind.AUTO,
                  gpus: tuple[int, ...] = ()):
    """:class:`~xception_trt.serve.repository.RepositoryOptions` from parsed flags; the runner
    flags (``--threads`` ...) are checked against ``args.model``'s runner (Python backend only).

    Raises:
        ConfigError: A runner flag with the native backend, or one the model's runner ignores.
    """
    from ..serve.repository import RepositoryOptions

    runner = RunnerArgs.parse(args)
    given = runner.settings()
    runner_options = {}
    if not any(v not in (None, False) for v in given.values()):
        pass  # the repository writer judges the model file itself
    elif ServeBackend.parse(triton_backend) is ServeBackend.PYTHON:
        runner.check([args.model])
        runner_options = runner.for_model(args.model)
    else:  # Triton's own TensorRT / ONNX Runtime backends run the model, not our runner
        check_rules(args, "triton-repo:runner")
    return RepositoryOptions(
        name=args.name, triton_backend=triton_backend, ensemble=ensemble,
        max_batch_size=args.max_batch,
        dynamic_batching=args.dynamic_batching,
        preferred_batch_sizes=tuple(args.preferred_batch or ()),
        max_queue_delay_us=args.max_queue_delay_us,
        instance_count=args.instances if args.instances is not None else 1,
        instance_kind=instance_kind, gpus=gpus, execution_env_path=execution_env,
        runner_options=runner_options)


def resolve_bundle(args: argparse.Namespace, *, python_backend: bool) -> None:
    """For a bundle MODEL, replace ``args.model`` by the file it resolves to here
    (:func:`~xception_trt.bundle.cache.resolve`), with the configuration ``tune`` recorded for
    it on this machine filling the flags not given (said in one line on stderr; ``--no-tuned``
    ignores it): the precision and runner, ``--preferred-batch`` (the batch of a throughput
    or energy tune, within ``--max-batch``; a latency tune measured only the smallest batch);
    with the Python backend also ``--threads`` and
    ``--cuda-graphs`` (Triton's native backends do not take them).

    Raises:
        BundleError: A bad bundle, or nothing here can run it.
    """
    if not is_bundle(args.model):
        return
    from ..bundle.cache import resolve
    from ..bundle.tuned import tuned_options

    precision = getattr(args, "precision", None)
    fill: dict[str, Any] = {}
    if not args.no_tuned:
        given = {"precision": precision, "threads": args.threads,
                 "cuda_graphs": args.cuda_graphs or None,
                 "device": getattr(args, "device", None)}
        choice, fill, notice = tuned_options(args.model, given)
        if notice is not None:
            log.warning("%s", notice)
        if choice is not None:
            batch = choice.default_batch
            if batch is not None and not args.preferred_batch and (
                    args.max_batch is None or batch <= args.max_batch):
                args.preferred_batch = (batch,)
            if python_backend:
                args.threads = fill.get("threads", args.threads)
                args.cuda_graphs = fill.get("cuda_graphs", args.cuda_graphs)
    args.model = str(resolve(args.model, precision=fill.get("precision", precision),
                             tensorrt=fill.get("tensorrt", True),
                             dla_core=fill.get("dla_core"), engine=fill.get("engine")).path)


def _indices(text: str) -> tuple[int, ...]:
    gpus = tuple(non_negative_int(x) for x in text.split(",") if x.strip())
    if not gpus:
        raise ValueError("no index")
    return gpus


#: argparse type: comma-separated GPU indices.
_gpu_list = arg_type(_indices, expected="a comma-separated list of GPU indices >= 0 (e.g. 0,1)")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "triton-repo", run=run, help="write a Triton Inference Server model repository",
        output="repository directory to create", output_metavar="DIR", output_kind="dir",
        force="replace OUTPUT if it exists and is not empty", json="a summary",
        description="""Write a Triton model repository for MODEL: an engine (.engine/.plan with
            its sidecar) becomes a native TensorRT model (tensorrt_plan), an ONNX file an ONNX
            Runtime model (onnxruntime_onnx; for INT8 on CPU instances give the variant placed
            for ONNX Runtime, `quantize --placement onnxruntime`, or the FP32 ONNX with
            --int8-calib DIR to make it here); --triton-backend python wraps our Runner
            (engine, ONNX or checkpoint) in Triton's Python backend. Class labels go to a
            label file, so Triton's classification extension returns names. Every config.pbtxt
            is validated against Triton's ModelConfig schema before the repository is renamed
            into place.""")
    path_argument(p, "model", kind="file", what="model", metavar="MODEL", hub=True,
                  help="engine (.engine/.plan), ONNX file (.onnx), bundle (.xtrt: the engine "
                       "that fits this machine, or its ONNX) or checkpoint (python backend)")
    p.add_argument("--precision", choices=Precision.choices(), default=None,
                   help="a bundle's precision to serve (default: the bundle's default)")
    backend = p.add_argument(
        # None until parsed: a given --triton-backend native is told apart from the default, so
        # it and the deprecated --backend together are refused (resolve_deprecated)
        "--triton-backend", choices=ServeBackend.choices(), default=None,
        help="native: Triton's TensorRT / ONNX Runtime backend (default); python: our Runner "
             "in Triton's Python backend")
    deprecated_alias(p, "--backend", backend, choices=ServeBackend.choices())
    p.add_argument("--ensemble", action="store_true",
                   help="also write <name>_preprocess (encoded image bytes -> tensor, Python "
                        "backend) and the <name>_image ensemble, so clients can send JPEG/PNG")
    add_batching_arguments(p)
    p.add_argument("--instance-kind", choices=InstanceKind.choices(),
                   default=InstanceKind.AUTO.value,
                   help="where instances run (default auto: engines, or anything with "
                        "--gpus, on GPU; ONNX: Triton decides natively, CPU in the Python "
                        "backend)")
    p.add_argument("--gpus", type=_gpu_list, default=(), metavar="I,J",
                   help="GPU indices for GPU instances (default: every visible GPU)")
    p.add_argument("--execution-env", default=None, metavar="PATH",
                   help="Python backend EXECUTION_ENV_PATH: a conda-pack tarball (or environment "
                        "directory) that has xception-trt installed, as seen by the server")


def run(args: argparse.Namespace) -> int:
    from ..serve.repository import write_repository
    from ..serve.server import container_command

    check_rules(args, "triton-repo")
    # serve the file a bundle resolves to here (tuned where recorded); options are judged on it
    resolve_bundle(args, python_backend=args.triton_backend == ServeBackend.PYTHON.value)
    options = build_options(args, triton_backend=args.triton_backend or ServeBackend.NATIVE,
                            ensemble=args.ensemble,
                            execution_env=args.execution_env, instance_kind=args.instance_kind,
                            gpus=args.gpus)
    with served_model(args) as model:
        info = write_repository(model, args.output, options=options, force=args.force)
    summary = {
        "repository": str(info.root),
        "models": {name: {"platform": cfg.platform or None, "backend": cfg.backend or None,
                          "max_batch_size": cfg.max_batch_size,
                          "dynamic_batching": cfg.HasField("dynamic_batching")}
                   for name, cfg in info.configs.items()},
    }
    if args.json:
        print_json(summary)
        return 0
    print(f"wrote {info.root} (validated against Triton's ModelConfig schema)")
    for name, cfg in sorted(info.configs.items()):
        kind = cfg.platform or cfg.backend
        batching = ("dynamic batching" if cfg.HasField("dynamic_batching") else "no batching"
                    if cfg.max_batch_size == 0 else "no dynamic batching")
        print(f"  {name:<24} {kind:<18} max_batch_size {cfg.max_batch_size}, {batching}")
    uses_python = any(cfg.backend == "python" for cfg in info.configs.values())
    print("serve it with NVIDIA's Triton container:")
    print(f"  {container_command(info.root)}")
    if uses_python:
        print("  (Python-backend models need xception-trt in the server's Python: pip install "
              "it in the container or pass --execution-env)")
    if all(cfg.backend == "python" or cfg.platform == "ensemble"
           for cfg in info.configs.values()):
        print(f"or locally: xception-trt serve {info.root}")
    return 0
