"""What each install brings: the JetPack 6 resolution check and the measured footprints.

    python benchmarks/install_footprint.py resolve [--extras build] [--check]
        Resolves `pip install xception-trt[extras]` for JetPack 6 (Python 3.10, manylinux
        aarch64, glibc 2.35) with pip's dry run on the wheel built from this checkout, lists
        the packages, and with --check exits 1 when torch, triton or any NVIDIA CUDA wheel
        (nvidia-*) is among them (what the core install must never pull onto a Jetson).

    python benchmarks/install_footprint.py measure [--out benchmarks/results/install_footprint.json]
        Installs the core and the [build] extra into fresh virtual environments on this machine
        (the CPU torch first, as docs/install.md does), and records each one's size on disk, its
        package count and the install time; [dev] is measured as the site-packages of the
        running interpreter's environment (the project's dev venv: installing it afresh takes
        minutes and the same packages). Also the import time of the runtime API in the core
        environment (median of 7 fresh interpreters, minus a bare interpreter's start) and the
        load average, since the machine is shared.

    python benchmarks/install_footprint.py downloads [--out FILE]
        What a user's pip resolves for each documented install on this x86-64 Linux machine, and
        how much it downloads (records the "downloads" key of --out, the rest is kept). Each
        install is resolved with `pip install --dry-run --report` in a scratch venv under the
        temp folder (deleted afterwards) as the docs run it: the README's first step
        (`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`, run with
        this machine's pip configuration: where that host cannot be reached, as on our
        machines, pip falls back to the same CPU wheel in its find-links folder), then every
        other step with pip's configuration disabled (PIP_CONFIG_FILE=/dev/null, no PIP_*
        variables): plain PyPI, as a user has. The CPU paths fail the check (exit 1) when an
        NVIDIA CUDA wheel (nvidia-* other than ModelOpt and the NVML binding), a cuda-* wheel,
        triton or a second torch is resolved. Sizes: a file:// URL is measured on disk, an
        https one by its Content-Length (one HEAD request per resolved file; pip's report
        carries no size). For contrast, plain `pip install torch==2.13.0` (PyPI's default
        CUDA build) is resolved too.

Every subcommand needs the package registry; the tests run `resolve --check` and a core-only
environment (tests/test_install.py) and skip with the reason when the registry cannot be
reached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: JetPack 6: Ubuntu 22.04 (glibc 2.35), Python 3.10, aarch64. pip does not widen a --platform
#: tag to older glibc versions, so every tag the device accepts is listed.
JETPACK6 = ["--python-version", "3.10", "--implementation", "cp", "--only-binary=:all:"] + [
    arg for v in range(35, 16, -1) for arg in ("--platform", f"manylinux_2_{v}_aarch64")
] + ["--platform", "manylinux2014_aarch64"]
#: nvidia-* packages that are no CUDA library: ModelOpt (Python), the NVML binding.
_NOT_CUDA_LIBS = {"nvidia-modelopt", "nvidia-ml-py"}
#: The runtime API a device imports.
RUNTIME_IMPORT = ("import xception_trt.classifier, xception_trt.runners, "
                  "xception_trt.trt.runtime")


def clean_env() -> dict[str, str]:
    """This environment without what would let another environment see this checkout or
    this venv (PYTHONPATH, PYTHONHOME, VIRTUAL_ENV); pip's own settings stay."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}


def _pip(python: str | Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout, env=clean_env(), cwd=tempfile.gettempdir())


def registry_problem() -> str | None:
    """``None`` when pip can download from the package registry, else why not (one line)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = _pip(sys.executable, "download", "--no-deps", "--only-binary=:all:", "-d",
                        tmp, *JETPACK6, "tqdm", timeout=120)
        except subprocess.TimeoutExpired:
            return "pip could not reach the package registry in 120 s"
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:]
        return "pip cannot download from the package registry: " + (tail[0] if tail else "?")
    return None


def build_wheel(dest: Path) -> Path:
    """The wheel of this checkout, built from a copy (the build leaves nothing in the tree)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(ROOT / "xception_trt", src / "xception_trt",
                        ignore=shutil.ignore_patterns("__pycache__"))
        # No build isolation when pyproject's setuptools is at hand: no download, a second
        # instead of ten.
        try:
            from importlib.metadata import version

            recent = int(version("setuptools").split(".")[0]) >= 68
        except Exception:  # noqa: BLE001 - not installed or an odd version: isolate
            recent = False
        isolation = ["--no-build-isolation"] if recent else []
        proc = _pip(sys.executable, "wheel", "-q", "--no-deps", *isolation, "-w", str(dest),
                    str(src))
        if proc.returncode != 0:
            raise RuntimeError(f"building the wheel failed:\n{proc.stderr[-3000:]}")
    return next(dest.glob("xception_trt-*.whl"))


def resolve_jetpack6(wheel: Path, extras: str = "") -> list[dict]:
    """What `pip install` of the wheel (with ``extras``, e.g. ``build``) would install on
    JetPack 6: [{"name", "version", "file"}], from pip's dry-run report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        req = f"{wheel}[{extras}]" if extras else str(wheel)
        proc = _pip(sys.executable, "install", "--dry-run", "--ignore-installed", "-q",
                    "--report", str(report), "--target", str(Path(tmp) / "t"), *JETPACK6, req)
        if proc.returncode != 0:
            raise RuntimeError(f"pip cannot resolve {req} for JetPack 6:\n{proc.stderr[-3000:]}")
        doc = json.loads(report.read_text())
    return [{"name": i["metadata"]["name"], "version": i["metadata"]["version"],
             "file": i["download_info"]["url"].rsplit("/", 1)[-1]} for i in doc["install"]]


def forbidden_on_device(packages: list[dict]) -> list[str]:
    """The packages a Jetson must not get from PyPI: torch, triton, TensorRT and the NVIDIA
    CUDA library wheels (``nvidia-*``: ``-cu12`` / ``-cu13`` or unsuffixed)."""
    def bad(name: str) -> bool:
        n = name.lower().replace("_", "-")
        return (n in {"torch", "triton", "tensorrt", "onnxruntime-gpu"}
                or (n.startswith("nvidia-") and n not in _NOT_CUDA_LIBS))
    return sorted(p["name"] for p in packages if bad(p["name"]))


def make_venv(path: Path, wheel: Path, extras: str = "", *,
              first: tuple[str, ...] = ()) -> tuple[Path, float]:
    """A fresh venv with the wheel (and ``extras``) installed; returns its python and the
    install time in seconds (``first`` is installed before, as README installs torch)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=clean_env())
    python = path / "bin" / "python"
    t0 = time.perf_counter()
    for reqs in ((list(first),) if first else ()) + ([f"{wheel}[{extras}]" if extras
                                                      else str(wheel)],):
        proc = _pip(python, "install", "-q", *reqs, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(reqs)} failed:\n{proc.stderr[-3000:]}")
    return python, time.perf_counter() - t0


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])"], capture_output=True, text=True, check=True,
                         env=clean_env())
    return Path(out.stdout.strip())


def footprint(python: Path) -> dict:
    """Size on disk (MiB) and distribution count of an environment's site-packages."""
    sp = site_packages(python)
    size = sum(f.stat().st_size for f in sp.rglob("*") if f.is_file() and not f.is_symlink())
    dists = [d for d in sp.iterdir() if d.name.endswith(".dist-info")]
    return {"site_packages_mib": round(size / 2**20, 1), "distributions": len(dists)}


def import_ms(python: Path, statement: str, *, runs: int = 7) -> float:
    """Median wall time (ms) of `python -c statement` minus a bare interpreter's start."""
    def median(code: str) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([str(python), "-c", code], check=True, cwd=tempfile.gettempdir(),
                           env=clean_env())
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    return round((median(statement) - median("pass")) * 1000, 1)


def measure(out: Path) -> dict:
    load_before = os.getloadavg()
    result: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before]}
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp) / "dist")
        result["jetpack6"] = {}
        for extras in ("", "build"):
            packages = resolve_jetpack6(wheel, extras)
            result["jetpack6"][extras or "core"] = {
                "packages": len(packages), "forbidden": forbidden_on_device(packages),
                "names": sorted(p["name"] for p in packages)}
        subprocess.run([sys.executable, "-m", "venv", str(Path(tmp) / "bare")], check=True,
                       env=clean_env())
        bare = footprint(Path(tmp) / "bare" / "bin" / "python")
        result["bare_venv"] = {**bare, "note": "what `python -m venv` alone puts in "
                               "site-packages (pip, setuptools); 'added_mib' excludes it"}

        def added(fp: dict) -> dict:
            return {**fp, "added_mib": round(fp["site_packages_mib"]
                                             - bare["site_packages_mib"], 1)}

        core, t_core = make_venv(Path(tmp) / "core", wheel)
        result["core"] = {**added(footprint(core)), "install_s": round(t_core, 1),
                          "runtime_import_ms": import_ms(core, RUNTIME_IMPORT),
                          "runtime_import": RUNTIME_IMPORT}
        shutil.rmtree(Path(tmp) / "core")
        build, t_build = make_venv(Path(tmp) / "build", wheel, "build", first=TORCH_CPU)
        result["build"] = {**added(footprint(build)), "install_s": round(t_build, 1),
                           "note": "the CPU torch installed first, as docs/install.md does"}
        result["dev"] = {**added(footprint(Path(sys.executable))),
                         "note": f"measured as the site-packages of {sys.prefix} (the [dev] "
                                 "venv this script ran in), not a fresh install"}
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


#: The README's CPU torch: the CPU wheel index keeps the ~15 nvidia-* CUDA wheels, cuda-toolkit
#: and triton of PyPI's default (CUDA) Linux build off a CPU machine.
TORCH_CPU = ("torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu")
#: The documented installs: name -> (pip arguments after torch, whether CPU torch comes first,
#: whether it is a CPU-only path that must resolve no CUDA wheel, where it is documented).
INSTALLS: dict[str, tuple[str, bool, bool, str]] = {
    "core": ("", False, True, "docs/install.md: the core (device) install, `pip install .`"),
    "demo": ("demo", True, True, "README: first screen, `pip install -e '.[demo]'`"),
    "build": ("build", True, True, "docs/install.md: the workstation, `pip install -e '.[build]'`"),
    "dev": ("dev", True, False, "README: the test command's `.venv-test`, "
                                "`pip install -e '.[dev]'`"),
}
#: Wheels the [dev] extra asks for on purpose: NVRTC compiles the self-test's stand-in kernel on
#: the CPU (the CUDA-layer tests); cuda-python is the runtime's CUDA binding.
DEV_CUDA_ON_PURPOSE = {"nvidia-cuda-nvrtc", "cuda-python", "cuda-bindings", "cuda-pathfinder",
                       "cuda-core"}


def user_pip_env() -> dict[str, str]:
    """A user's pip: no configuration file, no PIP_* variables (plain PyPI)."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


#: nvidia-* wheels of the documented installs that are no CUDA library, and what they are.
NOT_CUDA: dict[str, str] = {
    "nvidia-modelopt": "NVIDIA Model Optimizer, Python (the INT8/FP16 quantizer of [build])",
    "nvidia-ml-py": "the NVML binding, pure Python (power figures of the [power] extra)",
    "nvidia-pytriton": "PyTriton: a Triton Inference Server build in a wheel, for the local "
                       "server of the [serve] extra; it runs on the CPU here",
}


def cuda_wheels(names: list[str]) -> list[str]:
    """The names that are NVIDIA CUDA libraries, CUDA Python wheels or triton."""
    def bad(name: str) -> bool:
        n = name.lower().replace("_", "-")
        return (n == "triton" or n.startswith("cuda-")
                or (n.startswith("nvidia-") and n not in NOT_CUDA))
    return sorted(n for n in names if bad(n))


def file_size(url: str) -> int | None:
    """Bytes of the file a report's URL names: on disk for file://, else Content-Length."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
        return path.stat().st_size if path.is_file() else None
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the report's URL
            length = resp.headers.get("Content-Length")
    except OSError:
        return None
    return int(length) if length else None


def dry_run(python: Path, args: list[str], env: dict[str, str]) -> list[dict]:
    """``pip install --dry-run --report`` in a venv: [{"name", "version", "file", "url",
    "bytes"}] of what would be downloaded and installed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        proc = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "-q",
                               "--report", str(report), *args], capture_output=True, text=True,
                              timeout=1800, env=env, cwd=tempfile.gettempdir())
        if proc.returncode != 0:
            raise RuntimeError(f"pip cannot resolve {' '.join(args)}:\n{proc.stderr[-3000:]}")
        doc = json.loads(report.read_text())
    out = []
    for item in doc["install"]:
        url = item["download_info"]["url"]
        out.append({"name": item["metadata"]["name"], "version": item["metadata"]["version"],
                    "file": url.rsplit("/", 1)[-1], "url": url,
                    "bytes": None if url.startswith("file:") and "xception_trt" in url
                    else file_size(url)})
    return out


def _summary(packages: list[dict], *, skip: str = "xception-trt") -> dict:
    sized = [p for p in packages if p["name"] != skip]
    known = [p["bytes"] for p in sized if p["bytes"] is not None]
    return {"packages": len(packages),
            "download_mib": round(sum(known) / 2**20, 1),
            "unsized": sorted(p["name"] for p in sized if p["bytes"] is None),
            "largest": [f"{p['name']} {p['version']}: {p['bytes'] / 2**20:.1f} MiB"
                        for p in sorted(sized, key=lambda p: -(p["bytes"] or 0))[:5]
                        if p["bytes"]],
            "cuda_wheels": cuda_wheels([p["name"] for p in packages]),
            "names": sorted(f"{p['name']}=={p['version']}" for p in packages)}


def downloads(out: Path) -> dict:
    """Resolve every documented install as a user's pip does; see the module docstring."""
    load_before = [round(x, 2) for x in os.getloadavg()]
    result: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "python": platform.python_version(), "load_average_before": load_before,
                    "method": "pip install --dry-run --report in scratch venvs; step 1 (CPU "
                              "torch) with this machine's pip configuration, the rest with "
                              "PIP_CONFIG_FILE=/dev/null (plain PyPI); sizes from the files' "
                              "Content-Length (file:// on disk)",
                    "installs": {}}
    user = user_pip_env()
    ok = True
    with tempfile.TemporaryDirectory(prefix="xtrt-downloads-") as tmp:
        wheel = build_wheel(Path(tmp) / "dist")
        # Step 1 of the CPU paths: the CPU torch, as the README runs it.
        cpu = Path(tmp) / "cpu"
        subprocess.run([sys.executable, "-m", "venv", str(cpu)], check=True, env=clean_env())
        torch_pkgs = dry_run(cpu / "bin" / "python", list(TORCH_CPU), clean_env())
        result["torch_cpu"] = {
            "command": "pip install " + " ".join(TORCH_CPU), **_summary(torch_pkgs),
            "torch_file": next(p["file"] for p in torch_pkgs if p["name"] == "torch"),
            "note": "resolved with this machine's pip configuration: download.pytorch.org is "
                    "not reachable here, pip falls back to the same CPU wheel in its "
                    "find-links folder; a user gets it (and its dependencies) from that index"}
        ok &= not result["torch_cpu"]["cuda_wheels"]
        proc = _pip(cpu / "bin" / "python", "install", "-q", *TORCH_CPU, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"installing the CPU torch failed:\n{proc.stderr[-3000:]}")
        bare = Path(tmp) / "bare"
        subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True, env=clean_env())
        for name, (extras, torch_first, cpu_only, where) in INSTALLS.items():
            python = (cpu if torch_first else bare) / "bin" / "python"
            req = f"{wheel}[{extras}]" if extras else str(wheel)
            pkgs = dry_run(python, [req], user)
            entry = {"documented": where, "after_cpu_torch": torch_first, **_summary(pkgs)}
            if torch_first:
                entry["torch_replaced"] = any(p["name"].lower() == "torch" for p in pkgs)
                entry["with_cpu_torch_mib"] = round(
                    entry["download_mib"] + result["torch_cpu"]["download_mib"], 1)
            if cpu_only:
                entry["cpu_only"] = not entry["cuda_wheels"] and not entry.get("torch_replaced")
                ok &= entry["cpu_only"]
            else:
                entry["cuda_on_purpose"] = [n for n in entry["cuda_wheels"]
                                            if n.lower().replace("_", "-") in DEV_CUDA_ON_PURPOSE]
            result["installs"][name] = entry
        # What the README said before: plain PyPI's torch is its CUDA build on Linux x86-64.
        pypi_torch = dry_run(bare / "bin" / "python", ["torch==2.13.0"], user)
        result["torch_from_pypi"] = {"command": "pip install torch==2.13.0 (plain PyPI)",
                                     **_summary(pypi_torch)}
    resolved = {n.split("==")[0].lower().replace("_", "-")
                for e in result["installs"].values() for n in e["names"]}
    result["not_cuda"] = {n: what for n, what in NOT_CUDA.items() if n in resolved}
    result["cpu_paths_ok"] = bool(ok)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc["downloads"] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resolve", help="the JetPack 6 resolution of an install")
    r.add_argument("--extras", default="", help="extras to resolve too, e.g. build")
    r.add_argument("--check", action="store_true",
                   help="exit 1 if torch, triton or an nvidia-* CUDA wheel is resolved")
    r.add_argument("--json", action="store_true", help="print the packages as JSON")
    m = sub.add_parser("measure", help="install sizes and the runtime import time")
    m.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                   / "install_footprint.json")
    d = sub.add_parser("downloads", help="what a user's pip resolves and downloads for each "
                                         "documented install (CPU paths checked)")
    d.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                   / "install_footprint.json")
    args = parser.parse_args(argv)
    if args.cmd == "downloads":
        res = downloads(args.out)
        print(f"CPU torch ({res['torch_cpu']['torch_file']}): "
              f"{res['torch_cpu']['download_mib']} MiB with its dependencies")
        for name, e in res["installs"].items():
            print(f"{name}: {e['packages']} packages, {e['download_mib']} MiB"
                  + (f" (+ CPU torch: {e['with_cpu_torch_mib']} MiB)" if "with_cpu_torch_mib" in e
                     else "") + f"; CUDA wheels: {', '.join(e['cuda_wheels']) or 'none'}")
        t = res["torch_from_pypi"]
        print(f"for contrast, torch from plain PyPI: {t['packages']} packages, "
              f"{t['download_mib']} MiB, CUDA wheels: {len(t['cuda_wheels'])}")
        print(f"CPU paths free of CUDA wheels: {res['cpu_paths_ok']}; wrote {args.out}")
        return 0 if res["cpu_paths_ok"] else 1
    if args.cmd == "resolve":
        with tempfile.TemporaryDirectory() as tmp:
            packages = resolve_jetpack6(build_wheel(Path(tmp)), args.extras)
        bad = forbidden_on_device(packages)
        if args.json:
            print(json.dumps({"packages": packages, "forbidden": bad}, indent=2))
        else:
            what = f"xception-trt[{args.extras}]" if args.extras else "xception-trt"
            print(f"{what} on JetPack 6 (Python 3.10, aarch64): {len(packages)} packages")
            for p in packages:
                print(f"  {p['name']} {p['version']}  ({p['file']})")
            print(f"torch / triton / nvidia-* wheels: {', '.join(bad) or 'none'}")
        return 1 if args.check and bad else 0
    print(json.dumps(measure(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
