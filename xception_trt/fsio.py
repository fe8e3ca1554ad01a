"""Small filesystem helpers: atomic writes and content hashes.

Every artifact the SDK writes (checkpoints, ONNX files, engines, caches, reports) goes through
:func:`atomic_path` so a crash or an error never leaves a half-written file behind.

Temporary files and folders carry their owner's pid and a tag of its host in their names
(:func:`temp_sibling`, :func:`owned_temp_dir`): a process killed with SIGKILL cannot clean up,
so the next writer of the same target (or the next user of the same temp prefix) removes the
ones whose owner is dead on this host. Nothing else is ever swept: only our own name pattern,
only dead owners.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import XceptionTRTError

__all__ = ["default_file_mode", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "sha256_file", "sha256_bytes", "check_writable_dir",
           "ENVIRONMENT_ERRNOS", "environment_error_text", "path_problem",
           "pid_alive", "temp_sibling", "sweep_stale_siblings", "owned_temp_dir",
           "sweep_owned_temp_dirs"]

#: OS errors that are the machine's state, not a bug: full or read-only disks, permissions,
#: unusable paths. The CLI reports them as one ``error:`` line (exit 2), like our own errors.
ENVIRONMENT_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "free disk space or choose another location",
    errno.EDQUOT: "free space within your disk quota or choose another location",
    errno.EFBIG: "the file is larger than this file system or limit allows; choose another "
                 "location",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.EACCES: "check the permissions or choose another location",
    errno.EPERM: "check the permissions or choose another location",
    errno.ELOOP: "the path is a symbolic link loop; fix or remove the link",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EISDIR: "give a file path, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory; fix the path",
    errno.EIO: "the device reported an I/O error; check the disk",
}


def environment_error_text(exc: OSError, *, action: str = "write",
                           path: str | os.PathLike[str] | None = None) -> str | None:
    """One line for an OS error caused by the environment (disk full, read-only, ...).

    Args:
        exc: The error.
        action: What failed (``"write"``, ``"read"``).
        path: The file involved (default: the error's own file name).

    Returns:
        ``"cannot ACTION PATH: REASON; FIX"``, or ``None`` when ``exc`` is not one of
        :data:`ENVIRONMENT_ERRNOS` (a bug, left to propagate).
    """
    fix = ENVIRONMENT_ERRNOS.get(exc.errno or 0)
    if fix is None:
        return None
    where = path if path is not None else (exc.filename or "a file")
    return f"cannot {action} {where}: {exc.strerror or os.strerror(exc.errno or 0)}; {fix}"


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def path_problem(path: str | os.PathLike[str], *, want: str = "file") -> str | None:
    """Why ``path`` is not what a reader wants, as the end of a sentence about it.

    Args:
        path: The path.
        want: ``"file"`` (an existing regular file), ``"dir"`` (a directory) or ``"any"``
            (either).

    Returns:
        ``None`` when it is fine, else e.g. ``"does not exist"``, ``"is a directory, not a
        file"``, ``"is a FIFO (named pipe), not a regular file"``, ``"is a symbolic link loop
        ..."``.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return (f"is a broken symbolic link (its target {os.readlink(path)} does not exist); "
                    "fix or remove the link")
        return "does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (or too many links deep); fix or remove the link"
        fix = ENVIRONMENT_ERRNOS.get(exc.errno or 0, "check the path")
        return f"cannot be used ({exc.strerror or exc}); {fix}"
    except ValueError as exc:  # e.g. an embedded NUL byte
        return f"is not a usable path ({exc})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file" if want == "file" else None
    if want == "dir":
        return "is not a directory"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(st.st_mode)), "special")
        return f"is {kind}, not a regular file"
    return None

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep its files
    return True


def _host_tag() -> str:
    # A pid means nothing on another machine sharing the folder (NFS): only this host's
    # temps are judged by pid.
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _owner_token() -> str:
    return f"{os.getpid()}-{_host_tag()}-{secrets.token_hex(4)}"


_OWNER_RE = r"(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{8}"


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.debug("cannot remove stale %s: %s", path, exc)
        return False
    log.info("removed %s, left by a process that no longer runs", path)
    return True


def _sweep(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    removed: list[Path] = []
    host = _host_tag()
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match["host"] != host or pid_alive(int(match["pid"])):
            continue
        if _remove(directory / name):
            removed.append(directory / name)
    return removed


def _sibling_re(target: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(target.name)}\.{_OWNER_RE}\.(tmp|old)")


def sweep_stale_siblings(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files/folders of ``path`` (``.NAME.PID-HOST-RAND.tmp``/``.old``
    next to it) whose writer on this host is dead (killed before it could clean up).

    Returns:
        The paths removed.
    """
    target = Path(path)
    return _sweep(target.parent if str(target.parent) else Path("."), _sibling_re(target))


def temp_sibling(path: str | os.PathLike[str], *, directory: bool = False,
                 suffix: str = ".tmp", mode: int | None = None) -> Path:
    """Create a hidden temporary file (or folder) next to ``path`` that names its owner.

    Stale temporaries of the same target left by dead writers are removed first (see
    :func:`sweep_stale_siblings`).

    Args:
        path: The final destination.
        directory: Create a folder instead of a file.
        suffix: ``".tmp"`` or ``".old"`` (a previous version kept during a replace).
        mode: Permissions (default: 0o600 for files, umask-governed 0o777 for folders).

    Returns:
        The created path, ``.NAME.PID-HOST-RAND<suffix>`` in ``path``'s folder.

    Raises:
        OSError: The folder cannot be written.
    """
    if suffix not in (".tmp", ".old"):
        raise ValueError(f"suffix must be .tmp or .old, not {suffix!r}")
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    sweep_stale_siblings(target)
    for _ in range(100):
        candidate = parent / f".{target.name}.{_owner_token()}{suffix}"
        try:
            if directory:
                os.mkdir(candidate, 0o777 if mode is None else mode)
            else:
                os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                                 0o600 if mode is None else mode))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"cannot create a unique temporary name next to {target}")


def _owned_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}{_OWNER_RE}")


def sweep_owned_temp_dirs(prefix: str, directory: str | os.PathLike[str] | None = None
                          ) -> list[Path]:
    """Remove ``PREFIXPID-HOST-RAND`` folders in ``directory`` (default: the temp dir) whose
    owner process on this host is dead. Returns the paths removed."""
    return _sweep(Path(directory or tempfile.gettempdir()), _owned_re(prefix))


def owned_temp_dir(prefix: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Create a private (0700) temporary folder ``PREFIXPID-HOST-RAND`` that names its owner.

    Folders of the same prefix left by dead owners are swept first. The caller removes it
    (``shutil.rmtree``) when done.

    Args:
        prefix: Our own prefix, e.g. ``"xtrt-int8-"``.
        directory: Where (default: :func:`tempfile.gettempdir`, i.e. ``$TMPDIR``).

    Returns:
        The new folder.
    """
    root = Path(directory or tempfile.gettempdir())
    sweep_owned_temp_dirs(prefix, root)
    for _ in range(100):
        candidate = root / f"{prefix}{_owner_token()}"
        try:
            os.mkdir(candidate, 0o700)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"cannot create a unique temporary folder {prefix}* in {root}")


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

    On any exception the temporary file is removed and ``path`` is left untouched; one left by
    a killed writer is removed by the next write of ``path`` (see :func:`temp_sibling`).

    Raises:
        error: The destination directory cannot be created or written, or writing failed for
            a reason of the environment (disk full, read-only, ...: see
            :data:`ENVIRONMENT_ERRNOS`).
    """
    path = Path(path)
    check_writable_dir(path.parent if str(path.parent) else Path("."), error=error)
    try:
        tmp_path = temp_sibling(path)
    except OSError as exc:
        raise error(f"cannot write next to {path}: {exc.strerror or exc}; choose a writable "
                    "location") from None
    try:
        yield tmp_path
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        text = environment_error_text(exc, path=path) if isinstance(exc, OSError) else None
        if text is not None:
            raise error(text) from None
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
