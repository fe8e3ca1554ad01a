"""The bundle file format (``.xtrt``): a zip archive with a JSON manifest, and its reader.

Why zip and not tar: a zip has a central directory, so the reader opens the one engine (or
ONNX graph) it needs without reading the others — a tar must be scanned from the start —
and every member carries a CRC besides the SHA-256 the manifest records. ONNX graphs are
*stored* (no compression: weights barely compress, and stored members can be copied out at
disk speed); an engine is deflated when that shrinks it by a tenth or more (a TensorRT-RTX plan
carries the CUDA source of the kernels it generates, which deflates several times; weights do
not), else stored; JSON members are deflated.

Layout (format version :data:`FORMAT_VERSION`)::

    manifest.json                    this module's Manifest (first member)
    onnx/fp32.onnx, onnx/fp16.onnx, onnx/int8.onnx
    onnx/int8-ort.onnx               INT8 placed for ONNX Runtime (the CPU path runs it)
    calibration/int8-scales.json     per-tensor INT8 scales of the Q/DQ graph (+ recipe)
    labels.txt                       class names, one per line, logit order
    engines/<name>.engine            prebuilt engines ...
    engines/<name>.engine.json       ... with their sidecars (xception_trt.sidecar)

``manifest.json`` holds: ``format`` (``xception-trt-bundle``), ``format_version``,
``xception_trt_version``, ``created``, ``model_spec``, ``input_format``, ``preprocessing``,
``source`` (``{"name", "sha256"}``), ``batch_profile`` (``[min, opt, max]``), ``variants``
(precision -> ``{"member", "accuracy"}``; ``accuracy`` against FP32 when made with ``--val``;
INT8 also ``onnxruntime_member``/``onnxruntime_accuracy``: the graph placed for ONNX Runtime),
``calibration`` (``{"member", ...}`` or ``None``), ``engines`` (``[{"member", "sidecar"}]``),
``members`` (name -> ``{"sha256", "bytes"}``: every other member), ``bundle_command`` and
``default_precision`` (what opening it runs unless told).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import MAX_BATCH, InputFormat, ModelSpec, Precision
from ..errors import BundleError, ConfigError, EngineError, GraphError
from ..fsio import atomic_path
from ..jsonable import JsonMixin, json_field
from ..sidecar import EngineSidecar

if TYPE_CHECKING:
    from ..onnx_meta import OnnxMeta

__all__ = ["BUNDLE_SUFFIXES", "FORMAT", "FORMAT_VERSION", "MANIFEST", "Member", "VariantEntry",
           "EngineEntry", "Manifest", "Bundle", "is_bundle"]

#: File suffixes of a bundle.
BUNDLE_SUFFIXES = (".xtrt",)
#: The ``format`` value of every manifest.
FORMAT = "xception-trt-bundle"
#: Version of the layout this package writes and reads (a newer one is refused).
FORMAT_VERSION = 1
#: The manifest's member name.
MANIFEST = "manifest.json"
#: Largest ``manifest.json`` read (bytes): a real one is a few KiB; a zip bomb is refused
#: before it is inflated.
MAX_MANIFEST_BYTES = 16 << 20
#: Largest member read into memory whole (sidecars, scales): graphs and engines are streamed.
MAX_READ_BYTES = 64 << 20
#: Chunk size of every member read (hashing, copying): memory stays bounded whatever a member's
#: size.
CHUNK_BYTES = 1 << 20
#: Compression methods the bundle writer uses: anything else (or an encrypted member) is refused
#: before zipfile is asked to inflate it.
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a bundle (by suffix)."""
    return Path(path).suffix.lower() in BUNDLE_SUFFIXES


@dataclass(frozen=True)
class Member(JsonMixin):
    """One archive member: name, SHA-256 and size in bytes."""

    name: str = json_field(skip=True)  # the key of the manifest's "members" object
    sha256: str = json_field()
    bytes: int = json_field()


@dataclass(frozen=True)
class VariantEntry(JsonMixin):
    """An ONNX variant: precision, member name and accuracy against FP32 (``None`` without
    validation images); for INT8 also the same precision placed for ONNX Runtime (``quantize
    --placement onnxruntime``: every Conv/Gemm fused into its quantized CPU kernels), which the
    ONNX Runtime path runs instead of the TensorRT-placed graph."""

    precision: Precision = json_field(skip=True)  # the key of the manifest's "variants"
    member: str = json_field()
    accuracy: Mapping[str, Any] | None = None
    onnxruntime_member: str | None = None
    onnxruntime_accuracy: Mapping[str, Any] | None = None

    def for_onnxruntime(self) -> VariantEntry:
        """The entry ONNX Runtime should run: the ONNX Runtime-placed graph where there is
        one, else this one."""
        if self.onnxruntime_member is None:
            return self
        return VariantEntry(self.precision, self.onnxruntime_member, self.onnxruntime_accuracy)

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        if self.onnxruntime_member is None:  # optional: older readers ignore the keys
            del out["onnxruntime_member"], out["onnxruntime_accuracy"]
        return out


@dataclass(frozen=True)
class EngineEntry(JsonMixin):
    """A prebuilt engine: its member, its sidecar's member and the parsed sidecar."""

    member: str
    sidecar_member: str = json_field(key="sidecar")
    sidecar: EngineSidecar = json_field(skip=True)  # a member of its own

    @property
    def precision(self) -> Precision:
        return self.sidecar.precision

    def describe(self) -> str:
        """``fp16 tensorrt_rtx 1.7.1.116 SM86`` (what the engine is, for messages)."""
        s = self.sidecar
        where = (",".join(s.targets) if s.targets
                 else f"sm_{s.device.compute_capability.replace('.', '')}" if s.device
                 else "default targets")
        if s.option("hardware_compatible"):
            where = "Ampere+ (hardware-compatible)"
        return f"{s.precision.value} {s.flavour} {s.tensorrt.version} {where}"


@dataclass(frozen=True)
class Manifest(JsonMixin):
    """What a bundle holds (see the module docstring for the JSON).

    Attributes:
        model_spec: The model's :class:`ModelSpec` (labels and preprocessing included).
        input_format: The graphs' input format.
        variants: Precision -> :class:`VariantEntry`.
        engines: The prebuilt engines.
        members: Every member but the manifest, with its SHA-256.
        batch_profile: The ``(min, opt, max)`` batch profile engines are built with.
        calibration: The INT8 calibration record (``member`` of the scales and the recipe).
        source: The checkpoint or ONNX the bundle was made from (``name``, ``sha256``).
        bundle_command: The command that made it.
        default_precision: What opening it runs when no precision is asked (``None``: the
            first variant).
    """

    model_spec: ModelSpec
    input_format: InputFormat
    variants: Mapping[Precision, VariantEntry]
    engines: tuple[EngineEntry, ...]
    members: Mapping[str, Member]
    batch_profile: tuple[int, int, int] = (1, 8, 8)
    calibration: Mapping[str, Any] | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    bundle_command: str = ""
    default_precision: Precision | None = None
    format_version: int = FORMAT_VERSION
    xception_trt_version: str = ""
    created: str = ""

    @property
    def precisions(self) -> tuple[Precision, ...]:
        """The precisions the bundle has an ONNX variant of, the default first."""
        first = self.default_precision if self.default_precision in self.variants else None
        return tuple(dict.fromkeys([p for p in (first,) if p is not None] + list(self.variants)))

    def variant(self, precision: Precision | str) -> VariantEntry:
        """The ONNX variant of ``precision``.

        Raises:
            BundleError: The bundle has no such variant (message lists those it has).
        """
        prec = Precision.parse(precision)
        if prec not in self.variants:
            raise BundleError(f"the bundle has no {prec.value} variant (it has "
                              f"{', '.join(p.value for p in self.variants)}); open it with one "
                              f"of those, or make a bundle with --precision {prec.value}")
        return self.variants[prec]

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing the graphs expect (from the ModelSpec)."""
        spec = self.model_spec.to_dict()
        keys = ("input_size", "in_chans", "mean", "std", "crop_pct", "interpolation")
        return {"input_format": self.input_format.value, **{k: spec[k] for k in keys}}

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        # written key-sorted (manifest.json): the computed keys need no place of their own
        return out | {
            "format": FORMAT, "preprocessing": self.preprocessing(),
            "members": dict(sorted(out["members"].items())),
            "default_precision": self.precisions[0].value if self.variants else None}

    @classmethod
    def from_dict(cls, data: Any, *, sidecars: Mapping[str, bytes], where: str) -> Manifest:
        """Parse a manifest; ``sidecars`` maps each engine's sidecar member to its bytes.

        Raises:
            BundleError: Not a bundle manifest, a newer format version, or invalid fields.
        """
        _check_header(data, where)
        version = data["format_version"]
        members = _check_members(data, where)
        try:
            variants = {Precision.parse(p): VariantEntry(
                Precision.parse(p), str(v["member"]), v.get("accuracy"),
                str(v["onnxruntime_member"]) if v.get("onnxruntime_member") else None,
                v.get("onnxruntime_accuracy"))
                for p, v in data["variants"].items()}
            engines = []
            for e in data.get("engines") or ():
                side = str(e["sidecar"])
                text = sidecars[side].decode("utf-8")
                engines.append(EngineEntry(str(e["member"]), side, EngineSidecar.from_json(
                    text, where=f"{where}: {side}")))
            lo, opt, hi = _check_profile(data["batch_profile"], where)
            manifest = cls(
                model_spec=ModelSpec.from_dict(data["model_spec"]),
                input_format=InputFormat.parse(data["input_format"]),
                variants=variants, engines=tuple(engines), members=members,
                batch_profile=(lo, opt, hi), calibration=data.get("calibration"),
                source=dict(data.get("source") or {}),
                bundle_command=str(data.get("bundle_command") or ""),
                default_precision=(Precision.parse(data["default_precision"])
                                   if data.get("default_precision") else None),
                format_version=version,
                xception_trt_version=str(data.get("xception_trt_version") or ""),
                created=str(data.get("created") or ""))
        except BundleError:
            raise  # a field check's own message, which names the bundle already
        except EngineError as exc:  # a sidecar's
            raise BundleError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, ConfigError,
                UnicodeDecodeError) as exc:
            raise BundleError(f"{where} has an invalid manifest ({type(exc).__name__}: {exc}); "
                              "remake the bundle with `xception-trt bundle`") from None
        if not variants:
            raise BundleError(f"{where} has no ONNX variant (\"variants\" is empty); remake "
                              "the bundle with `xception-trt bundle`")
        for name in [m for v in variants.values()
                     for m in (v.member, v.onnxruntime_member) if m is not None] + [
                n for e in engines for n in (e.member, e.sidecar_member)]:
            if name not in members:
                raise BundleError(f"{where}: the manifest names {name} but records no hash for "
                                  "it; remake the bundle")
        return manifest


_REMAKE = "copy the bundle again or remake it with `xception-trt bundle`"


def check_sha256(value: Any, what: str) -> str:
    """``value`` if it is a SHA-256 as the manifest writes it: 64 lowercase hex digits.

    A hash names cache folders, so nothing else may pass (no ``/``, ``..`` or absolute path).

    Raises:
        BundleError: Anything else.
    """
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        raise BundleError(f"{what} has an invalid SHA-256 {str(value)[:80]!r} (64 lowercase "
                          f"hex digits expected); {_REMAKE}")
    return value


def check_member_name(value: Any, what: str) -> str:
    """``value`` if it is a member name as the bundle writer makes it: a relative, normalised
    POSIX path (``onnx/fp32.onnx``) without ``..``, ``.``, empty parts, backslashes or
    control characters, and not the manifest itself.

    Raises:
        BundleError: Anything else.
    """
    ok = (isinstance(value, str) and 0 < len(value) <= 255 and value != MANIFEST
          and not value.startswith("/") and posixpath.normpath(value) == value
          and ".." not in value.split("/") and "\\" not in value and ":" not in value
          and value.isprintable())
    if not ok:
        raise BundleError(f"{what} names an invalid member {str(value)[:80]!r} (a relative "
                          f"path inside the bundle, without '..', expected); {_REMAKE}")
    return value


def _check_size(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 48:
        raise BundleError(f"{what} has an invalid size {str(value)[:40]!r} (a byte count "
                          f"expected); {_REMAKE}")
    return value


def _check_members(data: Any, where: str) -> dict[str, Member]:
    """The manifest's ``members`` object, every name, hash and size validated.

    Raises:
        BundleError: Not an object of ``{"sha256", "bytes"}`` objects, or a field invalid.
    """
    members = data.get("members") if isinstance(data, Mapping) else None
    if not isinstance(members, Mapping) or not all(isinstance(m, Mapping)
                                                   for m in members.values()):
        raise BundleError(f"bundle {where} has no valid member list; {_REMAKE}")
    out = {}
    for name, m in members.items():
        what = f"bundle {where}: member {str(name)[:80]!r}"
        name = check_member_name(name, f"bundle {where}: the manifest")
        out[name] = Member(name, check_sha256(m.get("sha256"), what),
                           _check_size(m.get("bytes"), what))
    return out


def _check_profile(value: Any, where: str) -> tuple[int, int, int]:
    """The manifest's ``batch_profile``: three integers ``1 <= min <= opt <= max <=
    MAX_BATCH`` (a batch of 1e30 reached TensorRT as a TypeError).

    Raises:
        BundleError: Anything else.
    """
    ok = (isinstance(value, list) and len(value) == 3
          and all(isinstance(b, int) and not isinstance(b, bool) for b in value)
          and 1 <= value[0] <= value[1] <= value[2] <= MAX_BATCH)
    if not ok:
        raise BundleError(f"{where} has an invalid batch_profile {str(value)[:80]} (three "
                          f"integers 1 <= min <= opt <= max <= {MAX_BATCH} expected); remake "
                          "the bundle with `xception-trt bundle`")
    return value[0], value[1], value[2]


def _check_header(data: Any, where: str) -> None:
    """Refuse what is not a bundle manifest, or one of a newer format version.

    Raises:
        BundleError: Not a manifest, no valid ``format_version``, or a newer one.
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise BundleError(f"{where} is not an xception-trt bundle (no {FORMAT} manifest); "
                          "make one with `xception-trt bundle`")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{where} has no valid format_version; remake the bundle")
    if version > FORMAT_VERSION:
        raise BundleError(f"{where} is a bundle of format version {version}, newer than this "
                          f"xception-trt reads ({FORMAT_VERSION}); upgrade: pip install -U "
                          "xception-trt")


class Bundle:
    """An open bundle: its manifest and verified access to its members.

    Everything in a bundle is untrusted input. Opening one refuses, before any member is
    inflated: duplicate member names, encrypted members or compression methods the writer does
    not use, an oversized manifest, manifest fields that could reach a path (hashes must be 64
    lowercase hex digits, member names relative and normalised), and members whose size differs
    from the manifest's ``bytes``. Every member read is then hashed in chunks and checked
    against the manifest's SHA-256 before any of it is used or written anywhere.

    Args:
        path: The ``.xtrt`` file.

    Raises:
        BundleError: Missing, truncated or not a zip, no/invalid/newer manifest, a member the
            manifest names but the archive lacks, or a sidecar that does not match its hash.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise BundleError(f"bundle {where} does not exist")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BundleError(f"bundle {where} is not a readable bundle ({exc}; truncated or "
                              f"not made by xception-trt); {_REMAKE}") from None
        try:
            self._infos = self._check_archive()
            if MANIFEST not in self._infos:
                raise BundleError(f"bundle {where} has no {MANIFEST}; {_REMAKE}")
            if self._infos[MANIFEST].file_size > MAX_MANIFEST_BYTES:
                raise BundleError(f"bundle {where}: {MANIFEST} inflates to "
                                  f"{self._infos[MANIFEST].file_size} bytes (at most "
                                  f"{MAX_MANIFEST_BYTES}); {_REMAKE}")
            try:
                raw = self._read_raw(MANIFEST, MAX_MANIFEST_BYTES)
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                text = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise BundleError(f"bundle {where}: {MANIFEST} is unreadable ({text}); "
                                  f"{_REMAKE}") from None
            _check_header(data, where)  # a newer layout is named as such, before anything
            members = _check_members(data, where)
            missing = sorted(n for n in members if n not in self._infos)
            if missing:
                raise BundleError(f"bundle {where} lacks member(s) {', '.join(missing)} that its "
                                  f"manifest lists; {_REMAKE}")
            for m in members.values():  # a zip bomb is refused before it is inflated
                if self._infos[m.name].file_size != m.bytes:
                    raise BundleError(
                        f"bundle {where}: member {m.name} is {self._infos[m.name].file_size} "
                        f"bytes but its manifest says {m.bytes} (tampered with or corrupted); "
                        f"{_REMAKE}")
            self._members = members
            #: SHA-256 of ``manifest.json``: the bundle's identity (the manifest records every
            #: other member's SHA-256 and when it was made, so a re-bundled or changed bundle
            #: has another digest; each member is checked against it when read).
            self.digest = hashlib.sha256(raw).hexdigest()
            sidecars = {}
            for entry in data.get("engines") or ():
                side = entry.get("sidecar") if isinstance(entry, Mapping) else None
                if isinstance(side, str) and side in members:
                    sidecars[side] = self._read_member(members[side])
            self.manifest = Manifest.from_dict(data, sidecars=sidecars, where=where)
        except BaseException:
            self._zip.close()
            raise

    # -- members -------------------------------------------------------------------------

    def _check_archive(self) -> dict[str, zipfile.ZipInfo]:
        """The archive's members by name; refuses duplicates, encryption and unknown
        compression (zipfile would read the last duplicate while ``unzip`` shows the first,
        and raise ``NotImplementedError``/``RuntimeError`` on the others)."""
        infos: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename
            if name in infos:
                raise BundleError(f"bundle {self.path} holds member {name[:80]!r} twice "
                                  f"(tampered with or corrupted); {_REMAKE}")
            if info.flag_bits & 0x1:
                raise BundleError(f"bundle {self.path}: member {name[:80]!r} is encrypted "
                                  f"(xception-trt never encrypts members); {_REMAKE}")
            if info.compress_type not in _COMPRESSIONS:
                raise BundleError(f"bundle {self.path}: member {name[:80]!r} uses compression "
                                  f"method {info.compress_type} (xception-trt writes stored or "
                                  f"deflated members only); {_REMAKE}")
            infos[name] = info
        return infos

    def _chunks(self, name: str, limit: int) -> Iterator[bytes]:
        """A member's bytes in chunks; refuses more than ``limit`` bytes (whatever the zip's
        own size field says)."""
        seen = 0
        try:
            with self._zip.open(self._infos[name]) as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    seen += len(chunk)
                    if seen > limit:
                        raise BundleError(f"bundle {self.path}: member {name} holds more than "
                                          f"the {limit} bytes recorded for it (tampered with "
                                          f"or corrupted); {_REMAKE}")
                    yield chunk
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError,
                NotImplementedError, RuntimeError, zlib.error) as exc:
            raise BundleError(f"bundle {self.path}: member {name} is unreadable ({exc}; "
                              f"truncated?); {_REMAKE}") from None

    def _read_raw(self, name: str, limit: int) -> bytes:
        return b"".join(self._chunks(name, limit))

    def _hash_member(self, member: Member, sink: Callable[[bytes], Any] | None = None) -> None:
        """Hash ``member`` in chunks (each also handed to ``sink``) and compare size and hash
        with the manifest's."""
        digest, size = hashlib.sha256(), 0
        for chunk in self._chunks(member.name, member.bytes):
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink(chunk)
        if size != member.bytes or digest.hexdigest() != member.sha256:
            raise BundleError(f"bundle {self.path}: member {member.name} does not match the "
                              f"SHA-256 in its manifest (tampered with or corrupted); {_REMAKE}")

    def _read_member(self, member: Member) -> bytes:
        if member.bytes > MAX_READ_BYTES:
            raise BundleError(f"bundle {self.path}: member {member.name} is {member.bytes} "
                              f"bytes, more than is read into memory ({MAX_READ_BYTES}); "
                              f"{_REMAKE}")
        parts: list[bytes] = []
        self._hash_member(member, parts.append)
        return b"".join(parts)

    def member(self, name: str) -> Member:
        """The manifest's record of one member.

        Raises:
            BundleError: The manifest lists no such member.
        """
        try:
            return self._members[name]
        except KeyError:
            raise BundleError(f"bundle {self.path} has no member {name}; {_REMAKE}") from None

    def read(self, name: str) -> bytes:
        """A small member's bytes (at most :data:`MAX_READ_BYTES`), verified against the
        manifest's SHA-256.

        Raises:
            BundleError: Unknown, unreadable, oversized or mismatching member.
        """
        return self._read_member(self.member(name))

    def check(self, name: str) -> Member:
        """Verify one member (size, then SHA-256 in chunks) without writing anything.

        Raises:
            BundleError: Unknown, unreadable or mismatching member.
        """
        member = self.member(name)
        self._hash_member(member)
        return member

    def check_graph(self, name: str, precision: Precision) -> OnnxMeta:
        """The xception-trt metadata of ONNX member ``name``, which must be a graph of
        ``precision`` and of the manifest's input format (read from the graph's top-level
        fields in chunks, without parsing or holding the graph).

        A hash only says the member is what the bundle's maker put there: this says it is what
        the manifest claims (a hash-consistent bundle whose ``int8-ort.onnx`` was the FP32 graph
        ran FP32 as "int8"; an empty or garbage member was reported as runnable by ``doctor``).

        Raises:
            BundleError: Not an ONNX model of ours, or another precision or input format.
        """
        from ..onnx_meta import read_stream_metadata

        info = self._infos[self.member(name).name]
        what = f"bundle {self.path}: member {name}"
        try:
            with self._zip.open(info) as fh:
                meta = read_stream_metadata(fh, info.file_size, name=what)
        except GraphError as exc:
            raise BundleError(f"{exc}; {_REMAKE}") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
            raise BundleError(f"{what} is unreadable ({exc}; truncated?); {_REMAKE}") from None
        if meta.precision is not precision:
            raise BundleError(f"{what} is listed as the {precision.value} variant but its graph "
                              f"is {meta.precision.value} (mislabelled or tampered with); "
                              f"{_REMAKE}")
        if meta.input_format is not self.manifest.input_format:
            raise BundleError(f"{what} takes {meta.input_format.value} input but the manifest "
                              f"says {self.manifest.input_format.value}; {_REMAKE}")
        return meta

    def extract(self, name: str, dest: str | os.PathLike[str]) -> Path:
        """Write a verified member to ``dest`` atomically (nothing partial is ever there).

        The member is verified first, without writing; it is then copied in chunks and
        verified again as it is copied, and renamed onto ``dest`` only if it matched.

        Raises:
            BundleError: Unknown, unreadable or mismatching member, or ``dest`` cannot be
                written (message names the folder).
        """
        member = self.check(name)
        with atomic_path(dest, error=BundleError) as tmp, open(tmp, "wb") as fh:
            self._hash_member(member, fh.write)
        return Path(dest)

    def verify(self) -> list[str]:
        """Check every member against its size and SHA-256, in chunks; returns the names.

        Raises:
            BundleError: The first member that is unreadable or does not match.
        """
        for name in sorted(self._members):
            self.check(name)
        return sorted(self._members)

    def size_bytes(self) -> int:
        """The bundle file's size in bytes."""
        return self.path.stat().st_size

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the archive (idempotent)."""
        self._zip.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
