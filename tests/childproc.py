"""Child processes that tests signal the way a user would.

A test run started from a background job (``cmd &``, ``nohup``, a CI runner without a terminal)
has SIGINT ignored, as POSIX specifies for background jobs of a non-interactive shell, and every
child inherits that: Python then keeps SIGINT ignored, and a SIGINT the test sends does nothing
(reproduced: run from a backgrounded script, the Ctrl-C tests of ``serve`` and of ``stream``'s
FIFO wait hung until their safety limits). :func:`as_in_a_terminal` gives the child the SIGINT
of a foreground process in a terminal, where Ctrl-C comes from."""

from __future__ import annotations

import signal


def as_in_a_terminal() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: SIGINT back to its default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
