"""Logging for the serving processes: records are rendered and written by a thread, not the event loop."""

from __future__ import annotations

import atexit
import logging
import queue
import signal
from logging.handlers import QueueHandler, QueueListener

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)


def setup_logging(level: str, *, own_signals: bool = True) -> None:
    """Log through a queue: records are rendered and written by a thread, not the event loop.

    Rich's traceback rendering is off: a deep traceback took ~0.4 s to render, on the loop.
    Unexpected errors are logged as one bounded line anyway (``gateway.error_log``).
    ``own_signals=False`` in a worker process (``gateway.workers``), where uvicorn's handlers are
    already installed when the app is built and must stay: they run the graceful shutdown.
    """
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, RichHandler(console=console, show_path=False, rich_tracebacks=False))
    listener.start()
    atexit.register(listener.stop)

    # After a graceful shutdown uvicorn re-raises SIGTERM/SIGINT to exit with the signal's
    # status, which skips atexit: write out the queued records first, then die as asked.
    def flush_then_exit(signum: int, _frame: object) -> None:
        listener.stop()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT) if own_signals else ():
        signal.signal(sig, flush_then_exit)
    logging.basicConfig(level=level.upper(), format="%(name)s: %(message)s", datefmt="[%X]",
                        handlers=[QueueHandler(records)])
    # httpx (litellm uses it) logs every upstream request at INFO: a log line per request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
