"""safemodel-ci: find model files that would run code when loaded, without ever loading them."""

from __future__ import annotations

import gc

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import NoReturn

__version__ = "0.1.0"


def exit_process(code: int) -> NoReturn:
    """End a command-line process with ``code``.

    The interpreter's last garbage collection walks every object still alive (thousands of scan
    results), only to free memory the process is about to give back: they are frozen out of it,
    about 30 ms of a 0.2 s run. Everything else at exit (flushing output, atexit handlers) runs.
    """
    gc.freeze()
    raise SystemExit(code)


class Terminated(BaseException):
    """SIGTERM arrived while worker processes ran: unwind (they are terminated on the way), exit 143."""
