"""Checkpoints by Hugging Face Hub id (xception_trt.hub), without network: the hub cache is
populated by the test in huggingface_hub's own layout (models--org--name/refs/main,
snapshots/<commit>/...), offline mode is on, and the refusals of an unknown repository and an
unreachable Hub come from a local HTTP server on the loopback interface that answers as the
Hub does (never the network)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
import huggingface_hub  # noqa: E402
import huggingface_hub.constants  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from xception_trt.bundle.format import BUNDLE_SUFFIXES  # noqa: E402
from xception_trt.checkpoint import load_model, read_checkpoint  # noqa: E402
from xception_trt.cli import main  # noqa: E402
from xception_trt.contract import ENGINE_SUFFIXES, ONNX_SUFFIXES  # noqa: E402
from xception_trt.errors import CheckpointError, DependencyError  # noqa: E402
from xception_trt.hub import (  # noqa: E402
    MODEL_FILE_SUFFIXES,
    HubId,
    is_hub_id,
    parse_hub_id,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "testorg/tiny_xception.t_in4"


def _config(arch: str = "legacy_xception", size: int = 71) -> dict:
    """timm's config.json layout (timm.models._hub.save_config_for_hf)."""
    return {"architecture": arch, "num_classes": 4, "num_features": 256,
            "pretrained_cfg": {"input_size": [3, size, size], "interpolation": "bilinear",
                               "crop_pct": 0.875, "mean": [0.5, 0.5, 0.5],
                               "std": [0.25, 0.25, 0.25], "num_classes": 4,
                               "first_conv": "conv1", "classifier": "fc"}}


def populate(cache: Path, repo: str, files: dict[str, bytes], *, commit: str = COMMIT) -> Path:
    """Put ``files`` into a hub cache as huggingface_hub lays it out after a download."""
    org, name = repo.split("/")
    folder = cache / f"models--{org}--{name}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    for filename, data in files.items():
        (snapshot / filename).write_bytes(data)
    return snapshot


def timm_safetensors(model, tmp: Path) -> bytes:
    """The model's state dict as timm saves it (``model.safetensors``, no metadata of ours)."""
    path = tmp / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline. The environment is for child processes; the constants
    are what an already imported huggingface_hub reads (it reads the variables on import)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def tiny_repo(hub_cache, tiny_model, tmp_path):
    populate(hub_cache, REPO, {"config.json": json.dumps(_config()).encode(),
                               "model.safetensors": timm_safetensors(tiny_model, tmp_path),
                               "README.md": b"# tiny\n"})
    return REPO


# -- what is a hub id -------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("hf-hub:timm/legacy_xception.tf_in1k", HubId("timm/legacy_xception.tf_in1k")),
    ("hf-hub:timm/legacy_xception.tf_in1k@main", HubId("timm/legacy_xception.tf_in1k", "main")),
    ("timm/legacy_xception.tf_in1k", HubId("timm/legacy_xception.tf_in1k")),
    (f"org/name@{COMMIT}", HubId("org/name", COMMIT)),
    ("runs/model.onnx", None),          # a missing model file stays a file
    ("runs/model.safetensors", None),
    ("out/model.xtrt", None),
    ("model.safetensors", None),        # no org/
    ("a/b/c", None),                    # a path, not org/name
    ("./org/name", None),
    ("/abs/name", None),
])
def test_parse_hub_id(text, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_hub_id(text) == expected


def test_an_existing_local_path_is_never_a_bare_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").write_bytes(b"x")
    assert parse_hub_id("org/name") is None
    assert parse_hub_id("hf-hub:org/name") == HubId("org/name")  # the prefix says so


def test_malformed_prefixed_id_is_refused_with_the_form():
    with pytest.raises(CheckpointError, match=r"hf-hub:org/name\[@revision\]"):
        parse_hub_id("hf-hub:just-a-name")
    assert is_hub_id("hf-hub:just-a-name")  # so that reading it says what is wrong


def test_model_file_suffixes_cover_every_model_file_type():
    for suffix in ENGINE_SUFFIXES + ONNX_SUFFIXES + BUNDLE_SUFFIXES:
        assert suffix in MODEL_FILE_SUFFIXES


# -- loading offline from the cache ----------------------------------------------------------

def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("spelling", [REPO, f"hf-hub:{REPO}", f"hf-hub:{REPO}@{COMMIT}",
                                      f"{REPO}@main"])
def test_python_api_loads_a_hub_id_offline(tiny_repo, tiny_model, spelling):
    model = load_model(spelling)
    assert _same_weights(model, tiny_model)
    spec = model.spec
    assert spec.source == "timm" and spec.num_classes == 4 and spec.width == 0.125
    # preprocessing from config.json's pretrained_cfg, not timm's defaults
    assert spec.input_size == 71 and spec.crop_pct == 0.875
    assert spec.interpolation.value == "bilinear" and spec.std == (0.25, 0.25, 0.25)
    ckpt = read_checkpoint(spelling)
    assert ckpt.metadata["hub_id"] == str(parse_hub_id(spelling))
    assert ckpt.metadata["hub_commit"] == COMMIT
    assert ckpt.name == str(parse_hub_id(spelling))


def test_pytorch_model_bin_is_read_when_there_is_no_safetensors(hub_cache, tiny_model, tmp_path):
    path = tmp_path / "w.bin"
    torch.save({"state_dict": tiny_model.state_dict()}, path)
    populate(hub_cache, "org/binonly", {"config.json": json.dumps(_config()).encode(),
                                        "pytorch_model.bin": path.read_bytes()})
    assert _same_weights(load_model("org/binonly"), tiny_model)


def test_cli_convert_and_infer_from_a_hub_id_offline(tiny_repo, tiny_model, image_folder,
                                                     tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    assert main(["convert", tiny_repo, "-o", str(out)]) == 0
    assert _same_weights(load_model(out), tiny_model)
    capsys.readouterr()
    image = next(image_folder.glob("cat/*"))
    assert main(["infer", tiny_repo, str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == tiny_repo and result["runner"] == "torch-fp32"
    assert len(result["results"]) == 1 and len(result["results"][0]["predictions"]) == 4


def test_cli_export_in_a_child_process_reads_the_environment(tiny_repo, tmp_path):
    """HF_HUB_CACHE / HF_HUB_OFFLINE as a user sets them (the fixture's environment),
    read by a fresh huggingface_hub import."""
    import subprocess
    import sys

    out = tmp_path / "t.safetensors"
    proc = subprocess.run([sys.executable, "-m", "xception_trt", "convert", f"hf-hub:{REPO}",
                           "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and out.is_file()
    assert "%|" not in proc.stderr  # no download bar when stderr is not a terminal


# -- refusals ---------------------------------------------------------------------------------

def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_offline_and_not_cached(hub_cache, capsys):
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        load_model("org/never-downloaded")
    assert main(["export", "org/never-downloaded", "-o", str(hub_cache / "x.onnx")]) == 2
    err = _one_line_error(capsys)
    assert "org/never-downloaded" in err and "unset HF_HUB_OFFLINE" in err
    assert not (hub_cache / "x.onnx").exists()


def test_not_an_xception_by_its_config(hub_cache, tiny_model, tmp_path, capsys):
    populate(hub_cache, "timm/resnet50.a1_in1k", {
        "config.json": json.dumps(_config("resnet50")).encode(),
        "model.safetensors": timm_safetensors(tiny_model, tmp_path)})
    with pytest.raises(CheckpointError, match="'resnet50' model, not an Xception"):
        load_model("timm/resnet50.a1_in1k")
    assert main(["convert", "timm/resnet50.a1_in1k", "-o", str(tmp_path / "r.safetensors")]) == 2
    err = _one_line_error(capsys)
    assert "timm/legacy_xception.tf_in1k" in err  # the fix: a repository that fits


def test_weights_that_are_not_an_xception(hub_cache, tmp_path, capsys):
    bogus = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2))
    populate(hub_cache, "org/notx", {"config.json": b"{}",
                                     "model.safetensors": timm_safetensors(bogus, tmp_path)})
    with pytest.raises(CheckpointError, match=r"^org/notx: not an Xception state dict"):
        load_model("org/notx")
    assert main(["infer", "org/notx", str(tmp_path / "w.safetensors")]) == 2
    assert "org/notx" in _one_line_error(capsys)


def test_weights_of_the_wrong_shape(hub_cache, tiny_model, tmp_path):
    state = dict(tiny_model.state_dict())
    state["block1.rep.0.pointwise.weight"] = torch.zeros(3, 3, 1, 1)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    populate(hub_cache, "org/badshape", {"config.json": json.dumps(_config()).encode(),
                                         "model.safetensors": path.read_bytes()})
    with pytest.raises(CheckpointError, match=r"org/badshape does not match an Xception.*shape"):
        load_model("org/badshape")


def test_without_the_hub_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(DependencyError, match=r"pip install 'xception-trt\[hub\]'"):
        load_model("timm/legacy_xception.tf_in1k")
    assert main(["export", "timm/legacy_xception.tf_in1k", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "pip install 'xception-trt[hub]'" in _one_line_error(capsys)


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub answers for a repository that does not exist (404 with
    ``X-Error-Code: RepoNotFound``, huggingface_hub.utils._http.hf_raise_for_status) or, with
    ``mode = "no-metadata"``, with a 200 lacking the file headers (the library's "cannot
    locate the file" path, as behind a captive portal)."""

    mode = "repo-not-found"
    requests: list[str] = []

    def _answer(self) -> None:
        type(self).requests.append(self.path)
        if self.mode == "repo-not-found":
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("X-Error-Message", "Repository not found")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def local_hub(hub_cache, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    _FakeHub.requests = []
    yield _FakeHub
    server.shutdown()
    server.server_close()
    thread.join()
    _FakeHub.mode = "repo-not-found"


def test_unknown_repository(local_hub, capsys, tmp_path):
    with pytest.raises(CheckpointError, match="no such model repository"):
        load_model("org/does-not-exist")
    assert local_hub.requests  # the answer came from the local server
    assert main(["convert", "org/does-not-exist", "-o", str(tmp_path / "x.safetensors")]) == 2
    err = _one_line_error(capsys)
    assert "org/does-not-exist" in err and "check the id" in err


def test_hub_unreachable_and_not_cached(local_hub):
    local_hub.mode = "no-metadata"
    with pytest.raises(CheckpointError, match="cannot be reached"):
        load_model("org/somewhere")
    # after the first unanswered look-up, the weights are looked for in the cache only
    assert len(local_hub.requests) == 1


def test_serving_takes_a_file_and_says_how_to_make_one(hub_cache, tmp_path, capsys):
    """Triton's repository holds a file with its ModelSpec: a Hub id is refused with the
    conversion that makes one (before anything is downloaded or written)."""
    from xception_trt.errors import ServeError
    from xception_trt.serve.source import describe_model

    with pytest.raises(ServeError, match=r"xception-trt convert timm/x\.y -o model\.safetensors"):
        describe_model("timm/x.y")
    assert main(["triton-repo", "hf-hub:timm/x.y", "-o", str(tmp_path / "repo")]) == 2
    assert "convert" in _one_line_error(capsys)
    assert not (tmp_path / "repo").exists()


def test_bundle_and_build_from_a_hub_id_record_and_reuse_it(tiny_repo, tmp_path, capsys):
    import hashlib

    from xception_trt.bundle.format import Bundle

    weights = next(Path(huggingface_hub.constants.HF_HUB_CACHE).rglob("model.safetensors"))
    assert main(["bundle", tiny_repo, "-o", str(tmp_path / "t.xtrt")]) == 0
    with Bundle(tmp_path / "t.xtrt") as bundle:
        source = bundle.manifest.source
    assert source == {"name": f"hf-hub:{REPO}",
                      "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")
    argv = ["build", f"hf-hub:{REPO}", "-o", str(tmp_path / "e"), "--flavour", "tensorrt_rtx",
            "--cc", "sm86", "--no-progress"]
    assert main(argv) == 0
    assert (tmp_path / "e" / "tiny_xception.onnx").is_file()
    capsys.readouterr()
    assert main(argv) == 0  # the export is recognised as this checkpoint's: all reused
    assert "reused" in capsys.readouterr().out


@pytest.mark.parametrize("verbose, level", [(0, "ERROR"), (1, "NOTSET")])
def test_hub_retry_warnings_only_with_verbose(verbose, level):
    """huggingface_hub logs a warning per retry while the Hub does not answer; the CLI's one
    error line says what happened, -v shows the retries."""
    import logging

    from xception_trt.cli import _setup_logging

    _setup_logging(verbose, False)
    assert logging.getLevelName(logging.getLogger("huggingface_hub").level) == level
