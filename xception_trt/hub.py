"""Checkpoints named by a Hugging Face Hub model id (``timm/legacy_xception.tf_in1k``).

A hub id is accepted wherever a checkpoint file is: ``hf-hub:org/name[@revision]`` always,
and a bare ``org/name[@revision]`` when no local path of that name exists and the name does
not end in a model-file suffix (``runs/model.onnx`` stays a missing file). The files come
through ``huggingface_hub`` (the ``hub`` extra): its cache (``HF_HUB_CACHE``/``HF_HOME``),
offline mode (``HF_HUB_OFFLINE=1``), tokens and error types are its own. A repository is read
in timm's layout: ``config.json`` (``architecture`` and ``pretrained_cfg``) and the weights in
``model.safetensors`` or, failing that, ``pytorch_model.bin``; the weights then go through the
timm/Cadene conversion of :mod:`xception_trt.checkpoint`.

Every failure is a :class:`~xception_trt.errors.CheckpointError` (or a
:class:`~xception_trt.errors.DependencyError` without the extra) with the cause and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CHECKPOINT_SUFFIXES
from .errors import CheckpointError
from .extras import needs

__all__ = ["HUB_PREFIX", "EXAMPLE_ID", "WEIGHT_FILES", "XCEPTION_ARCHITECTURES",
           "MODEL_FILE_SUFFIXES", "HubId",
           "HubCheckpoint", "parse_hub_id", "is_hub_id", "download_checkpoint", "local_file",
           "source_name"]

log = logging.getLogger(__name__)

#: The explicit form's prefix (timm's spelling: ``timm.create_model("hf-hub:...")``).
HUB_PREFIX = "hf-hub:"
#: ImageNet weights of the paper's Xception, as messages suggest them.
EXAMPLE_ID = "timm/legacy_xception.tf_in1k"
#: Weight files of a timm repository, in the order timm itself prefers them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: ``config.json`` architectures whose weights are the Xception we build (timm renamed
#: ``xception`` to ``legacy_xception``; its ``xception41/65/71`` are another, aligned network).
XCEPTION_ARCHITECTURES = ("legacy_xception", "xception")
#: Names ending in these are files, never a bare hub id: checkpoints, ONNX, engines, bundles
#: (config/contract/bundle own these lists; tests/test_hub.py keeps them in step).
MODEL_FILE_SUFFIXES = CHECKPOINT_SUFFIXES + (".onnx", ".engine", ".plan", ".xtrt")

# org/name as the Hub spells repository ids; a revision is a branch, tag or commit (may hold /).
_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class HubId:
    """A model repository on the Hugging Face Hub.

    Attributes:
        repo_id: ``org/name``.
        revision: Branch, tag or commit; ``None`` is the default branch.
    """

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def _text(source: Any) -> str | None:
    if isinstance(source, HubId):
        return HUB_PREFIX + str(source)
    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    return text if isinstance(text, str) else None


def parse_hub_id(source: Any) -> HubId | None:
    """The hub id ``source`` names, or ``None`` when it is a local path.

    Args:
        source: ``hf-hub:org/name[@rev]``, a bare ``org/name[@rev]`` (only when nothing of that
            name exists locally and it does not end in a model-file suffix), a path or a
            :class:`HubId`.

    Raises:
        CheckpointError: ``hf-hub:`` followed by something that is not ``org/name[@rev]``.
    """
    if isinstance(source, HubId):
        return source
    text = _text(source)
    if text is None:
        return None
    explicit = text.startswith(HUB_PREFIX)
    body = text[len(HUB_PREFIX):] if explicit else text
    match = _ID.match(body)
    if explicit and match is None:
        raise CheckpointError(f"{text!r} is not a Hugging Face Hub model id; write "
                              f"{HUB_PREFIX}org/name[@revision], e.g. {HUB_PREFIX}{EXAMPLE_ID}")
    if match is None:
        return None
    if not explicit and (os.path.lexists(text)
                         or match["repo"].lower().endswith(MODEL_FILE_SUFFIXES)):
        return None
    return HubId(match["repo"], match["rev"])


def is_hub_id(source: Any) -> bool:
    """Whether ``source`` names a Hub model (see :func:`parse_hub_id`); a malformed
    ``hf-hub:`` id counts as one, so that reading it reports what is wrong."""
    try:
        return parse_hub_id(source) is not None
    except CheckpointError:
        return True


@dataclass(frozen=True)
class HubCheckpoint:
    """The local files of a Hub model, as :func:`download_checkpoint` found them.

    Attributes:
        hub_id: The repository asked for.
        weights: The weights file in the hub cache.
        config: ``config.json`` as a dict, or ``None`` when the repository has none.
        commit: The commit the files belong to (the cache's snapshot folder), if known.
    """

    hub_id: HubId
    weights: Path
    config: dict[str, Any] | None
    commit: str | None

    def spec_fields(self) -> dict[str, Any]:
        """:class:`~xception_trt.config.ModelSpec` fields from timm's ``pretrained_cfg``
        (input size, crop, resampling, normalisation); the rest comes from the weights."""
        cfg = (self.config or {}).get("pretrained_cfg")
        if not isinstance(cfg, dict):
            return {}
        out: dict[str, Any] = {}
        size = cfg.get("input_size")
        if isinstance(size, list) and len(size) == 3 and size[1] == size[2]:
            out["input_size"] = size[1]
        for key in ("crop_pct", "interpolation"):
            if cfg.get(key) is not None:
                out[key] = cfg[key]
        for key in ("mean", "std"):
            if isinstance(cfg.get(key), list):
                out[key] = tuple(cfg[key])
        return out


def _hub() -> Any:
    with needs(f"loading a checkpoint by Hugging Face Hub id (e.g. {EXAMPLE_ID})"):
        import huggingface_hub
        import huggingface_hub.constants  # a lazy package: its submodules are imported by name
        import huggingface_hub.errors
    return huggingface_hub


def _fetch(hub: Any, hub_id: HubId, filename: str, *, local_only: bool) -> Path:
    return Path(hub.hf_hub_download(hub_id.repo_id, filename, revision=hub_id.revision,
                                    library_name="xception-trt", local_files_only=local_only))


def _not_reachable(hub: Any, hub_id: HubId, what: str) -> CheckpointError:
    where = "the Hugging Face cache (HF_HUB_CACHE or HF_HOME)"
    if hub.constants.HF_HUB_OFFLINE:
        return CheckpointError(
            f"{hub_id}: {what} are not in {where} and HF_HUB_OFFLINE is set; download them "
            f"once with network access (unset HF_HUB_OFFLINE), or point HF_HUB_CACHE at a "
            "cache that holds them")
    return CheckpointError(
        f"{hub_id}: {what} are not in {where} and the Hugging Face Hub cannot be reached (no "
        "network?); connect and retry, or point HF_HUB_CACHE at a cache that holds them")


def _read_config(path: Path, hub_id: HubId) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{hub_id}: config.json is not readable JSON ({exc}); this is "
                              f"not a timm model repository (try {EXAMPLE_ID})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{hub_id}: config.json holds a {type(config).__name__}, not an "
                              f"object; this is not a timm model repository (try {EXAMPLE_ID})")
    return config


def download_checkpoint(hub_id: HubId) -> HubCheckpoint:
    """Find a Hub model's ``config.json`` and weights in the hub cache, downloading what is
    missing (unless offline).

    Args:
        hub_id: The repository (see :func:`parse_hub_id`).

    Returns:
        The local files.

    Raises:
        DependencyError: ``huggingface_hub`` is not installed (the ``hub`` extra).
        CheckpointError: Unknown or gated repository, unknown revision, a malformed id, offline
            or no network with the files not cached, a repository without timm weights, or a
            ``config.json`` naming another architecture than Xception.
    """
    hub = _hub()
    errors = hub.errors
    config: dict[str, Any] | None = None
    uncached: list[str] = []
    weights: Path | None = None
    # Once the Hub did not answer, the other files are looked up in the cache only: each
    # unanswered look-up costs the library's retries (about 20 s measured without network).
    local_only = False
    try:
        for filename in ("config.json", *WEIGHT_FILES):
            if filename != "config.json" and weights is not None:
                break
            try:
                path = _fetch(hub, hub_id, filename, local_only=local_only)
            except errors.LocalEntryNotFoundError:  # offline / unreachable, not cached
                uncached.append(filename)
                local_only = True
                continue
            except errors.EntryNotFoundError:  # the repository has no such file
                continue
            if filename == "config.json":
                config = _read_config(path, hub_id)
                _check_architecture(config, hub_id)
            else:
                weights = path
    except errors.GatedRepoError:
        raise CheckpointError(
            f"{hub_id} is a gated repository on the Hugging Face Hub; accept its terms on its "
            "page and log in (`hf auth login` or HF_TOKEN)") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(
            f"{hub_id}: no such model repository on the Hugging Face Hub (or it is private: log "
            "in with `hf auth login` or HF_TOKEN), and no local file of that name; check the "
            f"id, e.g. {EXAMPLE_ID}") from None
    except errors.RevisionNotFoundError:
        raise CheckpointError(
            f"{hub_id}: the repository has no revision {hub_id.revision!r}; give a branch, tag "
            f"or commit it has (or none, for its default branch)") from None
    except errors.HFValidationError as exc:
        raise CheckpointError(f"{hub_id} is not a valid Hugging Face Hub repository id "
                              f"({str(exc).splitlines()[0]}); write org/name, e.g. "
                              f"{EXAMPLE_ID}") from None
    except errors.HfHubHTTPError as exc:
        raise CheckpointError(f"{hub_id}: the Hugging Face Hub answered "
                              f"{str(exc).splitlines()[0]}; retry later") from None
    if weights is None:
        if uncached:
            raise _not_reachable(hub, hub_id, f"its weights ({' or '.join(WEIGHT_FILES)})")
        raise CheckpointError(
            f"{hub_id} holds no weights file ({' or '.join(WEIGHT_FILES)}); this is not a timm "
            f"model repository — use one such as {EXAMPLE_ID}")
    commit = weights.parent.name if weights.parent.parent.name == "snapshots" else None
    log.info("%s: %s from the Hugging Face cache (commit %s)", hub_id, weights.name, commit)
    return HubCheckpoint(hub_id, weights, config, commit)


def _check_architecture(config: dict[str, Any], hub_id: HubId) -> None:
    arch = config.get("architecture")
    if arch is None:
        return  # not timm's config: the weights' shapes decide
    if arch not in XCEPTION_ARCHITECTURES:
        raise CheckpointError(
            f"{hub_id} is a timm {str(arch)[:60]!r} model, not an Xception "
            f"({' or '.join(XCEPTION_ARCHITECTURES)}); xception-trt loads Xception weights, "
            f"e.g. {EXAMPLE_ID}")


def local_file(source: str | os.PathLike[str]) -> Path:
    """The file a checkpoint source is read from (to hash it): a Hub id's weights in the hub
    cache (downloaded when missing), else the path itself.

    Raises:
        CheckpointError / DependencyError: As :func:`download_checkpoint`.
    """
    hub_id = parse_hub_id(source)
    return download_checkpoint(hub_id).weights if hub_id is not None else Path(source)


def source_name(source: str | os.PathLike[str]) -> str:
    """How records name a checkpoint source: ``hf-hub:org/name[@rev]`` or the file's name."""
    hub_id = parse_hub_id(source)
    return HUB_PREFIX + str(hub_id) if hub_id is not None else Path(source).name
