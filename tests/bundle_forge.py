"""Crafts bundles for the hostile-input tests: valid ones, and ones bent in exactly one way.

Nothing here is a checked-in blob: every bundle is written by :func:`forge` from a manifest
made by :class:`xception_trt.bundle.format.Manifest` itself (so the unbent parts are what the
bundle writer writes), then edited as the test asks. The zip layout follows
``xception_trt/bundle/format.py``'s docstring (manifest first, members listed under
``members`` with their SHA-256 and size).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from xception_trt.bundle.format import MANIFEST, Manifest, Member, VariantEntry
from xception_trt.config import InputFormat, ModelSpec, Precision

#: A small spec: 3 classes, smallest input Xception takes.
SPEC = ModelSpec(num_classes=3, width=0.125, middle_blocks=0, input_size=71,
                 labels=("cat", "dog", "bird"))


def manifest_dict(members: Mapping[str, bytes], *, variants: Mapping[str, str] | None = None,
                  spec: ModelSpec = SPEC) -> dict[str, Any]:
    """A valid manifest (as JSON data) for ``members`` (name -> bytes)."""
    variants = variants if variants is not None else {"fp32": "onnx/fp32.onnx"}
    m = Manifest(
        model_spec=spec, input_format=InputFormat.FLOAT_NCHW,
        variants={Precision.parse(p): VariantEntry(Precision.parse(p), n)
                  for p, n in variants.items()},
        engines=(),
        members={n: Member(n, hashlib.sha256(b).hexdigest(), len(b))
                 for n, b in members.items()},
        batch_profile=(1, 2, 2), xception_trt_version="test", created="now")
    return m.to_dict()


def forge(path: Path, members: Mapping[str, bytes] | None = None, *,
          edit: Callable[[dict[str, Any]], Any] | None = None,
          manifest_bytes: bytes | None = None,
          extra: Iterable[tuple[zipfile.ZipInfo | str, bytes]] = (),
          variants: Mapping[str, str] | None = None) -> Path:
    """Write a bundle at ``path``.

    Args:
        members: Member name -> bytes (default: an ``onnx/fp32.onnx`` of a few bytes and a
            ``labels.txt``); each is listed in the manifest with its true hash and size.
        edit: Changes the manifest data in place (or returns a replacement) before it is
            written: the one way the bundle is bent.
        manifest_bytes: The manifest member's bytes as given (overrides everything).
        extra: More zip entries written after the members, as given (duplicates, odd
            compression ...).
        variants: Precision -> member name (default ``{"fp32": "onnx/fp32.onnx"}``).
    """
    members = dict(members if members is not None else
                   {"onnx/fp32.onnx": b"not really onnx", "labels.txt": b"cat\ndog\nbird\n"})
    data = manifest_dict(members, variants=variants)
    if edit is not None:
        data = edit(data) or data
    raw = manifest_bytes if manifest_bytes is not None else json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MANIFEST, raw, compress_type=zipfile.ZIP_DEFLATED)
        for name, content in members.items():
            zf.writestr(name, content, compress_type=zipfile.ZIP_STORED)
        for info, content in extra:
            zf.writestr(info, content)
    return path


def forge_bomb(path: Path, name: str, size: int, *, honest: bool,
               others: Mapping[str, bytes] | None = None) -> Path:
    """A bundle whose member ``name`` inflates to ``size`` zero bytes from a small deflated
    entry, written in 1 MiB chunks (the test process never holds it whole).

    Args:
        honest: The manifest records the true size and SHA-256 (else it says 13 bytes and the
            hash of 13 zeros: the bomb of issue 27, whose ``file_size`` was never compared
            with ``bytes``).
    """
    others = dict(others if others is not None else {"onnx/fp32.onnx": b"not really onnx"})
    chunk = bytes(1 << 20)
    if honest:
        digest = hashlib.sha256()
        for left in range(size, 0, -len(chunk)):
            digest.update(chunk[:min(left, len(chunk))])
        entry = {"sha256": digest.hexdigest(), "bytes": size}
    else:
        entry = {"sha256": hashlib.sha256(bytes(13)).hexdigest(), "bytes": 13}
    data = manifest_dict(others)
    data["members"][name] = entry
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(MANIFEST, json.dumps(data))
        for n, content in others.items():
            zf.writestr(n, content)
        with zf.open(name, "w", force_zip64=True) as fh:
            for left in range(size, 0, -len(chunk)):
                fh.write(chunk[:min(left, len(chunk))])
    return path
