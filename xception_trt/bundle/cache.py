"""Opening a bundle: carry out the :mod:`~xception_trt.bundle.choice` in a per-user engine
cache, and hand the caller one model file (an engine with its sidecar, or an ONNX graph) that
:func:`xception_trt.runners.open_runner` opens like any other.

The cache (default ``$XDG_CACHE_HOME/xception-trt/bundles``, else ``~/.cache/...``)::

    prebuilt/<engine sha256[:16]>/<name>.engine(.json)   prebuilt engines, copied out verified
    engines/<flavour>-<version>-<target>-<precision>-b<min>-<opt>-<max>-<onnx sha[:12]>-<key[:12]>/
        model.engine(.json)                              engines built here from the bundled ONNX
    onnx/<sha256[:16]>.<precision>.onnx                  bundled ONNX graphs, copied out verified

A built engine's folder is named by everything that makes it (TensorRT flavour and version,
compute capability or RTX target, precision, batch profile, the ONNX's SHA-256, and the
builder's own cache key over the build options), so a different machine, release or request
never reuses it. Every file lands by atomic rename, and each entry is filled under an
exclusive file lock (``fcntl.flock``): two processes opening the same bundle at once build or
copy it once — the second waits and then finds it — and neither sees a partial file.

Proof level: the ONNX Runtime path and building with TensorRT-RTX ran here (CPU). Loading the
chosen engine goes through ``TensorRTRunner``, and building with NVIDIA TensorRT for the local
GPU through ``build_engine``; both are written to TensorRT's documented API and checked
against its real Python bindings, but are UNVERIFIED on a GPU from a bundle (none here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import BuildConfig, Precision
from ..errors import BundleError, EngineError, XceptionTRTError, renamed
from ..fsio import check_writable_dir, sha256_file
from ..onnx_meta import OnnxSource
from ..sidecar import read_sidecar, sidecar_path
from .choice import BuildTarget, Choice, ChoiceKind, Request, choose
from .facts import DeviceFacts, probe_facts
from .format import Bundle

__all__ = ["Resolution", "default_cache_dir", "resolve", "build_key", "engine_folder",
           "prebuilt_engine", "bundle_graph"]

log = logging.getLogger(__name__)

#: Bundles whose ONNX Runtime fallback was already announced in this process ("said once").
_ANNOUNCED: set[str] = set()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/xception-trt/bundles`` (XDG base-directory spec), else
    ``~/.cache/xception-trt/bundles``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xception-trt" / "bundles"


@dataclass(frozen=True)
class Resolution:
    """What opening a bundle resolved to.

    Attributes:
        path: The model file to open: an engine (sidecar next to it) or an ONNX graph.
        choice: The decision (:func:`~xception_trt.bundle.choice.choose`).
        built: An engine was built by this call.
        cache_hit: The file was already in the cache (nothing copied or built).
        seconds: Wall time of this call.
    """

    path: Path
    choice: Choice
    built: bool
    cache_hit: bool
    seconds: float

    @property
    def kind(self) -> ChoiceKind:
        return self.choice.kind


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "x"


def _build_config(target: BuildTarget, precision: Precision) -> BuildConfig:
    lo, opt, hi = target.profile
    return BuildConfig(precision=precision, flavour=target.flavour, min_batch=lo, opt_batch=opt,
                       max_batch=hi, cc=target.targets or ())


def build_key(target: BuildTarget, precision: Precision, onnx_sha256: str) -> str:
    """The builder's cache key for this build (the key ``build_engine`` records in the sidecar:
    ONNX hash, options, flavour, version, device or targets)."""
    from ..trt.compat import engine_cache_key

    options = _build_config(target, precision).to_dict()
    options["precision"] = precision.value
    device = None if target.targets else {"name": target.gpu.name,
                                          "compute_capability": target.gpu.compute_capability}
    return engine_cache_key(onnx_sha256=onnx_sha256, options=options,
                            flavour_name=target.flavour, version=target.version, device=device,
                            targets=list(target.targets) if target.targets else None)


def engine_folder(target: BuildTarget, precision: Precision, onnx_sha256: str) -> str:
    """The cache folder name of an engine built here (readable, and unique by its key)."""
    where = ",".join(target.targets) if target.targets else target.gpu.sm
    lo, opt, hi = target.profile
    return _slug(f"{target.flavour}-{target.version}-{where}-{precision.value}-b{lo}-{opt}-{hi}"
                 f"-{onnx_sha256[:12]}-{build_key(target, precision, onnx_sha256)[:12]}")


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on ``lock_path`` (created if needed) for the duration."""
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames still keep files whole; a build may repeat
        yield
        return
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _valid_engine(engine: Path, *, key: str | None = None, sha256: str | None = None) -> bool:
    if not (engine.is_file() and sidecar_path(engine).is_file()):
        return False
    try:
        side = read_sidecar(engine, verify=True)
    except EngineError as exc:
        log.info("replacing the cached engine %s: %s", engine, exc)
        return False
    return (key is None or side.cache_key == key) and (sha256 is None
                                                        or side.engine.sha256 == sha256)


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        check_writable_dir(root, what="engine cache", error=BundleError)
        for sub in ("prebuilt", "engines", "onnx"):
            (root / sub).mkdir(exist_ok=True)
    except (BundleError, OSError) as exc:
        raise BundleError(f"{exc}".rstrip(".") + "; the bundle needs a writable engine cache: "
                          "set XDG_CACHE_HOME to a writable folder (Python: pass cache_dir=)"
                          ) from None
    if not os.access(root / "engines", os.W_OK | os.X_OK):
        raise BundleError(f"engine cache {root} is not writable; set XDG_CACHE_HOME to a "
                          "writable folder (Python: pass cache_dir=)")
    return root


def _inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves inside the cache ``root`` (a folder in the cache replaced by a
    symbolic link to elsewhere is refused: nothing is written outside the cache).

    Raises:
        BundleError: It resolves outside.
    """
    real_root, real = root.resolve(), path.resolve()
    if real != real_root and real_root not in real.parents:
        raise BundleError(f"engine cache {root}: {path} leads outside the cache (to {real}); "
                          "remove the link, or set XDG_CACHE_HOME to another folder (Python: "
                          "pass cache_dir=)")
    return path


def _onnx_file(bundle: Bundle, precision: Precision, root: Path,
               member: str | None = None) -> tuple[Path, bool]:
    member = member or bundle.manifest.variant(precision).member
    # the member is verified before any file is named after it or written for it; a warm
    # cache does not excuse a tampered bundle (README: a tampered bundle is an error)
    sha = bundle.check(member).sha256
    bundle.check_graph(member, precision)  # the graph the manifest says, not just any bytes
    dest = _inside(root, root / "onnx" / f"{sha[:16]}.{precision.value}.onnx")
    with _locked(_inside(root, dest.with_name(dest.name + ".lock"))):
        if dest.is_file() and sha256_file(dest) == sha:
            return dest, True
        bundle.extract(member, dest)
    return dest, False


def _prebuilt(bundle: Bundle, choice: Choice, root: Path) -> tuple[Path, bool]:
    entry = choice.engine
    if entry is None:
        raise BundleError("internal: a prebuilt choice without an engine; report this")
    sha = bundle.check(entry.member).sha256  # verified before anything is written for it
    bundle.check(entry.sidecar_member)
    # sha: 64 hex digits and the member name a normalised relative path (both checked when
    # the manifest was parsed), so neither can lead out of the cache
    folder = _inside(root, root / "prebuilt" / sha[:16])
    folder.mkdir(exist_ok=True)
    dest = _inside(root, folder / Path(entry.member).name)
    with _locked(_inside(root, folder.with_name(folder.name + ".lock"))):
        if _valid_engine(dest, sha256=sha):
            return dest, True
        side = sidecar_path(dest)
        with contextlib.suppress(FileNotFoundError):
            side.unlink()  # never a new plan next to an old sidecar
        bundle.extract(entry.member, dest)
        bundle.extract(entry.sidecar_member, side)
    return dest, False


def _built(bundle: Bundle, choice: Choice, root: Path) -> tuple[Path, bool]:
    from ..trt.builder import build_engine

    target = choice.build
    if target is None:
        raise BundleError("internal: a build choice without a target; report this")
    member = bundle.manifest.variant(target.onnx_precision).member
    # verified before a folder is named after its hash (and before a cached engine built
    # from it is reused: a tampered bundle is an error, warm cache or not)
    onnx_sha = bundle.check(member).sha256
    bundle.check_graph(member, target.onnx_precision)
    key = build_key(target, choice.precision, onnx_sha)
    folder = _inside(root, root / "engines" / engine_folder(target, choice.precision, onnx_sha))
    folder.mkdir(exist_ok=True)
    engine = folder / "model.engine"
    with _locked(_inside(root, folder.with_name(folder.name + ".lock"))):
        if _valid_engine(engine, key=key):
            log.info("using the engine built earlier from %s: %s", bundle.path.name, engine)
            return engine, True
        log.warning("building a %s engine from %s: %s", choice.precision.value,
                    bundle.path.name, choice.reason)
        onnx_path, _ = _onnx_file(bundle, target.onnx_precision, root)
        # hashed again as it is read for the build (the cache's copy was verified under its
        # own lock, released since): the engine is built from exactly the bundle's graph
        source = OnnxSource.read(onnx_path)
        if source.sha256 != onnx_sha:
            raise BundleError(f"the cached copy {onnx_path} of {member} changed while it was "
                              "used; run the command again (it is extracted afresh)")
        art = build_engine(source, _build_config(target, choice.precision), output=engine,
                           device=target.gpu.index)
        if art.sidecar.cache_key != key:  # the folder name must describe what is in it
            raise BundleError(f"the engine built in {folder} has cache key "
                              f"{art.sidecar.cache_key[:12]}, expected {key[:12]}; report this")
    return engine, False


def resolve(bundle_path: str | os.PathLike[str], *, precision: Precision | str | None = None,
            device: int = 0, max_batch: int | None = None, flavour: str | None = None,
            build: bool = True, onnxruntime: bool = True,
            cache_dir: str | os.PathLike[str] | None = None,
            facts: DeviceFacts | None = None, backend: str | None = None,
            tensorrt: bool = True, dla_core: int | None = None,
            engine: str | None = None) -> Resolution:
    """Choose how a bundle runs here and make that model file ready in the engine cache.

    Args:
        bundle_path: The ``.xtrt`` file.
        precision: Precision to run (``None``: the bundle's default, the first it was made
            with).
        device: CUDA ordinal of the GPU.
        max_batch: Largest batch needed (``None``: the bundle's batch profile).
        flavour: Only this TensorRT flavour (``tensorrt`` or ``tensorrt_rtx``).
        build: Allow building an engine from the bundled ONNX.
        onnxruntime: Allow ONNX Runtime on the bundled ONNX when no engine can run.
        cache_dir: The engine cache (default :func:`default_cache_dir`).
        facts: The machine (default: probed; recorded facts stand in for another machine).
        backend: Old name of ``flavour`` (deprecated).
        tensorrt: Allow a TensorRT engine; ``False``: ONNX Runtime runs the bundled ONNX even
            where an engine could.
        dla_core: Only a prebuilt engine built for this DLA core (``None``: any).
        engine: Only this prebuilt engine member (``None``: any; a tuned choice's engine).

    Returns:
        A :class:`Resolution`.

    Raises:
        BundleError: Unreadable/tampered/newer bundle, a precision it lacks, nothing here can
            run it, or an unwritable cache.
        BuildError: Building the engine failed.
    """
    flavour = renamed("backend", "flavour", backend, flavour, where="resolve")
    t0 = time.perf_counter()
    with Bundle(bundle_path) as bundle:
        manifest = bundle.manifest
        prec = Precision.parse(precision) if precision is not None else manifest.precisions[0]
        facts = facts if facts is not None else probe_facts()
        choice = choose(manifest, facts, Request(prec, device=device, max_batch=max_batch,
                                                 flavour=flavour, build=build,
                                                 onnxruntime=onnxruntime, tensorrt=tensorrt,
                                                 dla_core=dla_core, engine=engine))
        for r in choice.rejected:
            log.info("%s: not using %s: %s", bundle.path.name, r.what, r.why)
        if choice.kind is ChoiceKind.NONE:
            raise BundleError(f"{bundle.path}: {choice.reason}; install NVIDIA TensorRT or "
                              "TensorRT-RTX with a matching GPU, or ONNX Runtime for the CPU "
                              "(pip install 'xception-trt[ort]')")
        root = _cache_root(cache_dir)
        try:
            if choice.kind is ChoiceKind.PREBUILT:
                path, hit = _prebuilt(bundle, choice, root)
            elif choice.kind is ChoiceKind.BUILD:
                path, hit = _built(bundle, choice, root)
            else:
                path, hit = _onnx_file(bundle, prec, root,
                                       choice.variant.member if choice.variant else None)
                # a fallback is announced; ONNX Runtime asked for (tensorrt=False) is not one
                if tensorrt and str(bundle.path.resolve()) not in _ANNOUNCED:
                    _ANNOUNCED.add(str(bundle.path.resolve()))
                    log.warning("%s: %s", bundle.path.name, choice.reason)
        except XceptionTRTError:
            raise
        except OSError as exc:
            raise BundleError(f"engine cache {root} cannot be written ({exc.strerror or exc}); "
                              "set XDG_CACHE_HOME to a writable folder (Python: pass cache_dir=)"
                              ) from None
    log.info("%s -> %s (%s)", bundle.path.name, path, choice.reason)
    return Resolution(path, choice, built=choice.kind is ChoiceKind.BUILD and not hit,
                      cache_hit=hit, seconds=time.perf_counter() - t0)


def prebuilt_engine(bundle_path: str | os.PathLike[str], member: str, *,
                    cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """One named prebuilt engine of a bundle, copied out verified into the engine cache (as
    :func:`resolve` copies the one it chooses): for a caller that must run a particular engine
    (``tune`` times a bundle's DLA engine beside its GPU engine of the same precision).

    Raises:
        BundleError: Unreadable/tampered bundle, no such engine, or an unwritable cache.
    """
    with Bundle(bundle_path) as bundle:
        entry = next((e for e in bundle.manifest.engines if e.member == member), None)
        if entry is None:
            raise BundleError(f"{bundle.path} has no prebuilt engine {member}")
        root = _cache_root(cache_dir)
        choice = Choice(ChoiceKind.PREBUILT, entry.precision, engine=entry)
        try:
            path, _ = _prebuilt(bundle, choice, root)
        except OSError as exc:
            raise BundleError(f"engine cache {root} cannot be written ({exc.strerror or exc}); "
                              "set XDG_CACHE_HOME to a writable folder (Python: pass cache_dir=)"
                              ) from None
    return path


def bundle_graph(bundle_path: str | os.PathLike[str], member: str, *,
                 cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """One ONNX variant of a bundle (``onnx/int8-ort.onnx`` ...), copied out verified into the
    engine cache (as :func:`resolve` copies the graph ONNX Runtime runs), with its graph
    checked to be the precision the manifest lists it under: for a caller that runs a named
    graph with ONNX Runtime whatever engine this machine could use (``tune``).

    Raises:
        BundleError: Unreadable/tampered bundle, no such variant member, or an unwritable cache.
    """
    with Bundle(bundle_path) as bundle:
        prec = next((p for p, v in bundle.manifest.variants.items()
                     if member in (v.member, v.onnxruntime_member)), None)
        if prec is None:
            raise BundleError(f"{bundle.path} has no ONNX variant {member}")
        root = _cache_root(cache_dir)
        try:
            path, _ = _onnx_file(bundle, prec, root, member)
        except OSError as exc:
            raise BundleError(f"engine cache {root} cannot be written ({exc.strerror or exc}); "
                              "set XDG_CACHE_HOME to a writable folder (Python: pass cache_dir=)"
                              ) from None
    return path
