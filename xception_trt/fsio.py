"""Small filesystem helpers: atomic writes and content hashes.

Every artifact the SDK writes (checkpoints, ONNX files, engines, caches, reports) goes through
:func:`atomic_path` so a crash or an error never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import XceptionTRTError

__all__ = ["default_file_mode", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "sha256_file", "sha256_bytes", "check_writable_dir"]


def check_writable_dir(directory: Path, *, what: str = "output",
                       error: type[XceptionTRTError] = XceptionTRTError) -> None:
    """Create ``directory`` if needed and check we can write into it.

    Raises:
        error: The directory cannot be created or written (message names the path and fix).
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create {what} directory {directory}: {exc.strerror or exc}; "
                    "choose a writable location") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise error(f"{what} directory {directory} is not writable; choose a writable location")


def default_file_mode() -> int:
    """Permissions for new artifacts: ``0o666`` less the process umask.

    ``mkstemp`` creates 0600 files; renamed into place they would stay unreadable to other
    users (e.g. a Triton server running as another account).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *,
                error: type[XceptionTRTError] = XceptionTRTError) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.

    Raises:
        error: The destination directory cannot be created or written.
    """
    path = Path(path)
    check_writable_dir(path.parent if str(path.parent) else Path("."), error=error)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, **kw: Any) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path, **kw) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, **kw: Any) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, **kw: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically; return the path."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", **kw)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
