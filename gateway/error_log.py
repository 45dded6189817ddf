"""Logging an unexpected exception without letting one client stall the event loop.

Why not ``log.exception``: a full traceback of a deep failure (a ``RecursionError`` has a
thousand frames) is tens of kilobytes, rendered and written on the event loop in hundreds
of milliseconds; a client that can trigger it on demand can freeze the replica. Here an
error becomes one line: its type, a capped message and the last few frames (file, line,
function; no source lines read from disk), and at most ``burst`` such lines per
``window_s`` are written; the rest are only counted and summarised in the next line.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from types import TracebackType

MAX_MESSAGE_CHARS = 300
LAST_FRAMES = 4


def summarize(exc: BaseException, frames: int = LAST_FRAMES) -> str:
    """``Type: message [at file:line in fn <- ...]``, bounded whatever the exception holds."""
    message = str(exc)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message)} chars)"
    last: deque[TracebackType] = deque(maxlen=frames)
    tb = exc.__traceback__
    while tb is not None:  # walking is cheap; only the last few frames are formatted
        last.append(tb)
        tb = tb.tb_next
    where = " <- ".join(f"{t.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{t.tb_lineno} in "
                        f"{t.tb_frame.f_code.co_name}" for t in reversed(last))
    return f"{type(exc).__name__}: {message}" + (f" [at {where}]" if where else "")


class BoundedErrorLog:
    """Rate-limited one-line error reports."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window_s: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self._window_start = 0.0
        self._written = 0
        self._suppressed = 0

    def report(self, what: str, exc: BaseException) -> bool:
        """Log ``what`` and a summary of ``exc`` unless the burst is used up; True if written."""
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._window_start, self._written = now, 0
        if self._written >= self.burst:
            self._suppressed += 1
            return False
        self._written += 1
        suppressed, self._suppressed = self._suppressed, 0
        note = f" ({suppressed} similar reports suppressed before this one)" if suppressed else ""
        self.logger.error("%s: %s%s", what, summarize(exc), note)
        return True

