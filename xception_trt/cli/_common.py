"""Helpers shared by the CLI commands: sub-command parsers, argparse types, progress bars and
output formatting."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["add_command", "progress", "StageProgress", "print_json", "arg_type", "bounded_int",
           "positive_int", "non_negative_int", "port_number"]

T = TypeVar("T")


def add_command(sub: argparse._SubParsersAction, name: str, *,
                run: Callable[[argparse.Namespace], int], help: str, description: str,
                epilog: str | None = None, raw_epilog: bool = False, output: str | None = None,
                output_metavar: str | None = None, force: str | None = None,
                json: str | None = None) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` that runs ``run``, with the flags the commands share.

    Args:
        sub: The top-level parser's sub-parsers.
        name: Command name.
        run: ``run(args) -> exit code``.
        help: One line for the top-level ``--help``.
        description: The command's ``--help`` text; runs of whitespace become one space.
        epilog: Text after the options (examples, exit codes).
        raw_epilog: Keep the epilog's line breaks (lists of examples).
        output: Help of a required ``-o/--output``; no such flag when ``None``.
        output_metavar: Metavar of ``-o/--output`` (default: ``OUTPUT``).
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
        p.add_argument("-o", "--output", required=True, metavar=output_metavar, help=output)
    if force is not None:
        p.add_argument("--force", action="store_true", help=force)
    if json is not None:
        p.add_argument("--json", action="store_true", help=f"print {json} as JSON")
    p.set_defaults(func=run)
    return p


@contextlib.contextmanager
def progress(desc: str, total: int | None = None, *, unit: str = "it",
             enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A tqdm progress bar on stderr as an ``advance(n)`` callback (a no-op when disabled or
    when stderr is not a terminal and tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a core dependency; this only guards broken installs
        yield lambda n=1: None
        return
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
               dynamic_ncols=True, leave=False)
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
#: argparse type: a TCP port number.
port_number = bounded_int(1, 65535, noun="a port number")
