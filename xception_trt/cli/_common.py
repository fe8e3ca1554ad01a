"""Helpers shared by the CLI commands: progress bars and output formatting."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Callable, Iterator

__all__ = ["progress", "print_json", "positive_int"]


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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value
