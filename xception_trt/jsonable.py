"""One JSON encoder/decoder for the package's dataclasses.

:func:`to_json` turns a value into what :func:`json.dumps` writes: dataclasses (field by field,
recursively), enums (their ``value``), tuples, lists and sets (lists; sets sorted), mappings
(dicts; enum keys by value), paths (``str``) and NumPy dtypes and scalars (name / Python
number). Anything else passes through unchanged, for the caller's ``json.dumps`` to judge.
:func:`from_json` rebuilds a dataclass from such a dict by its type hints (nested dataclasses,
``X | None``, ``tuple[X, ...]``, mappings, enums, ``str``/``int``/``float``/``bool``).

A field says how it is written with ``dataclasses.field(metadata=json_meta(...))`` or with
:func:`json_field` (the same plus the field's default):

- ``key``: the JSON key (default: the field name);
- ``skip``: never written (and not read back);
- ``omit_none``: left out when ``None``;
- ``round``: numbers (also inside lists and dicts) rounded to that many digits;
- ``encode``: a function applied to the value first (e.g. to sort a mapping).

A class adds computed keys, or reshapes what its fields give, with a method
``_json_extras(self, out) -> dict`` that receives the encoded fields (in field order) and
returns the JSON object; a class whose JSON is not its fields one to one reads itself with a
classmethod ``_json_decode(cls, data)``. A dataclass that defines its own ``to_dict`` keeps it:
the encoder calls it. :class:`JsonMixin` gives a class ``to_dict()`` = ``to_json(self)``.

Why not cattrs, dacite or pydantic: the core install stays numpy, pillow, tqdm and psutil, and
the layouts on disk (sidecar schema 1, bundle manifests, reports) are fixed: they need per-field
key names, omission rules and enum values written as they always were. These libraries would
each be a new dependency whose defaults differ from those layouts in exactly these places,
so every class would still carry its configuration; a hundred and fifty lines here carry the
rules once. The decoder is the mechanical part only: untrusted input (a bundle's manifest,
a sidecar) is still validated by its parser, which uses the decoder for what is left.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

__all__ = ["to_json", "from_json", "json_meta", "json_field", "JsonMixin", "reorder",
           "encode_fields"]

T = TypeVar("T")

_META = "xception_trt.json"


@dataclasses.dataclass(frozen=True)
class _Options:
    key: str | None = None
    skip: bool = False
    omit_none: bool = False
    round: int | None = None
    encode: Callable[[Any], Any] | None = None


_PLAIN = _Options()


def json_meta(*, key: str | None = None, skip: bool = False, omit_none: bool = False,
              round: int | None = None, encode: Callable[[Any], Any] | None = None
              ) -> dict[str, Any]:
    """``dataclasses.field(metadata=...)`` saying how the field is written (see the module)."""
    return {_META: _Options(key, skip, omit_none, round, encode)}


def json_field(*, key: str | None = None, skip: bool = False, omit_none: bool = False,
               round: int | None = None, encode: Callable[[Any], Any] | None = None,
               **field_kw: Any) -> Any:
    """``dataclasses.field(**field_kw)`` with :func:`json_meta` options (``default=`` ...)."""
    return dataclasses.field(metadata=json_meta(key=key, skip=skip, omit_none=omit_none,
                                                round=round, encode=encode), **field_kw)


def _options(f: dataclasses.Field[Any]) -> _Options:
    opts = f.metadata.get(_META)
    return opts if isinstance(opts, _Options) else _PLAIN


def _round(value: Any, digits: int) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):  # an int stays an int (``round(2, 3)`` is ``2``)
        return value
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def to_json(obj: Any) -> Any:
    """``obj`` as JSON-ready values (see the module docstring for the rules)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj.value if isinstance(obj, enum.Enum) else obj
    if isinstance(obj, enum.Enum):
        return to_json(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        own = getattr(type(obj), "to_dict", None)
        if own is not None and own is not JsonMixin.to_dict:
            return own(obj)  # a hand-written shape wins
        return encode_fields(obj)
    if isinstance(obj, Mapping):
        return {_key(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_json(v) for v in obj)
    if isinstance(obj, PurePath):
        return str(obj)
    np = sys.modules.get("numpy")  # never imported here: a NumPy value means it is loaded
    if np is not None:
        if isinstance(obj, np.dtype):
            return obj.name
        if isinstance(obj, np.generic):
            return obj.item()
    return obj


def _key(k: Any) -> Any:
    return k.value if isinstance(k, enum.Enum) else k


def encode_fields(obj: Any) -> dict[str, Any]:
    """The JSON object of a dataclass instance by its fields, options and hook (a ``to_dict``
    the class defines is not called: this is what such a method builds on)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        opts = _options(f)
        if opts.skip:
            continue
        value = getattr(obj, f.name)
        if value is None and opts.omit_none:
            continue
        if opts.encode is not None:
            value = opts.encode(value)
        value = to_json(value)
        if opts.round is not None:
            value = _round(value, opts.round)
        out[opts.key or f.name] = value
    extras = getattr(obj, "_json_extras", None)
    return extras(out) if extras is not None else out


def reorder(out: dict[str, Any], *first: str) -> dict[str, Any]:
    """``out`` with the keys ``first`` first, in that order (for a hook keeping a layout)."""
    return {**{k: out[k] for k in first if k in out}, **out}


class JsonMixin:
    """Gives a dataclass ``to_dict()``: its :func:`to_json` form."""

    __slots__ = ()

    # The one shared to_dict: existing callers keep calling obj.to_dict().
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (:func:`xception_trt.jsonable.to_json`)."""
        return encode_fields(self)


# ---------------------------------------------------------------------------------------------
# decoding


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> bool:
    return _is_union(tp) and type(None) in typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def from_json(cls: type[T], data: Any, /, **given: Any) -> T:
    """Rebuild the dataclass ``cls`` from its JSON form.

    A key that is absent, or ``None`` for a field that cannot be ``None``, takes the field's
    default. Values are converted by the field's type hint (``str(x)``, ``int(x)``, an enum's
    ``parse``/constructor, nested dataclasses ...); the class validates the rest in its
    ``__post_init__``.

    Args:
        cls: The dataclass.
        data: The decoded JSON object.
        **given: Fields already known (parsed by the caller); their keys are not read.

    Raises:
        KeyError: A field without default is missing.
        TypeError, ValueError: A value does not fit its field.
    """
    hook = getattr(cls, "_json_decode", None)
    if hook is not None and not given:
        return typing.cast(T, hook(data))
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} needs a JSON object, got {type(data).__name__}")
    hints = _hints(typing.cast(type, cls))
    kwargs = dict(given)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        opts = _options(f)
        if f.name in given or opts.skip or not f.init:
            continue
        key = opts.key or f.name
        value = data.get(key)
        tp = hints[f.name]
        has_default = (f.default is not dataclasses.MISSING
                       or f.default_factory is not dataclasses.MISSING)
        if value is None and (key not in data or not _is_optional(tp)):
            if has_default:
                continue
            raise KeyError(key)
        kwargs[f.name] = _decode(tp, value)
    return cls(**kwargs)


def _decode(tp: Any, value: Any) -> Any:
    if tp is Any:
        return value
    if _is_union(tp):
        if value is None and _is_optional(tp):
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _decode(args[0], value)
        if any(isinstance(value, a) for a in args if isinstance(a, type)):
            return value
        raise TypeError(f"{value!r} is none of {args}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        parse = getattr(tp, "parse", None)
        return parse(value) if parse is not None else tp(value)
    if tp is bool:  # bool("false") is True: only a JSON boolean is one
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if tp in (int, float) and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")  # int(inf) overflows
    if tp in (str, int, float) or tp is Path:
        return tp(value)
    origin, args = typing.get_origin(tp), list(typing.get_args(tp))
    if origin in (tuple, list, Sequence, frozenset, set) and isinstance(value, (str, bytes,
                                                                                 Mapping)):
        raise TypeError(f"expected a JSON array, got {type(value).__name__}")  # not its chars
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return tuple(_decode(args[0], v) for v in value)
        items = list(value)
        if args and len(items) != len(args):
            raise ValueError(f"expected {len(args)} values, got {len(items)}")
        return tuple(_decode(a, v) for a, v in zip(args, items)) if args else tuple(items)
    if origin in (list, Sequence):
        return [_decode(args[0] if args else Any, v) for v in value]
    if origin in (frozenset, set):
        return origin(_decode(args[0] if args else Any, v) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a JSON object, got {type(value).__name__}")
        kt, vt = args if args else [Any, Any]
        return {_decode(kt, k): _decode(vt, v) for k, v in value.items()}
    return value
