"""A signal handler installed for the length of a ``with`` block, the previous ones restored."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any


@contextlib.contextmanager
def handling(signals: Iterable[int], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Call ``handler(signum, frame)`` for each of ``signals`` inside the block.

    On leaving the block (normally or by an exception) each signal gets back the handler it had
    before. Only the main thread may set handlers: in any other thread the signals are left
    alone and ``handler`` is never called.
    """
    previous = {s: signal.getsignal(s) for s in signals}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not in the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
