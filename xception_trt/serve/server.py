"""A real local Triton Inference Server: the ``tritonserver`` binary bundled in ``nvidia-pytriton``.

The ``nvidia-pytriton`` wheel ships Triton 2.51 (x86-64, glibc >= 2.35) with the Python backend
and one backend stub per Python version, but no TensorRT or ONNX Runtime backend. Serving our
models locally therefore goes through the Python backend running our Runner; the stub is an
embedded CPython that finds this environment's packages because (as pytriton does) the
environment's ``bin`` comes first on ``PATH`` and the interpreter's ``libpython`` directory on
``LD_LIBRARY_PATH`` (plus, in repositories written by ``xception-trt serve``, the models'
``EXECUTION_ENV_PATH`` parameter pointing at the environment).

A per-server temporary backend directory links the bundled Python backend and the stub that
matches this interpreter. The server listens on loopback by default and is stopped with SIGTERM
(then SIGKILL after a grace period); :class:`TritonServer` is a context manager. It never
outlives the process that started it from its main thread: on Linux the kernel kills it when its
parent dies (``PR_SET_PDEATHSIG``, so a ``kill -9`` of ``xception-trt serve`` takes it down, and
its Python backend stubs exit when it does). Started from another thread, it is not armed (the
signal would follow that thread's exit), and only ``stop()`` ends it. Ports already in use are
reported, with the process holding them, before the server starts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ServeError
from ..fsio import owned_temp_dir
from ..host import parent_death_signal

__all__ = ["TritonDistribution", "find_tritonserver", "container_command", "free_port",
           "TritonServer", "TRITON_CONTAINER_TAG", "server_environment", "port_owner",
           "check_ports_free"]

log = logging.getLogger(__name__)

#: NGC container that ships the same Triton release as the bundled binary (2.51 = 24.10).
TRITON_CONTAINER_TAG = "24.10"
_MIN_GLIBC = (2, 35)
#: Model kinds (platform or backend) the bundled server can run.
_BUNDLED_KINDS = ("python", "ensemble")


@dataclass(frozen=True)
class TritonDistribution:
    """Where the bundled Triton pieces are.

    Attributes:
        executable: The ``tritonserver`` binary.
        python_backend: Directory with ``libtriton_python.so`` and
            ``triton_python_backend_utils.py``.
        stub: The ``triton_python_backend_stub`` built for this interpreter's Python version.
        libs: Directory of the shared libraries the binary needs (``nvidia_pytriton.libs``).
        caches: Cache plugins directory, or ``None``.
        version: The pytriton package version.
    """

    executable: Path
    python_backend: Path
    stub: Path
    libs: Path
    caches: Path | None
    version: str


def _glibc_version() -> tuple[int, int] | None:
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return None
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def container_command(repository: str | os.PathLike[str] | None = None, *, http_port: int = 8000,
                      grpc_port: int = 8001, metrics_port: int = 8002,
                      machine: str | None = None) -> str:
    """The ``docker run`` command that serves ``repository`` with NVIDIA's Triton container.

    Jetson / aarch64 iGPU machines use the ``-igpu`` image with the NVIDIA runtime. The engine
    in a ``tensorrt_plan`` model must be built with the container's TensorRT version.
    """
    machine = (machine or platform.machine()).lower()
    repo = Path(repository).resolve() if repository else Path("model_repository").resolve()
    igpu = machine in ("aarch64", "arm64")
    image = f"nvcr.io/nvidia/tritonserver:{TRITON_CONTAINER_TAG}-py3" + ("-igpu" if igpu else "")
    gpu_flag = "--runtime nvidia" if igpu else "--gpus all"
    return (f"docker run {gpu_flag} --rm -p {http_port}:8000 -p {grpc_port}:8001 "
            f"-p {metrics_port}:8002 -v {repo}:/models {image} "
            "tritonserver --model-repository=/models")


def find_tritonserver(*, python_version: tuple[int, int] | None = None) -> TritonDistribution:
    """Locate the ``tritonserver`` binary and Python backend bundled in ``nvidia-pytriton``.

    Args:
        python_version: The Python whose backend stub is needed; default: this interpreter.

    Raises:
        ServeError: pytriton is not installed, the platform is not x86-64 Linux with glibc >=
            2.35, or a piece is missing; the message gives the Triton container command to use
            instead.
    """
    fallback = ("run NVIDIA's Triton container instead (write the repository with "
                "`xception-trt triton-repo MODEL -o model_repository`): " + container_command())
    machine = platform.machine().lower()
    if sys.platform != "linux" or machine not in ("x86_64", "amd64"):
        raise ServeError(f"the tritonserver binary bundled in nvidia-pytriton runs on x86-64 "
                         f"Linux only, not {sys.platform}/{machine}; {fallback}")
    glibc = _glibc_version()
    if glibc is not None and glibc < _MIN_GLIBC:
        raise ServeError(f"the bundled tritonserver needs glibc >= 2.35, this system has "
                         f"{glibc[0]}.{glibc[1]}; {fallback}")
    try:
        import pytriton
    except ImportError:
        raise ServeError("a local Triton server needs the package 'nvidia-pytriton' (it bundles "
                         "tritonserver); install it with: pip install 'xception-trt[serve]' — or "
                         + fallback) from None
    from importlib.metadata import PackageNotFoundError, version

    root = Path(pytriton.__file__).resolve().parent
    dist = root / "tritonserver"
    major, minor = python_version or sys.version_info[:2]
    libs = root.parent / "nvidia_pytriton.libs"
    if not libs.is_dir():  # editable pytriton checkouts keep them here
        libs = dist / "external_libs"
    pieces = {
        "tritonserver binary": dist / "bin" / "tritonserver",
        "Python backend": dist / "backends" / "python" / "libtriton_python.so",
        f"Python {major}.{minor} backend stub":
            dist / "python_backend_stubs" / f"{major}.{minor}" / "triton_python_backend_stub",
        "bundled libraries": libs,
    }
    missing = [f"{what} ({path})" for what, path in pieces.items() if not path.exists()]
    if missing:
        raise ServeError(f"the nvidia-pytriton installation lacks {', '.join(missing)}; "
                         f"reinstall it (pip install --force-reinstall nvidia-pytriton), use a "
                         f"Python version it ships a stub for, or {fallback}")
    try:
        pkg_version = version("nvidia-pytriton")
    except PackageNotFoundError:
        pkg_version = "unknown"
    caches = dist / "caches"
    return TritonDistribution(executable=pieces["tritonserver binary"],
                              python_backend=dist / "backends" / "python",
                              stub=pieces[f"Python {major}.{minor} backend stub"], libs=libs,
                              caches=caches if caches.is_dir() else None, version=pkg_version)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_owner(port: int) -> str | None:
    """Who listens on TCP ``port`` on this machine: ``"pid 123 (tritonserver)"``, ``"a process
    of another user"``, or ``None`` when it cannot be found out."""
    try:
        import psutil

        conns = psutil.net_connections(kind="inet")
    except Exception:  # psutil missing or not allowed (macOS without root): say less
        return None
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN":
            if conn.pid is None:
                return "a process of another user"
            try:
                name = psutil.Process(conn.pid).name()
            except Exception:  # gone meanwhile, or not ours to inspect
                return f"pid {conn.pid}"
            return f"pid {conn.pid} ({name})"
    return None


def check_ports_free(ports: Mapping[str, int], address: str = "127.0.0.1") -> None:
    """Refuse ports that another process already listens on, naming it when possible.

    Args:
        ports: ``{"HTTP": 8000, ...}``: what each port is for (used in the message).
        address: The interface the server will bind.

    Raises:
        ServeError: A port is in use (the message names the process and the option to change).
    """
    for what, port in ports.items():
        try:
            infos = socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ServeError(f"cannot bind address {address!r}: {exc}; pass another --address") \
                from None
        family, _, _, _, sockaddr = infos[0]
        with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
            # As servers do (Triton included): a port held only by TIME_WAIT leftovers is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise ServeError(f"cannot use {what} port {port} on {address}: "
                                     f"{exc.strerror or exc}; pass another "
                                     f"--{what.lower()}-port") from None
                owner = port_owner(port)
                raise ServeError(
                    f"{what} port {port} on {address} is already in use"
                    + (f" by {owner}" if owner else "")
                    + f"; stop that process or pass another --{what.lower()}-port") from None


def server_environment(dist: TritonDistribution, base: Mapping[str, str]) -> dict[str, str]:
    """The environment for ``tritonserver``: ``base`` plus library and Python search paths.

    ``LD_LIBRARY_PATH`` gets the bundled libraries and this interpreter's ``libpython``
    directory (the stub links ``libpython3.X.so``; the matching build must win over a system
    one); ``PATH`` starts with this environment's ``bin`` so the stub's embedded Python finds
    the environment's ``pyvenv.cfg`` and site-packages.
    """
    env = dict(base)
    lib_dirs = [str(dist.libs)]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir:
            lib_dirs.insert(0, str(libdir))
    if env.get("LD_LIBRARY_PATH"):
        lib_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]) if env.get("PATH") else bin_dir
    return env


class TritonServer:
    """A ``tritonserver`` process serving one model repository (context manager).

    Args:
        repository: The model repository directory.
        http_port, grpc_port, metrics_port: Ports; ``None`` picks a free one.
        address: Interface to bind all endpoints to; loopback by default.
        startup_timeout_s: Seconds to wait for every model to be ready.
        log_verbose: Triton ``--log-verbose`` level.
        log_file: Write server output here instead of keeping the last lines in memory.
        extra_args: More ``tritonserver`` flags.
        env: Base environment for the process (default: this process's environment).
        distribution: Bundled Triton to use (default: :func:`find_tritonserver`).
    """

    def __init__(self, repository: str | os.PathLike[str], *, http_port: int | None = 8000,
                 grpc_port: int | None = 8001, metrics_port: int | None = 8002,
                 address: str = "127.0.0.1", startup_timeout_s: float = 120.0,
                 log_verbose: int = 0, log_file: str | os.PathLike[str] | None = None,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 distribution: TritonDistribution | None = None) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise ServeError(f"model repository {self.repository} does not exist; write one with "
                             "`xception-trt triton-repo MODEL -o DIR`")
        self.address = address
        ports = [p if p is not None else free_port(address if address != "0.0.0.0" else "")
                 for p in (http_port, grpc_port, metrics_port)]
        for p in ports:
            if not (0 < int(p) < 65536):
                raise ServeError(f"port {p} is out of range 1..65535")
        if len(set(ports)) != 3:
            raise ServeError(f"HTTP, gRPC and metrics ports must differ, got {ports}")
        self.http_port, self.grpc_port, self.metrics_port = (int(p) for p in ports)
        self.startup_timeout_s = float(startup_timeout_s)
        self.log_verbose = int(log_verbose)
        self.log_file = Path(log_file) if log_file else None
        self.extra_args = list(extra_args)
        self._base_env = dict(os.environ if env is None else env)
        self._dist = distribution
        self._proc: subprocess.Popen | None = None
        self._backend_dir: Path | None = None
        self._log_tail: deque[str] = deque(maxlen=400)
        self._reader: threading.Thread | None = None
        self._log_fh = None

    # -- endpoints --------------------------------------------------------------------------
    @property
    def _host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint (the form tritonclient takes)."""
        return f"{self._host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self._host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint."""
        return f"http://{self._host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None``."""
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        """The ``tritonserver`` command line (backend directory filled in by :meth:`start`)."""
        dist = self._dist or find_tritonserver()
        backend_dir = self._backend_dir or Path("<backend-dir>")
        cmd = [str(dist.executable), f"--model-repository={self.repository}",
               f"--backend-directory={backend_dir}",
               f"--http-address={self.address}", f"--http-port={self.http_port}",
               f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
               f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
               "--allow-gpu-metrics=false", "--strict-readiness=true", "--exit-on-error=true",
               "--disable-auto-complete-config", f"--log-verbose={self.log_verbose}",
               "--exit-timeout-secs=10"]
        if dist.caches is not None:
            cmd.append(f"--cache-directory={dist.caches}")
        return cmd + self.extra_args

    def logs(self) -> str:
        """The last lines the server printed (empty when writing to a log file)."""
        return "".join(self._log_tail)

    # -- lifecycle --------------------------------------------------------------------------
    def _make_backend_dir(self, dist: TritonDistribution) -> Path:
        # Named after this process: a later server sweeps it if this one is killed.
        root = owned_temp_dir("xception-trt-triton-backends-")
        py = root / "python"
        py.mkdir()
        for item in dist.python_backend.iterdir():
            if item.is_file():
                (py / item.name).symlink_to(item)
        # The Python backend looks for the stub next to libtriton_python.so.
        (py / "triton_python_backend_stub").symlink_to(dist.stub)
        return root

    def _check_servable(self) -> None:
        """Refuse models the bundled server has no backend for, before starting it."""
        from .validate import validate_config_text

        unsupported = []
        for config in sorted(self.repository.glob("*/config.pbtxt")):
            cfg = validate_config_text(config.read_text("utf-8"),
                                       where=f"{config.parent.name}/config.pbtxt")
            kind = cfg.platform or cfg.backend
            if kind not in _BUNDLED_KINDS:
                unsupported.append(f"{config.parent.name} ({kind})")
        if unsupported:
            raise ServeError(
                f"the tritonserver bundled in nvidia-pytriton has only the Python backend and "
                f"cannot serve {', '.join(unsupported)}; serve a Python-backend repository "
                f"(`xception-trt serve MODEL` writes one) or run NVIDIA's Triton container: "
                f"{container_command(self.repository)}")

    def _read_output(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self._log_tail.append(line)
            log.debug("tritonserver: %s", line.rstrip())
        stream.close()

    def start(self) -> "TritonServer":
        """Start the server and wait until it and every model are ready.

        Raises:
            ServeError: A port is in use (the message names the process holding it), the
                binary is unavailable, the server exits during startup (bad repository ...;
                the message quotes its log), or it is not ready within ``startup_timeout_s``.
        """
        if self._proc is not None:
            return self
        check_ports_free({"HTTP": self.http_port, "gRPC": self.grpc_port,
                          "metrics": self.metrics_port}, self.address)
        dist = self._dist = self._dist or find_tritonserver()
        self._check_servable()
        self._backend_dir = self._make_backend_dir(dist)
        cmd = self.command()
        env = server_environment(dist, self._base_env)
        log.info("starting %s", " ".join(cmd))
        try:
            if self.log_file is not None:
                self._log_fh = open(self.log_file, "ab")  # noqa: SIM115
                out = self._log_fh
            else:
                out = subprocess.PIPE
            # The kernel kills the server when the thread that started it dies (kill -9 of
            # the CLI included); its backend stubs exit when it does. Armed only from the main
            # thread: a server started from a short-lived worker thread would otherwise die
            # with that thread (stop() / the context manager end it there).
            on_main = threading.current_thread() is threading.main_thread()
            self._proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=parent_death_signal() if on_main else None)
        except OSError as exc:
            self._cleanup()
            raise ServeError(f"cannot start {dist.executable}: {exc}") from None
        if self.log_file is None:
            self._reader = threading.Thread(target=self._read_output, args=(self._proc.stdout,),
                                            name="tritonserver-log", daemon=True)
            self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("Triton ready: HTTP %s, gRPC %s, metrics %s", self.http_url, self.grpc_url,
                 self.metrics_url)
        return self

    def _failure_context(self) -> str:
        if self.log_file is not None:
            return f"see {self.log_file}"
        errors = [ln.strip() for ln in self._log_tail
                  if ln[:1] == "E" or "error" in ln.lower() or "UNAVAILABLE" in ln]
        lines = errors[-6:] or [ln.strip() for ln in list(self._log_tail)[-6:]]
        return "server log: " + " | ".join(lines)

    def _wait_ready(self) -> None:
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                time.sleep(0.2)  # let the reader thread drain the last lines
                raise ServeError(f"tritonserver exited during startup (exit code {code}); "
                                 f"{self._failure_context()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServeError(f"tritonserver was not ready within {self.startup_timeout_s:.0f} "
                                 f"s; {self._failure_context()}")
            time.sleep(0.25)

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (or ``timeout`` seconds pass); return its exit code."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent.

        Returns:
            The server's exit code, or ``None`` if it was not started.
        """
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver did not stop within %.0f s; killing it", timeout)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # Python backend stubs run in the server's session; make sure none outlives it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.returncode
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self._backend_dir is not None:
            shutil.rmtree(self._backend_dir, ignore_errors=True)
            self._backend_dir = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leak a server process
        with contextlib.suppress(Exception):
            if self._proc is not None:
                self.stop(timeout=5.0)
