"""Class names shipped with the package (no network at run time)."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["imagenet_class_names", "imagenet_wnids"]


@functools.lru_cache(maxsize=1)
def _imagenet_rows() -> tuple[tuple[str, str], ...]:
    text = resources.files(__package__).joinpath("data/imagenet1k_classes.tsv").read_text("utf-8")
    rows = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        index, wnid, lemmas = line.split("\t")
        if int(index) != len(rows):  # the file defines logit order; a gap would shift every name
            raise RuntimeError(f"imagenet1k_classes.tsv is corrupt near index {index}")
        rows.append((wnid, lemmas.split(",")[0].strip()))
    return tuple(rows)


def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k short class names in logit order (``tench``, ``goldfish``, ...)."""
    return tuple(name for _, name in _imagenet_rows())


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k WordNet ids in logit order (``n01440764``, ...)."""
    return tuple(wnid for wnid, _ in _imagenet_rows())
