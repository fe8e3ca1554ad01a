"""Helpers shared by the CLI commands: sub-command parsers, argparse types, path checks,
progress bars and output formatting."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..config import MAX_BATCH
from ..errors import ConfigError
from ..fsio import path_problem
from ..hub import is_hub_id

#: The help text's words for a checkpoint given by Hub id (one spelling across commands).
HUB_HELP = "or a Hugging Face Hub model id such as timm/legacy_xception.tf_in1k"

__all__ = ["HUB_HELP", "add_command", "progress", "print_json", "arg_type", "bounded_int",
           "positive_int",
           "non_negative_int", "batch_size", "port_number", "path_argument", "check_paths",
           "check_input_path", "check_output_path", "StageProgress"]

T = TypeVar("T")


def add_command(sub: argparse._SubParsersAction, name: str, *,
                run: Callable[[argparse.Namespace], int], help: str, description: str,
                epilog: str | None = None, raw_epilog: bool = False, output: str | None = None,
                output_metavar: str | None = None, output_kind: str = "file",
                output_replaced_by: tuple[str, ...] = ("force",), output_required: bool = True,
                force: str | None = None, json: str | None = None) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` that runs ``run``, with the flags the commands share.

    The output rule, one for every command: ``-o/--output`` is checked before any work (see
    :func:`check_output_path`); an existing output *file* is refused unless the command has
    ``--force`` and it is given.

    Args:
        sub: The top-level parser's sub-parsers.
        name: Command name.
        run: ``run(args) -> exit code``.
        help: One line for the top-level ``--help``.
        description: The command's ``--help`` text; runs of whitespace become one space.
        epilog: Text after the options (examples, exit codes).
        raw_epilog: Keep the epilog's line breaks (lists of examples).
        output: Help of ``-o/--output``; no such flag when ``None``.
        output_metavar: Metavar of ``-o/--output`` (default: ``OUTPUT``).
        output_kind: ``"file"`` (an existing file needs ``--force``) or ``"dir"`` (a directory
            to create or add to).
        output_replaced_by: Flags (dests) that allow replacing an existing output file.
        output_required: Whether ``-o/--output`` must be given (else it defaults to ``None``).
        force: Help of ``--force``; no such flag when ``None``.
        json: What ``--json`` prints (``"the results"``); no such flag when ``None``.

    Returns:
        The new parser, for the command's own arguments.
    """
    # Raw formatting keeps the description as written too: one line, as the default formatter
    # would reflow it.
    p = sub.add_parser(name, help=help, description=" ".join(description.split()), epilog=epilog,
                       formatter_class=(argparse.RawDescriptionHelpFormatter if raw_epilog
                                        else argparse.HelpFormatter))
    if output is not None:
        path_argument(p, "-o", "--output", kind=f"output-{output_kind}",
                      replaced_by=output_replaced_by, required=output_required,
                      metavar=output_metavar, help=output)
    if force is not None:
        p.add_argument("--force", action="store_true", help=force)
    if json is not None:
        p.add_argument("--json", action="store_true", help=f"print {json} as JSON")
    p.set_defaults(func=run)
    return p


@contextlib.contextmanager
def progress(desc: str, total: int | None = None, *, unit: str = "it",
             enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A tqdm progress bar on stderr as an ``advance(n)`` callback, drawn only when
    ``enabled`` and stderr is a terminal (tqdm's ``disable=None``): logs and piped output get
    no bar. A no-op when tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a core dependency; this only guards broken installs
        yield lambda n=1: None
        return
    bar = tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True,
               file=sys.stderr, dynamic_ncols=True, leave=False)
    try:
        yield lambda n=1: bar.update(n)
    finally:
        bar.close()


class StageProgress:
    """Progress of a multi-stage step (export, image decode, calibration ...) as tqdm bars on
    stderr: ``(stage, done, total)`` calls; a new stage closes the previous bar. Shown only
    when ``enabled`` and stderr is a terminal (tqdm's ``disable=None``), so logs and piped
    output stay clean; stdout (``--json``) is never written."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            from tqdm import tqdm

            self.stage = stage
            fmt = None if total is not None else "{desc} ... {elapsed}"
            self.bar = tqdm(total=total, desc=stage, file=sys.stderr, disable=None,
                            dynamic_ncols=True, leave=False, bar_format=fmt, mininterval=0,
                            unit="img" if "images" in stage else "batch")
        if self.bar is not None and done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Close the current bar (idempotent)."""
        if self.bar is not None:
            self.bar.close()
        self.bar = None
        self.stage = None

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def arg_type(convert: Callable[[str], T], *, expected: str,
             check: Callable[[T], str | None] = lambda value: None) -> Callable[[str], T]:
    """An argparse ``type=`` from a converter and a check, with messages that say what is wrong.

    Args:
        convert: Text to value; a ``ValueError`` or ``ArgumentTypeError`` means "not this kind".
        expected: What the text should be, for messages (``"a number"``).
        check: The complaint about a converted value (``"must be >= 1"``), or ``None`` if fine.

    Returns:
        ``parse(text)``, raising ``argparse.ArgumentTypeError`` with ``"'TEXT' is not EXPECTED"``
        or ``"VALUE COMPLAINT"``.
    """

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        problem = check(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{value} {problem}")
        return value

    return parse


def bounded_int(minimum: int, maximum: int | None = None, *,
                noun: str = "an integer") -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``minimum..maximum`` (no upper bound when ``None``).

    Args:
        minimum: Smallest accepted value.
        maximum: Largest accepted value, or ``None``.
        noun: What the value is, for messages (``"an integer"``, ``"a port number"``).
    """

    def check(value: int) -> str | None:
        if maximum is not None and not minimum <= value <= maximum:
            return f"is outside {minimum}..{maximum}"
        return f"must be >= {minimum}" if value < minimum else None

    return arg_type(int, expected=noun, check=check)


#: argparse type: an integer >= 1.
positive_int = bounded_int(1)
#: argparse type: an integer >= 0.
non_negative_int = bounded_int(0)
#: argparse type: a batch size (1..config.MAX_BATCH).
batch_size = bounded_int(1, MAX_BATCH, noun="a batch size")
#: argparse type: a TCP port number.
port_number = bounded_int(1, 65535, noun="a port number")


# ---------------------------------------------------------------------------------------------
# path arguments: checked once, before a command does any work

#: What a path argument must be: an existing regular file, an existing directory, either
#: (a folder or a file list), a file to write (an existing one needs --force) or a directory to
#: write into.
PATH_KINDS = ("file", "dir", "any", "output-file", "output-dir", "output-file-replace")


def path_argument(p: argparse.ArgumentParser | Any, *flags: str, kind: str,
                  what: str | None = None, allow: tuple[str, ...] = (),
                  replaced_by: tuple[str, ...] = ("force",), hub: bool = False,
                  **kw: Any) -> argparse.Action:
    """``p.add_argument(*flags, **kw)`` for a path that :func:`check_paths` checks before the
    command runs (every value, for ``nargs`` lists).

    Args:
        p: A parser or argument group.
        flags: As for ``add_argument``.
        kind: One of :data:`PATH_KINDS`; ``output-file-replace`` is a secondary output that is
            replaced without ``--force``.
        what: How messages name the value (default: the flag, or the positional's metavar).
        allow: Values that are not paths (``"scratch"``).
        replaced_by: For ``output-file``: the flags (dests) any of which allows replacing an
            existing file (default: ``--force``).
        hub: The value may be a Hugging Face Hub model id instead of a file (a checkpoint
            argument; see :mod:`xception_trt.hub`): such a value is not checked as a path.
        **kw: As for ``add_argument``.

    Returns:
        The new action.
    """
    if kind not in PATH_KINDS:
        raise ValueError(f"unknown path kind {kind!r}")
    action = p.add_argument(*flags, **kw)
    action.path_kind = kind  # type: ignore[attr-defined]
    action.path_what = what or (action.option_strings[0] if action.option_strings  # type: ignore[attr-defined]
                                else (action.metavar or action.dest))
    action.path_allow = allow  # type: ignore[attr-defined]
    action.path_replaced_by = replaced_by  # type: ignore[attr-defined]
    action.path_hub = hub  # type: ignore[attr-defined]
    return action


def _stat(path: str, what: str) -> os.stat_result | None:
    """``os.stat(path)``, or ``None`` when nothing is there; a clear error for a loop, a broken
    link or an unusable path."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        problem = path_problem(path, want="any")
        if problem in (None, "does not exist"):
            return None
        raise ConfigError(f"{what} {path} {problem}") from None


def check_input_path(path: str, *, kind: str = "file", what: str = "input") -> None:
    """Check that ``path`` can be read as ``kind`` (``file``, ``dir`` or ``any``).

    Raises:
        ConfigError: It does not exist, is a symlink loop or broken link, is a directory where
            a file is expected (or the reverse), or is a FIFO/socket/device, or unreadable.
    """
    problem = path_problem(path, want=kind)
    if problem is not None:
        fix = {"file": "give a file", "dir": "give a folder"}.get(kind, "give a file or folder")
        raise ConfigError(f"{what} {path} {problem}"
                          + (f"; {fix}" if ";" not in problem else ""))
    if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
        raise ConfigError(f"{what} {path} is not readable (permission denied); check its "
                          "permissions")


def _writable_ancestor(path: Path, what: str, *, is_dir: bool = False) -> None:
    """The nearest existing folder above ``path`` must be a writable directory (the missing
    ones, and ``path`` itself when ``is_dir``, are created by the command after its checks)."""
    path = path.absolute()
    folder = path if is_dir else path.parent
    parent = path.parent
    while True:
        st = _stat(str(parent), what)
        if st is not None:
            break
        if parent.parent == parent:
            return
        parent = parent.parent
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what}: cannot create output directory {folder}: "
                          + ("it" if parent == folder else str(parent))
                          + " is a file, not a directory; fix the path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: cannot create {path}: directory {parent} is not writable; "
                          "choose a writable location")


def check_output_path(path: str, *, kind: str = "output-file", what: str = "output",
                      force: bool | None = None) -> None:
    """Check, before any work, that ``path`` can be written as ``kind``.

    Args:
        path: The output.
        kind: ``output-file``, ``output-file-replace`` or ``output-dir``.
        what: How messages name it.
        force: For ``output-file``: ``True`` replaces an existing file; ``False`` refuses it
            (the message names ``--force``); ``None`` refuses it without naming a flag.

    Raises:
        ConfigError: A directory where a file goes (or the reverse), a symlink loop, an existing
            file without ``force``, or no writable folder to put it in.
    """
    st = _stat(path, what)
    if st is None:
        _writable_ancestor(Path(path), what, is_dir=kind == "output-dir")
        return
    if kind == "output-dir":
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{what} {path} exists and is not a directory; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} directory {path} is not writable; choose a writable "
                              "location")
        return
    problem = path_problem(path, want="file")
    if problem is not None:
        raise ConfigError(f"{what} {path} {problem}; give a file path")
    if kind == "output-file" and not force:
        raise ConfigError(f"{what} {path} already exists; "
                          + ("pass --force to overwrite it" if force is False
                             else "choose another path or remove it"))
    _writable_ancestor(Path(path), what)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def check_paths(args: argparse.Namespace,
                parser: argparse.ArgumentParser | None = None) -> None:
    """Check every path argument of the parsed command (declared with :func:`path_argument`)
    before it runs: inputs exist and have the right kind, outputs can be written and are not
    overwritten without ``--force``.

    Args:
        args: Parsed arguments (``args.command`` names the sub-command).
        parser: The top-level parser (default: :func:`~xception_trt.cli.build_parser`'s).

    Raises:
        ConfigError: The first path that fails its check.
    """
    if parser is None:
        from . import build_parser

        parser = build_parser()
    sub = _subparser(parser, getattr(args, "command", None) or "")
    if sub is None:
        return
    for action in sub._actions:
        kind = getattr(action, "path_kind", None)
        value = getattr(args, action.dest, None)
        if kind is None or value is None:
            continue
        flags = [f for f in action.path_replaced_by if hasattr(args, f)]  # type: ignore[attr-defined]
        force = any(getattr(args, f) for f in flags) if flags else None
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            text = os.fspath(item)
            if text in action.path_allow:  # type: ignore[attr-defined]
                continue
            if action.path_hub and is_hub_id(text):  # type: ignore[attr-defined]
                continue  # read (or refused, with the reason) where the checkpoint is read
            what = action.path_what  # type: ignore[attr-defined]
            if kind.startswith("output"):
                check_output_path(text, kind=kind, what=what, force=force)
            else:
                check_input_path(text, kind=kind, what=what)
