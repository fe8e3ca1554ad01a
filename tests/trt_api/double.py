"""A checking double of a TensorRT Python module, generated from an API dump (dump_api.py).

Every class, method, property and enum member of the real binding becomes one here, and only
those: an attribute the real version lacks, a call whose positional count, keyword names or
argument types no overload of the real signature accepts, or a write to a read-only property is
recorded as a :class:`Mismatch` naming the version, the call and *our* file:line (the first
frame under ``xception_trt/``), and raised (``AttributeError`` / ``TypeError`` subclasses, as
pybind11 would). Recorded mismatches survive an ``except Exception`` in our code: the tests
assert the record is empty.

Enum members behave as the real bindings' pybind11 enums do (checked against the real 8.6,
10.3, 11.4 and TensorRT-RTX bindings, ``tests/test_trt_api_conformance.py``): the real names and
values, ``int()`` / ``operator.index`` / ``.value`` / ``.name`` / ``hash`` of the value, but
*not* ints: a member never equals an int or a member of another enum, is always true, does
not order or combine with ``|``, and prints as ``TensorIOMode.INPUT``. A Python subclass of a
class with a constructor (``ILogger``, ``IProgressMonitor``) that overrides ``__init__``
without calling the base's raises ``TypeError`` ("... __init__() must be called when
overriding __init__", pybind11). Property writes are checked against the setter's type, also
for setter-only properties (``IExecutionContext.device_memory``), which cannot be read. Calls
return a double of the documented return type (``-> tensorrt.ICudaEngine``), or what the
*world* (world.py: the scenario and NVIDIA's documented rules) answers for that member.
"""

from __future__ import annotations

import importlib.machinery
import operator
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Mismatch", "ConformanceError", "ApiDouble", "Signature", "parse_signature"]

_PACKAGE_DIR = str(Path(__file__).resolve().parents[2] / "xception_trt")
_PREFIX = re.compile(r"^(?:tensorrt\w*\.)+|^nvinfer1::(?:\w+::)*|^nvonnxparser::(?:\w+::)*")


@dataclass(frozen=True)
class Mismatch:
    """One call of ours that the real API (or a documented rule) does not allow."""

    version: str
    call: str
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.version}: {self.call} at {self.where}: {self.problem}"


class ConformanceError(Exception):
    """Base of the errors the double raises."""


class MissingMember(ConformanceError, AttributeError):
    """The real API has no such attribute."""


class BadCall(ConformanceError, TypeError):
    """No overload of the real signature accepts the call."""


def our_location() -> str:
    """``xception_trt/...py:LINE`` of the innermost frame of our package calling TensorRT."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_PACKAGE_DIR):
            return f"xception_trt{name[len(_PACKAGE_DIR):]}:{frame.f_lineno}"
        frame = frame.f_back
    return "(not called from xception_trt/)"


#: Classes whose objects support the buffer protocol (``memoryview(plan)``; TensorRT API
#: reference of ``IHostMemory``), which a pybind11 docstring does not show: the double is a
#: ``bytes`` subclass, so their bytes methods are not checked.
_BUFFER_CLASSES = ("IHostMemory",)

#: Special methods the generated classes take over from the dump (``Dims`` is a sequence).
_SEQUENCE_DUNDERS = ("__len__", "__getitem__", "__iter__")

def _is_probe(name: str) -> bool:
    """Our line asks whether member ``name`` exists (``hasattr(x, "name")`` /
    ``getattr(x, "name", default)``): a missing member is an answer there, not a mismatch. Only
    that very name counts: a misspelt read of another member on the same line is recorded."""
    import linecache

    probe = re.compile(r"\bhasattr\([^()]*,\s*[\"']" + re.escape(name) + r"[\"']\s*\)"
                       r"|\bgetattr\([^()]*,\s*[\"']" + re.escape(name) + r"[\"']\s*,")
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
            return bool(probe.search(line))
        frame = frame.f_back
    return False


# ------------------------------------------------------------------------------------------------
# signatures
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    annotation: str
    has_default: bool
    kind: str  # "normal", "var_positional", "var_keyword"


@dataclass(frozen=True)
class Signature:
    """One pybind11 overload: parameters (``self`` dropped) and the return type."""

    text: str
    params: tuple[Param, ...]
    returns: str

    def bind(self, args: tuple, kwargs: dict, check_type: Callable[[Any, str], bool]
             ) -> tuple[dict[str, Any] | None, str]:
        """Match a call; returns (arguments by name, "") or (None, why not)."""
        normal = [p for p in self.params if p.kind == "normal"]
        var_pos = any(p.kind == "var_positional" for p in self.params)
        var_kw = any(p.kind == "var_keyword" for p in self.params)
        if len(args) > len(normal) and not var_pos:
            return None, f"takes {len(normal)} positional argument(s), {len(args)} given"
        bound: dict[str, Any] = {}
        for p, a in zip(normal, args):
            bound[p.name] = a
        for key, value in kwargs.items():
            if key in bound:
                return None, f"argument {key!r} given twice"
            if key not in {p.name for p in normal}:
                if var_kw:
                    bound[key] = value
                    continue
                return None, f"no parameter named {key!r}"
            bound[key] = value
        for p in normal:
            if p.name not in bound and not p.has_default:
                return None, f"missing argument {p.name!r}"
            if p.name in bound and not check_type(bound[p.name], p.annotation):
                return None, (f"argument {p.name!r} is {type(bound[p.name]).__name__}, "
                              f"expected {p.annotation}")
        return bound, ""


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(<{":
            depth += 1
        elif ch in "])>}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def short_type(text: str) -> str:
    """``tensorrt_bindings.tensorrt.ICudaEngine`` / ``nvinfer1::ICudaEngine`` -> ``ICudaEngine``."""
    return _PREFIX.sub("", text.strip())


def parse_signature(text: str) -> Signature | None:
    """Parse ``name(self: X, a: int, b: str = 'x') -> T``; ``None`` when it is no signature."""
    open_i = text.find("(")
    if open_i < 0:
        return None
    depth, close_i = 0, -1
    for i in range(open_i, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                close_i = i
                break
    if close_i < 0:
        return None
    rest = text[close_i + 1:].strip()
    returns = short_type(rest[2:]) if rest.startswith("->") else "object"
    params = []
    for i, raw in enumerate(_split_top(text[open_i + 1:close_i])):
        if raw in ("/", "*"):
            continue
        if raw.startswith("**"):
            params.append(Param(raw[2:], "", True, "var_keyword"))
            continue
        if raw.startswith("*"):
            params.append(Param(raw[1:], "", True, "var_positional"))
            continue
        head, eq, _default = raw.partition("=")
        name, _, annotation = head.partition(":")
        name = name.strip()
        if i == 0 and name in ("self", "this", "arg0") and text[:open_i] != "":
            continue  # the bound instance
        params.append(Param(name, short_type(annotation), bool(eq), "normal"))
    return Signature(text, tuple(params), returns)


# ------------------------------------------------------------------------------------------------
# the generated classes
# ------------------------------------------------------------------------------------------------
class _CheckedMeta(type):
    """Class-level lookups (``trt.ILogger.Severity``) of members the real class lacks."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        api = cls.__dict__.get("_api") or getattr(cls, "_api", None)
        if api is None:
            raise AttributeError(name)
        raise api.missing(f"{cls._trt_name}.{name}", f"{cls._trt_name} has no attribute {name!r}")


class _CheckedEnumMeta(type):
    """The class of a generated enum: members are class attributes; ``Enum(value)`` makes a
    *new* object equal to the member (pybind11 does, so ``is`` never matches a value TensorRT
    returns); unknown members are mismatches; not iterable (``__members__`` lists them)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        api = cls.__dict__.get("_api")
        if api is None:
            raise AttributeError(name)
        raise api.missing(f"{cls._trt_name}.{name}",
                          f"enum {cls._trt_name} has no member {name!r} (members: "
                          f"{', '.join(cls.__members__)})")

    def __call__(cls, value: Any) -> Any:
        obj = object.__new__(cls)
        obj._value_ = operator.index(value)
        return obj

    @property
    def __members__(cls) -> dict[str, Any]:
        return dict(cls._members)


class CheckedEnum(metaclass=_CheckedEnumMeta):
    """Base of the generated enums: a pybind11 enum (``py::enum_`` without ``py::arithmetic``;
    none of TensorRT's is arithmetic), as the real bindings behave: ``int()``,
    ``operator.index``, ``.value`` and ``hash`` give the value, ``.name`` the member's name;
    equality only with a member of the same enum and value (never with an int, nor across
    enums); always true; no ordering, no ``|``; ``str`` ``TensorIOMode.INPUT``, ``repr``
    ``<TensorIOMode.INPUT: 1>``."""

    _members: dict[str, Any] = {}
    _value_: int

    @classmethod
    def _make(cls, name: str, members: list[tuple[str, int]]) -> type:
        enum_cls = _CheckedEnumMeta(name, (cls,), {"__qualname__": name,
                                                   "__module__": "tensorrt"})
        table = {}
        for member, value in members:
            obj = object.__new__(enum_cls)
            obj._value_ = int(value)
            type.__setattr__(enum_cls, member, obj)
            table[member] = obj
        type.__setattr__(enum_cls, "_members", table)
        return enum_cls

    @property
    def value(self) -> int:
        return self._value_

    @property
    def name(self) -> str:
        return next((n for n, m in type(self)._members.items() if m._value_ == self._value_),
                    "???")

    def __int__(self) -> int:
        return self._value_

    def __index__(self) -> int:
        return self._value_

    def __hash__(self) -> int:
        return hash(self._value_)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._value_ == self._value_  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {self._value_}>"


class Checked(metaclass=_CheckedMeta):
    """Base of the generated classes: unknown instance attributes are mismatches; a Python
    subclass that overrides ``__init__`` must call the generated base's (pybind11:
    "__init__() must be called when overriding __init__", TypeError at construction)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_generated") is None and "__init__" in cls.__dict__:
            user_init = cls.__dict__["__init__"]

            def __init__(self: Any, *args: Any, **kw: Any) -> None:
                user_init(self, *args, **kw)
                if not self.__dict__.get("_base_init_done"):
                    base = next(k for k in type(self).__mro__
                                if k.__dict__.get("_generated") is not None)
                    api = base._api
                    raise TypeError(str(api.record(
                        f"{base._trt_name}() subclass {type(self).__name__}",
                        f"{base._trt_name}.__init__() must be called when overriding "
                        "__init__")))
            __init__.__qualname__ = user_init.__qualname__
            cls.__init__ = __init__  # type: ignore[misc]

    _api: ApiDouble
    _trt_name: str

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if any(isinstance(k.__dict__.get(name), _Property) for k in type(self).__mro__):
            # Python's fallback after a property refused the read (write-only): recorded there
            raise AttributeError(f"{self._trt_name}.{name} is write-only (no getter)")
        raise self._api.missing(f"{self._trt_name}.{name}",
                                f"{self._trt_name} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        is_property = any(isinstance(k.__dict__.get(name), _Property) for k in cls.__mro__)
        if is_property or name.startswith("_") or cls.__dict__.get("_generated") is None:
            object.__setattr__(self, name, value)  # our subclass (a logger) or double state
            return
        # a pybind11 object has no __dict__: only its properties can be written
        raise self._api.missing(f"{self._trt_name}.{name} = ...",
                                f"{self._trt_name} has no property {name!r} to set")

    @property
    def _state(self) -> dict[str, Any]:
        try:
            return object.__getattribute__(self, "_state_dict")
        except AttributeError:
            state: dict[str, Any] = {}
            object.__setattr__(self, "_state_dict", state)
            return state


class _Method:
    def __init__(self, owner: str, name: str, signatures: list[Signature], static: bool) -> None:
        self.owner, self.name, self.signatures, self.static = owner, name, signatures, static

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        api: ApiDouble = objtype._api if obj is None else obj._api
        if obj is None and not self.static:
            def unbound(inst: Any, *args: Any, **kwargs: Any) -> Any:
                return api.call(inst, self, args, kwargs)
            return unbound

        def bound(*args: Any, **kwargs: Any) -> Any:
            return api.call(obj, self, args, kwargs)
        bound.__name__ = self.name
        return bound


class _Property:
    def __init__(self, owner: str, name: str, readonly: bool, returns: str,
                 takes: str = "", writeonly: bool = False) -> None:
        self.owner, self.name, self.readonly, self.returns = owner, name, readonly, returns
        #: the setter's value type (its docstring); a setter-only property has no getter type
        self.takes = takes or returns
        self.writeonly = writeonly

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return obj._api.get_property(obj, self)

    def __set__(self, obj: Any, value: Any) -> None:
        obj._api.set_property(obj, self, value)


class ApiDouble:
    """The double of one TensorRT version: ``module`` behaves as ``import tensorrt`` would.

    Args:
        dump: The API dump (dump_api.py).
        name: The module name our code imports (``tensorrt`` or ``tensorrt_rtx``).
        world: Supplies values and enforces documented rules (world.py); ``None`` gives typed
            defaults only.
    """

    def __init__(self, dump: dict, name: str, world: Any = None) -> None:
        self.dump = dump
        self.version = str(dump["version"])
        self.label = f"{name} {self.version}"
        self.mismatches: list[Mismatch] = []
        self.calls: set[str] = set()
        self.world = world
        self.classes: dict[str, type] = {}
        self._build_classes()
        self.module = self._build_module(name)
        if world is not None:
            world.attach(self)

    # -- recording --------------------------------------------------------------------------
    def record(self, call: str, problem: str) -> Mismatch:
        mismatch = Mismatch(self.label, call, our_location(), problem)
        self.mismatches.append(mismatch)
        return mismatch

    def missing(self, call: str, problem: str) -> MissingMember:
        if _is_probe(call.rsplit(".", 1)[-1]):
            return MissingMember(f"{self.label}: {problem}")
        return MissingMember(str(self.record(call, problem)))

    def rule(self, call: str, rule: str) -> None:
        """A documented rule our code broke (world.py): recorded, not raised, as TensorRT
        reports these by a failed call and an error log rather than an exception."""
        self.record(call, f"breaks a documented rule: {rule}")

    # -- classes ----------------------------------------------------------------------------
    def _order(self) -> list[str]:
        classes, done, out = self.dump["classes"], set(), []

        def visit(name: str) -> None:
            if name in done or name not in classes:
                return
            done.add(name)
            for base in classes[name]["bases"]:
                visit(base)
            out.append(name)
        for name in sorted(classes):
            visit(name)
        return out

    def _build_classes(self) -> None:
        classes = self.dump["classes"]
        for name in self._order():
            entry = classes[name]
            if "enum" in entry:
                members = sorted(entry["enum"].items(), key=lambda kv: kv[1])
                cls = CheckedEnum._make(name.rsplit(".", 1)[-1], members)
                type.__setattr__(cls, "_api", self)
                type.__setattr__(cls, "_trt_name", name)
                self.classes[name] = cls
                continue
            bases = tuple(self.classes[b] for b in entry["bases"] if b in self.classes) \
                or ((bytes, Checked) if name in _BUFFER_CLASSES else (Checked,))
            ns: dict[str, Any] = {"_api": self, "_trt_name": name, "_generated": True,
                                  "__qualname__": name, "__module__": "tensorrt"}
            for member, info in entry["members"].items():
                kind = info["kind"]
                sigs = [s for s in (parse_signature(t) for t in info.get("signatures", []))
                        if s is not None]
                if kind in ("method", "static"):
                    if member == "__init__":
                        ns["_init_sigs"] = sigs if not any(
                            "Initialize self" in t for t in info.get("signatures", [])) else []
                        continue
                    if member.startswith("__") and member not in _SEQUENCE_DUNDERS:
                        continue
                    ns[member] = _Method(name, member, sigs, kind == "static")
                elif kind == "property":
                    returns = sigs[0].returns if sigs else "object"
                    setters = [p for p in (parse_signature(t) for t in
                                           info.get("setter_signatures", [])) if p is not None]
                    takes = setters[0].params[-1].annotation \
                        if setters and setters[0].params else ""
                    ns[member] = _Property(name, member, info["readonly"], returns, takes,
                                           bool(info.get("writeonly", False)))
            ns["__init__"] = _make_init(name)
            self.classes[name] = _CheckedMeta(name.rsplit(".", 1)[-1], bases, ns)
        # nested types and exported enum values (ILogger.Severity, Logger.WARNING)
        for name, entry in classes.items():
            cls = self.classes[name]
            for member, info in entry["members"].items():
                if info["kind"] == "type" and info["type"] in self.classes:
                    type.__setattr__(cls, member, self.classes[info["type"]])
                elif info["kind"] == "enum_value" and info["type"] in self.classes \
                        and "enum" not in entry:
                    type.__setattr__(cls, member, self.classes[info["type"]](info["value"]))

    def _build_module(self, name: str) -> types.ModuleType:
        api = self

        class _Module(types.ModuleType):
            def __getattr__(self, attr: str) -> Any:
                if attr.startswith("__"):
                    raise AttributeError(attr)
                raise api.missing(f"{name}.{attr}", f"module {name} has no attribute {attr!r}")

        module = _Module(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__version__ = self.version
        for cls_name, cls in self.classes.items():
            if "." not in cls_name:
                setattr(module, cls_name, cls)
        for value_name, info in self.dump["values"].items():
            if info["kind"] == "alias" and info["type"] in self.classes:
                setattr(module, value_name, self.classes[info["type"]])
            elif info["kind"] == "enum_value" and info["type"] in self.classes:
                setattr(module, value_name, self.classes[info["type"]](info["value"]))
        for fn_name, info in self.dump["functions"].items():
            sigs = [s for s in (parse_signature(t) for t in info["signatures"]) if s is not None]
            method = _Method(name, fn_name, sigs, True)
            setattr(module, fn_name, method.__get__(None, type("M", (), {"_api": self})))
        return module

    # -- calls ------------------------------------------------------------------------------
    def check_type(self, value: Any, annotation: str) -> bool:
        """Would pybind11 accept ``value`` for a parameter annotated ``annotation``?"""
        ann = annotation.replace("typing.", "").replace("collections.abc.", "")
        if not ann or ann in ("object", "handle", "capsule"):
            return True
        if value is None:
            return ann.startswith("Optional") or "None" in ann
        if ann in ("int", "SupportsInt", "SupportsIndex"):
            return isinstance(value, int) or hasattr(value, "__index__")
        if ann == "bool":
            return isinstance(value, (bool, int))
        if ann in ("float", "SupportsFloat"):
            return isinstance(value, (int, float))
        if ann == "str":
            return isinstance(value, str)
        if ann in ("buffer", "Buffer", "typing_extensions.Buffer", "bytes"):
            return isinstance(value, (bytes, bytearray, memoryview))
        if ann in ("tuple", "list"):
            return isinstance(value, {"tuple": tuple, "list": list}[ann])
        if ann.startswith("Dims") or re.match(r"(List|list|Sequence)\[(int|SupportsInt)\]",
                                              ann):
            target = self.classes.get(ann)
            return (target is not None and isinstance(value, target)) or (
                isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value))
        resolved = self.resolve(ann)
        if resolved is not None:
            return isinstance(value, self.classes[resolved])
        return True

    def resolve(self, name: str) -> str | None:
        """The dumped class a signature's type names (``IParserError`` -> ``ParserError``)."""
        for candidate in (name, name[1:] if name.startswith("I") else None, "I" + name):
            if candidate and candidate in self.classes:
                return candidate
        return None

    def default(self, returns: str) -> Any:
        """A value of the documented return type."""
        if returns in ("None", "object", ""):
            return None
        simple = {"bool": True, "int": 0, "float": 0.0, "str": ""}
        if returns in simple:
            return simple[returns]
        resolved = self.resolve(returns)
        if resolved is None:
            return None
        cls = self.classes[resolved]
        if issubclass(cls, CheckedEnum):
            return next(iter(cls.__members__.values()))
        return self.instance(resolved)

    def instance(self, cls_name: str, /, *, _buffer: bytes = b"", **state: Any) -> Any:
        """A double of class ``name`` as TensorRT would hand it out (no Python constructor);
        ``_buffer`` is the content of a buffer class (``IHostMemory``)."""
        cls = self.classes[self.resolve(cls_name) or cls_name]
        obj = bytes.__new__(cls, _buffer) if issubclass(cls, bytes) else object.__new__(cls)
        obj._state.update(state)
        return obj

    def call(self, obj: Any, method: _Method, args: tuple, kwargs: dict) -> Any:
        """Validate a call against the real overloads, then let the world answer it."""
        call = f"{method.owner}.{method.name}"
        self.calls.add(call)
        bound: dict[str, Any] | None = None
        reasons = []
        chosen = None
        for sig in method.signatures:
            bound, why = sig.bind(args, kwargs, self.check_type)
            if bound is not None:
                chosen = sig
                break
            reasons.append(f"{sig.text}: {why}")
        if chosen is None and method.signatures:
            raise BadCall(str(self.record(f"{call}({_show(args, kwargs)})",
                                          "no overload accepts it: " + "; ".join(reasons))))
        returns = chosen.returns if chosen is not None else "object"
        handler = self.world.handler(method.owner, method.name) if self.world else None
        if handler is not None:
            return handler(obj, bound or {}, returns)
        return self.default(returns)

    def get_property(self, obj: Any, prop: _Property) -> Any:
        self.calls.add(f"{prop.owner}.{prop.name}")
        if prop.writeonly:  # pybind11: AttributeError "unreadable attribute"
            raise self.missing(f"{prop.owner}.{prop.name}",
                               f"{prop.owner}.{prop.name} is write-only (no getter)")
        if prop.name in obj._state:
            return obj._state[prop.name]
        handler = self.world.handler(prop.owner, prop.name) if self.world else None
        if handler is not None:
            return handler(obj, {}, prop.returns)
        return self.default(prop.returns)

    def set_property(self, obj: Any, prop: _Property, value: Any) -> None:
        call = f"{prop.owner}.{prop.name} = {value!r}"
        self.calls.add(f"{prop.owner}.{prop.name}=")
        if prop.readonly:
            raise MissingMember(str(self.record(call, f"{prop.owner}.{prop.name} is read-only")))
        if not self.check_type(value, prop.takes):
            raise BadCall(str(self.record(call, f"{prop.name} takes {prop.takes}, got "
                                                f"{type(value).__name__}")))
        obj._state[prop.name] = value


def _show(args: tuple, kwargs: dict) -> str:
    parts = [type(a).__name__ for a in args] + [f"{k}=" for k in kwargs]
    return ", ".join(parts)


def _make_init(name: str) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        api: ApiDouble = self._api
        cls = api.classes[name]
        sigs = cls.__dict__.get("_init_sigs", [])
        api.calls.add(f"{name}()")
        if not sigs:
            raise BadCall(str(api.record(f"{name}()", f"{name} has no Python constructor")))
        reasons = []
        for sig in sigs:
            bound, why = sig.bind(args, kwargs, api.check_type)
            if bound is not None:
                object.__setattr__(self, "_base_init_done", True)
                if api.world is not None:
                    api.world.constructed(self, name, bound)
                return
            reasons.append(f"{sig.text}: {why}")
        raise BadCall(str(api.record(f"{name}({_show(args, kwargs)})",
                                     "no constructor overload accepts it: " + "; ".join(reasons))))
    return __init__
