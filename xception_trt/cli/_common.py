"""Helpers shared by the CLI commands: sub-command parsers, argparse types, progress bars and
output formatting."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["add_command", "progress", "print_json", "arg_type", "bounded_int", "positive_int",
           "non_negative_int", "port_number", "only_with", "not_with", "add_runner_flags",
           "runner_settings"]

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


def only_with(flag: str, given: object, *, needs: str, present: object,
              why: str | None = None) -> None:
    """Refuse a flag that would be silently ignored: ``flag`` was given without ``needs``.

    Args:
        flag: The flag as typed (``"--no-gpu-fallback"``).
        given: Whether (truthy) the user gave it.
        needs: What makes it apply (``"--dla-core N"``).
        present: Whether (truthy) that is there.
        why: What the flag does, to say why it needs ``needs`` (optional).

    Raises:
        ConfigError: ``given`` and not ``present``; the message names both and the fix.
    """
    if given and not present:
        raise ConfigError(f"{flag} only applies with {needs}" + (f" ({why})" if why else "")
                          + f"; add {needs} or drop {flag}")


def not_with(flag: str, given: object, *, other: str, other_given: object, why: str) -> None:
    """Refuse two flags of which one would be silently ignored.

    Raises:
        ConfigError: Both given; the message names both, why, and to drop one.
    """
    if given and other_given:
        raise ConfigError(f"{flag} cannot be combined with {other} ({why}); drop one of them")


def _providers(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ValueError("no provider")
    return names


def add_runner_flags(p: argparse.ArgumentParser, *, cuda_graphs: bool = True,
                     providers: bool = True) -> None:
    """``--cuda-graphs`` (TensorRT engines) and ``--providers`` (ONNX Runtime) for commands that
    run models; read them back with :func:`runner_settings`."""
    if cuda_graphs:
        p.add_argument("--cuda-graphs", action="store_true",
                       help="TensorRT engines: capture and replay one CUDA graph per batch size "
                            "(lowest host overhead); an error for other model types")
    if providers:
        p.add_argument("--providers", type=arg_type(_providers, expected="a comma-separated "
                                                    "list of provider names"),
                       default=None, metavar="EP[,EP...]",
                       help="ONNX files: ONNX Runtime execution providers in priority order, "
                            "e.g. CPUExecutionProvider (default: CUDA if this onnxruntime has "
                            "it, then CPU); checked against onnxruntime.get_available_providers()")


def runner_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The generic runner settings a command's flags give (``threads``, ``cuda_graphs``,
    ``providers``), for :func:`xception_trt.runners.check_runner_options` and
    :func:`xception_trt.runners.runner_options`."""
    return {"threads": getattr(args, "threads", None),
            "cuda_graphs": getattr(args, "cuda_graphs", False),
            "providers": getattr(args, "providers", None)}
