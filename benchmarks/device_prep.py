"""Prepare what travels to a bare GPU machine for ``benchmarks/device_check.py``: a pycuda
wheel for Python 3.12 built here against CUDA 13, in the git-ignored folder ``.device/``.

The GPU machine that is sometimes lent (docs/contributing.md, "The machines we build on") has
Python 3.12, cuda-python, cupy and torch but no pycuda and no network, and pycuda has no wheel
on PyPI. So the wheel is built on this CPU machine, which has ``nvcc``, the CUDA 13 headers and a
``python3.12`` but no driver:

1. a stub ``libcuda.so`` (soname ``libcuda.so.1``) that *defines* every ``cu*`` entry point
   ``cuda.h`` declares (the names after ``cuda.h``'s version macros, e.g. ``cuCtxCreate_v4``,
   and as written), so the linker keeps ``libcuda.so.1`` as NEEDED by pycuda's ``_driver``
   module (an empty stub builds a wheel that cannot load on a device);
2. pycuda's sdist (``pip download``, or ``--sdist``) configured with ``CUDA_ROOT``,
   ``CUDA_ENABLE_CURAND = False`` (no curand headers here) and the stub's folder as the driver
   library folder, built with ``python3.12 -m pip wheel``;
3. the result checked: ``readelf -d`` lists ``libcuda.so.1`` as NEEDED and every ``cu*``
   symbol ``_driver`` imports is one the stub defines (so the real driver library provides
   it on the device).

Usage::

    python benchmarks/device_prep.py [--python python3.12] [--sdist pycuda-2026.1.tar.gz]

Writes ``.device/wheels/pycuda-*-cp312-*.whl`` and ``.device/prep.json`` (what was built and
checked). Exit code 0 when the wheel is there and checked; 1 with the reason otherwise. The
wheel is about 5 MB, far below the 64 MiB that may travel with the checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".device"
PYCUDA = "pycuda==2026.1"
CUDA_ROOT = Path(os.environ.get("CUDA_ROOT", "/usr/local/cuda"))


class PrepError(RuntimeError):
    """Something this machine lacks; the message says what."""


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise PrepError(f"{' '.join(map(str, cmd[:4]))} ... failed ({proc.returncode}):\n"
                        f"{(proc.stderr or proc.stdout)[-3000:]}")
    return proc


def find_python(asked: str | None) -> str:
    """A Python 3.12 interpreter (the device's version)."""
    candidates = [asked] if asked else ["python3.12", *sorted(
        str(p) for p in Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]
    for cand in candidates:
        exe = shutil.which(cand) if cand and os.sep not in cand else cand
        if not exe:
            continue
        proc = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip() == "(3, 12)":
            return exe
    raise PrepError("no working python3.12 found (the device runs Python 3.12); pass --python")


#: Driver-API headers whose ``cu*`` functions live in ``libcuda.so.1`` (pycuda's ``_driver``
#: also imports the profiler control of ``cudaProfiler.h``).
DRIVER_HEADERS = ("cuda.h", "cudaProfiler.h")


def cuda_entry_points(cuda_h: Path) -> list[str]:
    """Every ``cu*`` function the driver-API headers next to ``cuda_h`` declare
    (:data:`DRIVER_HEADERS`), as written and as ``cuda.h``'s version macros map it
    (``cuCtxCreate`` -> ``cuCtxCreate_v4``): the symbols a program linked against the real
    ``libcuda.so.1`` may import."""
    headers = [cuda_h.parent / h for h in DRIVER_HEADERS if (cuda_h.parent / h).is_file()]
    names = sorted({n for h in headers for n in
                    re.findall(r"CUDAAPI\s+(cu[A-Za-z0-9_]+)\s*\(", h.read_text())})
    if not names:
        raise PrepError(f"no cu* declarations found in {cuda_h}")
    src = "".join(f"#include <{h.name}>\n" for h in headers) + "".join(
        f"XTRT_SYM {n}\n" for n in names)
    out = _run(["gcc", "-E", "-P", f"-I{cuda_h.parent}", "-x", "c", "-"], input=src).stdout
    mapped = {line.split()[1] for line in out.splitlines() if line.startswith("XTRT_SYM ")}
    return sorted(set(names) | mapped)


def build_stub(dest: Path) -> tuple[Path, list[str]]:
    """``dest/libcuda.so`` (soname ``libcuda.so.1``) defining every entry point."""
    cuda_h = CUDA_ROOT / "include" / "cuda.h"
    if not cuda_h.is_file():
        raise PrepError(f"{cuda_h} not found: set CUDA_ROOT to the CUDA toolkit")
    symbols = cuda_entry_points(cuda_h)
    dest.mkdir(parents=True, exist_ok=True)
    c_file = dest / "libcuda_stub.c"
    c_file.write_text("/* build-time stand-in for the NVIDIA driver library: never loaded */\n"
                      + "".join(f"int {s}(void) {{ return 999; }}\n" for s in symbols))
    lib = dest / "libcuda.so"
    _run(["gcc", "-shared", "-fPIC", "-o", str(lib), "-Wl,-soname,libcuda.so.1", str(c_file)])
    return lib, symbols


def fetch_sdist(dest: Path, sdist: str | None) -> Path:
    if sdist:
        return Path(sdist).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob("pycuda-*.tar.gz"))
    if found:
        return found[-1]
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=pycuda", PYCUDA,
          "-d", str(dest)], timeout=300)
    found = sorted(dest.glob("pycuda-*.tar.gz"))
    if not found:
        raise PrepError(f"pip download {PYCUDA} left no sdist in {dest}")
    return found[-1]


def build_wheel(python: str, sdist: Path, stub_dir: Path, wheels: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="pycuda-build-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = next(p for p in Path(tmp).iterdir() if p.is_dir())
        (src / "siteconf.py").write_text(
            "USE_SHIPPED_BOOST = True\nBOOST_INC_DIR = []\nBOOST_LIB_DIR = []\n"
            "BOOST_PYTHON_LIBNAME = []\nBOOST_THREAD_LIBNAME = []\nCUDA_TRACE = False\n"
            f"CUDA_ROOT = {str(CUDA_ROOT)!r}\nCUDA_ENABLE_GL = False\n"
            "CUDA_ENABLE_CURAND = False\n"
            f"CUDADRV_LIB_DIR = [{str(stub_dir)!r}]\nCUDADRV_LIBNAME = ['cuda']\n"
            f"CUDA_INC_DIR = [{str(CUDA_ROOT / 'include')!r}]\nCXXFLAGS = []\n"
            "LDFLAGS = []\n")
        wheels.mkdir(parents=True, exist_ok=True)
        for old in wheels.glob("pycuda-*.whl"):
            old.unlink()
        env = {**os.environ, "CUDA_ROOT": str(CUDA_ROOT),
               "PATH": f"{CUDA_ROOT / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        _run([python, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(src)],
             env=env, timeout=1800)
    built = sorted(wheels.glob("pycuda-*-cp312-*.whl"))
    if not built:
        raise PrepError(f"pip wheel left no cp312 pycuda wheel in {wheels}")
    return built[-1]


def check_wheel(wheel: Path, symbols: list[str]) -> dict:
    """readelf/nm checks of the wheel's ``_driver`` module (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        member = next((n for n in zf.namelist()
                       if re.fullmatch(r"pycuda/_driver[^/]*\.so", n)), None)
        if member is None:
            raise PrepError(f"{wheel.name} has no pycuda/_driver*.so")
        so = Path(zf.extract(member, tmp))
        dyn = _run(["readelf", "-d", str(so)]).stdout
        needed = re.findall(r"\(NEEDED\).*\[(.+?)\]", dyn)
        undefined = _run(["nm", "-D", "--undefined-only", str(so)]).stdout.split("\n")
    imported = sorted({line.split()[-1].split("@")[0] for line in undefined
                       if line.strip() and re.search(r"\scu[A-Z]", line)})
    missing = sorted(set(imported) - set(symbols))
    if "libcuda.so.1" not in needed:
        raise PrepError(f"{wheel.name}: _driver does not list libcuda.so.1 as NEEDED ({needed}); "
                        "it would not load on a device")
    if missing:
        raise PrepError(f"{wheel.name}: _driver imports {missing}, which the stub lacks")
    return {"driver_module": member, "needed": needed, "cu_symbols_imported": len(imported)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", help="the Python 3.12 to build with (default: found)")
    p.add_argument("--sdist", help=f"a pycuda sdist (default: pip download {PYCUDA})")
    p.add_argument("--out", default=str(OUT), help="output folder (default: .device/)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        for tool in ("gcc", "readelf", "nm"):
            if shutil.which(tool) is None:
                raise PrepError(f"{tool} is needed (gcc, binutils)")
        if not (CUDA_ROOT / "bin" / "nvcc").exists():
            raise PrepError(f"no nvcc under {CUDA_ROOT}: set CUDA_ROOT to the CUDA toolkit")
        python = find_python(args.python)
        stub, symbols = build_stub(out / "stub")
        sdist = fetch_sdist(out / "sdist", args.sdist)
        wheel = build_wheel(python, sdist, stub.parent, out / "wheels")
        checks = check_wheel(wheel, symbols)
    except (PrepError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"device_prep: {exc}", file=sys.stderr)
        return 1
    record = {"wheel": str(wheel.relative_to(out)), "bytes": wheel.stat().st_size,
              "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(), "python": python,
              "cuda_root": str(CUDA_ROOT), "sdist": sdist.name,
              "stub_symbols": len(symbols), **checks}
    (out / "prep.json").write_text(json.dumps(record, indent=2))
    print(f"built {wheel} ({record['bytes'] / 2**20:.1f} MiB): NEEDED {', '.join(checks['needed'])}"
          f"; {checks['cu_symbols_imported']} cu* symbols, all in the stub")
    return 0


if __name__ == "__main__":
    sys.exit(main())
