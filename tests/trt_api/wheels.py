"""Fetch the real TensorRT Python binding wheels, make them importable on a CPU, dump their API.

The wheels hold ``tensorrt_bindings/tensorrt.so``, a pybind11 module linked against libnvinfer &
co., which cannot be installed here. The module imports only a few C entry points from those
libraries (``nm -D --undefined-only``); stub libraries that define them (returning NULL) let it
import, so its classes, methods, pybind11 signatures and enum members can be read. Nothing of
TensorRT runs. Each version is imported in its own process (two pybind11 TensorRT modules cannot
share one), and its dump is cached next to the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WHEELS", "Wheel", "FetchError", "cache_dir", "fetch_wheel", "dump_wheel",
           "dump_installed", "run_real"]

DUMP_SCRIPT = Path(__file__).with_name("dump_api.py")
#: Bump when dump_api.py changes what it writes, so cached dumps are redone.
DUMP_FORMAT = 2  # 2: property setters' signatures (setter-only properties are type-checked)


@dataclass(frozen=True)
class Wheel:
    """One binding wheel on PyPI: requirement, the version it reports, what it stands for."""

    requirement: str
    version: str
    era: str


#: The NVIDIA TensorRT versions we claim to support (README), as PyPI binding wheels.
WHEELS = (
    Wheel("tensorrt-bindings==8.6.1", "8.6.1", "JetPack 5"),
    Wheel("tensorrt-cu12-bindings==10.3.0", "10.3.0", "JetPack 6"),
    Wheel("tensorrt-cu12-bindings==10.13.0.35", "10.13.0.35", "desktop 10.x"),
    Wheel("tensorrt-cu13-bindings==11.4.0.106", "11.4.0.106", "desktop 11.x"),
)


class FetchError(RuntimeError):
    """A wheel cannot be downloaded (no registry here) or made importable (no gcc/binutils):
    the tests skip with this reason."""


def cache_dir() -> Path:
    """``$XCEPTION_TRT_WHEEL_CACHE`` or ``~/.cache/xception-trt/trt-wheels``."""
    env = os.environ.get("XCEPTION_TRT_WHEEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "xception-trt" / "trt-wheels"


def _wheel_file(directory: Path, wheel: Wheel) -> Path | None:
    dist = wheel.requirement.split("==")[0].replace("-", "_")
    found = sorted(directory.glob(f"{dist}-{wheel.version}-*.whl"))
    return found[0] if found else None


def fetch_wheel(wheel: Wheel, root: Path) -> Path:
    """The wheel file in ``root`` (downloaded with pip when absent).

    Raises:
        FetchError: pip could not get it (offline, registry unreachable).
    """
    directory = root / "wheels"
    directory.mkdir(parents=True, exist_ok=True)
    if (hit := _wheel_file(directory, wheel)) is not None:
        return hit
    # The 8.6/10.3 wheels are tagged manylinux_2_17, the later ones manylinux_2_28.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
           "--platform", "manylinux_2_17_x86_64", "-d", str(directory), "-q",
           # fail fast where the registry is unreachable: CI must not wait minutes to skip
           "--timeout", "20", "--retries", "1", "--disable-pip-version-check",
           wheel.requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"pip download {wheel.requirement} failed: {exc}") from None
    hit = _wheel_file(directory, wheel)
    if proc.returncode != 0 or hit is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"pip download {wheel.requirement} failed (registry unreachable?): "
                         f"{tail[0]}")
    return hit


def _undefined_symbols(so: Path) -> list[str]:
    """The strong, unversioned symbols the module needs from TensorRT's libraries."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True,
                         text=True, check=True).stdout
    names = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U" and "@" not in parts[1] \
                and not re.match(r"_?Py", parts[1]):
            names.append(parts[1])
    return names


def _needed_tensorrt_libs(so: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True,
                         check=True).stdout
    libs = re.findall(r"\[(lib[^\]]+)\]", out)
    return [lib for lib in libs if lib.startswith(("libnvinfer", "libnvonnxparser",
                                                   "libnvparsers"))]


def _build_stubs(so: Path, libdir: Path) -> None:
    """One C file defining every missing entry point as ``NULL``-returning, compiled into each
    library name the module links (the dynamic linker takes a symbol from any of them)."""
    libdir.mkdir(parents=True, exist_ok=True)
    source = libdir / "stubs.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n"
                              for name in _undefined_symbols(so)))
    for lib in _needed_tensorrt_libs(so):
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(libdir / lib), f"-Wl,-soname,{lib}",
                        str(source)], check=True, capture_output=True)


def _run_dump(module: str, out: Path, *, env_extra: dict[str, str], cwd: Path | None) -> None:
    env = {**os.environ, **env_extra}
    proc = subprocess.run([sys.executable, str(DUMP_SCRIPT), module, str(out)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"dumping {module} failed:\n{proc.stderr[-3000:]}")


def dump_wheel(wheel: Wheel, root: Path) -> dict:
    """The API dump of one binding wheel (cached in ``root``).

    Raises:
        FetchError: The wheel cannot be downloaded.
    """
    target = root / "dumps" / f"tensorrt-{wheel.version}-v{DUMP_FORMAT}.json"
    if target.is_file():
        return json.loads(target.read_text())
    missing = [tool for tool in ("gcc", "nm", "readelf") if shutil.which(tool) is None]
    if missing:
        raise FetchError(f"building the TensorRT stub libraries needs {', '.join(missing)} "
                         "(gcc and binutils)")
    whl = fetch_wheel(wheel, root)
    work = root / "unpacked" / wheel.version
    if work.exists():
        shutil.rmtree(work)
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(work / "site")
    so = work / "site" / "tensorrt_bindings" / "tensorrt.so"
    _build_stubs(so, work / "lib")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    _run_dump("tensorrt_bindings", tmp, cwd=work,
              env_extra={"LD_LIBRARY_PATH": str(work / "lib"), "PYTHONPATH": str(work / "site")})
    os.replace(tmp, target)
    return json.loads(target.read_text())


def run_real(version: str, script: Path, root: Path) -> str:
    """Run ``script MODULE`` with the real bindings of ``version`` (a wheel version, or
    ``"rtx"`` for the installed TensorRT-RTX) imported as :func:`dump_wheel` imports them, and
    return its standard output.

    Raises:
        FetchError: The wheel cannot be downloaded or made importable.
    """
    if version == "rtx":
        module, env_extra, cwd = "tensorrt_rtx", {}, None
    else:
        wheel = next(w for w in WHEELS if w.version == version)
        work = root / "unpacked" / version
        so = work / "site" / "tensorrt_bindings" / "tensorrt.so"
        if not (so.is_file() and (work / "lib").is_dir()):
            missing = [t for t in ("gcc", "nm", "readelf") if shutil.which(t) is None]
            if missing:
                raise FetchError(f"the stub libraries need {', '.join(missing)}")
            whl = fetch_wheel(wheel, root)
            if work.exists():
                shutil.rmtree(work)
            with zipfile.ZipFile(whl) as zf:
                zf.extractall(work / "site")
            _build_stubs(so, work / "lib")
        module, cwd = "tensorrt_bindings", work
        env_extra = {"LD_LIBRARY_PATH": str(work / "lib"), "PYTHONPATH": str(work / "site")}
    proc = subprocess.run([sys.executable, str(script), module], env={**os.environ, **env_extra},
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} on {module} {version} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def dump_installed(module: str, root: Path) -> dict:
    """The API dump of an installed module (TensorRT-RTX), cached per version."""
    import importlib.metadata

    version = importlib.metadata.version(module.replace("_", "-"))
    target = root / "dumps" / f"{module}-{version}-v{DUMP_FORMAT}.json"
    if target.is_file():
        return json.loads(target.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    _run_dump(module, tmp, cwd=None, env_extra={})
    os.replace(tmp, target)
    return json.loads(target.read_text())
