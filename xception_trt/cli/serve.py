"""``xception-trt serve``: run a real local Triton Inference Server for a model."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
from pathlib import Path

from ..serve.options import ServeBackend
from ._common import add_command, path_argument, port_number, positive_int
from ._options import check_rules
from .triton_repo import add_batching_arguments, build_options, resolve_bundle, served_model

ORDER = 81


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "serve", run=run, force="replace --repository DIR if not empty",
        help="serve a model with a local Triton Inference Server (CPU, Python backend)",
        description="""Start the Triton Inference Server bundled in nvidia-pytriton (2.51,
            x86-64 Linux, glibc >= 2.35) on this machine. MODEL is a model file (engine, ONNX or
            checkpoint: a Python-backend repository running our Runner is written for it, with
            the <name>_image ensemble for encoded images) or an existing repository of
            Python-backend models. Listens on 127.0.0.1 unless --address says otherwise; Ctrl-C
            or SIGTERM stops it cleanly. Where the binary cannot run (e.g. Jetson), prints the
            Triton container command instead.""")
    path_argument(p, "model", kind="any", what="model", metavar="MODEL", hub=True,
                   help="model file (.engine/.plan, .onnx, .xtrt bundle, checkpoint) or a "
                        "repository directory")
    path_argument(p, "--repository", kind="output-dir", metavar="DIR", default=None,
                   help="write the generated repository here and keep it (default: a temporary "
                        "directory removed on exit)")
    p.add_argument("--no-ensemble", action="store_false", dest="ensemble",
                   help="serve only the tensor model, not the image-bytes ensemble")
    add_batching_arguments(p)
    p.add_argument("--address", default="127.0.0.1",
                   help="interface for all endpoints (default: 127.0.0.1, loopback only; "
                        "0.0.0.0 exposes the server to the network)")
    p.add_argument("--http-port", type=port_number, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--grpc-port", type=port_number, default=8001, help="gRPC port (default: 8001)")
    p.add_argument("--metrics-port", type=port_number, default=8002,
                   help="Prometheus metrics port (default: 8002)")
    p.add_argument("--startup-timeout", type=positive_int, default=120, metavar="S",
                   help="seconds to wait for the models to load (default: 120)")
    path_argument(p, "--log-file", kind="output-file-replace", default=None, metavar="PATH",
                   help="write the server's log here (default: shown only on failure)")
    p.add_argument("--log-verbose", type=int, default=0, help="Triton --log-verbose level")


class _Terminate(Exception):
    """Raised from the SIGTERM handler to leave the wait loop."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminate()


def run(args: argparse.Namespace) -> int:
    from ..fsio import owned_temp_dir
    from ..serve.repository import validate_repository, write_repository
    from ..serve.server import find_tritonserver

    find_tritonserver()  # fail first, with the container command, where the binary cannot run
    check_rules(args, "serve:tuned")
    resolve_bundle(args, python_backend=True)  # a bundle: the file it runs as here (tuned)
    model = Path(args.model)
    temp_root: Path | None = None
    try:
        if model.is_dir():
            check_rules(args, "serve")  # its configs fix how its runners are opened
            repository = model
            validate_repository(repository)
        else:
            if args.repository:
                repository = Path(args.repository)
            else:
                # Named after this process: the next serve sweeps it if this one is killed.
                temp_root = owned_temp_dir("xception-trt-serve-")
                repository = temp_root / "model_repository"
            # The Python backend stub runs this interpreter's environment: a venv is activated
            # via EXECUTION_ENV_PATH; any environment is also found through PATH (serve.server).
            venv = Path(sys.prefix)
            env_path = str(venv) if (venv / "bin" / "activate").is_file() else None
            options = build_options(args, triton_backend=ServeBackend.PYTHON,
                                    ensemble=args.ensemble, execution_env=env_path)
            with served_model(args) as served:
                write_repository(served, repository, options=options, force=args.force)
        hint = (f"/v2/models/{args.name}/config" if not model.is_dir() else "/v2/models")
        return _serve(args, repository, hint)
    finally:
        if temp_root is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(temp_root)


def _serve(args: argparse.Namespace, repository: Path, hint: str) -> int:
    from ..errors import ServeError
    from ..serve.server import TritonServer

    server = TritonServer(repository, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, address=args.address,
                          startup_timeout_s=args.startup_timeout, log_verbose=args.log_verbose,
                          log_file=args.log_file)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.start()
        print(f"Triton {repository} ready (Ctrl-C to stop)")
        print(f"  HTTP     http://{server.http_url}")
        print(f"  gRPC     {server.grpc_url}")
        print(f"  metrics  {server.metrics_url}")
        print(f"  try:     curl http://{server.http_url}{hint}")
        sys.stdout.flush()
        while server.is_running():
            server.wait(timeout=0.5)
        code = server.stop()
        raise ServeError(f"tritonserver exited unexpectedly (exit code {code}); "
                         f"{server.logs()[-1500:] or 'see the log file'}")
    except (KeyboardInterrupt, _Terminate):
        print("stopping Triton ...", file=sys.stderr)
        server.stop()
        print("stopped", file=sys.stderr)
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
