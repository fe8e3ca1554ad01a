"""Optional dependencies: a missing extra's package becomes one error naming the package and
the extra (library: DependencyError; CLI: one ``error:`` line, exit 2), and the table of
extras agrees with pyproject.toml."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from xception_trt.errors import DependencyError, XceptionTRTError
from xception_trt.extras import EXTRAS, ensure, missing, needs

ROOT = Path(__file__).resolve().parents[1]


def test_needs_names_the_package_and_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # imports as if not installed
    with pytest.raises(DependencyError) as err:
        with needs("the parity check"):
            import onnxruntime  # noqa: F401
    assert str(err.value) == ("the parity check needs the Python package 'onnxruntime', which "
                              "is not installed; install it with: pip install 'xception-trt[ort]'")
    assert isinstance(err.value, XceptionTRTError) and isinstance(err.value, ImportError)


def test_needs_can_name_the_extra_that_brings_everything(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(DependencyError, match=r"the demo needs .*'torch'.*xception-trt\[demo\]"):
        with needs("the demo", extra="demo"):
            with needs("the model"):  # a library module's own needs(), further down
                import torch  # noqa: F401


def test_needs_lets_unknown_and_present_modules_through(monkeypatch):
    monkeypatch.setitem(sys.modules, "no_such_module_of_ours", None)
    with pytest.raises(ModuleNotFoundError):  # not an extra of ours: a bug, not a user error
        with needs("anything"):
            import no_such_module_of_ours  # noqa: F401
    with needs("numpy"):
        import numpy  # noqa: F401


def test_missing_maps_submodules_and_ignores_other_errors():
    err = missing(ModuleNotFoundError("x", name="matplotlib.figure"), purpose="plots")
    assert isinstance(err, DependencyError) and (err.package, err.extra) == ("matplotlib", "plot")
    assert missing(ImportError("cannot import name 'x'"), purpose="p") is None
    assert missing(ModuleNotFoundError("x", name="somebody_else"), purpose="p") is None


def test_ensure_checks_without_importing():
    ensure("onnx", purpose="reading ONNX")  # installed here ([dev])
    with pytest.raises(DependencyError, match=r"'no-such-pkg'.*xception-trt\[build\]"):
        ensure("no-such-pkg", purpose="a test")


def _extras_in_pyproject() -> dict[str, set[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]

    def names(extra: str) -> set[str]:
        out: set[str] = set()
        for req in extras[extra]:
            name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")
            if name == "xception-trt":  # a self-reference: "xception-trt[ort]"
                for sub in re.search(r"\[(.*)\]", req).group(1).split(","):
                    out |= names(sub.strip())
            else:
                out.add(name)
        return out

    return {extra: names(extra) for extra in extras}


def test_extras_table_agrees_with_pyproject():
    extras = _extras_in_pyproject()
    for module, (package, extra) in EXTRAS.items():
        dist = re.match(r"[A-Za-z0-9_.-]+", package).group(0).lower().replace("_", "-")
        assert dist in extras[extra], f"{module}: {package} is not in the [{extra}] extra"
    # [dev] installs everything the suite imports; [demo] the whole toolchain
    assert {"build", "ort", "plot", "demo", "serve", "keras"} <= {
        e for e in extras if extras[e] <= extras["dev"]}
    assert extras["build"] <= extras["demo"]


def test_core_dependencies_leave_the_toolchain_out():
    tomllib = pytest.importorskip("tomllib")
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in core}
    assert names == {"numpy", "pillow", "tqdm", "psutil"}


def test_cli_turns_a_missing_extra_into_one_error_line(monkeypatch, capsys):
    from xception_trt.cli import info, main

    def run(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(info, "run", run)
    assert main(["info"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: 'xception-trt info' needs the Python package 'matplotlib', which is "
                   "not installed; install it with: pip install 'xception-trt[plot]'"]

    def bug(args):
        raise ModuleNotFoundError("No module named 'not_ours'", name="not_ours")

    monkeypatch.setattr(info, "run", bug)
    with pytest.raises(ModuleNotFoundError):  # not an extra: a bug keeps its traceback
        main(["info"])
