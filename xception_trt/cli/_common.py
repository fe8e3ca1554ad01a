"""Helpers shared by the CLI commands: progress bars and output formatting."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["progress", "print_json", "bounded_int", "positive_int", "non_negative_int",
           "port_number"]


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


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def bounded_int(minimum: int, maximum: int | None = None, *,
                noun: str = "an integer") -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``minimum..maximum`` (no upper bound when ``None``).

    Args:
        minimum: Smallest accepted value.
        maximum: Largest accepted value, or ``None``.
        noun: What the value is, for messages (``"an integer"``, ``"a port number"``).
    """
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is outside {minimum}..{maximum}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value

    return parse


#: argparse type: an integer >= 1.
positive_int = bounded_int(1)
#: argparse type: an integer >= 0.
non_negative_int = bounded_int(0)
#: argparse type: a TCP port number.
port_number = bounded_int(1, 65535, noun="a port number")
