"""The ``xception-trt`` command line.

Each sub-command lives in its own module of this package and exposes ``ORDER`` (its place in
``--help``) and ``register(subparsers)``, which adds a parser whose ``func(args) -> int`` runs it.
This package is the only place that reads environment variables, configures logging, prints
and exits. A user mistake (any :class:`~xception_trt.errors.XceptionTRTError`), a package of
an extra that is not installed, or a fault of the environment (disk full, read-only folder,
permissions; see :data:`~xception_trt.fsio.ENVIRONMENT_ERRNOS`) prints one line
``error: ...`` and exits with code 2; Ctrl-C exits with 130; a reader that stops early
(``xception-trt info --json | head -1``) ends the command quietly with 141, as a shell
reports a process killed by SIGPIPE. Command modules import the toolchain (torch, ONNX,
...) only when they run, so that ``--help``, ``info``, ``selftest`` and ``infer`` work in a
core-only install. A flag's old spelling (``bundle --engines``, ``build --backend`` ...; see
:mod:`._options`) still works and prints one ``warning:`` line naming the new one.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import XceptionTRTError
from ..extras import missing
from ..fsio import environment_error_text
from ._common import check_paths
from ._options import resolve_deprecated

__all__ = ["main", "build_parser", "EXIT_BROKEN_PIPE"]

#: Exit code when stdout's reader went away: 128 + SIGPIPE, what a shell shows for `yes | head`.
EXIT_BROKEN_PIPE = 141

log = logging.getLogger("xception_trt")


def _command_modules() -> list:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="xception-trt",
        description="Deploy the Xception image classifier with NVIDIA TensorRT: export to ONNX, "
                    "make FP16/INT8 variants, build engines, run and benchmark them.",
        epilog="Run 'xception-trt COMMAND --help' for the options of one command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        mod.register(sub)
    return parser


class SayOnce(logging.Filter):
    """Drop a warning whose text was already shown in this run: two steps that meet the same
    fact (``bundle`` calibrates the TensorRT- and the ONNX Runtime-placed INT8 graphs on the
    same images: "only N image(s) available") say it once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SayOnce())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"
                                           if verbose >= 2 else "%(message)s"))
    root = logging.getLogger("xception_trt")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # huggingface_hub warns once per retry while the Hub does not answer (five lines of
    # "Retrying in 1s ..."); our one error line says what happened, -v shows them.
    logging.getLogger("huggingface_hub").setLevel(
        logging.ERROR if verbose < 1 or quiet else logging.NOTSET)
    if verbose < 1 or quiet:
        # Library INFO lines are for -v; the CLI prints its own summary.
        root.setLevel(logging.WARNING)


def prefer_passive_openmp() -> None:
    """Let OpenMP threads sleep instead of spin while they wait (unless the user set
    ``OMP_WAIT_POLICY``).

    Measured on a 2-core machine with one other busy process: a training step of the demo
    model took 7.4 s with torch's default spinning threads, 0.33 s with ``PASSIVE``. ModelOpt
    calibration runs in a subprocess beside the CLI, so every command benefits. libgomp reads
    the variable when torch is first imported: this runs before any command imports it.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def quiet_hub_progress() -> None:
    """No Hugging Face download bars unless stderr is a terminal (the rule of every progress
    bar of the CLI: none in logs); ``huggingface_hub`` reads the variable when imported, which
    happens only when a command reads a Hub id. A value the user set is kept."""
    if not _is_terminal(sys.stderr):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):  # closed or replaced stream
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    prefer_passive_openmp()
    _occupy_closed_std_streams()
    quiet_hub_progress()
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        resolve_deprecated(args, parser)
        check_paths(args, parser)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except XceptionTRTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        # The library wraps its optional imports (extras.needs); this catches any it missed,
        # so a core-only install never shows a traceback for a missing extra.
        err = missing(exc, purpose=f"'xception-trt {args.command}'")
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        text = environment_error_text(exc, action="use")
        if text is None:
            raise
        print(f"error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _occupy_closed_std_streams() -> None:
    """Started with stdout or stderr closed (``>&-``): Python sets ``sys.stdout`` to ``None``
    (every print then raised AttributeError), and the next file opened would take descriptor 1
    or 2, so a library's or child process's output would land in it. Open /dev/null on the
    free descriptor, as a daemon does: the output is discarded, as the shell was asked."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            if getattr(sys, name) is not None:
                continue
        except OSError:  # closed: take the descriptor back
            devnull = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush does not
    raise again (the recipe of Python's "Note on SIGPIPE", signal module documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


def run() -> None:  # console-script entry point
    try:
        try:
            code = main()
        finally:  # also after argparse's --help/--version exit: its text may still be buffered
            sys.stdout.flush()
    except BrokenPipeError:  # e.g. `xception-trt --help | head -1`
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
    sys.exit(code)
