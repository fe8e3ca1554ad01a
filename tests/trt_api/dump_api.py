"""Dump a TensorRT Python module's API surface to JSON (run in its own process).

Usage: ``python dump_api.py MODULE OUT.json`` with the stub libraries on ``LD_LIBRARY_PATH``
(NVIDIA TensorRT) or nothing (TensorRT-RTX). Nothing of TensorRT is executed: only names,
pybind11 docstrings (their first lines are the signatures) and enum members are read, plus the
pure-Python ``nptype`` table of the package.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from typing import Any


def _doc_signatures(obj: Any) -> list[str]:
    """The pybind11 signature lines of a function: one, or one per overload."""
    doc = getattr(obj, "__doc__", None) or ""
    lines = doc.strip().splitlines()
    if not lines:
        return []
    if any(line.strip() == "Overloaded function." for line in lines[:3]):
        sigs = []
        for line in lines[1:]:
            text = line.strip()
            head, _, rest = text.partition(". ")
            if head.isdigit() and "(" in rest:
                sigs.append(rest)
        return sigs
    return [lines[0].strip()]


def _py_signature(name: str, obj: Any) -> list[str]:
    try:
        return [f"{name}{inspect.signature(obj)}"]
    except (TypeError, ValueError):
        return []


def _is_enum(cls: type) -> bool:
    return isinstance(getattr(cls, "__members__", None), dict) and hasattr(cls, "__int__")


def _qual(cls: type) -> str:
    return cls.__qualname__


def _dump_class(cls: type, out: dict[str, Any], seen: set[int]) -> None:
    if id(cls) in seen:
        return
    seen.add(id(cls))
    entry: dict[str, Any] = {"bases": [_qual(b) for b in cls.__bases__ if b is not object
                                       and not b.__name__.startswith("pybind11")],
                             "members": {}, "doc": (cls.__doc__ or "").strip()[:200]}
    if _is_enum(cls):
        entry["enum"] = {k: int(v) for k, v in cls.__members__.items()}
    for name, raw in cls.__dict__.items():
        if name.startswith("__") and name not in ("__init__", "__call__", "__enter__",
                                                  "__exit__", "__len__", "__getitem__",
                                                  "__iter__", "__buffer__", "__int__"):
            continue
        if isinstance(raw, property):
            fget_sigs = _doc_signatures(raw.fget) if raw.fget else []
            entry["members"][name] = {"kind": "property", "readonly": raw.fset is None,
                                      "signatures": fget_sigs,
                                      "writeonly": raw.fget is None,
                                      "setter_signatures": (_doc_signatures(raw.fset)
                                                            if raw.fset else [])}
        elif isinstance(raw, staticmethod):
            entry["members"][name] = {"kind": "static",
                                      "signatures": _doc_signatures(raw.__func__)}
        elif isinstance(raw, type):
            nested = f"{_qual(cls)}.{name}"
            entry["members"][name] = {"kind": "type", "type": _qual(raw)}
            if _qual(raw) == nested:
                _dump_class(raw, out, seen)
        elif callable(raw):
            sigs = _doc_signatures(raw)
            if not sigs or "(" not in sigs[0]:
                sigs = _py_signature(name, raw)
            entry["members"][name] = {"kind": "method", "signatures": sigs}
        elif _is_enum(type(raw)):
            entry["members"][name] = {"kind": "enum_value", "type": _qual(type(raw)),
                                      "value": int(raw)}
        else:
            entry["members"][name] = {"kind": "value", "repr": repr(raw)[:80]}
    out[_qual(cls)] = entry


def dump(module_name: str) -> dict[str, Any]:
    """The API surface of ``module_name`` as a JSON-ready dict."""
    mod = importlib.import_module(module_name)
    classes: dict[str, Any] = {}
    functions: dict[str, Any] = {}
    values: dict[str, Any] = {}
    seen: set[int] = set()
    for name in dir(mod):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        if isinstance(obj, type):
            if _qual(obj) != name:
                values[name] = {"kind": "alias", "type": _qual(obj)}
            _dump_class(obj, classes, seen)
        elif inspect.ismodule(obj):
            continue
        elif callable(obj):
            sigs = _doc_signatures(obj) if type(obj).__name__ == "builtin_function_or_method" \
                else []
            functions[name] = {"signatures": sigs or _py_signature(name, obj)}
        elif _is_enum(type(obj)):
            values[name] = {"kind": "enum_value", "type": _qual(type(obj)), "value": int(obj)}
        else:
            values[name] = {"kind": "value", "repr": repr(obj)[:80]}
    nptype: dict[str, str | None] = {}
    if hasattr(mod, "nptype") and hasattr(mod, "DataType"):
        for member_name, member in mod.DataType.__members__.items():
            try:
                nptype[member_name] = str(__import__("numpy").dtype(mod.nptype(member)))
            except Exception:  # noqa: BLE001 - types NumPy cannot hold
                nptype[member_name] = None
    return {"module": module_name, "version": str(mod.__version__), "classes": classes,
            "functions": functions, "values": values, "nptype": nptype}


if __name__ == "__main__":
    data = dump(sys.argv[1])
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
