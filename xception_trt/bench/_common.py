"""What the latency and the accuracy halves of :mod:`xception_trt.bench` share: the progress
callback type, error text, a runner's fixed batch and unique display names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..contract import Runner

__all__ = ["Progress", "unique_names"]

Progress = Callable[[int], None]


def _noop(_: int = 1) -> None:
    return None


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fixed_batch(runner: Runner) -> int | None:
    first = runner.input_spec.shape[0]
    return first if first > 0 else None


def unique_names(names: Sequence[str], paths: Sequence[Any] | None = None) -> list[str]:
    """Make display names unique: a repeated name gets its file name (or ``#i``) appended."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    out, seen = [], set()
    for i, n in enumerate(names):
        label = n
        if counts[n] > 1:
            label = f"{n} ({Path(paths[i]).name})" if paths is not None else f"{n} #{i + 1}"
        base, k = label, 2
        while label in seen:
            label, k = f"{base} #{k}", k + 1
        seen.add(label)
        out.append(label)
    return out
