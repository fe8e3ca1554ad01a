"""How a TensorRT Python module's enums and callback bases behave, as JSON: run on the real
bindings (``python behaviour.py MODULE``, in the process wheels.py prepares) and on the checking
double (:func:`behaviour` in-process), so the tests can compare the two.

What is recorded: enum equality with ints and across enums, truth, ``str``/``repr``, ``int``,
``operator.index``, ``hash``, ordering, ``|``, construction from a value; and whether a Python
subclass of ``ILogger`` / ``IProgressMonitor`` that overrides ``__init__`` without calling the
base's can be created.
"""

from __future__ import annotations

import importlib
import json
import operator
import sys
from typing import Any


def _try(fn: Any) -> Any:
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - the kind of failure is the answer
        text = str(exc)
        if "must be called when overriding __init__" in text:
            text = "must be called when overriding __init__"
        elif "not supported between" in text or "unsupported operand" in text:
            text = "unsupported operand"
        return {"raises": type(exc).__name__, "message": text}
    return value if isinstance(value, (bool, int, str, type(None))) else repr(value)


def behaviour(trt: Any) -> dict[str, Any]:
    """The observed behaviour of module ``trt`` (real bindings or the double)."""
    mode, dtype = trt.TensorIOMode, trt.DataType
    out: dict[str, Any] = {
        "INPUT == 1": _try(lambda: mode.INPUT == 1),
        "1 == INPUT": _try(lambda: 1 == mode.INPUT),
        "INPUT != 1": _try(lambda: mode.INPUT != 1),
        "INPUT == DataType.HALF (both 1)": _try(lambda: mode.INPUT == dtype.HALF),
        "INPUT == INPUT": _try(lambda: mode.INPUT == mode(1)),
        "DataType.FLOAT == 0": _try(lambda: dtype.FLOAT == 0),
        "Severity.ERROR == 1": _try(lambda: trt.ILogger.Severity.ERROR == 1),
        "bool(NONE)": _try(lambda: bool(mode.NONE)),
        "str(INPUT)": _try(lambda: str(mode.INPUT)),
        "repr(INPUT)": _try(lambda: repr(mode.INPUT)),
        "int(INPUT)": _try(lambda: int(mode.INPUT)),
        "index(INPUT)": _try(lambda: operator.index(mode.INPUT)),
        "hash(INPUT) == hash(1)": _try(lambda: hash(mode.INPUT) == hash(1)),
        "isinstance(INPUT, int)": _try(lambda: isinstance(mode.INPUT, int)),
        "INPUT.name, .value": _try(lambda: f"{mode.INPUT.name} {mode.INPUT.value}"),
        "INPUT < OUTPUT": _try(lambda: mode.INPUT < mode.OUTPUT),
        "INPUT | OUTPUT": _try(lambda: mode.INPUT | mode.OUTPUT),
        "1 << INPUT": _try(lambda: 1 << mode.INPUT),
        "{1: x}.get(INPUT)": _try(lambda: {1: "x"}.get(mode.INPUT)),
        "TensorIOMode(1) is INPUT": _try(lambda: mode(1) is mode.INPUT),
    }

    class Logger(trt.ILogger):
        def __init__(self) -> None:  # forgets trt.ILogger.__init__(self)
            self.seen: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            self.seen.append(msg)

    class GoodLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            pass

    out["ILogger subclass without base __init__"] = _try(lambda: type(Logger()).__name__)
    out["ILogger subclass with base __init__"] = _try(lambda: type(GoodLogger()).__name__)
    if hasattr(trt, "IProgressMonitor"):
        class Monitor(trt.IProgressMonitor):
            def __init__(self) -> None:  # forgets the base
                self.steps = 0

        out["IProgressMonitor subclass without base __init__"] = _try(
            lambda: type(Monitor()).__name__)
    return out


if __name__ == "__main__":
    print(json.dumps(behaviour(importlib.import_module(sys.argv[1])), sort_keys=True))
