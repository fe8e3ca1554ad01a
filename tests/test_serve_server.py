"""A real local Triton server (the tritonserver bundled in nvidia-pytriton) serving the tiny model
through the Python backend; clients over HTTP and gRPC on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from childproc import as_in_a_terminal

from xception_trt.cli import main
from xception_trt.errors import ServeError
from xception_trt.serve import server as server_mod
from xception_trt.serve.repository import RepositoryOptions, write_repository

pytest.importorskip("tritonclient.http", reason="needs tritonclient (the serve extra)")


def _binary_reason() -> str | None:
    try:
        server_mod.find_tritonserver()
    except ServeError as exc:
        return str(exc)
    return None


needs_server = pytest.mark.skipif(_binary_reason() is not None,
                                  reason=f"no runnable tritonserver: {_binary_reason()}")

#: Long enough that concurrent requests always meet in the queue, so batching is observable.
QUEUE_DELAY_US = 20000


@pytest.fixture(scope="module")
def served(tiny_onnx_files, tiny_checkpoint, tmp_path_factory):
    """One server for the module: the tiny float model (Python backend, ONNX Runtime runner),
    the image ensemble and the tiny checkpoint (torch runner), on free loopback ports; always
    terminated."""
    if _binary_reason():
        pytest.skip(_binary_reason())
    root = tmp_path_factory.mktemp("triton")
    repo = root / "repo"
    write_repository(tiny_onnx_files["float"], repo, options=RepositoryOptions(
        triton_backend="python", ensemble=True, max_batch_size=16,
        max_queue_delay_us=QUEUE_DELAY_US, runner_options={"threads": 1},
        execution_env_path=sys.prefix))
    # A second classifier, the checkpoint through the torch Runner, served by the same server.
    write_repository(tiny_checkpoint, root / "torch_repo", options=RepositoryOptions(
        name="tiny_torch", triton_backend="python", runner_options={"threads": 1},
        execution_env_path=sys.prefix))
    (root / "torch_repo/tiny_torch").rename(repo / "tiny_torch")
    server = server_mod.TritonServer(repo, http_port=None, grpc_port=None, metrics_port=None,
                                     startup_timeout_s=SAFETY_S)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.is_running()


@pytest.fixture(scope="module")
def reference(tiny_onnx_files):
    from xception_trt.runners import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tiny_onnx_files["float"], threads=1) as runner:
        yield runner


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 71, 71)).astype(np.float32)


@needs_server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_logits_equal_direct_runner(served, reference, protocol):
    from xception_trt.serve.client import TritonClient

    url = served.http_url if protocol == "http" else served.grpc_url
    x = _batch(3, seed=1 if protocol == "http" else 2)
    with TritonClient(url, protocol=protocol) as client:
        assert client.is_ready("xception")
        got = client.infer("xception", x)
    want = reference(x)
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_server
def test_torch_runner_through_python_backend(served, tiny_checkpoint):
    from xception_trt.runners import TorchRunner
    from xception_trt.serve.client import TritonClient

    x = _batch(2, seed=4)
    with TritonClient(served.http_url) as client:
        got = client.infer("tiny_torch", x)
    with TorchRunner(tiny_checkpoint, threads=1) as runner:
        want = runner(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_server
def test_classification_returns_label_names(served, reference, tiny_spec):
    from xception_trt.serve.client import TritonClient

    x = _batch(2, seed=3)
    with TritonClient(served.grpc_url, protocol="grpc") as client:
        top = client.classify("xception", x, top_k=2)
    want = reference(x)
    for row, entries in zip(want, top):
        assert [e.index for e in entries] == list(np.argsort(-row)[:2])
        names = tiny_spec.class_names()
        assert [e.label for e in entries] == [names[i] for i in np.argsort(-row)[:2]]
        np.testing.assert_allclose([e.score for e in entries], np.sort(row)[::-1][:2], atol=1e-5)


@needs_server
def test_image_ensemble_matches_sdk_preprocessing(served, reference, image_folder, tiny_spec):
    from xception_trt.preprocess import preprocess_batch
    from xception_trt.serve.client import TritonClient

    paths = sorted(image_folder.rglob("*.*"))[:5]  # PNG and JPEG, several sizes
    with TritonClient(served.http_url) as client:
        got = client.infer_images("xception_image", paths)
        top = client.classify("xception_image", np.array([p.read_bytes() for p in paths],
                                                         dtype=object), top_k=1, image_bytes=True)
    want = reference(preprocess_batch(paths, tiny_spec))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert [t[0].label for t in top] == [tiny_spec.class_names()[i] for i in want.argmax(1)]


@needs_server
def test_dynamic_batching_forms_batches(served):
    from xception_trt.serve.client import TritonClient

    with TritonClient(served.http_url) as client:
        before = client.statistics("xception")
    clients, per_client = 8, 3

    def work(i: int) -> np.ndarray:
        with TritonClient(served.http_url) as c:
            return np.stack([c.infer("xception", _batch(1, seed=100 + i))[0]
                             for _ in range(per_client)])

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(work, range(clients)))
    with TritonClient(served.http_url) as client:
        after = client.statistics("xception")
    with TritonClient(served.grpc_url, protocol="grpc") as client:
        assert client.statistics("xception") == after  # both protocols report the same
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == clients * per_client
    assert executions < inferences  # requests were merged into batches
    for r in results:  # and every client still got its own answer
        np.testing.assert_allclose(r, np.repeat(r[:1], per_client, 0), atol=1e-5)


def _post(url: str, body: dict) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@needs_server
@pytest.mark.parametrize("shape, datatype, match", [
    ([1, 3, 70, 70], "FP32", "unexpected shape"),
    ([1, 71, 71, 3], "FP32", "unexpected shape"),
    ([1, 3, 71, 71], "FP64", "data-type is 'FP64'"),
    ([1, 3, 71, 71], "UINT8", "data-type is 'UINT8'"),
])
def test_bad_request_is_4xx_and_server_keeps_serving(served, reference, shape, datatype, match):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from xception_trt.serve.client import TritonClient

    n = int(np.prod(shape))
    status, body = _post(f"http://{served.http_url}/v2/models/xception/infer",
                         {"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                                      "data": [0] * n}]})
    assert status == 400 and match in body
    arr = np.zeros(shape, dtype={"FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8}
                   [datatype])
    raw = grpcclient.InferenceServerClient(served.grpc_url)
    inp = grpcclient.InferInput("input", shape, datatype)
    inp.set_data_from_numpy(arr)
    with pytest.raises(InferenceServerException) as info:
        raw.infer("xception", [inp])
    assert "INVALID_ARGUMENT" in str(info.value.status()) and match in info.value.message()
    raw.close()
    with TritonClient(served.http_url) as client:
        with pytest.raises(ServeError, match=r"status 400"):
            client.infer("xception", arr)
        x = _batch(1, seed=9)
        np.testing.assert_allclose(client.infer("xception", x), reference(x), atol=1e-5)
    assert served.is_running()


@needs_server
def test_bad_image_is_4xx_and_server_keeps_serving(served, image_folder):
    from xception_trt.serve.client import TritonClient

    with TritonClient(served.http_url) as client:
        with pytest.raises(ServeError, match=r"not an image file.*status 400"):
            client.infer_images("xception_image", [b"definitely not a JPEG"])
        good = client.infer_images("xception_image", sorted(image_folder.rglob("*.png"))[:1])
    assert good.shape == (1, 4) and np.isfinite(good).all()


@needs_server
def test_metrics_endpoint_answers(served):
    from xception_trt.serve.client import TritonClient, read_metrics

    with TritonClient(served.http_url) as client:
        client.infer("xception", _batch(1))
    text = read_metrics(served.metrics_url)
    line = next(ln for ln in text.splitlines()
                if ln.startswith('nv_inference_request_success{model="xception",'))
    assert float(line.rsplit(" ", 1)[1]) >= 1


@needs_server
def test_startup_failure_names_the_cause(tiny_onnx_files, tmp_path):
    repo = tmp_path / "repo"
    write_repository(tiny_onnx_files["float"], repo, options=RepositoryOptions(
        triton_backend="python", execution_env_path=sys.prefix))
    (repo / "xception/1/tiny_float.onnx").unlink()  # the runner cannot open its artifact
    server = server_mod.TritonServer(repo, http_port=None, grpc_port=None, metrics_port=None,
                                     startup_timeout_s=60)
    with pytest.raises(ServeError, match=r"exited during startup.*tiny_float.onnx"):
        server.start()
    assert not server.is_running()


@needs_server
def test_native_models_are_refused_before_starting(tiny_onnx_files, tmp_path):
    repo = tmp_path / "repo"
    write_repository(tiny_onnx_files["float"], repo)
    with pytest.raises(ServeError, match=r"only the Python backend.*onnxruntime_onnx.*docker run"):
        server_mod.TritonServer(repo, http_port=None, grpc_port=None, metrics_port=None).start()


#: A last-resort limit on waits for events (a line, a process exit), far above what they take
#: on a loaded 2-core machine: the tests wait for the event, not for a time budget.
SAFETY_S = 600
#: The line `serve` prints once Triton and every model are ready (cli/serve.py).
READY = "ready (Ctrl-C to stop)"


def _serve(model: Path, ports: list[int], *extra: str, env: dict | None = None
           ) -> subprocess.Popen:
    """``xception-trt serve`` in a child process; its startup limit is the safety limit (the
    CLI's own 120 s default is a budget a loaded machine can overrun). Its stderr is read in
    the background into ``proc.err_lines`` (a full pipe would block the child)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xception_trt", "serve", str(model), *extra, "--threads", "1",
         "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
         "--metrics-port", str(ports[2]), "--startup-timeout", str(SAFETY_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=as_in_a_terminal)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)  # type: ignore
    reader.start()
    proc.err_lines, proc.err_reader = err, reader  # type: ignore[attr-defined]
    return proc


def _exit(proc: subprocess.Popen) -> tuple[int, str]:
    """Wait for the child to exit (the safety limit only catches a hang); its exit code and
    stderr."""
    code = proc.wait(timeout=SAFETY_S)
    proc.err_reader.join(SAFETY_S)  # type: ignore[attr-defined]
    return code, "".join(proc.err_lines)  # type: ignore[attr-defined]


def _wait_line(proc: subprocess.Popen, needle: str) -> list[str]:
    """Read the child's stdout until a line holds ``needle`` or the stream ends (the child
    exited); the reading goes on in the background, so the pipe never fills."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if needle in line:
                done.set()
        done.set()  # end of stream: the child is gone

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(SAFETY_S), f"no {needle!r} line and no exit in {SAFETY_S} s: {lines}"
    return lines


@needs_server
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serve_stops_cleanly_on_signal(tiny_onnx_files, sig):
    import psutil

    ports = [server_mod.free_port() for _ in range(3)]
    proc = _serve(tiny_onnx_files["float"], ports, "--no-ensemble")
    try:
        lines = _wait_line(proc, READY)
        assert any(READY in ln for ln in lines), _exit(proc) if proc.poll() is not None else lines
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("tritonserver" in c.name() for c in children)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/health/ready") as resp:
            assert resp.status == 200
        proc.send_signal(sig)
        # Wait for the exit itself (stderr drained meanwhile): how long a stop takes depends on
        # the machine's load, what it must do does not.
        code, err = _exit(proc)
        assert code == 0, err
        assert "stopped" in err
        gone, alive = psutil.wait_procs(children, timeout=SAFETY_S)
        assert not alive  # neither tritonserver nor a backend stub outlives the CLI
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped
    except psutil.NoSuchProcess:
        return True


@needs_server
def test_cli_serve_kill_9_takes_the_server_and_its_stubs_down(tiny_onnx_files, tmp_path):
    """kill -9 of `xception-trt serve`: tritonserver (parent-death signal) and its Python backend
    stubs (they watch tritonserver) die with it; the next serve sweeps its temp folders."""
    import time

    import psutil

    from xception_trt.fsio import sweep_owned_temp_dirs

    ports = [server_mod.free_port() for _ in range(3)]
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = _serve(tiny_onnx_files["float"], ports, env=env)
    children: list = []
    try:
        lines = _wait_line(proc, READY)
        assert any(READY in ln for ln in lines), _exit(proc) if proc.poll() is not None else lines
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("tritonserver" in c.name() for c in children)
        assert any("stub" in c.name() for c in children)  # the Python backend's processes
        proc.kill()
        _exit(proc)
        # the children die on their own (parent-death signal; the stubs watch tritonserver):
        # poll until they are gone, the safety limit only catches a hang
        deadline = time.monotonic() + SAFETY_S
        while time.monotonic() < deadline and not all(_gone(c.pid) for c in children):
            time.sleep(0.1)
        assert [c.pid for c in children if not _gone(c.pid)] == []
    finally:
        for c in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ours = sorted(p.name.split(str(proc.pid))[0] for p in tmp_path.glob("xception-trt-*"))
    assert ours == ["xception-trt-serve-", "xception-trt-triton-backends-"]  # kill -9 left them
    for prefix in ours:
        assert len(sweep_owned_temp_dirs(prefix, tmp_path)) == 1  # what the next serve does
    assert list(tmp_path.glob("xception-trt-*")) == []


def test_port_in_use_is_named_before_the_server_starts(tmp_path):
    """No tritonserver needed: the check runs before anything is started."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fake = server_mod.TritonDistribution(
            executable=tmp_path / "no-tritonserver", python_backend=tmp_path, stub=tmp_path,
            libs=tmp_path, caches=None, version="0")
        server = server_mod.TritonServer(tmp_path, http_port=None, grpc_port=port,
                                         metrics_port=None, distribution=fake)
        with pytest.raises(ServeError, match=rf"gRPC port {port} on 127\.0\.0\.1 is already in "
                                             rf"use by pid {os.getpid()} \(.*python.*\); stop "
                                             r"that process or pass another --grpc-port"):
            server.start()
        assert not server.is_running()
    server_mod.check_ports_free({"gRPC": port})  # free again once closed


@needs_server
def test_cli_serve_on_a_busy_port_says_so(tiny_onnx_files, tmp_path, monkeypatch, capsys):
    import socket
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", str(tiny_onnx_files["float"]), "--http-port", str(port),
                     "--grpc-port", str(server_mod.free_port()),
                     "--metrics-port", str(server_mod.free_port())])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: HTTP port {port} on 127.0.0.1 is already in use by pid "
                          f"{os.getpid()}")
    assert list(tmp_path.iterdir()) == []  # the temporary repository is gone too


@needs_server
def test_cli_serve_bad_model_leaves_nothing(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    odd = tmp_path / "model.txt"
    odd.write_text("not a model")
    assert main(["serve", str(odd)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot serve a .txt file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.txt"]  # temp repo removed


# ---------------------------------------------------------------------------------------------
# where the bundled binary cannot run


def test_unavailable_binary_prints_the_container_command(monkeypatch, tiny_onnx_files, capsys):
    monkeypatch.setattr(server_mod.platform, "machine", lambda: "aarch64")
    with pytest.raises(ServeError, match=r"x86-64 Linux only.*tritonserver:\d+\.\d+-py3-igpu"):
        server_mod.find_tritonserver()
    assert main(["serve", str(tiny_onnx_files["float"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "docker run --runtime nvidia" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_pytriton_is_explained(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pytriton(name, *args, **kw):
        if name == "pytriton":
            raise ImportError("No module named 'pytriton'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(server_mod.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(builtins, "__import__", no_pytriton)
    with pytest.raises(ServeError, match=r"xception-trt\[serve\].*docker run --gpus all"):
        server_mod.find_tritonserver()


def test_container_command_x86():
    cmd = server_mod.container_command("/models/here", http_port=9000, machine="x86_64")
    assert cmd.startswith("docker run --gpus all")
    assert "-p 9000:8000" in cmd and "nvcr.io/nvidia/tritonserver:24.10-py3 " in cmd
    assert "-v /models/here:/models" in cmd


def test_server_argument_errors(tmp_path):
    with pytest.raises(ServeError, match="does not exist"):
        server_mod.TritonServer(tmp_path / "missing")
    with pytest.raises(ServeError, match="must differ"):
        server_mod.TritonServer(tmp_path, http_port=9000, grpc_port=9000, metrics_port=9002)
    with pytest.raises(ServeError, match="out of range"):
        server_mod.TritonServer(tmp_path, http_port=70000)


def test_server_environment_finds_this_python(monkeypatch):
    dist = server_mod.TritonDistribution(Path("/x/tritonserver"), Path("/x/py"), Path("/x/stub"),
                                         Path("/x/libs"), None, "0")
    env = server_mod.server_environment(dist, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert "/x/libs" in parts and parts[-1] == "/opt"


@needs_server
def test_parent_death_signal_is_armed_from_the_main_thread_only(tiny_onnx_files, tmp_path,
                                                                 monkeypatch):
    # PR_SET_PDEATHSIG follows the *thread* that forked the child: armed from a worker thread,
    # the server would die when that thread ends although the process (and stop()) live on.
    repo = tmp_path / "repo"
    write_repository(tiny_onnx_files["float"], repo, options=RepositoryOptions(
        triton_backend="python", execution_env_path=sys.prefix))
    seen: list[object] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        if not kwargs.get("start_new_session"):  # helper processes, not the server
            return real_popen(*args, **kwargs)
        seen.append(kwargs.get("preexec_fn"))
        raise OSError("recorded, not started")

    monkeypatch.setattr(server_mod.subprocess, "Popen", popen)

    def start() -> None:
        server = server_mod.TritonServer(repo, http_port=None, grpc_port=None,
                                         metrics_port=None)
        with pytest.raises(ServeError, match="recorded, not started"):
            server.start()

    start()
    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
    assert len(seen) == 2
    assert seen[0] is not None and seen[1] is None
